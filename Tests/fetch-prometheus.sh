#!/usr/bin/env bash
# promtool and prometheus for MonitoringTests (the alert rules' unit tests, and the Grafana
# dashboard's queries run against a live gateway's metrics): Debian's prometheus package, unpacked
# into .build/tools/prometheus. Not installed: no service starts, nothing lands outside the tree.
set -euo pipefail
cd "$(dirname "$0")/.."
dir=.build/tools/prometheus
if [ -x "$dir/promtool" ] && [ -x "$dir/prometheus" ]; then exit 0; fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
chmod 777 "$work"  # apt-get download writes as _apt where it can
fetch() { (cd "$work" && apt-get download -qq prometheus 2>/dev/null); }
if ! fetch; then
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  fetch
fi
mkdir -p "$dir"
dpkg-deb --fsys-tarfile "$work"/prometheus_*.deb | tar -x -C "$work" ./usr/bin/promtool ./usr/bin/prometheus
mv "$work/usr/bin/promtool" "$work/usr/bin/prometheus" "$dir/"
"$dir/promtool" --version | head -1
