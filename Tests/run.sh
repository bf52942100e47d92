#!/usr/bin/env bash
# The test command (README, .ci/run): installs the Debian packages the build needs when missing,
# fetches the tools some tests run (Tests/fetch-tools.sh), builds, runs the Swift test suites,
# then the systemd units under systemd (Tests/systemd-runtime.sh), then the official Python
# client's flows (Tests/ClientCompat).
set -euo pipefail
cd "$(dirname "$0")/.."
bash deploy/install-deps.sh
bash Tests/fetch-tools.sh
swift build --build-tests

# The suites print as they go; when one fails, its issues are printed again at the end, where
# a CI log cut to its tail still shows them.
output=$(mktemp -t algogate-tests.XXXXXX)
trap 'rm -f "$output"' EXIT
status=0
# A crash prints the crashed thread alone, with its source lines: the idle threads of a run
# that crashed tell nothing and would push the one that did out of a log cut to its tail.
# A watchdog: the suite takes 1 to 4 minutes. Once in many runs (seen 2026-12-04, gdb: every
# thread idle, no socket open, so a task awaiting a resumption that never comes) it hangs;
# rather than run into CI's time limit, it is stopped after TEST_MINUTES, the tests running
# then are named, and the suite is run once more. A second hang, or any failure, fails.
# At most TEST_WIDTH (12) tests at once: all 450 at once, on a host that ran every server at
# half its usual speed (2026-12-07), each whole run failed one to nine timing-bound tests that
# pass alone (a test waiting tens of seconds for its turn on the two threads); twelve at a time,
# the runs passed, in the same wall time.
run_suite() {
    SWIFT_BACKTRACE=enable=yes,interactive=no,threads=crashed,images=none \
        timeout --kill-after=10 "${TEST_MINUTES:-10}m" swift test --skip-build \
        --experimental-maximum-parallelization-width "${TEST_WIDTH:-12}" 2>&1 | tee "$output" || status=$?
    pkill -f 'algogatePackageTests.xctest' 2>/dev/null || true
}
# Tests started and not ended. A parametrized test's cases print no end line of their own: they
# are named by their test ("case passing ... to T" is T), which ends "T with N test cases passed".
running_tests() {
    comm -23 <(sed -n 's/^◇ Test \(.*\) started\.$/\1/p' "$output" | sed -E 's/^case passing .* to ([^ ]+)$/\1/' | grep -v -x run | sort -u) \
             <(sed -n -E 's/^[✔✘] Test (.*) (passed|failed).*/\1/p' "$output" | sed -E 's/ with [0-9]+ test cases?$//' | sort -u) | head -50 || true
}
run_suite
if [ "$status" -eq 124 ] || [ "$status" -eq 137 ]; then
    echo
    echo "=== swift test hung: stopped after ${TEST_MINUTES:-10} minutes; running then (some may have finished, their lines unflushed): ==="
    running_tests | sed 's/^/  /'
    echo "=== running the suite once more ==="
    status=0
    run_suite
fi
if [ "$status" -ne 0 ]; then
    echo
    echo "=== swift test failed (exit $status); its issues, again ==="
    awk '/^✘/ { print; keep = /recorded an issue/; next }
         keep && /^↳/ { print; next }
         { keep = 0 }
         /[Ff]atal error|unexpected signal|^error: / { print }' "$output" | head -200 || true
    # After a crash: where, and which tests were running then.
    awk '/^\*\*\* Program crashed/ { crash = 1 } crash { print } /^Backtrace took/ { crash = 0 }' "$output" | head -80 || true
    running_tests | sed 's/^/running when the suite stopped: /'
    exit "$status"
fi

# The systemd units, run by systemd in a container (root only; skipped, saying why, elsewhere).
timeout --kill-after=10 300 bash Tests/systemd-runtime.sh

bash Tests/ClientCompat/run.sh
