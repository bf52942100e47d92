#!/usr/bin/env bash
# Pass-through with the upstream some time away, as in production. Release build, loopback only,
# wrk with keep-alive connections. `passthrough.sh` has the simulator answer in microseconds, so
# the machine's two cores are the limit there and every microsecond of the gateway's shows;
# api.algorithmia.com answers in tens of milliseconds at best (the network, then the algorithm),
# and the account's concurrent requests (`upstream.max_concurrency`, 80) are the limit. Here the
# simulator holds every call DELAY ms (`sim --fault delay=DELAY`: the network and the algorithm
# together) and the same uncacheable call is sent straight to it, through the barest proxy of
# this stack (Benchmarks/ProxyFloor; SKIP_FLOOR=1 leaves it out), through nginx when it is
# installed (SKIP_NGINX=1) and through the gateway, side by side:
#   - on 80 connections (the account's limit), each pausing about DELAY/2 between calls (a random
#     half to one and a half times that, `post.lua`): in step, the 80 calls would all be answered
#     at once every DELAY ms and the last of each burst would wait for the others;
#   - on one connection, unpaced: one call at a time, DELAY ms apart, so every call finds the
#     threads it passes through asleep.
# Printed: the rate against direct, the added p50 and p99, and each server's CPU per call (the
# simulator's is why the rates at small delays are the machine's limit, not the proxies').
# Then 160 connections, unpaced (teams together asking for more than the account allows): the
# rate, p50 and the most calls the simulator saw at once, straight to it (Algorithmia would refuse
# those over 80 with 429) and through the gateway (which queues them for a slot).
# Env: DELAYS="10 50 100" DURATION=5s THREADS=2 RUNS=3 PATH_UNDER_TEST=/v1/algo/util/Echo
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION="${DURATION:-5s}"
source Benchmarks/lib.sh
DELAYS="${DELAYS:-10 50 100}"
PATH_UNDER_TEST="${PATH_UNDER_TEST:-/v1/algo/util/Echo}"   # unpinned: never cached

# over NAME URL AUTH DELAY: one unpaced run on 160 connections, no warm-up (a warm-up's end
# closes connections with calls under way, which the simulator would go on counting); prints
# "rps p50 peak". Calls of the run before have ended first.
over() {
  local f="$WORK/$1.txt"
  sleep "$(awk -v d="$4" 'BEGIN{print d / 1000 + 0.5}')"
  curl -s -o /dev/null -X POST "http://127.0.0.1:$SIM_PORT/__sim/reset"
  BENCH_AUTH="$3" wrk -t"$THREADS" -c160 -d"$DURATION" --latency -s Benchmarks/post.lua "$2" >"$f"
  echo "$(awk '/^Requests\/sec:/{print $2}' "$f") $(to_ms "$(awk '$1=="50%"{print $2}' "$f")") \
$(curl -s "http://127.0.0.1:$SIM_PORT/__sim/stats" | python3 -c 'import json,sys; print(json.load(sys.stdin)["peakConcurrency"])')"
}

# rows DELAY LOAD: a table row for each target measured at LOAD ("80" or "1"), the direct row
# first; the others against it.
ROWS=()
rows() {
  local delay=$1 load=$2 name rps p50 p99 err d_rps d_p50 d_p99
  read -r d_rps d_p50 d_p99 _ <<<"$(cat "$WORK/row-$load-direct")"
  ROWS+=("| $delay | $load | simulator direct | $d_rps | 100% | $d_p50 | | $d_p99 | | $(cpu_us "$load-direct") |")
  for name in floor nginx gateway; do
    [ -s "$WORK/row-$load-$name" ] || continue
    read -r rps p50 p99 err <<<"$(cat "$WORK/row-$load-$name")"
    local label; case $name in floor) label="bare Hummingbird + AsyncHTTPClient proxy";; nginx) label="nginx proxy_pass";; gateway) label="through algogate";; esac
    ROWS+=("| $delay | $load | $label | $rps | $(awk -v g="$rps" -v d="$d_rps" 'BEGIN{printf "%.0f%%", 100 * g / d}') | $p50 \
| $(awk -v g="$p50" -v d="$d_p50" 'BEGIN{printf "%.3f", g - d}') | $p99 | $(awk -v g="$p99" -v d="$d_p99" 'BEGIN{printf "%.3f", g - d}') \
| $(cpu_us "$load-$name") |$([ "$err" -eq 0 ] || echo " $err errors |")")
  done
}

# run NAME URL AUTH PIDS: measures one target at the current $load (80 connections paced, or 1)
# into $WORK/row-LOAD-NAME, with the CPU per call of PIDS.
run() {
  local name=$1 url=$2 auth=$3 pids=$4
  if [ "$load" = 80 ]; then CONNS=80 BENCH_DELAY_MS=$pause CPU_PIDS="$pids" measure "$load-$name" "$url" "$auth"
  else CONNS=1 THREADS=1 CPU_PIDS="$pids" measure "$load-$name" "$url" "$auth"; fi >"$WORK/row-$load-$name"
}

OVER_ROWS=()
for delay in $DELAYS; do
  SIM_OPTIONS="--fault delay=$delay" start_pair
  [ "${SKIP_FLOOR:-0}" = 1 ] || start_floor
  NGINX_PID=""
  ! command -v nginx >/dev/null || [ "${SKIP_NGINX:-0}" = 1 ] || start_nginx
  pause=$((delay / 2))
  for load in 80 1; do
    run direct "http://127.0.0.1:$SIM_PORT$PATH_UNDER_TEST" "Simple $SIM_KEY" "$SIM_PID"
    rm -f "$WORK/row-$load-floor" "$WORK/row-$load-nginx"
    [ -z "${FLOOR_PID:-}" ] || run floor "http://127.0.0.1:$FLOOR_PORT$PATH_UNDER_TEST" "Simple unused" "$FLOOR_PID"
    [ -z "$NGINX_PID" ] || run nginx "http://127.0.0.1:$NGINX_PORT$PATH_UNDER_TEST" "Simple unused" "$NGINX_PID $(pgrep -P "$NGINX_PID" | tr '\n' ' ')"
    run gateway "http://127.0.0.1:$GW_PORT$PATH_UNDER_TEST" "Simple $CLIENT_KEY" "$GW_PID"
    rows "$delay" "$load"
  done
  read -r O_RPS O_P50 O_PEAK <<<"$(over "direct-over-$delay" "http://127.0.0.1:$SIM_PORT$PATH_UNDER_TEST" "Simple $SIM_KEY" "$delay")"
  read -r Q_RPS Q_P50 Q_PEAK <<<"$(over "gateway-over-$delay" "http://127.0.0.1:$GW_PORT$PATH_UNDER_TEST" "Simple $CLIENT_KEY" "$delay")"
  OVER_ROWS+=("| $delay | $O_RPS | $O_P50 | $O_PEAK | $Q_RPS | $Q_P50 | $Q_PEAK |")
  for p in "$GW_PID" "$SIM_PID" ${FLOOR_PID:-} $NGINX_PID; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
  FLOOR_PID=""
  rm -rf "$WORK"/cache.sqlite* "$WORK/data" "$WORK/nginx"
done

echo "pass-through, the simulator holding each call DELAY ms ($DURATION runs, median of $RUNS): on 80 connections each pausing about DELAY/2 between calls, and on 1 connection unpaced"
echo "| DELAY ms | connections | target | rps | against direct | p50 ms | added p50 ms | p99 ms | added p99 ms | its own CPU µs a call |"
echo "|---|---|---|---|---|---|---|---|---|---|"
printf '%s\n' "${ROWS[@]}"
echo
echo "160 connections, unpaced (one $DURATION run each)"
echo "| DELAY ms | direct rps | direct p50 ms | direct: most calls at the simulator at once | gateway rps | gateway p50 ms | gateway: most calls at the simulator at once |"
echo "|---|---|---|---|---|---|---|"
printf '%s\n' "${OVER_ROWS[@]}"
steal_summary
