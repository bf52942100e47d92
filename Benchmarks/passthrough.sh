#!/usr/bin/env bash
# Pass-through benchmark. Release build, loopback only, wrk with keep-alive connections: the same
# uncacheable algorithm call sent straight to the simulator and through the gateway, side by side
# in one run, with the ratios the targets are stated in:
#   gateway rps >= 70% of direct rps, and gateway p50 - direct p50 < 0.5 ms.
# Env: DURATION=10s CONNS=64 THREADS=2 RUNS=3 PATH_UNDER_TEST=/v1/algo/util/Echo
set -euo pipefail
cd "$(dirname "$0")/.."
source Benchmarks/lib.sh
PATH_UNDER_TEST="${PATH_UNDER_TEST:-/v1/algo/util/Echo}"   # unpinned: never cached
start_pair

read -r D_RPS D_P50 D_P99 D_ERR <<<"$(measure direct "http://127.0.0.1:$SIM_PORT$PATH_UNDER_TEST" "Simple $SIM_KEY")"
read -r G_RPS G_P50 G_P99 G_ERR <<<"$(measure gateway "http://127.0.0.1:$GW_PORT$PATH_UNDER_TEST" "Simple $CLIENT_KEY")"
echo "pass-through: wrk -t$THREADS -c$CONNS -d$DURATION, 30-byte JSON POST to $PATH_UNDER_TEST, median of $RUNS, $(nproc) cores shared by wrk, gateway and simulator"
echo "| target | rps | p50 ms | p99 ms | errors | peak RSS MiB |"
echo "|---|---|---|---|---|---|"
echo "| simulator direct | $D_RPS | $D_P50 | $D_P99 | $D_ERR | $(rss_mib $SIM_PID) |"
echo "| through algogate | $G_RPS | $G_P50 | $G_P99 | $G_ERR | $(rss_mib $GW_PID) |"
awk -v g="$G_RPS" -v d="$D_RPS" -v gp="$G_P50" -v dp="$D_P50" 'BEGIN {
  printf "gateway/direct rps: %.0f%% (target >= 70%%); added p50: %.3f ms (target < 0.5 ms)\n", 100*g/d, gp-dp }'
