#!/usr/bin/env bash
# Installs the Debian packages algogate's build and scripts need, when missing:
# libsqlite3-dev and zlib1g-dev (linked by the build), curl, iproute2 (ss, which a test reads the
# listen backlog with), openssl (tests make throwaway certificates for HTTPS), bindfs (a test mounts
# a FUSE filesystem under the state file) and python3-venv (client flows).
set -euo pipefail
missing=()
for package in libsqlite3-dev zlib1g-dev curl iproute2 openssl bindfs; do
  dpkg -s "$package" >/dev/null 2>&1 || missing+=("$package")
done
python3 -m venv --help >/dev/null 2>&1 || missing+=(python3-venv)
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing: ${missing[*]}"
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
fi
