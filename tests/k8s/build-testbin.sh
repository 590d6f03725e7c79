#!/usr/bin/env bash
# Builds the envtest-style control plane the e2e tests run against (etcd, kube-apiserver, kubectl, helm) from the
# Go module proxy with the machine's Go, and caches the binaries outside the repo, keyed by version.
# With --node it also builds what a real node needs (tests/k8s/real-node.sh): kubelet, kube-controller-manager,
# kube-scheduler, kube-proxy and CoreDNS, into the same directory. Only missing binaries are built; a no-op when the
# cache is present. Prints the binary directory on its last line of stdout.
#
#   tests/k8s/build-testbin.sh            # build the envtest binaries if missing, print the directory
#   tests/k8s/build-testbin.sh --node     # the same plus the node binaries
#   TASKFLEET_K8S_BIN=/some/dir ...       # tests use this directory instead (e.g. binaries from a release tarball)
#
# Cold build: ~7 min on 2 cores (measured 409 s from empty Go caches), leaving ~4.5 GB of Go module and build
# caches. See ../shared/K8S-TESTING.md for why the wrapper modules exist (k8s.io/kubernetes and etcd's server
# module both carry replace directives, so `go install` fails). --node adds ~4 min cold (kubelet & co. share most
# packages with kube-apiserver; CoreDNS ~2 min) and ~3 GB of Go caches.
set -euo pipefail

K8S_VERSION=1.34.4
ETCD_VERSION=3.6.16
HELM_VERSION=3.19.5
COREDNS_VERSION=1.14.7

cache_root=${TASKFLEET_K8S_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/taskfleet/k8sbin}
# The node binaries live in the same directory: its name stays what the envtest tier already knows.
dest=$cache_root/k8s-v$K8S_VERSION-etcd-v$ETCD_VERSION-helm-v$HELM_VERSION
control_plane=(etcd kube-apiserver kubectl helm)
node_binaries=(kubelet kube-controller-manager kube-scheduler kube-proxy coredns)
binaries=("${control_plane[@]}")
case ${1:-} in
    "") ;;
    --node) binaries+=("${node_binaries[@]}") ;;
    *) echo "usage: $0 [--node]" >&2; exit 2 ;;
esac

complete() { # [BINARY...]: are they all in the cache? (default: every binary asked for)
    local b
    (($#)) || set -- "${binaries[@]}"
    for b in "$@"; do [[ -x $dest/$b ]] || return 1; done
}

if complete; then echo "$dest"; exit 0; fi
command -v go >/dev/null || { echo "build-testbin: Go is required (https://go.dev/dl/)" >&2; exit 1; }

mkdir -p "$cache_root"
exec 9>"$cache_root/.lock"
flock 9                                  # one build at a time; a second caller waits, then finds the cache
if complete; then echo "$dest"; exit 0; fi

export GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS=-mod=mod
work=$(mktemp -d "$cache_root/.build.XXXXXX")
trap 'rm -rf "$work"' EXIT
out=$work/bin
mkdir -p "$out"
started=$SECONDS
log() { echo "build-testbin: $* ($((SECONDS - started)) s)" >&2; }

major=${K8S_VERSION%%.*}
minor=${K8S_VERSION#*.}; minor=${minor%%.*}
ldflags=""
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ldflags+=" -X $pkg.gitVersion=v$K8S_VERSION -X $pkg.gitMajor=$major -X $pkg.gitMinor=$minor"
    ldflags+=" -X $pkg.gitTreeState=clean"
done

k8s_wrapper_module() { # DIR: cd into a module that pins every k8s.io staging module to its published version
    mkdir -p "$1" && cd "$1"
    [[ -f go.mod ]] && return 0
    go mod init taskfleet.local/k8sbin >/dev/null 2>&1
    local k8s_gomod staging_version module
    k8s_gomod=$(go mod download -json "k8s.io/kubernetes@v$K8S_VERSION" | python3 -c 'import json,sys; print(json.load(sys.stdin)["GoMod"])')
    staging_version=v0.${K8S_VERSION#1.}
    for module in $(awk '$2 == "=>" && $3 ~ /^\.\/staging\// {print $1}' "$k8s_gomod"); do
        go mod edit -replace "$module=$module@$staging_version"
    done
    go mod edit -require "k8s.io/kubernetes@v$K8S_VERSION"
}

build_control_plane() {
    # --- kube-apiserver and kubectl, from the wrapper module.
    log "kube-apiserver + kubectl v$K8S_VERSION"
    k8s_wrapper_module "$work/k8s"
    go get -tool "k8s.io/kubernetes/cmd/kube-apiserver@v$K8S_VERSION" "k8s.io/kubernetes/cmd/kubectl@v$K8S_VERSION" >&2
    go build -trimpath -tags selinux,notest -ldflags "-s -w $ldflags" -o "$out/" \
        k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kubectl

    # --- etcd: its server module is a main package calling etcdmain.Main.
    log "etcd v$ETCD_VERSION"
    mkdir "$work/etcd" && cd "$work/etcd"
    go mod init taskfleet.local/etcdbin >/dev/null 2>&1
    go get -tool "go.etcd.io/etcd/server/v3@v$ETCD_VERSION" >&2
    go build -trimpath -ldflags "-s -w" -o "$out/etcd" go.etcd.io/etcd/server/v3

    # --- helm: no replace directives, plain go install works. Its kube-version defaults must match the apiserver.
    log "helm v$HELM_VERSION"
    local helm_ldflags="-X helm.sh/helm/v3/internal/version.version=v$HELM_VERSION"
    for pkg in helm.sh/helm/v3/pkg/chartutil helm.sh/helm/v3/pkg/lint/rules; do
        helm_ldflags+=" -X $pkg.k8sVersionMajor=$major -X $pkg.k8sVersionMinor=$minor"
    done
    GOBIN=$out go install -trimpath -ldflags "-s -w $helm_ldflags" "helm.sh/helm/v3/cmd/helm@v$HELM_VERSION"

    "$out/kube-apiserver" --version >&2
    "$out/etcd" --version | sed -n 1p >&2  # not head -1: etcd would die of SIGPIPE (exit 141), failing pipefail
    "$out/helm" version --short >&2
}

build_node() { # the missing node binaries: kubelet & co. in one go build (they share most packages), then CoreDNS
    local b pkgs=()
    for b in kubelet kube-controller-manager kube-scheduler kube-proxy; do
        complete "$b" || pkgs+=("k8s.io/kubernetes/cmd/$b")
    done
    if ((${#pkgs[@]})); then
        log "${pkgs[*]##*/} v$K8S_VERSION"
        k8s_wrapper_module "$work/k8s"
        go get -tool "${pkgs[@]/%/@v$K8S_VERSION}" >&2
        go build -trimpath -tags selinux,notest -ldflags "-s -w $ldflags" -o "$out/" "${pkgs[@]}"
    fi
    # CoreDNS: no replace directives in its go.mod, so plain go install works (real-node.sh uses its kubernetes plugin).
    if ! complete coredns; then
        log "coredns v$COREDNS_VERSION"
        GOBIN=$out go install -trimpath -ldflags "-s -w" "github.com/coredns/coredns@v$COREDNS_VERSION"
    fi
}

complete "${control_plane[@]}" || build_control_plane
complete || build_node
# One binary at a time (a rename within one file system): a caller that finds the cache never sees half a binary,
# and binaries already there (the envtest set when --node adds the node's) stay in place.
mkdir -p "$dest"
for b in "$out"/*; do [[ -e $b ]] && mv -f "$b" "$dest/"; done
log "done: $dest"
echo "$dest"
