#!/usr/bin/env bash
# The test command (README, .ci/run): installs the Debian packages the build needs when missing,
# builds, runs the Swift test suites, then the official Python client's flows (Tests/ClientCompat).
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
for package in libsqlite3-dev zlib1g-dev curl; do
  dpkg -s "$package" >/dev/null 2>&1 || missing+=("$package")
done
python3 -m venv --help >/dev/null 2>&1 || missing+=(python3-venv)
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing: ${missing[*]}"
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
fi

swift build --build-tests
swift test --skip-build
bash Tests/ClientCompat/run.sh
