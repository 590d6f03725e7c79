#!/usr/bin/env bash
# Make sure the broker server binaries (and the browser) that integration tests need are installed.
#
# It never starts a server: each test session starts private ones on free loopback ports and stops them. Missing
# binaries are installed from Debian's packages when we are root. Otherwise it says what is missing and fails only
# in CI (CI=true), where an integration test must not quietly skip; on a laptop those tests skip instead.
#
# Usage: scripts/ensure-servers.sh [PACKAGE:BINARY ...]   (default: the SERVERS list below)
set -euo pipefail

# Debian package -> the binary it provides.
SERVERS=(
  "redis-server:redis-server"
  "rabbitmq-server:rabbitmq-server"
  # The dashboard's browser tests (tests/browser): headless Chromium, and nginx as the reverse proxy in front of
  # the dashboard's path prefix.
  "chromium:chromium"
  "nginx:nginx"
)

if (($# > 0)); then
  SERVERS=("$@")
fi

# rabbitmq-server lives in /usr/sbin, which is often not on a non-root PATH.
has_binary() {
  command -v "$1" >/dev/null 2>&1 || [[ -x "/usr/sbin/$1" || -x "/sbin/$1" ]]
}

missing_pkgs=()
missing_bins=()
for entry in "${SERVERS[@]}"; do
  pkg=${entry%%:*}
  bin=${entry#*:}
  if [[ -z "$pkg" || -z "$bin" || "$entry" != *:* ]]; then
    echo "ensure-servers: bad entry '$entry' (want PACKAGE:BINARY)" >&2
    exit 2
  fi
  if has_binary "$bin"; then
    echo "ensure-servers: $bin found"
  else
    missing_pkgs+=("$pkg")
    missing_bins+=("$bin")
  fi
done

if ((${#missing_pkgs[@]} == 0)); then
  exit 0
fi

if [[ "$(id -u)" -ne 0 ]] || ! command -v apt-get >/dev/null 2>&1; then
  {
    echo "ensure-servers: missing ${missing_bins[*]}; integration tests that need them will skip."
    echo "ensure-servers: install them with: sudo apt-get install ${missing_pkgs[*]}"
  } >&2
  if [[ "${CI:-}" == "true" ]]; then
    echo "ensure-servers: CI=true and cannot install (need root and apt-get): failing" >&2
    exit 1
  fi
  exit 0
fi

# Debian's maintainer scripts start the packaged service on install; a policy-rc.d answering 101 ("action not
# allowed") stops that, so nothing listens on the default ports. Only when the machine has no policy of its own.
policy=/usr/sbin/policy-rc.d
if [[ ! -e "$policy" ]]; then
  printf '#!/bin/sh\nexit 101\n' >"$policy"
  chmod 755 "$policy"
  trap 'rm -f "$policy"' EXIT
fi

echo "ensure-servers: installing ${missing_pkgs[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get -o DPkg::Lock::Timeout=600 update -qq
apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends "${missing_pkgs[@]}"

for bin in "${missing_bins[@]}"; do
  if ! has_binary "$bin"; then
    echo "ensure-servers: $bin still missing after apt-get install" >&2
    exit 1
  fi
  echo "ensure-servers: $bin installed"
done
