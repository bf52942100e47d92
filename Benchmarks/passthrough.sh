#!/usr/bin/env bash
# Pass-through benchmark. Release build, loopback only, wrk with keep-alive connections: the same
# uncacheable algorithm call sent straight to the simulator, through the barest proxy built from
# the same stack (Benchmarks/ProxyFloor: Hummingbird + AsyncHTTPClient, nothing else), and through
# the gateway, side by side in one run, with the ratios the targets are stated in:
#   gateway rps >= 70% of direct rps, and gateway p50 - direct p50 < 0.5 ms.
# At 64 connections the cores are saturated and p50 is mostly queueing (64 / rate), so the added
# latency is also measured unloaded, on one connection, and on 64 connections paced to half the
# gateway's saturated rate (direct and gateway at the same pace).
# When nginx is installed, nginx proxy_pass in front of the same simulator (keep-alive upstream
# connections, the key set as the gateway sets it) is measured too: what the best-known proxy
# reaches here, beside what this stack's barest proxy reaches.
# Each saturated row also prints the CPU time (user + system, from /proc) its server used per
# request, the simulator's for the direct row and the proxy's own for the others: unlike
# requests/s it does not count host steal, and it sizes the gateway's cores.
# The added p50 is also measured at lighter loads (LOADS, divisors of the gateway's saturated rate),
# and, unless SKIP_FLOOR=1, the bare proxy's beside it at each load and on one connection: what the
# stack alone adds there.
# Unless SKIP_FLOOR=1 or NIO_FLOORS=0, two floors below the bare proxy are measured too (saturated
# and on one connection): Hummingbird with the barest SwiftNIO client in place of AsyncHTTPClient,
# and the barest SwiftNIO proxy with no framework at all: what Swift on these cores reaches.
# Env: DURATION=10s CONNS=64 THREADS=2 RUNS=3 PATH_UNDER_TEST=/v1/algo/util/Echo SKIP_FLOOR=0 NIO_FLOORS=1 SKIP_NGINX=0 LOADS="4 8"
set -euo pipefail
cd "$(dirname "$0")/.."
source Benchmarks/lib.sh
PATH_UNDER_TEST="${PATH_UNDER_TEST:-/v1/algo/util/Echo}"   # unpinned: never cached
start_pair

F_ROW=""
NIO_FLOORS="${NIO_FLOORS:-1}"
[ "${SKIP_FLOOR:-0}" = 1 ] || start_floor
N_ROW=""
! command -v nginx >/dev/null || [ "${SKIP_NGINX:-0}" = 1 ] || start_nginx

read -r D_RPS D_P50 D_P99 D_ERR <<<"$(CPU_PIDS=$SIM_PID measure direct "http://127.0.0.1:$SIM_PORT$PATH_UNDER_TEST" "Simple $SIM_KEY")"
if [ "${SKIP_FLOOR:-0}" != 1 ]; then
  read -r F_RPS F_P50 F_P99 F_ERR <<<"$(CPU_PIDS=$FLOOR_PID measure floor "http://127.0.0.1:$FLOOR_PORT$PATH_UNDER_TEST" "Simple unused")"
  F_ROW="| bare Hummingbird + AsyncHTTPClient proxy | $F_RPS | $F_P50 | $F_P99 | $F_ERR | $(rss_mib $FLOOR_PID) | $(cpu_us floor) |"
fi
H_ROW=""; X_ROW=""
if [ -n "${HBNIO_PID:-}" ]; then
  read -r H_RPS H_P50 H_P99 H_ERR <<<"$(CPU_PIDS=$HBNIO_PID measure hbnio "http://127.0.0.1:$HBNIO_PORT$PATH_UNDER_TEST" "Simple unused")"
  H_ROW="| bare Hummingbird + bare SwiftNIO client | $H_RPS | $H_P50 | $H_P99 | $H_ERR | $(rss_mib $HBNIO_PID) | $(cpu_us hbnio) |"
  read -r X_RPS X_P50 X_P99 X_ERR <<<"$(CPU_PIDS=$NIO_PID measure nio "http://127.0.0.1:$NIO_PORT$PATH_UNDER_TEST" "Simple unused")"
  X_ROW="| bare SwiftNIO proxy, no framework | $X_RPS | $X_P50 | $X_P99 | $X_ERR | $(rss_mib $NIO_PID) | $(cpu_us nio) |"
fi
if [ -n "${NGINX_PID:-}" ]; then
  read -r N_RPS N_P50 N_P99 N_ERR <<<"$(CPU_PIDS="$NGINX_PID $(pgrep -P $NGINX_PID | tr '\n' ' ')" measure nginx "http://127.0.0.1:$NGINX_PORT$PATH_UNDER_TEST" "Simple unused")"
  N_ROW="| nginx proxy_pass (yardstick) | $N_RPS | $N_P50 | $N_P99 | $N_ERR | $(nginx_rss_mib) | $(cpu_us nginx) |"
fi
read -r G_RPS G_P50 G_P99 G_ERR <<<"$(CPU_PIDS=$GW_PID measure gateway "http://127.0.0.1:$GW_PORT$PATH_UNDER_TEST" "Simple $CLIENT_KEY")"
PACE=$(pace_ms "$(awk -v r="$G_RPS" 'BEGIN{print r/2}')")
read -r DP_RPS DP_P50 DP_P99 _ <<<"$(BENCH_DELAY_MS=$PACE measure direct-paced "http://127.0.0.1:$SIM_PORT$PATH_UNDER_TEST" "Simple $SIM_KEY")"
read -r GP_RPS GP_P50 GP_P99 _ <<<"$(BENCH_DELAY_MS=$PACE measure gateway-paced "http://127.0.0.1:$GW_PORT$PATH_UNDER_TEST" "Simple $CLIENT_KEY")"
# Lighter loads (LOADS: divisors of the gateway's saturated rate): the added p50 at each, for the
# load up to which the 0.5 ms target holds on 64 connections.
LOADS="${LOADS:-4 8}"
SWEEP_ROWS=()
for d in $LOADS; do
  pace=$(pace_ms "$(awk -v r="$G_RPS" -v d="$d" 'BEGIN{print r/d}')")
  read -r drps dp50 dp99 _ <<<"$(BENCH_DELAY_MS=$pace measure "direct-load-$d" "http://127.0.0.1:$SIM_PORT$PATH_UNDER_TEST" "Simple $SIM_KEY")"
  read -r grps gp50 gp99 _ <<<"$(BENCH_DELAY_MS=$pace measure "gateway-load-$d" "http://127.0.0.1:$GW_PORT$PATH_UNDER_TEST" "Simple $CLIENT_KEY")"
  fp50="-"
  [ "${SKIP_FLOOR:-0}" = 1 ] || read -r _ fp50 _ _ <<<"$(BENCH_DELAY_MS=$pace measure "floor-load-$d" "http://127.0.0.1:$FLOOR_PORT$PATH_UNDER_TEST" "Simple unused")"
  SWEEP_ROWS+=("$d $pace $drps $dp50 $dp99 $grps $gp50 $gp99 $fp50")
done
read -r D1_RPS D1_P50 D1_P99 _ <<<"$(CONNS=1 THREADS=1 measure direct1 "http://127.0.0.1:$SIM_PORT$PATH_UNDER_TEST" "Simple $SIM_KEY")"
read -r G1_RPS G1_P50 G1_P99 _ <<<"$(CONNS=1 THREADS=1 measure gateway1 "http://127.0.0.1:$GW_PORT$PATH_UNDER_TEST" "Simple $CLIENT_KEY")"
F1_P50="-"
[ "${SKIP_FLOOR:-0}" = 1 ] || read -r _ F1_P50 _ _ <<<"$(CONNS=1 THREADS=1 measure floor1 "http://127.0.0.1:$FLOOR_PORT$PATH_UNDER_TEST" "Simple unused")"
H1_P50="-"; X1_P50="-"
if [ -n "${HBNIO_PID:-}" ]; then
  read -r _ H1_P50 _ _ <<<"$(CONNS=1 THREADS=1 measure hbnio1 "http://127.0.0.1:$HBNIO_PORT$PATH_UNDER_TEST" "Simple unused")"
  read -r _ X1_P50 _ _ <<<"$(CONNS=1 THREADS=1 measure nio1 "http://127.0.0.1:$NIO_PORT$PATH_UNDER_TEST" "Simple unused")"
fi

echo "pass-through: wrk -t$THREADS -c$CONNS -d$DURATION, 30-byte JSON POST to $PATH_UNDER_TEST, median of $RUNS, $(nproc) cores shared by wrk, the proxy and the simulator"
echo "| target | rps | p50 ms | p99 ms | errors | peak RSS MiB | its own CPU µs/request |"
echo "|---|---|---|---|---|---|---|"
echo "| simulator direct | $D_RPS | $D_P50 | $D_P99 | $D_ERR | $(rss_mib $SIM_PID) | $(cpu_us direct) |"
[ -z "$N_ROW" ] || echo "$N_ROW"
[ -z "$F_ROW" ] || echo "$F_ROW"
[ -z "$H_ROW" ] || echo "$H_ROW"
[ -z "$X_ROW" ] || echo "$X_ROW"
echo "| through algogate | $G_RPS | $G_P50 | $G_P99 | $G_ERR | $(rss_mib $GW_PID) | $(cpu_us gateway) |"
echo "| simulator direct, paced ($PACE ms between calls) | $DP_RPS | $DP_P50 | $DP_P99 | | | |"
echo "| through algogate, paced ($PACE ms between calls) | $GP_RPS | $GP_P50 | $GP_P99 | | | |"
echo "| simulator direct, 1 connection | $D1_RPS | $D1_P50 | $D1_P99 | | | |"
echo "| through algogate, 1 connection | $G1_RPS | $G1_P50 | $G1_P99 | | | |"
awk -v g="$G_RPS" -v d="$D_RPS" -v gp="$G_P50" -v dp="$D_P50" -v pg="$GP_P50" -v pd="$DP_P50" -v g1="$G1_P50" -v d1="$D1_P50" -v c="$CONNS" 'BEGIN {
  printf "gateway/direct rps: %.0f%% (target >= 70%%); added p50 (target < 0.5 ms): %.3f ms at %s connections saturated, %.3f ms paced, %.3f ms on 1\n", 100*g/d, gp-dp, c, pg-pd, g1-d1 }'
echo "added p50 at lighter loads, $CONNS connections each paced (target < 0.5 ms), and what the bare proxy adds at the same load:"
echo "| offered | ms between calls | direct rps | p50 ms | p99 ms | through algogate rps | p50 ms | p99 ms | added p50 ms | bare proxy's added p50 ms |"
echo "|---|---|---|---|---|---|---|---|---|---|"
added() { awk -v g="$1" -v d="$2" 'BEGIN{ if (g == "-") print "-"; else printf "%.3f", g-d }'; }
for row in "${SWEEP_ROWS[@]}"; do
  read -r d pace drps dp50 dp99 grps gp50 gp99 fp50 <<<"$row"
  echo "| 1/$d of the gateway's saturated rate | $pace | $drps | $dp50 | $dp99 | $grps | $gp50 | $gp99 | $(added "$gp50" "$dp50") | $(added "$fp50" "$dp50") |"
done
echo "| 1 connection, unpaced | 0 | $D1_RPS | $D1_P50 | $D1_P99 | $G1_RPS | $G1_P50 | $G1_P99 | $(added "$G1_P50" "$D1_P50") | $(added "$F1_P50" "$D1_P50") |"
[ -z "$F_ROW" ] || awk -v g="$G_RPS" -v d="$D_RPS" -v f="$F_RPS" 'BEGIN {
  printf "bare proxy/direct rps: %.0f%%; gateway/bare proxy rps: %.0f%%\n", 100*f/d, 100*g/f }'
[ -z "$H_ROW" ] || awk -v h="$H_RPS" -v x="$X_RPS" -v d="$D_RPS" -v h1="$H1_P50" -v x1="$X1_P50" -v d1="$D1_P50" 'BEGIN {
  printf "Hummingbird + bare SwiftNIO client/direct rps: %.0f%%, added p50 on 1 connection %.3f ms; bare SwiftNIO proxy/direct rps: %.0f%%, added p50 on 1 connection %.3f ms\n", 100*h/d, h1-d1, 100*x/d, x1-d1 }'
[ -z "$N_ROW" ] || awk -v n="$N_RPS" -v d="$D_RPS" -v g="$G_RPS" 'BEGIN {
  printf "nginx proxy/direct rps: %.0f%%; gateway/nginx proxy rps: %.0f%%\n", 100*n/d, 100*g/n }'
awk -v g="$(cpu_us gateway)" -v f="$(cpu_us floor)" -v h="$(cpu_us hbnio)" -v x="$(cpu_us nio)" -v n="$(cpu_us nginx)" -v d="$(cpu_us direct)" 'BEGIN {
  printf "CPU per request (steal not counted): algogate %s µs, bare Hummingbird + AsyncHTTPClient proxy %s µs, bare Hummingbird + bare SwiftNIO client %s µs, bare SwiftNIO proxy %s µs, nginx %s µs, the simulator answering %s µs\n", g, f, h, x, n, d }'
steal_summary
