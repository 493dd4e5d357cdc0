#!/usr/bin/env bash
# deps.sh: install the Debian packages indexwire's tests and demo need
# (real Cyrus 3.6, FUSE 3) and download the Go modules. Idempotent; run as root.
set -euo pipefail
pkgs=(cyrus-imapd cyrus-clients cyrus-admin cyrus-replication sasl2-bin fuse3 tcpdump)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  echo "deps: installing ${missing[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  # Debian starts the system-wide Cyrus on install; indexwire runs its own instances.
  if command -v systemctl >/dev/null 2>&1; then systemctl stop cyrus-imapd 2>/dev/null || true; fi
fi
go mod download
