#!/usr/bin/env bash
# Algorithm answers held in memory at once (`limits.max_buffered_answer_bytes`). Release build,
# loopback only: CALLS clients at once ask `test/Big` for ANSWER_BYTES each and read their answers
# slowly (curl --limit-rate RATE), so that each answer stays in the gateway while it is sent, as
# with clients on slow links. Run twice, with the bound at BOUND bytes and with it out of the way
# (4 GiB); prints the gateway's peak resident memory, the answers by status and the slowest call,
# both ways.
# Env: CALLS=40 ANSWER_BYTES=8000000 RATE=4M BOUND=67108864
set -euo pipefail
cd "$(dirname "$0")/.."
CALLS="${CALLS:-40}"; ANSWER_BYTES="${ANSWER_BYTES:-8000000}"; RATE="${RATE:-4M}"; BOUND="${BOUND:-67108864}"
source Benchmarks/lib.sh

# answers NAME BOUND: one pair with that bound, CALLS slow clients at once; prints a table row.
answers() {
  start_pair "limits: {max_buffered_answer_bytes: $2}"
  local before pids=() i
  before=$(awk '/^VmRSS:/{printf "%d", $2/1024}' "/proc/$GW_PID/status")
  for ((i = 0; i < CALLS; i++)); do
    curl -s -o /dev/null -w '%{http_code} %{time_total}\n' --limit-rate "$RATE" -H "Authorization: Simple $CLIENT_KEY" \
      -H 'Content-Type: text/plain' -d "$ANSWER_BYTES" "http://127.0.0.1:$GW_PORT/v1/algo/test/Big" >>"$WORK/$1.log" & pids+=($!)
  done
  wait "${pids[@]}"
  local statuses slowest
  statuses=$(awk '{print $1}' "$WORK/$1.log" | sort | uniq -c | awk '{printf "%s%s x%s", sep, $2, $1; sep=", "}')
  slowest=$(awk 'BEGIN{m=0} {if ($2 > m) m = $2} END{printf "%.1f", m}' "$WORK/$1.log")
  echo "| $1 | $((CALLS * ANSWER_BYTES >> 20)) | $before | $(rss_mib "$GW_PID") | $statuses | $slowest |"
  kill "$GW_PID" "$SIM_PID" 2>/dev/null || true
}

echo "answers: $CALLS calls at once, $ANSWER_BYTES-byte answers (test/Big, sent gzip by the simulator), each client reading at $RATE/s"
echo "| limits.max_buffered_answer_bytes | answers in all MiB | gateway RSS before MiB | peak RSS MiB | statuses | slowest call s |"
echo "|---|---|---|---|---|---|"
answers "$BOUND" "$BOUND"
answers "4294967296 (out of the way)" 4294967296
