#!/usr/bin/env bash
# The test command (README, .ci/run): installs the Debian packages the build needs when missing,
# builds, runs the Swift test suites, then the official Python client's flows (Tests/ClientCompat).
set -euo pipefail
cd "$(dirname "$0")/.."
bash deploy/install-deps.sh
swift build --build-tests

# The suites print as they go; when one fails, its issues are printed again at the end, where
# a CI log cut to its tail still shows them.
output=$(mktemp -t algogate-tests.XXXXXX)
trap 'rm -f "$output"' EXIT
status=0
# A crash prints the crashed thread alone, with its source lines: the idle threads of a run
# that crashed tell nothing and would push the one that did out of a log cut to its tail.
SWIFT_BACKTRACE=enable=yes,interactive=no,threads=crashed,images=none \
    swift test --skip-build 2>&1 | tee "$output" || status=$?
if [ "$status" -ne 0 ]; then
    echo
    echo "=== swift test failed (exit $status); its issues, again ==="
    awk '/^✘/ { print; keep = /recorded an issue/; next }
         keep && /^↳/ { print; next }
         { keep = 0 }
         /[Ff]atal error|unexpected signal|^error: / { print }' "$output" | head -200 || true
    # After a crash: where, and which tests were running then.
    awk '/^\*\*\* Program crashed/ { crash = 1 } crash { print } /^Backtrace took/ { crash = 0 }' "$output" | head -80 || true
    comm -23 <(sed -n 's/^◇ Test \(.*\) started\.$/\1/p' "$output" | sort -u) \
             <(sed -n -E 's/^[✔✘] Test (.*) (passed|failed).*/\1/p' "$output" | sort -u) \
        | sed 's/^/running when the suite stopped: /' | head -50 || true
    exit "$status"
fi

bash Tests/ClientCompat/run.sh
