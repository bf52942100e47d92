#!/usr/bin/env bash
# What the hot tier holds in memory against `cache.memory_bytes`. Release build, loopback only.
# For each input size in SIZES, a gateway with the tier off (`memory_bytes: 0`, what the rest of
# the gateway grows by: SQLite's caches, the allocator's arenas) and one with the tier's bound at
# BOUND bytes; each takes FILL of calls with inputs all different (Benchmarks/hottier.lua: each a
# miss, stored in SQLite and in the tier), enough to fill the tier several times over. Prints the
# gateway's resident memory before and after, the entries stored, and the growth beyond the
# tier-off run's against the bound. Small answers show the tier's per-entry costs; 2 kB ones,
# a stored gzip copy (a slice of zlib's worst-case buffer). The cache's SQLite file is bounded at
# MAX_BYTES (`cache.max_bytes`) and the fill goes well past it: its size after the fill (the main
# file and its WAL) is printed against the bound too.
# Env: SIZES="100 2000" BOUND=8388608 FILL=40s MAX_BYTES=16777216
set -euo pipefail
cd "$(dirname "$0")/.."
SIZES="${SIZES:-100 2000}"; BOUND="${BOUND:-8388608}"; FILL="${FILL:-40s}"; MAX_BYTES="${MAX_BYTES:-16777216}"
source Benchmarks/lib.sh
rss_now() { awk '/^VmRSS:/{printf "%d", $2/1024}' "/proc/$1/status"; }

echo "hot tier: $FILL of misses with distinct inputs per size, the tier off and at $BOUND bytes ($((BOUND >> 20)) MiB)"
echo "| input bytes | answer bytes | cache.memory_bytes | entries stored | gateway RSS before MiB | after MiB | growth MiB | growth beyond the tier-off run, against the bound | SQLite file MiB | file / cache.max_bytes ($((MAX_BYTES >> 20)) MiB) |"
echo "|---|---|---|---|---|---|---|---|---|---|"
for size in $SIZES; do
  base=""
  for bound in 0 "$BOUND"; do
    CACHE_OPTIONS="memory_bytes: $bound, max_bytes: $MAX_BYTES" start_pair
    url="http://127.0.0.1:$GW_PORT/v1/algo/util/Echo/1.0.0"
    answer=$(curl -s -H "Authorization: Simple $CLIENT_KEY" -H 'Content-Type: application/json' \
      -d "\"0-0-$(head -c "$size" /dev/zero | tr '\0' x)\"" "$url" | wc -c)
    before=$(rss_now "$GW_PID")
    BENCH_AUTH="Simple $CLIENT_KEY" BENCH_INPUT_BYTES="$size" wrk -t2 -c16 -d"$FILL" -s Benchmarks/hottier.lua "$url" >"$WORK/wrk.log"
    sleep 2   # the last stores and a flush
    after=$(rss_now "$GW_PID")
    entries=$("$BIN" cache stats --config "$WORK/gateway.yaml" | awk '/^entries:/{print $2}')
    file=$(cat "$WORK"/cache.sqlite "$WORK"/cache.sqlite-wal 2>/dev/null | wc -c)
    growth=$((after - before))
    base=${base:-$growth}
    awk -v s="$size" -v a="$answer" -v m="$bound" -v e="$entries" -v b="$before" -v f="$after" -v g="$growth" -v base="$base" \
      -v file="$file" -v max="$MAX_BYTES" \
      'BEGIN{printf "| %d | %d | %d | %d | %d | %d | %d | %s | %.1f | %.2f |\n", s, a, m, e, b, f, g,
             m == 0 ? "-" : sprintf("%.2f", (g - base) * 1048576 / m), file / 1048576, file / max}'
    kill "$GW_PID" "$SIM_PID" 2>/dev/null || true
    wait "$GW_PID" "$SIM_PID" 2>/dev/null || true
    rm -rf "$WORK"/cache.sqlite* "$WORK/data"
  done
done
