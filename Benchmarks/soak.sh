#!/usr/bin/env bash
# Soak. Release build, loopback only: the gateway in front of the simulator under a steady mix of
# everything teams send (Benchmarks/soak.lua: hits, misses with fresh inputs, pass-through, gzip
# answers and uploads, large answers churning through the hot tier, data writes, reads and listings, upstream faults, and the refusals users
# cause), with clients walking away mid-answer, the configuration reloaded and backups taken beside it, for
# SOAK_SECONDS, with a small cache so entries are stored and evicted throughout. Prints the
# gateway's resident memory, open file descriptors and the SQLite WAL's size every SAMPLE_SECONDS,
# their growth after the first quarter (the warm-up: pools, hot tier and allocator reach their
# working size), each kind's answers by status, and the gauges once the load has stopped.
# Exits 1 when an answer's status is not one its kind can have (a 5xx the upstream was not asked
# for among them), on a socket error, when a backup fails, when a line above info is logged other than the warnings for
# the dropped connections asked for, when a reload asked for is not logged, when a gauge is not
# back to zero (an upstream slot never given back among them), when the cache holds more than its
# bound, or when the WAL grew past 64 MiB (reads that never let SQLite's checkpoints finish would
# grow it without end). Memory and descriptor growth is printed and marked, not judged: read it
# against the run's length.
# Env: SOAK_SECONDS=300 SAMPLE_SECONDS=10 CONNS=32 THREADS=2
set -euo pipefail
cd "$(dirname "$0")/.."
SOAK_SECONDS="${SOAK_SECONDS:-300}"; SAMPLE_SECONDS="${SAMPLE_SECONDS:-10}"; CONNS="${CONNS:-32}"
CACHE_MAX_BYTES=1048576
source Benchmarks/lib.sh
KEEP_NOTICES=1 CLIENT_SCOPES="algo, data:read, data:write" \
CACHE_OPTIONS="max_bytes: $CACHE_MAX_BYTES, memory_bytes: 1048576" \
  start_pair '    data_prefixes: ["data://.my/soak/"]'
AUTH="Authorization: Simple $CLIENT_KEY"
GW="http://127.0.0.1:$GW_PORT"
curl -sf -o /dev/null -H "$AUTH" -H 'Content-Type: application/json' -d '{"name":"soak"}' "$GW/v1/data/.my"
printf '{"input":"soak gzip upload"}' | gzip >"$WORK/upload.gz"
head -c 20000000 /dev/zero | tr '\0' 'a' >"$WORK/large"
curl -sf -o /dev/null -H "$AUTH" -T "$WORK/large" "$GW/v1/data/.my/soak/large"

fds() { find "/proc/$1/fd" -mindepth 1 -maxdepth 1 2>/dev/null | wc -l; }
: >"$WORK/samples"
wal() { echo $(( $(stat -c %s "$WORK/cache.sqlite-wal" 2>/dev/null || echo 0) / 1024 )); }
sample() { echo "$1 $(awk '/^VmRSS:/{printf "%d", $2/1024}' "/proc/$GW_PID/status") $(fds "$GW_PID") $(wal)" >>"$WORK/samples"; }
sample 0
(
  for ((t = SAMPLE_SECONDS; t <= SOAK_SECONDS; t += SAMPLE_SECONDS)); do sleep "$SAMPLE_SECONDS"; sample "$t"; done
) & SAMPLER=$!
# Clients that walk away: every 0.2 s, one leaves an algorithm call before its answer (the
# algorithm takes 300 ms) or a 20 MB download part-way through; every third, a download whose
# client resets its connection (RST) while the upstream is still answering (it takes 200 ms).
# And every 5 s an operator reloads the configuration (SIGHUP), which swaps it under the
# requests in flight.
cat >"$WORK/reset.py" <<'PY'
import socket, struct, sys, time
connection = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
connection.sendall(f"GET /v1/data/.my/soak/large HTTP/1.1\r\nHost: gateway\r\nAuthorization: Simple {sys.argv[2]}\r\nX-Sim-Fault: delay=200\r\n\r\n".encode())
time.sleep(0.1)
connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
connection.close()
PY
(
  end=$((SECONDS + SOAK_SECONDS)); i=0
  while [ "$SECONDS" -lt "$end" ]; do
    i=$((i + 1))
    [ $((i % 25)) != 0 ] || kill -HUP "$GW_PID"
    if [ $((i % 3)) = 0 ]; then
      python3 "$WORK/reset.py" "$GW_PORT" "$CLIENT_KEY" || true
    elif [ $((i % 2)) = 0 ]; then
      curl -s -o /dev/null -m 0.1 -H "$AUTH" -H 'Content-Type: application/json' -d 300 "$GW/v1/algo/test/Sleep" || true
    else
      curl -s -o /dev/null -m 0.1 --limit-rate 2M -H "$AUTH" "$GW/v1/data/.my/soak/large" || true
    fi
    sleep 0.1
  done
  echo "$i" >"$WORK/walkaways"
) & WALKER=$!
# And every 10 s an operator takes a backup of the state file (algogate backup), which must
# succeed (its copy whole and checked) while all the rest goes on.
(
  end=$((SECONDS + SOAK_SECONDS)); n=0; bad=0
  while [ $((SECONDS + 10)) -lt "$end" ]; do
    sleep 10; n=$((n + 1))
    if "$BIN" backup --config "$WORK/gateway.yaml" --to "$WORK/backup-$n.sqlite" >>"$WORK/backups.log" 2>&1; then rm -f "$WORK/backup-$n.sqlite"; else bad=$((bad + 1)); fi
  done
  echo "$n $bad" >"$WORK/backups"
) & BACKUPS=$!
SOAK_KEY="$CLIENT_KEY" SOAK_GZIP_BODY="$WORK/upload.gz" \
  wrk -t"$THREADS" -c"$CONNS" -d"${SOAK_SECONDS}s" --latency -s Benchmarks/soak.lua "$GW" >"$WORK/wrk.txt"
wait "$SAMPLER" "$WALKER" "$BACKUPS" || true
sleep 2   # answers still being logged, usage flushed
sample end

FAILED=0
echo "soak: ${SOAK_SECONDS} s of mixed traffic, wrk -t$THREADS -c$CONNS, cache bound $CACHE_MAX_BYTES bytes, $(nproc) cores shared by wrk, gateway and simulator"
awk '/^Requests\/sec:/{r=$2} $1=="50%"{p50=$2} $1=="99%"{p99=$2} END{printf "requests/s: %s, p50 %s, p99 %s\n", r, p50, p99}' "$WORK/wrk.txt"
echo
echo "| seconds | gateway RSS MiB | open fds | WAL KiB |"
echo "|---|---|---|---|"
awk '{printf "| %s | %s | %s | %s |\n", $1, $2, $3, $4}' "$WORK/samples"
awk -v total="$SOAK_SECONDS" '
  { t[NR] = $1; rss[NR] = $2; fd[NR] = $3; if ($4 > most) most = $4 }
  END {
    w = 1; while (w < NR && t[w] != "end" && t[w] < total / 4) w++
    printf "after warm-up (%s s to the end): RSS %+d MiB (%d -> %d), open fds %+d (%d -> %d); WAL at most %d KiB\n", t[w], rss[NR] - rss[w], rss[w], rss[NR], fd[NR] - fd[w], fd[w], fd[NR], most
    if (rss[NR] - rss[w] > 16) print "  RSS grew by more than 16 MiB after the warm-up: look for a leak"
    if (fd[NR] - fd[w] > 8) print "  open fds grew after the warm-up: look for a descriptor leak"
    if (most > 65536) { print "  the WAL grew past 64 MiB: checkpoints are not keeping up"; exit 1 }
  }' "$WORK/samples" || FAILED=1

# What each kind may answer. get reads the file that the put before it writes; the two may be on
# different connections, so a read can overtake the first write of its file: a few 404s at the start.
expected() {
  case "$1" in
    hit|miss|pass|big_gzip|big_hot|gzip_upload|no_cache|put|list) echo "200" ;;
    get) echo "200 404" ;;
    fail) echo "200" ;;   # an algorithm's error: 200 with an "error" field, as Algorithmia answers it
    outside_prefix|input_ref|traversal) echo "403" ;;   # the traversal normalises to data://other/f
    upstream_500) echo "500" ;;      # passed on as the upstream sent it
    upstream_drop) echo "502" ;;     # no answer, even on the second attempt
    upstream_slow) echo "200" ;;
    wrong_key) echo "401" ;;
    *) echo "" ;;
  esac
}
echo
echo "| kind | status | answers | |"
echo "|---|---|---|---|"
while read -r _ kind status count; do
  mark=""
  case " $(expected "$kind") " in *" $status "*) ;; *) mark="UNEXPECTED"; FAILED=1 ;; esac
  echo "| $kind | $status | $count | $mark |"
done < <(grep '^soak ' "$WORK/wrk.txt" | sort -k2,2 -k3,3n)
WALKAWAYS=$(cat "$WORK/walkaways" 2>/dev/null || echo 0)
echo "clients that walked away mid-answer: $WALKAWAYS; configuration reloads asked for: $((WALKAWAYS / 25))"
read -r BACKUPS_TAKEN BACKUPS_FAILED <"$WORK/backups" || { BACKUPS_TAKEN=0; BACKUPS_FAILED=0; }
echo "backups taken while it ran: $BACKUPS_TAKEN, failed: $BACKUPS_FAILED"
[ "$BACKUPS_FAILED" = 0 ] || { sed -n '1,5p' "$WORK/backups.log"; FAILED=1; }
SOCKET_ERRORS=$(awk '/Socket errors:/{gsub(/,/,""); print $4+$6+$8+$10}' "$WORK/wrk.txt")
[ -z "$SOCKET_ERRORS" ] || { echo "socket errors: $SOCKET_ERRORS (connect, read, write, timeout)"; FAILED=1; }

echo
METRICS=$(curl -sf "$GW/metrics")
for gauge in algogate_upstream_in_flight algogate_upstream_queued algogate_buffered_input_bytes algogate_buffered_input_waiting algogate_buffered_answer_bytes algogate_buffered_answer_waiting; do
  value=$(awk -v g="$gauge" '$1==g{print $2}' <<<"$METRICS")
  echo "$gauge after the load: $value"
  awk -v v="$value" 'BEGIN{exit !(v != "" && v + 0 == 0)}' || FAILED=1
done
STATS=$("$BIN" cache stats --config "$WORK/gateway.yaml")
echo "$STATS" | sed -n '1,4p'
BYTES=$(awk -F': *' 'tolower($1) ~ /^bytes/{gsub(/[^0-9].*/, "", $2); print $2; exit}' <<<"$STATS")
[ -n "$BYTES" ] && [ "$BYTES" -le "$CACHE_MAX_BYTES" ] || { echo "cache bytes ($BYTES) above the bound $CACHE_MAX_BYTES"; FAILED=1; }
# Lines above info, by level and what they say. The dropped connections asked of the simulator are
# the gateway's own 502s, so warnings; any other line above info fails the soak.
python3 - "$WORK/gateway.notices" "$((WALKAWAYS / 25))" <<'PY' || FAILED=1
import collections, json, sys
counts, unexpected, reloads = collections.Counter(), 0, 0
for raw in open(sys.argv[1]):
    try:
        line = json.loads(raw)
    except ValueError:
        line = {"level": "?", "msg": raw.strip()[:200]}
    if line.get("level") == "info" and line.get("msg") == "configuration reloaded":
        reloads += 1
        continue
    expected = line.get("level") == "warning" and str(line.get("request_id", "")).startswith("upstream_drop.")
    unexpected += not expected
    counts[(line.get("level"), line.get("msg"), line.get("error_type", "-"), line.get("cause", "-"), "" if expected else "UNEXPECTED")] += 1
print("configuration reloads logged:", reloads, "" if reloads == int(sys.argv[2]) else "UNEXPECTED")
unexpected += reloads != int(sys.argv[2])
print("gateway log lines above info:", sum(counts.values()))
for (level, msg, error_type, cause, mark), n in sorted(counts.items()):
    print(f"  {n} {level} {msg} error_type={error_type} cause={cause} {mark}")
sys.exit(1 if unexpected else 0)
PY
[ "$FAILED" = 0 ] && echo "soak: passed" || { echo "soak: FAILED"; exit 1; }
