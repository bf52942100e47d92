#!/usr/bin/env bash
# Large bodies beside small calls. Release build, loopback only: cache hits on keep-alive
# connections, paced (each connection waits between calls), measured alone and then while
# BIG_CLIENTS clients keep sending large algorithm calls (a BIG_BYTES JSON input, fresh each time,
# so each is a miss that is forwarded, inflated, checked, stored gzip-compressed and sent gzip to
# the client). Work on whole large bodies runs on a thread pool rather than on the event loops
# (`BodyWork`): the hits' p99 beside the large calls says whether the loops stay free.
# Env: DURATION=10s CONNS=16 THREADS=1 RUNS=3 PACE_MS=8 BIG_CLIENTS=2 BIG_BYTES=4000000
set -euo pipefail
cd "$(dirname "$0")/.."
CONNS="${CONNS:-16}"; THREADS="${THREADS:-1}"; PACE_MS="${PACE_MS:-8}"
BIG_CLIENTS="${BIG_CLIENTS:-2}"; BIG_BYTES="${BIG_BYTES:-4000000}"
source Benchmarks/lib.sh
start_pair
URL="http://127.0.0.1:$GW_PORT/v1/algo/util/Echo/1.0.0"
AUTH="Authorization: Simple $CLIENT_KEY"
curl -sf -o /dev/null -H "$AUTH" -H 'Content-Type: application/json' -d '{"input":"Hello HAL","n":9000}' "$URL"

# A JSON document of words and numbers (compresses about 3:1, as text does), BIG_BYTES long.
python3 - "$WORK/big.json" "$BIG_BYTES" <<'PY'
import json, random, sys
words = ["alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta"]
parts, size = [], 0
while size < int(sys.argv[2]) - 20:
    word = random.choice(words) + str(random.randint(0, 99999))
    parts.append(word); size += len(word) + 1
open(sys.argv[1], "w").write(json.dumps({"doc": " ".join(parts)}))
PY
# big N: calls with a fresh input each (a miss every time) until $WORK/run goes; "status seconds" lines.
big() {
  local n=0
  while [ -f "$WORK/run" ]; do
    n=$((n + 1))
    sed "s/^{/{\"n\":\"$1-$n\",/" "$WORK/big.json" |
      curl -s -o /dev/null -w '%{http_code} %{time_total}\n' -H "$AUTH" -H 'Content-Type: application/json' \
        -H 'Accept-Encoding: gzip' --data-binary @- "$URL" >>"$WORK/big.log"
  done
}

read -r A_RPS A_P50 A_P99 A_ERR <<<"$(CPU_PIDS=$GW_PID BENCH_DELAY_MS=$PACE_MS measure hits-alone "$URL" "Simple $CLIENT_KEY")"
touch "$WORK/run"; BIG_PIDS=()
for j in $(seq "$BIG_CLIENTS"); do big "$j" & BIG_PIDS+=($!); done
read -r B_RPS B_P50 B_P99 B_ERR <<<"$(BENCH_DELAY_MS=$PACE_MS measure hits-beside-large "$URL" "Simple $CLIENT_KEY")"
rm -f "$WORK/run"; wait "${BIG_PIDS[@]}"

echo "large bodies: wrk -t$THREADS -c$CONNS -d$DURATION, each connection pausing $PACE_MS ms between calls, median of $RUNS; beside them $BIG_CLIENTS clients sending $(stat -c %s "$WORK/big.json")-byte JSON inputs (a miss each: forwarded, stored, sent gzip); $(nproc) cores shared by wrk, curl, gateway and simulator"
echo "| hits | rps | p50 ms | p99 ms | errors |"
echo "|---|---|---|---|---|"
echo "| alone | $A_RPS | $A_P50 | $A_P99 | $A_ERR |"
echo "| beside the large calls | $B_RPS | $B_P50 | $B_P99 | $B_ERR |"
awk '{n++; s+=$2; if ($1 != 200) bad++} END{printf "large calls: %d answered, %d not 200, %.2f s each on average\n", n, bad, s/n}' "$WORK/big.log"
steal_summary
