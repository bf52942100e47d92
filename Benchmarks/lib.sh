# Shared by the benchmark scripts: release build, processes on loopback, wrk runs, medians.
# Source it; set DURATION CONNS THREADS RUNS first (or take the defaults).
DURATION="${DURATION:-10s}"; CONNS="${CONNS:-64}"; THREADS="${THREADS:-2}"; RUNS="${RUNS:-3}"
command -v wrk >/dev/null || { SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO=sudo; $SUDO apt-get update -qq; $SUDO apt-get install -y -qq wrk; }
# ALGOGATE_BIN: measure that binary (an earlier build, for a side-by-side run) instead of building.
if [ -n "${ALGOGATE_BIN:-}" ]; then BIN=$ALGOGATE_BIN; else swift build -c release --product algogate >/dev/null; BIN=.build/release/algogate; fi
WORK=$(mktemp -d /tmp/algogate-bench.XXXXXX)
PIDS=()
cleanup() { for p in "${PIDS[@]:-}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'; }
# A connection that is accepted but never answered must not stall the run: each try has 2 s.
wait_http() { for _ in $(seq 100); do curl -s -m 2 -o /dev/null "$1" && return 0; sleep 0.1; done; echo "not listening: $1" >&2; exit 1; }
to_ms() { awk -v v="$1" 'BEGIN{ if (v ~ /us$/) {sub(/us$/,"",v); printf "%.3f", v/1000} else if (v ~ /ms$/) {sub(/ms$/,"",v); printf "%.3f", v} else if (v ~ /s$/) {sub(/s$/,"",v); printf "%.3f", v*1000} else print v }'; }
median() { printf '%s\n' "$@" | sort -g | sed -n "$(( ($# + 1) / 2 ))p"; }
rss_mib() { awk '/^VmHWM:/{printf "%d", $2/1024}' "/proc/$1/status"; }

# start_pair [extra gateway YAML]: the simulator and a gateway in front of it (client key $CLIENT_KEY).
# CLIENT_SCOPES (default "algo"), SERVER_OPTIONS, UPSTREAM_OPTIONS and CACHE_OPTIONS (more fields
# of the server, upstream and cache blocks) shape it; SIM_OPTIONS are more arguments of
# `algogate sim` (e.g. --fault delay=20).
start_pair() {
  SIM_KEY="bench-upstream-$RANDOM$RANDOM"; CLIENT_KEY="bench-client-$RANDOM$RANDOM"
  SIM_PORT=$(free_port); GW_PORT=$(free_port)
  "$BIN" sim --port "$SIM_PORT" --key "$SIM_KEY" --data-dir "$WORK/data" ${SIM_OPTIONS:-} >"$WORK/sim.log" 2>&1 & PIDS+=($!); SIM_PID=$!
  cat >"$WORK/gateway.yaml" <<YAML
server: {host: 127.0.0.1, port: $GW_PORT${SERVER_OPTIONS:+, $SERVER_OPTIONS}}
upstream: {url: "http://127.0.0.1:$SIM_PORT", key_env: BENCH_UPSTREAM_KEY${UPSTREAM_OPTIONS:+, $UPSTREAM_OPTIONS}}
cache: {path: $WORK/cache.sqlite${CACHE_OPTIONS:+, $CACHE_OPTIONS}}
clients:
  - name: bench
    key_sha256: "$(printf '%s' "$CLIENT_KEY" | sha256sum | cut -d' ' -f1)"
    scopes: [${CLIENT_SCOPES:-algo}]
${1:-}
YAML
  # The log goes through a pipe to a reader, as journald or a container runtime would take it:
  # /dev/null would hide what writing and reading the log lines costs.
  # KEEP_NOTICES=1: lines above info, and the info lines of configuration reloads, are kept in
  # $WORK/gateway.notices.
  if [ "${KEEP_NOTICES:-0}" = 1 ]; then
    BENCH_UPSTREAM_KEY="$SIM_KEY" "$BIN" serve --config "$WORK/gateway.yaml" > >(awk '(!/"level":"info"/ && !/ info /) || /configuration reloaded/ { print; fflush() }' >"$WORK/gateway.notices") 2>"$WORK/gateway.err" & PIDS+=($!); GW_PID=$!
  else
    BENCH_UPSTREAM_KEY="$SIM_KEY" "$BIN" serve --config "$WORK/gateway.yaml" > >(cat >/dev/null) 2>"$WORK/gateway.err" & PIDS+=($!); GW_PID=$!
  fi
  wait_http "http://127.0.0.1:$SIM_PORT/__sim/health"; wait_http "http://127.0.0.1:$GW_PORT/healthz"
}

# start_floor: the barest proxy built from the same stack (Benchmarks/ProxyFloor: Hummingbird +
# AsyncHTTPClient, nothing else) in front of the simulator of start_pair, at $FLOOR_PORT.
# With NIO_FLOORS=1, two more floors below it, to tell the framework's cost from the client's:
# the same Hummingbird server with the barest keep-alive SwiftNIO client in place of
# AsyncHTTPClient ($HBNIO_PORT), and the barest proxy SwiftNIO makes with no framework and no
# Swift concurrency (Benchmarks/ProxyFloor's NIOFloor, $NIO_PORT).
start_floor() {
  swift build -c release --package-path Benchmarks/ProxyFloor >/dev/null
  FLOOR_PORT=$(free_port)
  UPSTREAM="http://127.0.0.1:$SIM_PORT" UPSTREAM_KEY="$SIM_KEY" PORT="$FLOOR_PORT" \
    Benchmarks/ProxyFloor/.build/release/ProxyFloor >"$WORK/floor.log" 2>&1 & PIDS+=($!); FLOOR_PID=$!
  wait_http "http://127.0.0.1:$FLOOR_PORT/"
  [ "${NIO_FLOORS:-0}" = 1 ] || return 0
  HBNIO_PORT=$(free_port); NIO_PORT=$(free_port)
  CLIENT=nio UPSTREAM="http://127.0.0.1:$SIM_PORT" UPSTREAM_KEY="$SIM_KEY" PORT="$HBNIO_PORT" \
    Benchmarks/ProxyFloor/.build/release/ProxyFloor >"$WORK/hbnio.log" 2>&1 & PIDS+=($!); HBNIO_PID=$!
  UPSTREAM="http://127.0.0.1:$SIM_PORT" UPSTREAM_KEY="$SIM_KEY" PORT="$NIO_PORT" \
    Benchmarks/ProxyFloor/.build/release/NIOFloor >"$WORK/nio.log" 2>&1 & PIDS+=($!); NIO_PID=$!
  wait_http "http://127.0.0.1:$HBNIO_PORT/"; wait_http "http://127.0.0.1:$NIO_PORT/"
}

# start_nginx: nginx proxy_pass in front of the simulator of start_pair (keep-alive upstream
# connections, the key set as the gateway sets it), at $NGINX_PORT; nginx_rss_mib prints its
# processes' peak resident memory.
start_nginx() {
  NGINX_PORT=$(free_port)
  mkdir -p "$WORK/nginx/tmp"; chmod 755 "$WORK" "$WORK/nginx"   # nginx's workers (nobody, under root) must reach it
  cat >"$WORK/nginx/nginx.conf" <<NGINX
worker_processes auto;
daemon off;
pid nginx.pid;
error_log stderr warn;
events { worker_connections 4096; }
http {
  access_log off;
  keepalive_requests 1000000;
  client_body_temp_path tmp/body;
  proxy_temp_path tmp/proxy;
  fastcgi_temp_path tmp/fastcgi;
  uwsgi_temp_path tmp/uwsgi;
  scgi_temp_path tmp/scgi;
  upstream simulator { server 127.0.0.1:$SIM_PORT; keepalive 128; keepalive_requests 1000000; }
  server {
    listen 127.0.0.1:$NGINX_PORT backlog=4096;
    location / {
      proxy_pass http://simulator;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Authorization "Simple $SIM_KEY";
    }
  }
}
NGINX
  chmod 600 "$WORK/nginx/nginx.conf"   # it holds the (throwaway) simulator key
  nginx -p "$WORK/nginx/" -e stderr -c "$WORK/nginx/nginx.conf" >"$WORK/nginx.log" 2>&1 & PIDS+=($!); NGINX_PID=$!
  wait_http "http://127.0.0.1:$NGINX_PORT/"
}
nginx_rss_mib() { local kib=0 p; for p in $NGINX_PID $(pgrep -P $NGINX_PID); do kib=$((kib + $(awk '/^VmHWM:/{print $2}' /proc/$p/status))); done; echo $((kib / 1024)); }

# Host steal: CPU time the hypervisor took from this machine's vCPUs, in ms, summed over CPUs.
# On these VMs a vCPU is sometimes taken away for ~100 ms; every request on it stalls, and one
# such pause in a 10 s run moves p99 from ~7 ms to ~35 ms. It is not the program's doing.
host_steal_ms() { awk '/^cpu[0-9]/{s+=$9} END{print s*10}' /proc/stat; }
STEAL_LIMIT_MS="${STEAL_LIMIT_MS:-30}"

# measure NAME URL AUTH [extra wrk args] -> "rps p50 p99 errors" (median of RUNS after a warm-up).
# A run during which the host stole more than STEAL_LIMIT_MS is repeated (at most RUNS times in
# all); what was set aside is written to $WORK/steal.log and printed by steal_summary.
# BENCH_DELAY_MS (post.lua) paces each connection: it waits that long after each answer.
# CPU_PIDS: processes whose CPU time per request is recorded for cpu_us NAME.
measure() {
  local name=$1 url=$2 auth=$3; shift 3
  local rps=() p50=() p99=() cpu=() errors=0 f i=0 retries=0 s0 stolen c0 c1
  BENCH_AUTH="$auth" wrk -t"$THREADS" -c"$CONNS" -d2s -s Benchmarks/post.lua "$@" "$url" >/dev/null
  while [ "${#rps[@]}" -lt "$RUNS" ]; do
    i=$((i + 1)); f="$WORK/$name.$i.txt"
    s0=$(host_steal_ms); c0=$(cpu_ticks ${CPU_PIDS:-})
    BENCH_AUTH="$auth" wrk -t"$THREADS" -c"$CONNS" -d"$DURATION" --latency -s Benchmarks/post.lua "$@" "$url" >"$f"
    c1=$(cpu_ticks ${CPU_PIDS:-})
    stolen=$(( $(host_steal_ms) - s0 ))
    if [ "$stolen" -gt "$STEAL_LIMIT_MS" ] && [ "$retries" -lt "$RUNS" ]; then
      retries=$((retries + 1))
      echo "$name: run $i set aside, host stole ${stolen} ms (wrk max latency $(awk '$1=="Latency"{print $4}' "$f"))" >>"$WORK/steal.log"
      continue
    fi
    [ "$stolen" -le "$STEAL_LIMIT_MS" ] || echo "$name: run $i kept although the host stole ${stolen} ms (retries used up)" >>"$WORK/steal.log"
    rps+=("$(awk '/^Requests\/sec:/{print $2}' "$f")")
    p50+=("$(to_ms "$(awk '$1=="50%"{print $2}' "$f")")")
    p99+=("$(to_ms "$(awk '$1=="99%"{print $2}' "$f")")")
    errors=$((errors + $(awk '/Non-2xx or 3xx responses:/{s+=$NF} /Socket errors:/{gsub(/,/,""); s+=$4+$6+$8+$10} END{print s+0}' "$f")))
    cpu+=("$(awk -v t=$((c1 - c0)) -v hz="$CLK_TCK" '/ requests in /{printf "%.0f", t * 1e6 / hz / $1}' "$f")")
  done
  [ -z "${CPU_PIDS:-}" ] || median "${cpu[@]}" >"$WORK/$name.cpu"
  echo "$(median "${rps[@]}") $(median "${p50[@]}") $(median "${p99[@]}") $errors"
}

# CPU time (user + system, in clock ticks) the processes PIDS have used so far, summed. Unlike
# requests/s, CPU time per request does not count host steal (a vCPU taken away runs nothing, and
# the kernel counts that time as steal); a busy host still slows every instruction, so compare
# it within a run.
CLK_TCK=$(getconf CLK_TCK)
cpu_ticks() { local p s=0; for p in "$@"; do s=$((s + $(awk '{sub(/^.*\) /, ""); print $12 + $13}' "/proc/$p/stat"))); done; echo $s; }

# cpu_us NAME: median CPU microseconds per request of the processes in CPU_PIDS during
# `measure NAME` (set CPU_PIDS for that call); "-" when it was not measured.
cpu_us() { cat "$WORK/$1.cpu" 2>/dev/null || echo "-"; }

# pace_ms RPS: the per-connection wait that offers about RPS requests/s over CONNS connections.
pace_ms() { awk -v r="$1" -v c="$CONNS" 'BEGIN{printf "%d", c * 1000 / r}'; }

# Prints which runs were set aside for host steal (nothing when none were).
steal_summary() {
  [ -s "$WORK/steal.log" ] || { echo "host steal: no run over ${STEAL_LIMIT_MS} ms"; return 0; }
  echo "host steal (runs over ${STEAL_LIMIT_MS} ms are repeated):"; sed 's/^/  /' "$WORK/steal.log"
}
