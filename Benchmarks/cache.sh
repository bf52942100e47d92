#!/usr/bin/env bash
# Cache benchmark. Release build, loopback only, wrk with keep-alive connections, 100,000 entries
# stored: requests/s and p50/p99 of cache hits beside pass-through (the same call unpinned, so
# never cached), side by side in one run. Targets: hits >= 5x the pass-through rate, hit p99 < 2 ms
# at 64 connections.
# Env: DURATION=10s CONNS=64 THREADS=2 RUNS=3 ENTRIES=100000
set -euo pipefail
cd "$(dirname "$0")/.."
source Benchmarks/lib.sh
ENTRIES="${ENTRIES:-100000}"
start_pair

# Fill the cache file with ENTRIES entries (300-byte answers) beside the one the benchmark hits.
python3 - "$WORK/cache.sqlite" "$ENTRIES" <<'PY'
import os, sqlite3, sys, time
db = sqlite3.connect(sys.argv[1], timeout=30)
now = time.time()
body = b'{"result":"' + b"x" * 270 + b'","metadata":{"content_type":"text","duration":0.001}}'
rows = ((os.urandom(32).hex(), "bench/Filler/1.0.0", 200, "application/json", "identity", body, len(body), "0" * 64,
         now, now + 86400, now - i, 0) for i in range(int(sys.argv[2])))
db.executemany("INSERT INTO cache_entry VALUES (?,?,?,?,?,?,?,?,?,?,?,?)", rows)
db.commit()
print("stored entries:", db.execute("SELECT entries FROM cache_totals").fetchone()[0], file=sys.stderr)
PY
PINNED="http://127.0.0.1:$GW_PORT/v1/algo/util/Echo/1.0.0"
UNPINNED="http://127.0.0.1:$GW_PORT/v1/algo/util/Echo"
BODY='{"input":"Hello HAL","n":9000}'
curl -s -o /dev/null -H "Authorization: Simple $CLIENT_KEY" -H 'Content-Type: application/json' -d "$BODY" "$PINNED"
STATUS=$(curl -s -D - -o /dev/null -H "Authorization: Simple $CLIENT_KEY" -H 'Content-Type: application/json' -d "$BODY" "$PINNED" | tr -d '\r' | awk -F': ' 'tolower($1)=="x-cache"{print $2}')
[ "$STATUS" = "HIT" ] || { echo "priming failed: X-Cache=$STATUS" >&2; exit 1; }

read -r P_RPS P_P50 P_P99 P_ERR <<<"$(measure passthrough "$UNPINNED" "Simple $CLIENT_KEY")"
read -r H_RPS H_P50 H_P99 H_ERR <<<"$(measure hits "$PINNED" "Simple $CLIENT_KEY")"
echo "cache: wrk -t$THREADS -c$CONNS -d$DURATION, 30-byte JSON POST, median of $RUNS, $ENTRIES entries stored, $(nproc) cores shared by wrk, gateway and simulator"
echo "| target | rps | p50 ms | p99 ms | errors |"
echo "|---|---|---|---|---|"
echo "| pass-through (unpinned, never cached) | $P_RPS | $P_P50 | $P_P99 | $P_ERR |"
echo "| cache hits (pinned) | $H_RPS | $H_P50 | $H_P99 | $H_ERR |"
awk -v h="$H_RPS" -v p="$P_RPS" -v hp="$H_P99" 'BEGIN {
  printf "hits/pass-through rps: %.1fx (target >= 5x); hit p99: %.3f ms (target < 2 ms)\n", h/p, hp }'
echo "gateway peak RSS: $(rss_mib $GW_PID) MiB"
