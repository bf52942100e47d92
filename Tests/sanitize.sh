#!/usr/bin/env bash
# The whole test suite built with AddressSanitizer, the `algogate` processes the tests start
# included: reads and writes outside what was allocated, in the gateway's code, its libraries'
# and the tests' own. Not part of CI (the sanitized build takes about six minutes here, the run
# three): run it after changing code that handles memory by hand (Unsafe pointers, C calls).
#
#   bash Tests/sanitize.sh
#
# Passes when no process reported a memory error. The suite's own results are printed but do
# not decide: under the sanitizer every call costs several times its CPU and memory, so tests of
# memory bounds and of timing fail there without anything being wrong. Builds into .build-asan,
# beside the usual .build.
set -euo pipefail
cd "$(dirname "$0")/.."
bash deploy/install-deps.sh
bash Tests/fetch-tools.sh
swift build --build-tests --scratch-path .build-asan --sanitize=address

reports=$(mktemp -d -t algogate-asan.XXXXXX)
output="$reports/suite.log"
trap 'rm -rf "$reports"' EXIT
# Every process writes its reports to a file of its own (asan.PID): those the tests start send
# their standard error to files the tests remove. Leaks are not looked for: Swift's runtime keeps
# some allocations for the life of the process. Swift's crash backtracer reads the stack in a way
# the sanitizer takes for an error, so it is off.
ASAN_OPTIONS="detect_leaks=0:log_path=$reports/asan" SWIFT_BACKTRACE=enable=no \
    timeout --kill-after=10 "${TEST_MINUTES:-20}m" swift test --skip-build --scratch-path .build-asan >"$output" 2>&1 || true
grep -E "^[✔✘] Test run" "$output" | tail -1 || echo "the suite did not finish: $(tail -3 "$output")"
found=("$reports"/asan.*)
if [ -e "${found[0]}" ]; then
    echo "=== AddressSanitizer: ${#found[@]} process(es) reported a memory error ==="
    for report in "${found[@]}"; do
        grep -E "^(==[0-9]+==ERROR|SUMMARY|    #[0-9]+ )" "$report" | head -40
        echo
    done
    exit 1
fi
echo "AddressSanitizer: no memory error in any process"
