#!/usr/bin/env bash
# Coverage-guided fuzzing of the gateway's parsers (libFuzzer, with AddressSanitizer): data paths
# and directory names, route paths and query options, algorithm inputs' data references, header
# values, compressed uploads. Not part of CI (the sanitized build of the whole stack takes about
# five minutes here); run it after changing a parser:
#
#   bash Tests/Fuzz/run.sh                  # each target for FUZZ_SECONDS (60)
#   FUZZ_SECONDS=600 bash Tests/Fuzz/run.sh data-path input
#
# A finding stops its target and leaves the input that caused it in Tests/Fuzz/findings/; turn it
# into a test in Tests/AlgoGateTests before fixing it. Corpora grow in Tests/Fuzz/corpus/ (not
# committed), seeded from Tests/Fuzz/seeds/.
set -euo pipefail
cd "$(dirname "$0")"
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(data-path route input headers inflate)
swift build --product AlgoGateFuzz -Xswiftc -sanitize=fuzzer,address -Xswiftc -enable-testing -Xswiftc -parse-as-library
binary="$(swift build --show-bin-path)/AlgoGateFuzz"
mkdir -p findings
status=0
for target in "${targets[@]}"; do
    mkdir -p "corpus/$target"
    seeds=()
    [ -d "seeds/$target" ] && seeds=("seeds/$target")
    echo "== $target, ${FUZZ_SECONDS:-60} s"
    # Swift's own crash backtracer reads the stack in a way AddressSanitizer reports as an error.
    SWIFT_BACKTRACE=enable=no ALGOGATE_FUZZ="$target" "$binary" "corpus/$target" "${seeds[@]}" -max_total_time="${FUZZ_SECONDS:-60}" \
        -max_len=4096 -timeout=10 -rss_limit_mb=4096 -artifact_prefix="findings/$target-" -print_final_stats=1 || status=1
done
exit $status
