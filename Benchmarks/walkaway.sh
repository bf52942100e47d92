#!/usr/bin/env bash
# Clients that walk away from algorithm calls under way, and the account's concurrency. Release
# build, loopback only. The simulator holds every call DELAY ms (default 100) and counts the most
# calls it had at once. 160 connections call an unpinned algorithm through the gateway for a
# while, then go at once (wrk's end closes them, with 80 calls upstream and 80 queued), and 160
# new ones start at once. With `upstream.abandoned_calls: cancel` the gateway closes the 80
# upstream calls and gives their slots to the new ones while the simulator, which does not stop
# an algorithm whose caller went, still runs the old ones; with `finish` (the default) the slots
# stay taken until those calls end. Printed: for each, the most calls at the simulator at once
# (`upstream.max_concurrency` is 80), and the new connections' rate and p50.
# Env: DELAY=100 DURATION=3s ROUNDS=3 THREADS=2
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION="${DURATION:-3s}"
source Benchmarks/lib.sh
DELAY="${DELAY:-100}"
ROUNDS="${ROUNDS:-3}"
PATH_UNDER_TEST=/v1/algo/util/Echo   # unpinned: never cached

ROWS=()
for mode in cancel finish; do
  SIM_OPTIONS="--fault delay=$DELAY" UPSTREAM_OPTIONS="abandoned_calls: $mode" start_pair
  peaks=()
  for ((round = 1; round <= ROUNDS; round++)); do
    sleep "$(awk -v d="$DELAY" 'BEGIN{print d / 1000 + 0.5}')"   # the round before's calls have ended
    curl -s -o /dev/null -X POST "http://127.0.0.1:$SIM_PORT/__sim/reset"
    BENCH_AUTH="Simple $CLIENT_KEY" wrk -t"$THREADS" -c160 -d"$DURATION" -s Benchmarks/post.lua "http://127.0.0.1:$GW_PORT$PATH_UNDER_TEST" >/dev/null
    BENCH_AUTH="Simple $CLIENT_KEY" wrk -t"$THREADS" -c160 -d"$DURATION" --latency -s Benchmarks/post.lua "http://127.0.0.1:$GW_PORT$PATH_UNDER_TEST" >"$WORK/second.txt"
    peaks+=("$(curl -s "http://127.0.0.1:$SIM_PORT/__sim/stats" | python3 -c 'import json,sys; print(json.load(sys.stdin)["peakConcurrency"])')")
    rps=$(awk '/^Requests\/sec:/{print $2}' "$WORK/second.txt"); p50=$(to_ms "$(awk '$1=="50%"{print $2}' "$WORK/second.txt")")
  done
  ROWS+=("| $mode | ${peaks[*]} | $rps | $p50 |")
  for p in "$GW_PID" "$SIM_PID"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
  rm -rf "$WORK"/cache.sqlite* "$WORK/data"
done

echo "160 connections through the gateway for $DURATION, gone at once, then 160 new ones for $DURATION; the simulator holds each call $DELAY ms; max_concurrency 80"
echo "| upstream.abandoned_calls | most calls at the simulator at once, each round | second run rps (last round) | p50 ms |"
echo "|---|---|---|---|"
printf '%s\n' "${ROWS[@]}"
