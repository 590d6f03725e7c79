#!/usr/bin/env bash
# Builds the images the realnode tier runs, with podman and no registry, and saves them as docker-archives for
# `ctr images import` (tests/k8s/real-node.sh up). Everything is cached outside the repo; an archive is rebuilt only
# when its inputs change, so a second run is a no-op of a few seconds. Prints the archive directory on its last line.
#
#   localhost/taskfleet:local                deploy/docker/Dockerfile, from the source tree
#   localhost/taskfleet-worker-example:local deploy/examples/worker on top of it
#   localhost/taskfleet-worker-test:local    tests/realnode/tasks.py on top of it (the real-pod tests' tasks)
#   registry.k8s.io/pause:3.10               a 1.4 MB static Go pause (the pod sandbox image)
#
# Archives: images.tar (the first three) and pause.tar, in a directory named by the digest of their inputs.
# The Dockerfile's base, python:3.12-slim-bookworm, is a local Debian bookworm rootfs (debootstrap --variant=minbase,
# Debian's Python 3.11) tagged under that name: nothing is pulled. pip in the build reaches PyPI (--network=host).
# podman's config and storage live under the cache (CONTAINERS_CONF, CONTAINERS_STORAGE_CONF), never /etc or
# /var/lib/containers; a flock makes two callers run one after the other. Needs root, apt's podman, buildah,
# debootstrap and runc (scripts/ensure-servers.sh, `make realnode-tools`), and Go for the pause binary.
# Measured: ~2 min cold (debootstrap ~55 s, pip ~40 s, saves), ~2 s when cached.
set -euo pipefail

SRC=$(cd "$(dirname "$0")/../.." && pwd)
W=${TASKFLEET_IMAGE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/taskfleet/images}
ARCHIVES=$W/archives
SUITE=bookworm
BASE_PACKAGES=python3,python3-venv,python-is-python3,ca-certificates
mkdir -p "$W/etc" "$ARCHIVES"
exec 9>"$W/.lock"
flock 9
started=$SECONDS
log() { echo "build-images: $* ($((SECONDS - started)) s)" >&2; }

# podman/buildah settings this kind of machine needs (see docs/operator.md, "Verified on real pods"):
cat >"$W/etc/storage.conf" <<EOF
[storage]
driver = "overlay"
graphroot = "$W/storage"
runroot = "$W/runroot"
EOF
cat >"$W/etc/containers.conf" <<'EOF'
[containers]
# Without CAP_SYS_RESOURCE, podman's default rlimits (nofile 1048576) above the hard limit make the OCI runtime fail.
default_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]
[engine]
# crun 1.8 refuses a hybrid cgroup layout (v1 plus a v2 mount listing controllers); runc does not.
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
EOF
export CONTAINERS_STORAGE_CONF=$W/etc/storage.conf CONTAINERS_CONF=$W/etc/containers.conf
# Container cgroups go under this parent (podman's default, /libpod_parent, outlives it); removed at exit.
cgroup_parent=/taskfleet-images
cleanup() {
    local h
    for h in /sys/fs/cgroup/*"$cgroup_parent"; do [[ -d $h ]] && find "$h" -depth -type d -exec rmdir {} + 2>/dev/null || true; done
    return 0
}
trap cleanup EXIT

hash_tree() { # PATH...: one digest of these files' names and contents (caches and bytecode left out)
    (cd "$SRC" && find "$@" -type f ! -path '*/__pycache__/*' ! -name '*.pyc' ! -path '*.egg-info/*' -print0 |
        LC_ALL=C sort -z | xargs -0 sha256sum | sha256sum | cut -c1-16)
}
fresh() { # NAME KEY: is OUT/NAME.tar built from these inputs?
    [[ -f $OUT/$1.tar && $(cat "$OUT/$1.key" 2>/dev/null) == "$2" ]]
}
OUT=$ARCHIVES
save() { # NAME KEY IMAGE...
    local name=$1 key=$2; shift 2
    rm -f "$OUT/.$name.tar"
    podman save -m --format docker-archive -o "$OUT/.$name.tar" "$@" 2>/dev/null
    mv -f "$OUT/.$name.tar" "$OUT/$name.tar"
    echo "$key" >"$OUT/$name.key"
    log "$* saved in $name.tar: $(du -h "$OUT/$name.tar" | cut -f1)"
}
ca_mount=()  # the host's CA bundle for RUN steps only (pip behind a TLS-intercepting proxy); not left in the image
[[ -f /etc/ssl/certs/ca-certificates.crt ]] && ca_mount=(-v /etc/ssl/certs/ca-certificates.crt:/etc/ssl/certs/ca-certificates.crt:ro)
build() { # TAG CONTEXT [podman build args...]
    local tag=$1 context=$2; shift 2
    podman build --pull=never --network=host --cgroup-parent="$cgroup_parent" "${ca_mount[@]}" "$@" -t "$tag" \
        "$context" >>"$W/build.log" 2>&1 || { tail -n 40 "$W/build.log" >&2; exit 1; }
}

# --- base: debootstrap, trimmed, imported, and tagged as the Dockerfile's FROM.
base_key=$(echo "$SUITE $BASE_PACKAGES v1" | sha256sum | cut -c1-16)
base=localhost/debian-python:$SUITE-$base_key
if ! podman image exists "$base"; then
    log "base image: debootstrap $SUITE ($BASE_PACKAGES)"
    rm -rf "$W/rootfs"
    debootstrap --variant=minbase --include="$BASE_PACKAGES" "$SUITE" "$W/rootfs" http://deb.debian.org/debian \
        >"$W/debootstrap.log" 2>&1 || { tail -n 40 "$W/debootstrap.log" >&2; exit 1; }
    rm -rf "$W"/rootfs/var/cache/apt/archives/*.deb "$W"/rootfs/var/lib/apt/lists/* "$W"/rootfs/usr/share/{doc,man,locale,info}/*
    tar -C "$W/rootfs" -c . | podman import --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        --change 'ENV LANG=C.UTF-8' --change 'CMD ["python3"]' - "$base" >/dev/null
    rm -rf "$W/rootfs"
    log "base image $base"
fi
podman tag "$base" docker.io/library/python:3.12-slim-bookworm

# --- the Taskfleet image and the two worker images on top of it, saved in one archive (`podman save -m`: their
# common layers once, ~330 MB instead of 3 x 330 MB, so containerd imports them in a third of the time).
tf_key=$base_key-$(hash_tree deploy/docker/Dockerfile pyproject.toml README.md sdk worker operator cli dashboard)
# The worker-test image uses the example's Dockerfile on tests/realnode, whose tasks.py it copies.
images_key=$tf_key-$(hash_tree deploy/examples/worker tests/realnode/tasks.py)
# One directory per source tree state: worktrees (or branches) with different sources each keep their own images.
set_dir=$ARCHIVES/$images_key
OUT=$set_dir
mkdir -p "$OUT"
touch "$OUT"
if ! fresh images "$images_key"; then
    log "localhost/taskfleet:local"
    build localhost/taskfleet:local "$SRC" -f "$SRC/deploy/docker/Dockerfile"
    podman run --rm --network=none --cgroup-parent="$cgroup_parent" localhost/taskfleet:local --version >&2
    log "localhost/taskfleet:local built: $(podman image inspect localhost/taskfleet:local --format '{{.Size}}') bytes"
    build localhost/taskfleet-worker-example:local "$SRC/deploy/examples/worker" \
        --build-arg TASKFLEET_IMAGE=localhost/taskfleet:local
    build localhost/taskfleet-worker-test:local "$SRC/tests/realnode" -f "$SRC/deploy/examples/worker/Dockerfile" \
        --build-arg TASKFLEET_IMAGE=localhost/taskfleet:local
    save images "$images_key" localhost/taskfleet:local localhost/taskfleet-worker-example:local \
        localhost/taskfleet-worker-test:local
fi

# --- the pod sandbox: a static Go binary that sleeps, reaps children and exits 0 on SIGTERM.
OUT=$ARCHIVES
pause_key=$(hash_tree tests/k8s/pause)
if ! fresh pause "$pause_key"; then
    mkdir -p "$W/pause/root"
    (cd "$SRC/tests/k8s/pause" && GOTOOLCHAIN=local CGO_ENABLED=0 go build -trimpath -ldflags '-s -w' -o "$W/pause/root/pause" .)
    tar -C "$W/pause/root" -c . | podman import --change 'ENTRYPOINT ["/pause"]' --change 'USER 65535:65535' - \
        registry.k8s.io/pause:3.10 >/dev/null
    save pause "$pause_key" registry.k8s.io/pause:3.10
fi
ln -f "$ARCHIVES/pause.tar" "$set_dir/pause.tar"
# Keep the four most recently used sets (~330 MB each).
ls -1dt "$ARCHIVES"/*/ | tail -n +5 | while read -r old; do rm -rf "$old"; done
log "archives in $set_dir"
echo "$set_dir"
