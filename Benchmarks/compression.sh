#!/usr/bin/env bash
# Compression benchmark. Release build, loopback only.
# 1. A 5 MB JSON algorithm result (test/Big), fetched with and without Accept-Encoding: gzip:
#    bytes on the wire and time, as a cache miss (upstream call + compression) and as a cache hit.
# 2. gzip cache hits served from the stored gzip bytes, beside the same hits for a client that
#    prefers deflate, which the gateway must compress anew on every hit: requests/s, wrk, keep-alive.
# Env: DURATION=10s CONNS=64 THREADS=2 RUNS=3 REPEAT=9 HIT_BYTES=100000
set -euo pipefail
cd "$(dirname "$0")/.."
source Benchmarks/lib.sh
REPEAT="${REPEAT:-9}"; HIT_BYTES="${HIT_BYTES:-100000}"
start_pair
URL="http://127.0.0.1:$GW_PORT/v1/algo/test/Big/1.0.0"
AUTH="Authorization: Simple $CLIENT_KEY"

fetch() { # extra-curl-args... -> "bytes seconds"
  curl -s -o /dev/null -w '%{size_download} %{time_total}\n' -H "$AUTH" -H 'Content-Type: application/json' -d 5000000 "$@" "$URL"
}
median_of() { # command... run REPEAT times -> median bytes, median seconds
  local sizes=() times=() line
  for _ in $(seq "$REPEAT"); do line=$("$@"); sizes+=("${line% *}"); times+=("${line#* }"); done
  echo "$(median "${sizes[@]}") $(median "${times[@]}")"
}
read -r MP_B MP_T <<<"$(median_of fetch -H 'Cache-Control: no-cache')"
read -r MG_B MG_T <<<"$(median_of fetch -H 'Cache-Control: no-cache' -H 'Accept-Encoding: gzip')"
read -r HP_B HP_T <<<"$(median_of fetch)"
read -r HG_B HG_T <<<"$(median_of fetch -H 'Accept-Encoding: gzip')"
ms() { awk -v s="$1" 'BEGIN { printf "%.1f", s * 1000 }'; }
echo "5 MB JSON result (test/Big 5000000), median of $REPEAT, curl on loopback:"
echo "| request | bytes on the wire | time ms |"
echo "|---|---|---|"
echo "| miss, identity | $MP_B | $(ms "$MP_T") |"
echo "| miss, gzip | $MG_B | $(ms "$MG_T") |"
echo "| hit, identity | $HP_B | $(ms "$HP_T") |"
echo "| hit, gzip (stored bytes) | $HG_B | $(ms "$HG_T") |"
awk -v p="$HP_B" -v g="$HG_B" 'BEGIN { printf "gzip sends %.1f%% of the bytes\n", 100 * g / p }'

BODY="$HIT_BYTES"
curl -s -o /dev/null -H "$AUTH" -H 'Content-Type: application/json' -d "$BODY" "$URL"   # store it
read -r S_RPS S_P50 S_P99 S_ERR <<<"$(BENCH_BODY="$BODY" measure stored "$URL" "Simple $CLIENT_KEY" -H 'Accept-Encoding: gzip')"
read -r R_RPS R_P50 R_P99 R_ERR <<<"$(BENCH_BODY="$BODY" measure recompressed "$URL" "Simple $CLIENT_KEY" -H 'Accept-Encoding: deflate')"
echo
echo "cache hits of a $HIT_BYTES-byte result: wrk -t$THREADS -c$CONNS -d$DURATION, median of $RUNS, $(nproc) cores shared with wrk"
echo "| hits served | rps | p50 ms | p99 ms | errors |"
echo "|---|---|---|---|---|"
echo "| gzip: the stored bytes as they are | $S_RPS | $S_P50 | $S_P99 | $S_ERR |"
echo "| deflate: compressed anew on each hit | $R_RPS | $R_P50 | $R_P99 | $R_ERR |"
awk -v s="$S_RPS" -v r="$R_RPS" 'BEGIN { printf "stored bytes serve %.1fx the rate of recompressing on each hit\n", s / r }'
steal_summary
