# Shared by the benchmark scripts: release build, processes on loopback, wrk runs, medians.
# Source it; set DURATION CONNS THREADS RUNS first (or take the defaults).
DURATION="${DURATION:-10s}"; CONNS="${CONNS:-64}"; THREADS="${THREADS:-2}"; RUNS="${RUNS:-3}"
command -v wrk >/dev/null || { SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO=sudo; $SUDO apt-get update -qq; $SUDO apt-get install -y -qq wrk; }
swift build -c release --product algogate >/dev/null
BIN=.build/release/algogate
WORK=$(mktemp -d /tmp/algogate-bench.XXXXXX)
PIDS=()
cleanup() { for p in "${PIDS[@]:-}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'; }
wait_http() { for _ in $(seq 100); do curl -s -o /dev/null "$1" && return 0; sleep 0.1; done; echo "not listening: $1" >&2; exit 1; }
to_ms() { awk -v v="$1" 'BEGIN{ if (v ~ /us$/) {sub(/us$/,"",v); printf "%.3f", v/1000} else if (v ~ /ms$/) {sub(/ms$/,"",v); printf "%.3f", v} else if (v ~ /s$/) {sub(/s$/,"",v); printf "%.3f", v*1000} else print v }'; }
median() { printf '%s\n' "$@" | sort -g | sed -n "$(( ($# + 1) / 2 ))p"; }
rss_mib() { awk '/^VmHWM:/{printf "%d", $2/1024}' "/proc/$1/status"; }

# start_pair [extra gateway YAML]: the simulator and a gateway in front of it (client key $CLIENT_KEY).
start_pair() {
  SIM_KEY="bench-upstream-$RANDOM$RANDOM"; CLIENT_KEY="bench-client-$RANDOM$RANDOM"
  SIM_PORT=$(free_port); GW_PORT=$(free_port)
  "$BIN" sim --port "$SIM_PORT" --key "$SIM_KEY" --data-dir "$WORK/data" >"$WORK/sim.log" 2>&1 & PIDS+=($!); SIM_PID=$!
  cat >"$WORK/gateway.yaml" <<YAML
server: {host: 127.0.0.1, port: $GW_PORT}
upstream: {url: "http://127.0.0.1:$SIM_PORT", key_env: BENCH_UPSTREAM_KEY}
cache: {path: $WORK/cache.sqlite}
clients:
  - name: bench
    key_sha256: "$(printf '%s' "$CLIENT_KEY" | sha256sum | cut -d' ' -f1)"
    scopes: [algo]
${1:-}
YAML
  BENCH_UPSTREAM_KEY="$SIM_KEY" "$BIN" serve --config "$WORK/gateway.yaml" >/dev/null 2>"$WORK/gateway.err" & PIDS+=($!); GW_PID=$!
  wait_http "http://127.0.0.1:$SIM_PORT/__sim/health"; wait_http "http://127.0.0.1:$GW_PORT/healthz"
}

# measure NAME URL AUTH [extra wrk args] -> "rps p50 p99 errors" (median of RUNS after a warm-up)
measure() {
  local name=$1 url=$2 auth=$3; shift 3
  local rps=() p50=() p99=() errors=0 f
  BENCH_AUTH="$auth" wrk -t"$THREADS" -c"$CONNS" -d2s -s Benchmarks/post.lua "$@" "$url" >/dev/null
  for i in $(seq "$RUNS"); do
    f="$WORK/$name.$i.txt"
    BENCH_AUTH="$auth" wrk -t"$THREADS" -c"$CONNS" -d"$DURATION" --latency -s Benchmarks/post.lua "$@" "$url" >"$f"
    rps+=("$(awk '/^Requests\/sec:/{print $2}' "$f")")
    p50+=("$(to_ms "$(awk '$1=="50%"{print $2}' "$f")")")
    p99+=("$(to_ms "$(awk '$1=="99%"{print $2}' "$f")")")
    errors=$((errors + $(awk '/Non-2xx or 3xx responses:/{s+=$NF} /Socket errors:/{gsub(/,/,""); s+=$4+$6+$8+$10} END{print s+0}' "$f")))
  done
  echo "$(median "${rps[@]}") $(median "${p50[@]}") $(median "${p99[@]}") $errors"
}
