#!/usr/bin/env bash
# Sets up and runs the demo: installs what the build needs, builds, and starts `algogate demo`
# (the gateway on 127.0.0.1:8080 in front of the simulator on 127.0.0.1:9000). Ctrl-C stops it.
set -euo pipefail
cd "$(dirname "$0")/.."
bash deploy/install-deps.sh
swift build --product algogate
exec .build/debug/algogate demo "$@"
