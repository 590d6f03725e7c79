#!/usr/bin/env bash
# Builds the envtest-style control plane the e2e tests run against (etcd, kube-apiserver, kubectl, helm) from the
# Go module proxy with the machine's Go, and caches the binaries outside the repo, keyed by version.
# A no-op when the cache is present. Prints the binary directory on its last line of stdout.
#
#   tests/k8s/build-testbin.sh            # build if missing, print the directory
#   TASKFLEET_K8S_BIN=/some/dir ...       # tests use this directory instead (e.g. binaries from a release tarball)
#
# Cold build: ~7 min on 2 cores (measured 409 s from empty Go caches), leaving ~4.5 GB of Go module and build
# caches. See ../shared/K8S-TESTING.md for why the wrapper modules exist (k8s.io/kubernetes and etcd's server
# module both carry replace directives, so `go install` fails).
set -euo pipefail

K8S_VERSION=1.34.4
ETCD_VERSION=3.6.16
HELM_VERSION=3.19.5

cache_root=${TASKFLEET_K8S_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/taskfleet/k8sbin}
dest=$cache_root/k8s-v$K8S_VERSION-etcd-v$ETCD_VERSION-helm-v$HELM_VERSION
binaries=(etcd kube-apiserver kubectl helm)

complete() {
    local b
    for b in "${binaries[@]}"; do [[ -x $dest/$b ]] || return 1; done
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

# --- kube-apiserver and kubectl: a wrapper module that pins every staging module to its published version.
log "kube-apiserver + kubectl v$K8S_VERSION"
mkdir "$work/k8s" && cd "$work/k8s"
go mod init taskfleet.local/k8sbin >/dev/null 2>&1
k8s_gomod=$(go mod download -json "k8s.io/kubernetes@v$K8S_VERSION" | python3 -c 'import json,sys; print(json.load(sys.stdin)["GoMod"])')
staging_version=v0.${K8S_VERSION#1.}
for module in $(awk '$2 == "=>" && $3 ~ /^\.\/staging\// {print $1}' "$k8s_gomod"); do
    go mod edit -replace "$module=$module@$staging_version"
done
go mod edit -require "k8s.io/kubernetes@v$K8S_VERSION"
go get -tool "k8s.io/kubernetes/cmd/kube-apiserver@v$K8S_VERSION" "k8s.io/kubernetes/cmd/kubectl@v$K8S_VERSION" >&2
major=${K8S_VERSION%%.*}
minor=${K8S_VERSION#*.}; minor=${minor%%.*}
ldflags=""
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ldflags+=" -X $pkg.gitVersion=v$K8S_VERSION -X $pkg.gitMajor=$major -X $pkg.gitMinor=$minor"
    ldflags+=" -X $pkg.gitTreeState=clean"
done
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
helm_ldflags="-X helm.sh/helm/v3/internal/version.version=v$HELM_VERSION"
for pkg in helm.sh/helm/v3/pkg/chartutil helm.sh/helm/v3/pkg/lint/rules; do
    helm_ldflags+=" -X $pkg.k8sVersionMajor=$major -X $pkg.k8sVersionMinor=$minor"
done
GOBIN=$out go install -trimpath -ldflags "-s -w $helm_ldflags" "helm.sh/helm/v3/cmd/helm@v$HELM_VERSION"

"$out/kube-apiserver" --version >&2
"$out/etcd" --version | sed -n 1p >&2  # not head -1: etcd would die of SIGPIPE (exit 141), failing pipefail
"$out/helm" version --short >&2
rm -rf "$dest"
mv "$out" "$dest"
log "done: $dest"
echo "$dest"
