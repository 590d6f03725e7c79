#!/usr/bin/env bash
# Runs a command in a private network + mount namespace, so that a real-node.sh cluster leaves nothing on the host:
# a veth pair gives the node a non-loopback address and a default route (kube-apiserver and the kubelet need one), and
# tmpfs covers the host paths the kubelet, containerd and CNI use whatever their configured roots. Veths, the pod
# bridge, iptables rules (kubelet, kube-proxy), netns files and mounts all vanish with the namespace.
#
#   tests/k8s/netns-run.sh CMD ARGS...     # exits with CMD's status
#
# Needs root. Nothing in the namespace reaches the network: apt, go, pip and podman builds happen before.
# Inside, TASKFLEET_NETNS_PID is the namespace's first process: real-node.sh records it as the owner of the clusters
# it starts, and when CMD ends (even killed) every cluster this namespace owns is torn down before the namespace goes.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
paths=(/var/lib/kubelet /var/log/containers /var/lib/cni /run/containerd /run/netns)
made=()
for d in "${paths[@]}"; do [[ -e $d ]] || { mkdir -p "$d"; made+=("$d"); }; done
unshare --net --mount --propagation private --fork -- bash -c '
set -euo pipefail
here=$1; shift
ip link set lo up
ip link add node0 type veth peer name node0p
ip link set node0p up
ip addr add 172.31.255.1/24 dev node0
ip link set node0 up
ip route add default via 172.31.255.254 dev node0 onlink
for d in /var/lib/kubelet /var/log/containers /var/lib/cni /run/containerd /run/netns; do mount -t tmpfs tmpfs "$d"; done
export TASKFLEET_NETNS_PID=$$
set +e
trap true INT TERM   # a handler, not "ignore" (which CMD would inherit): outlive CMD on Ctrl-C or SIGTERM, to reap what it left
"$@"
rc=$?
bash "$here/real-node.sh" reap "$$" >&2   # clusters this namespace started and did not stop (a killed run)
exit $rc' bash "$here" "$@"
rc=$?
for d in "${made[@]}"; do rmdir "$d" 2>/dev/null; done
exit $rc
