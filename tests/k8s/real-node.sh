#!/usr/bin/env bash
# A real one-node Kubernetes 1.34 cluster as local processes, no Docker, no registry: etcd + kube-apiserver +
# kube-controller-manager + kube-scheduler + kube-proxy (iptables) + CoreDNS (on the node, kubernetes plugin only)
# + kubelet with containerd (CRI) + runc + a CNI bridge. Images come from `ctr images import` (pullPolicy Never).
#
#   real-node.sh up [IMAGE.tar ...]   # start it all, import the images, wait for the node; prints the run dir last
#   real-node.sh down [RUN_DIR]       # stop what that run started (by pid file) and remove its state ($D by default)
#   real-node.sh reap [PID]           # tear down every run whose owner is dead (or is PID)
#
# Run it inside tests/k8s/netns-run.sh: the node binds fixed ports (API 16443, etcd 23790, kubelet 10250, CoreDNS
# 10.244.0.1:53) and writes iptables rules, which the private namespace keeps off the host. Outside one it refuses
# unless REALNODE_ON_HOST=1.
# Each run gets its own directory under $TASKFLEET_REALNODE_ROOT (default ${TMPDIR:-/tmp}/taskfleet-realnode) and its
# own cgroup parent /taskfleet-<run> in every hierarchy (pod processes live there, not under the caller), so two
# runs, each in its own namespace, do not meet. `up` first reaps the runs of dead owners (a run killed with SIGKILL):
# their processes by pid file, their pods by cgroup.procs, then their directories.
#
# Env: BIN (etcd kube-apiserver kubectl kube-controller-manager kube-scheduler kube-proxy kubelet coredns; default:
# what `build-testbin.sh --node` prints), PAUSE_TAR (the sandbox image archive; default: pause.tar beside the first
# IMAGE.tar, as build-images.sh lays them out).
# Needs root, and apt's containerd runc containernetworking-plugins iptables conntrack.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
ROOT=${TASKFLEET_REALNODE_ROOT:-${TMPDIR:-/tmp}/taskfleet-realnode}
API_PORT=16443
ETCD_PORT=23790
POD_CIDR=10.244.0.0/24 POD_GW=10.244.0.1 SVC_CIDR=10.0.0.0/24
NODE=${NODE:-$(hostname)}
T0=$SECONDS
log() { echo "real-node: $* ($((SECONDS - T0)) s)" >&2; }

start() { # name cmd...: start a process in the background, record its pid (the process itself, not a subshell)
    local name=$1; shift
    nohup "$@" >"$D/logs/$name.log" 2>&1 </dev/null &
    echo $! >"$D/pids/$name.pid"
}
ours() { # pid: is it a process of run $D? (every process started here names a path under $D on its command line)
    [[ -r /proc/$1/cmdline ]] && tr '\0' ' ' <"/proc/$1/cmdline" | grep -qF -- "$D/"
}
stop() { # name: SIGTERM, wait up to 10 s, then SIGKILL
    local f=$D/pids/$1.pid pid
    [[ -f $f ]] || return 0
    pid=$(cat "$f")
    if ours "$pid" && kill "$pid" 2>/dev/null; then
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
        kill -9 "$pid" 2>/dev/null || true
    fi
    rm -f "$f"
}
owner_id() { # pid: "pid start-time" (start time in clock ticks since boot: a reused pid differs), empty if none
    local stat fields
    stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 0
    read -r -a fields <<<"${stat##*) }"  # after "pid (comm) ": field 3 (state) is [0], field 22 (starttime) [19]
    echo "$1 ${fields[19]}"
}

pki() {
    local P=$D/pki; mkdir -p "$P"; cd "$P"
    openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.crt -days 2 -subj /CN=taskfleet-realnode-ca 2>/dev/null
    mk() { # name CN O SANs
        openssl req -newkey rsa:2048 -nodes -keyout "$1.key" -out "$1.csr" -subj "/CN=$2${3:+/O=$3}" 2>/dev/null
        printf 'basicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth,clientAuth\n%s\n' \
            "${4:+subjectAltName=$4}" >"$1.ext"
        openssl x509 -req -in "$1.csr" -CA ca.crt -CAkey ca.key -CAcreateserial -out "$1.crt" -days 2 -extfile "$1.ext" 2>/dev/null
    }
    mk apiserver kube-apiserver "" "IP:127.0.0.1,IP:$NODE_IP,IP:${SVC_CIDR%.0/*}.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local"
    mk admin admin system:masters
    mk kubelet "system:node:$NODE" system:nodes "IP:127.0.0.1,IP:$NODE_IP,DNS:$NODE"
    mk kcm system:kube-controller-manager
    mk sched system:kube-scheduler
    mk proxy system:kube-proxy
    openssl genrsa -out sa.key 2048 2>/dev/null; openssl rsa -in sa.key -pubout -out sa.pub 2>/dev/null
    local u k
    for u in admin kubelet kcm sched proxy; do
        k=$D/$u.kubeconfig
        "$BIN/kubectl" config --kubeconfig="$k" set-cluster local --server="https://127.0.0.1:$API_PORT" --certificate-authority=ca.crt --embed-certs >/dev/null
        "$BIN/kubectl" config --kubeconfig="$k" set-credentials "$u" --client-certificate="$u.crt" --client-key="$u.key" --embed-certs >/dev/null
        "$BIN/kubectl" config --kubeconfig="$k" set-context default --cluster=local --user="$u" >/dev/null
        "$BIN/kubectl" config --kubeconfig="$k" use-context default >/dev/null
    done
    chmod 600 "$D"/*.kubeconfig
    cd - >/dev/null
}

up() {
    if [[ -z ${TASKFLEET_NETNS_PID:-} && ${REALNODE_ON_HOST:-} != 1 ]]; then
        echo "real-node: run me inside tests/k8s/netns-run.sh (or set REALNODE_ON_HOST=1 to touch the host)" >&2
        exit 2
    fi
    reap ""
    BIN=${BIN:-$(bash "$here/build-testbin.sh" --node | tail -n 1)}
    PAUSE_TAR=${PAUSE_TAR:-$(dirname "${1:-.}")/pause.tar}
    NODE_IP=${NODE_IP:-$(ip -4 route get 1.1.1.1 | awk '{for(i=1;i<=NF;i++) if($i=="src") print $(i+1)}')}
    mkdir -p "$ROOT"
    D=$(mktemp -d "$ROOT/run.XXXXXX")
    local run=${D##*/run.}
    CGROUP_ROOT=/taskfleet-$run
    mkdir -p "$D"/{logs,pids,etcd,ctrd/root,ctrd/state,cni/net.d,cni/ipam,kubelet/root,kubelet/pod-logs}
    owner_id "${TASKFLEET_NETNS_PID:-$PPID}" >"$D/owner"
    echo "$CGROUP_ROOT" >"$D/cgroup-root"
    echo "$BIN" >"$D/bin"
    export KUBECONFIG=$D/admin.kubeconfig
    ready=""  # global: the EXIT trap reads it after up() has returned
    trap '[[ -n $ready ]] || { log "up failed: tearing down"; down "$D" || true; }' EXIT
    local P=$D/pki
    pki; log "pki in $D"
    start etcd "$BIN/etcd" --data-dir="$D/etcd" --listen-client-urls="http://127.0.0.1:$ETCD_PORT" \
        --advertise-client-urls="http://127.0.0.1:$ETCD_PORT" --listen-peer-urls="http://127.0.0.1:$((ETCD_PORT + 10))" \
        --initial-advertise-peer-urls="http://127.0.0.1:$((ETCD_PORT + 10))" --initial-cluster="default=http://127.0.0.1:$((ETCD_PORT + 10))" \
        --unsafe-no-fsync=true --log-level=warn
    # --bind-address 0.0.0.0 + --advertise-address NODE_IP: pods reach the API through the kubernetes Service
    # (10.0.0.1:443, DNAT by kube-proxy to NODE_IP:API_PORT). InternalIP: the hostname may resolve to 127.0.0.1,
    # where the kubelet does not listen (kubectl logs/exec would fail).
    start apiserver "$BIN/kube-apiserver" --etcd-servers="http://127.0.0.1:$ETCD_PORT" --bind-address=0.0.0.0 \
        --advertise-address="$NODE_IP" --secure-port="$API_PORT" --cert-dir="$D/apiserver-certs" \
        --tls-cert-file="$P/apiserver.crt" --tls-private-key-file="$P/apiserver.key" --client-ca-file="$P/ca.crt" \
        --authorization-mode=Node,RBAC --enable-admission-plugins=NodeRestriction \
        --service-account-issuer=https://kubernetes.default.svc.cluster.local --service-account-key-file="$P/sa.pub" \
        --service-account-signing-key-file="$P/sa.key" --service-cluster-ip-range="$SVC_CIDR" --allow-privileged=true \
        --kubelet-preferred-address-types=InternalIP --kubelet-client-certificate="$P/admin.crt" --kubelet-client-key="$P/admin.key"
    local i
    for i in $(seq 300); do
        curl -sf --cacert "$P/ca.crt" --cert "$P/admin.crt" --key "$P/admin.key" "https://127.0.0.1:$API_PORT/readyz" >/dev/null 2>&1 && break
        ((i < 300)) || { tail -n 20 "$D/logs/apiserver.log" >&2; false; }
        sleep 0.3
    done
    log "etcd + kube-apiserver ready"
    start kcm "$BIN/kube-controller-manager" --kubeconfig="$D/kcm.kubeconfig" --authentication-kubeconfig="$D/kcm.kubeconfig" \
        --authorization-kubeconfig="$D/kcm.kubeconfig" --leader-elect=false --use-service-account-credentials=true \
        --service-account-private-key-file="$P/sa.key" --root-ca-file="$P/ca.crt" --controllers='*,-cloud-node-lifecycle' \
        --cluster-signing-cert-file="$P/ca.crt" --cluster-signing-key-file="$P/ca.key" --bind-address=127.0.0.1 --secure-port=0
    start sched "$BIN/kube-scheduler" --kubeconfig="$D/sched.kubeconfig" --authentication-kubeconfig="$D/sched.kubeconfig" \
        --authorization-kubeconfig="$D/sched.kubeconfig" --leader-elect=false --bind-address=127.0.0.1 --secure-port=0
    "$BIN/kubectl" create clusterrolebinding local-kube-proxy --clusterrole=system:node-proxier --user=system:kube-proxy >/dev/null

    # containerd: everything under $D. restrict_oom_score_adj: without CAP_SYS_RESOURCE runc cannot set the pause
    # container's oom_score_adj=-998 ("can't get final child's PID from pipe: EOF").
    cat >"$D/ctrd/config.toml" <<EOF
version = 2
root = "$D/ctrd/root"
state = "$D/ctrd/state"
[grpc]
  address = "$D/ctrd/containerd.sock"
[ttrpc]
  address = "$D/ctrd/containerd.sock.ttrpc"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "registry.k8s.io/pause:3.10"
  restrict_oom_score_adj = true
  netns_mounts_under_state_dir = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$D/cni/net.d"
EOF
    cat >"$D/cni/net.d/10-local.conflist" <<EOF
{"cniVersion": "0.4.0", "name": "local", "plugins": [
  {"type": "bridge", "bridge": "kbr0", "isGateway": true, "ipMasq": false, "hairpinMode": true,
   "ipam": {"type": "host-local", "ranges": [[{"subnet": "$POD_CIDR"}]], "routes": [{"dst": "0.0.0.0/0"}], "dataDir": "$D/cni/ipam"}},
  {"type": "portmap", "capabilities": {"portMappings": true}},
  {"type": "loopback"}]}
EOF
    start containerd containerd --config "$D/ctrd/config.toml"
    for i in $(seq 150); do
        ctr --address "$D/ctrd/containerd.sock" version >/dev/null 2>&1 && break
        ((i < 150)) || { tail -n 20 "$D/logs/containerd.log" >&2; false; }
        sleep 0.2
    done
    local tar
    for tar in "$PAUSE_TAR" "$@"; do ctr --address "$D/ctrd/containerd.sock" -n k8s.io images import "$tar" >/dev/null; done
    log "containerd up, $(($# + 1)) image archives imported"

    cat >"$D/kube-proxy.yaml" <<EOF
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection: {kubeconfig: $D/proxy.kubeconfig}
mode: iptables
clusterCIDR: $POD_CIDR
hostnameOverride: $NODE
bindAddress: 127.0.0.1
healthzBindAddress: 127.0.0.1:10256
metricsBindAddress: 127.0.0.1:10249
nodePortAddresses: [primary]
conntrack: {maxPerCore: 0}
EOF
    start kube-proxy "$BIN/kube-proxy" --config="$D/kube-proxy.yaml"

    local h  # the kubelet wants its cgroup root to exist in every v1 hierarchy
    for h in /sys/fs/cgroup/*/; do [[ -e $h/cgroup.procs && ! -e $h/cgroup.controllers ]] && mkdir -p "$h$CGROUP_ROOT"; done
    cat >"$D/kubelet/config.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
failCgroupV1: false
cgroupDriver: cgroupfs
cgroupRoot: $CGROUP_ROOT
containerRuntimeEndpoint: unix://$D/ctrd/containerd.sock
address: $NODE_IP
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
authentication: {anonymous: {enabled: false}, webhook: {enabled: true}, x509: {clientCAFile: $P/ca.crt}}
authorization: {mode: Webhook}
tlsCertFile: $P/kubelet.crt
tlsPrivateKeyFile: $P/kubelet.key
clusterDomain: cluster.local
clusterDNS: [$POD_GW]
resolvConf: /etc/resolv.conf
podLogsDir: $D/kubelet/pod-logs
failSwapOn: false
imageGCHighThresholdPercent: 100
evictionHard: {memory.available: "100Mi", nodefs.available: "1%", imagefs.available: "1%"}
syncFrequency: 10s
nodeStatusReportFrequency: 10s
EOF
    start kubelet "$BIN/kubelet" --config="$D/kubelet/config.yaml" --kubeconfig="$D/kubelet.kubeconfig" \
        --root-dir="$D/kubelet/root" --hostname-override="$NODE" --node-ip="$NODE_IP"
    for i in $(seq 120); do
        "$BIN/kubectl" wait "node/$NODE" --for=condition=Ready --timeout=60s >/dev/null 2>&1 && break
        ((i < 120)) || { tail -n 20 "$D/logs/kubelet.log" >&2; false; }
        sleep 1
    done
    log "node $NODE Ready"

    # CoreDNS on the node, on the bridge's gateway address, which exists once the first pod sandbox is made: a
    # throwaway pod makes it. No forwarding: only cluster names resolve (nothing outside is reachable anyway).
    if ! ip link show kbr0 >/dev/null 2>&1; then
        "$BIN/kubectl" run bridge-init --image=registry.k8s.io/pause:3.10 --image-pull-policy=Never --restart=Never >/dev/null
        for i in $(seq 300); do ip link show kbr0 >/dev/null 2>&1 && break; ((i < 300)) || false; sleep 0.2; done
        "$BIN/kubectl" delete pod bridge-init --wait=false >/dev/null
    fi
    cat >"$D/Corefile" <<EOF
.:53 {
    bind $POD_GW
    errors
    kubernetes cluster.local in-addr.arpa ip6.arpa {
        kubeconfig $D/admin.kubeconfig default
        pods insecure
    }
    cache 5
}
EOF
    start coredns "$BIN/coredns" -conf "$D/Corefile"
    ready=1
    log "kube-proxy + CoreDNS started; KUBECONFIG=$D/admin.kubeconfig"
    echo "$D"
}

down() { # RUN_DIR
    D=${1:-${D:-}}
    [[ -n $D && -d $D && -f $D/owner ]] || { echo "real-node: down: no run directory '${D:-}'" >&2; return 1; }
    BIN=$(cat "$D/bin" 2>/dev/null || echo /nonexistent)
    stop kubelet
    local C="ctr --address $D/ctrd/containerd.sock -n k8s.io" id
    if [[ -S $D/ctrd/containerd.sock ]] && $C version >/dev/null 2>&1; then
        for id in $($C tasks ls -q 2>/dev/null); do $C tasks kill -s SIGKILL "$id" 2>/dev/null || true; done
        sleep 1
        for id in $($C tasks ls -q 2>/dev/null); do $C tasks delete -f "$id" >/dev/null 2>&1 || true; done
        for id in $($C containers ls -q 2>/dev/null); do $C containers delete "$id" >/dev/null 2>&1 || true; done
    fi
    # CNI's result cache is always /var/lib/cni/results/<network>-<sandbox id>-<ifname>
    for id in $(ls "$D/ctrd/root/io.containerd.grpc.v1.cri/sandboxes" 2>/dev/null); do rm -f /var/lib/cni/results/*-"$id"-*; done
    rmdir /var/lib/cni/results /var/lib/cni 2>/dev/null || true
    stop containerd
    # shims outlive containerd; each one's pid is in its task dir
    local f
    for f in "$D"/ctrd/state/io.containerd.runtime.v2.task/*/*/shim.pid; do [[ -f $f ]] && kill "$(cat "$f")" 2>/dev/null || true; done
    stop coredns
    if [[ -f $D/pids/kube-proxy.pid ]]; then stop kube-proxy; "$BIN/kube-proxy" --cleanup >/dev/null 2>&1 || true; fi
    stop kcm; stop sched; stop apiserver; stop etcd
    # pods whose containerd was gone (a killed run): every process left in the run's cgroups, then the cgroups
    local cr h pid
    cr=$(cat "$D/cgroup-root" 2>/dev/null || true)
    if [[ $cr == /taskfleet-* ]]; then
        for h in /sys/fs/cgroup/*"$cr"; do
            [[ -d $h ]] || continue
            for pid in $(find "$h" -name cgroup.procs -exec cat {} + 2>/dev/null); do kill -9 "$pid" 2>/dev/null || true; done
        done
        sleep 0.2
        for h in /sys/fs/cgroup/*"$cr"; do [[ -d $h ]] && find "$h" -depth -type d -exec rmdir {} + 2>/dev/null || true; done
    fi
    # mounts under $D (kubelet's root bind mount, secret tmpfs, rootfs overlays, shm, netns), deepest first
    grep -o " $D[^ ]*" /proc/self/mounts | sort -r | while read -r m; do umount -l "$m" 2>/dev/null || true; done
    ip link del kbr0 2>/dev/null || true
    local ipt t  # the kubelet's own iptables chains (kube-proxy --cleanup leaves them); gone with the netns anyway
    for ipt in iptables ip6tables; do
        command -v $ipt >/dev/null || continue
        $ipt -D INPUT -j KUBE-FIREWALL 2>/dev/null || true
        $ipt -D OUTPUT -j KUBE-FIREWALL 2>/dev/null || true
        $ipt -F KUBE-FIREWALL 2>/dev/null || true; $ipt -X KUBE-FIREWALL 2>/dev/null || true
        for t in filter nat mangle; do $ipt -t $t -X KUBE-KUBELET-CANARY 2>/dev/null || true; done
        $ipt -t mangle -X KUBE-IPTABLES-HINT 2>/dev/null || true
    done
    # the few host paths the kubelet and runc use whatever their configured roots (tmpfs inside netns-run.sh)
    local l
    for l in /var/log/containers/*.log; do [[ -L $l && $(readlink "$l") == "$D"/* ]] && rm -f "$l"; done
    rm -f /var/lib/kubelet/device-plugins/kubelet.sock
    rm -rf "$D"
    log "down: $D"
}

reap() { # [PID]: tear down every run whose owner process is gone (or is PID: its namespace is ending)
    local run owner
    for run in "$ROOT"/run.*; do
        [[ -f $run/owner ]] || continue
        owner=$(cat "$run/owner")
        if [[ -z $owner || $(owner_id "${owner%% *}") != "$owner" || ( -n ${1:-} && ${owner%% *} == "$1" ) ]]; then
            log "reaping $run (owner ${owner%% *} gone or ending)"
            (down "$run") || true
        fi
    done
}

case ${1:-} in
    up) shift; up "$@" ;;
    down) down "${2:-}" ;;
    reap) reap "${2:-}" ;;
    *) echo "usage: $0 up [IMAGE.tar ...] | down [RUN_DIR] | reap [PID]" >&2; exit 2 ;;
esac
