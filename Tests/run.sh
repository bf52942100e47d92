#!/usr/bin/env bash
# The test command (README, .ci/run): installs the Debian packages the build needs when missing,
# builds, runs the Swift test suites, then the official Python client's flows (Tests/ClientCompat).
set -euo pipefail
cd "$(dirname "$0")/.."
bash deploy/install-deps.sh
swift build --build-tests
swift test --skip-build
bash Tests/ClientCompat/run.sh
