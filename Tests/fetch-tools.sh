#!/usr/bin/env bash
# The tools some tests run, into .build/tools (nothing lands outside the tree):
# - promtool and prometheus (MonitoringTests: the alert rules' unit tests, and the Grafana
#   dashboard's queries run against a live gateway's metrics): Debian's prometheus package,
#   unpacked, not installed, so no service starts;
# - schemathesis (OpenAPITests: deploy/openapi.yaml against a live gateway), from PyPI, in a venv;
# - kubernetes-validate (DeployTests: deploy/kubernetes against Kubernetes' own schemas, which it
#   carries), from PyPI, in a venv.
set -euo pipefail
cd "$(dirname "$0")/.."
tools=.build/tools
mkdir -p "$tools"

if ! [ -x "$tools/prometheus/promtool" ] || ! [ -x "$tools/prometheus/prometheus" ]; then
  work=$(mktemp -d)
  trap 'rm -rf "$work"' EXIT
  chmod 777 "$work"  # apt-get download writes as _apt where it can
  # Debian 13 puts promtool in a package of its own; Debian 12's prometheus package holds both.
  fetch() {
    (cd "$work" && apt-get download -qq prometheus 2>/dev/null) || return 1
    if apt-cache show promtool >/dev/null 2>&1; then (cd "$work" && apt-get download -qq promtool 2>/dev/null) || return 1; fi
  }
  if ! fetch; then
    SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    $SUDO apt-get update -qq
    fetch
  fi
  mkdir -p "$tools/prometheus"
  for deb in "$work"/*.deb; do
    dpkg-deb --fsys-tarfile "$deb" | tar -x -C "$work" --wildcards './usr/bin/prom*' 2>/dev/null || true
  done
  [ -x "$work/usr/bin/promtool" ] && [ -x "$work/usr/bin/prometheus" ] \
    || { echo "fetch-tools.sh: promtool or prometheus not in Debian's packages prometheus and promtool" >&2; exit 1; }
  mv "$work/usr/bin/promtool" "$work/usr/bin/prometheus" "$tools/prometheus/"
  "$tools/prometheus/promtool" --version | head -1
fi

# pypi_tool NAME VERSION: the PyPI package NAME at VERSION in a venv of its own, .build/tools/NAME,
# whose command NAME must say that version; made again when it does not.
pypi_tool() {
  if ! "$tools/$1/bin/$1" --version 2>/dev/null | grep -q "$2"; then
    rm -rf "${tools:?}/$1"
    python3 -m venv "$tools/$1"
    "$tools/$1/bin/pip" install -q --disable-pip-version-check "$1==$2"
    "$tools/$1/bin/$1" --version
  fi
}
pypi_tool schemathesis 4.32.5
pypi_tool kubernetes-validate 1.37.0
