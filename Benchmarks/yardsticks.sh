#!/usr/bin/env bash
# algogate beside the shared yardsticks, in one run (../shared/bench/run_baselines.sh): nginx's
# static answer, nginx proxy_pass, nginx proxy_cache hits, the bare Hummingbird server, then
# algogate's cache hits and pass-through. Read the rows as ratios to each other.
# Needs ../shared/bench beside the repository; installs nginx and wrk when missing.
# Env: DURATION CONNS THREADS RUNS (as in run_baselines.sh)
set -euo pipefail
cd "$(dirname "$0")/.."
SHARED="${SHARED_BENCH:-../shared/bench}"
[ -f "$SHARED/run_baselines.sh" ] || { echo "no yardsticks at $SHARED" >&2; exit 2; }
command -v nginx >/dev/null || { SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO=sudo; $SUDO apt-get update -qq; $SUDO apt-get install -y -qq nginx; }
source Benchmarks/lib.sh
start_pair

# The yardsticks' scripts, with algogate's post.lua (it adds the client key) in place of theirs.
cp -r "$SHARED" "$WORK/bench"
cp Benchmarks/post.lua "$WORK/bench/post.lua"
(cd "$WORK/bench/hb-ceiling" && swift build -c release --scratch-path "$WORK/hb-build" >/dev/null 2>&1)
"$WORK/hb-build/release/hb" >/dev/null 2>&1 & PIDS+=($!); HB_PID=$!
wait_http "http://127.0.0.1:19010/"

PINNED="http://127.0.0.1:$GW_PORT/v1/algo/util/Echo/1.0.0"
curl -s -o /dev/null -H "Authorization: Simple $CLIENT_KEY" -H 'Content-Type: application/json' -d '{"input":"Hello HAL","n":9000}' "$PINNED"
export BENCH_AUTH="Simple $CLIENT_KEY"
EXTRA_TARGETS="hb-bare|http://127.0.0.1:19010/v1/algo/demo/Hello/0.1.0|$HB_PID"
EXTRA_TARGETS+=";algogate-hit|$PINNED|$GW_PID"
EXTRA_TARGETS+=";algogate-pass-through|http://127.0.0.1:$GW_PORT/v1/algo/util/Echo|$GW_PID"
EXTRA_TARGETS="$EXTRA_TARGETS" bash "$WORK/bench/run_baselines.sh"
