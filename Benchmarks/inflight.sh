#!/usr/bin/env bash
# Memory per request in flight. Release build, loopback only. For each kind in KINDS, a fresh
# gateway in front of the simulator: N connections opened and left idle, then one request sent on
# each at once (Benchmarks/inflight.py), held 500 ms by the simulator so they are all under way
# together (the account's 80 upstream slots taken, the rest waiting for one). Prints the gateway's
# resident memory before, with the connections open, at its peak, 1 s and 12 s after they closed
# (freed memory goes back to the system every 10 s), and the growth per request beyond the open
# connections: what the README's memory sum counts for each request in
# the pipeline. Kinds: healthz (the pipeline, no upstream), algo (an unpinned call, passed
# through), pinned (a pinned call that misses, through the cache step), data (a data file read,
# streamed).
# Env: N=2000 KINDS="healthz algo pinned data"
set -euo pipefail
cd "$(dirname "$0")/.."
N="${N:-2000}"; KINDS="${KINDS:-healthz algo pinned data}"
source Benchmarks/lib.sh

echo "in flight: $N connections, one request each at once (the simulator holds each 500 ms)"
echo "| kind | requests | RSS before MiB | connections open MiB | peak MiB | 1 s after MiB | 12 s after MiB | KB per request beyond the open connections | statuses |"
echo "|---|---|---|---|---|---|---|---|---|"
for kind in $KINDS; do
  CLIENT_SCOPES="algo, data:read, data:write" SERVER_OPTIONS="max_connections: $((N + 100))" start_pair
  if [ "$kind" = data ]; then
    curl -s -o /dev/null -H "Authorization: Simple $CLIENT_KEY" -H 'Content-Type: application/json' -d '{"name": "bench"}' \
      "http://127.0.0.1:$GW_PORT/v1/data/.my"
    curl -s -o /dev/null -X PUT -H "Authorization: Simple $CLIENT_KEY" --data-binary "$(head -c 2000 /dev/zero | tr '\0' x)" \
      "http://127.0.0.1:$GW_PORT/v1/data/.my/bench/file"
  fi
  python3 Benchmarks/inflight.py "$GW_PID" "$GW_PORT" "$CLIENT_KEY" "$kind" "$N"
  kill "$GW_PID" "$SIM_PID" 2>/dev/null || true
  wait "$GW_PID" "$SIM_PID" 2>/dev/null || true
  rm -rf "$WORK"/cache.sqlite* "$WORK/data"
done
