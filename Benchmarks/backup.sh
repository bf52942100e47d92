#!/usr/bin/env bash
# `algogate backup` beside a serving gateway. Release build, loopback only. The state file is
# filled with ENTRIES cache entries of ENTRY_BYTES random (incompressible) bytes each (100,000 of
# 10 kB: about 1 GiB, the default cache.max_bytes); then:
# - one backup alone: its wall time, MiB/s and peak resident memory, and the copy's size; and one
#   with --without-cache (the counters and the rest, the cached answers left out);
# - cache hits, paced (CONNS connections, each waiting PACE_MS between calls: a steady load well
#   below the ceiling), with no backup, then with backups taken one after another for the whole
#   run: requests/s, p50 and p99 side by side, and how many backups the run saw;
# - the WAL's size before and after the run with backups (a backup holds one read snapshot, so the WAL
#   cannot be reset while it is taken and grows by what is written meanwhile);
# - misses storing poorly compressible 64 KiB answers for MISS_DURATION with backups one after
#   another: the WAL's peak, and its size once the load has stopped and the WAL has restarted
#   (cut back to 16 MiB, `StateDatabase.walSizeLimit`; it used to keep its peak size).
# Env: ENTRIES=100000 ENTRY_BYTES=10000 DURATION=10s CONNS=8 THREADS=2 RUNS=3 PACE_MS=2 MISS_DURATION=20s
set -euo pipefail
cd "$(dirname "$0")/.."
ENTRIES="${ENTRIES:-100000}"; ENTRY_BYTES="${ENTRY_BYTES:-10000}"; PACE_MS="${PACE_MS:-2}"
CONNS="${CONNS:-8}"
source Benchmarks/lib.sh
start_pair

python3 - "$WORK/cache.sqlite" "$ENTRIES" "$ENTRY_BYTES" <<'PY'
import os, sqlite3, sys, time
db = sqlite3.connect(sys.argv[1], timeout=30)
now, n, size = time.time(), int(sys.argv[2]), int(sys.argv[3])
for start in range(0, n, 10000):
    rows = ((os.urandom(32).hex(), "bench/Filler/1.0.0", 200, "application/octet-stream", "identity", os.urandom(size), size, size,
             "0" * 64, now, now + 86400, now - start - i, 0) for i in range(min(10000, n - start)))
    db.executemany("INSERT INTO cache_entry (key, algo, status, content_type, encoding, body, size, plain_size, body_sha256, "
                   "created_at, expires_at, last_access, hits) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)", rows)
    db.commit()
print("stored entries:", db.execute("SELECT entries FROM cache_totals").fetchone()[0], file=sys.stderr)
# The fill went through the WAL: empty it, so that what it holds after the runs is theirs.
db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
PY
URL="http://127.0.0.1:$GW_PORT/v1/algo/util/Echo/1.0.0"
curl -s -o /dev/null -H "Authorization: Simple $CLIENT_KEY" -H 'Content-Type: application/json' -d '{"input":"Hello HAL","n":9000}' "$URL"

# backup_once NAME [more arguments]: one backup to $WORK/NAME.sqlite; prints "seconds peak_rss_mib bytes" and removes the copy.
backup_once() {
  python3 - "$BIN" "$WORK/gateway.yaml" "$WORK/$1.sqlite" "${@:2}" <<'PY'
import os, resource, subprocess, sys, time
t0 = time.monotonic()
subprocess.run([sys.argv[1], "backup", "--config", sys.argv[2], "--to", sys.argv[3]] + sys.argv[4:], check=True, stdout=subprocess.DEVNULL)
took = time.monotonic() - t0
size = os.path.getsize(sys.argv[3]); os.unlink(sys.argv[3])
print(f"{took:.2f} {resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss // 1024} {size}")
PY
}
read -r B_S B_RSS B_BYTES <<<"$(backup_once alone)"
read -r W_S W_RSS W_BYTES <<<"$(backup_once counters --without-cache)"
STATE_MIB=$(( $(stat -c %s "$WORK/cache.sqlite") >> 20 ))

wal_mib() { awk -v b="$(stat -c %s "$WORK/cache.sqlite-wal" 2>/dev/null || echo 0)" 'BEGIN{printf "%.1f", b / 1048576}'; }
read -r I_RPS I_P50 I_P99 I_ERR <<<"$(BENCH_DELAY_MS=$PACE_MS measure hits-idle "$URL" "Simple $CLIENT_KEY")"
# Backups one after another until the measurement ends.
: >"$WORK/backups.log"
( i=0; while [ ! -e "$WORK/stop-backups" ]; do i=$((i + 1)); backup_once "during-$i" >>"$WORK/backups.log"; done ) & LOOP=$!
WAL_BEFORE=$(wal_mib)
read -r D_RPS D_P50 D_P99 D_ERR <<<"$(BENCH_DELAY_MS=$PACE_MS measure hits-during-backups "$URL" "Simple $CLIENT_KEY")"
touch "$WORK/stop-backups"; wait "$LOOP"
WAL_AFTER=$(wal_mib)
DURING=$(wc -l <"$WORK/backups.log")
DURING_S=$(awk '{s+=$1} END{if (NR) printf "%.2f", s/NR; else print "-"}' "$WORK/backups.log")

# Misses that store poorly compressible 64 KiB answers (Benchmarks/misses.lua) for MISS_DURATION,
# with backups one after another: the WAL's peak (sampled every 0.2 s), then its size once the
# load and the backups have stopped and a few more answers have been stored (the WAL restarts).
rm -f "$WORK/stop-backups"; : >"$WORK/backups-misses.log"
( i=0; while [ ! -e "$WORK/stop-backups" ]; do i=$((i + 1)); backup_once "misses-$i" >>"$WORK/backups-misses.log"; done ) & LOOP=$!
( peak=0; while [ ! -e "$WORK/stop-backups" ]; do b=$(stat -c %s "$WORK/cache.sqlite-wal" 2>/dev/null || echo 0); [ "$b" -gt "$peak" ] && peak=$b; echo "$peak" >"$WORK/wal-peak"; sleep 0.2; done ) & SAMPLER=$!
BENCH_AUTH="Simple $CLIENT_KEY" BENCH_INPUT_BYTES=65536 wrk -t2 -c8 -d"${MISS_DURATION:-20s}" -s Benchmarks/misses.lua "$URL" >"$WORK/misses.txt"
touch "$WORK/stop-backups"; wait "$LOOP" "$SAMPLER"
M_RPS=$(awk '/^Requests\/sec:/{print $2}' "$WORK/misses.txt")
WAL_PEAK=$(awk '{printf "%.1f", $1 / 1048576}' "$WORK/wal-peak")
for i in 1 2 3 4 5; do
  curl -s -o /dev/null -H "Authorization: Simple $CLIENT_KEY" -H 'Content-Type: application/json' -d "\"settle-$i-$RANDOM\"" "$URL"; sleep 1.2
done
WAL_SETTLED=$(wal_mib)
MISS_BACKUPS=$(wc -l <"$WORK/backups-misses.log")

echo "backup of a ${STATE_MIB} MiB state file ($ENTRIES entries of $ENTRY_BYTES bytes), release build, page cache warm"
echo "| backup alone s | MiB/s | backup peak RSS MiB | copy MiB |"
echo "|---|---|---|---|"
awk -v s="$B_S" -v r="$B_RSS" -v b="$B_BYTES" 'BEGIN{printf "| %s | %.0f | %d | %.1f |\n", s, b / 1048576 / s, r, b / 1048576}'
echo "--without-cache alone: $W_S s, peak RSS $W_RSS MiB, copy $(awk -v b="$W_BYTES" 'BEGIN{printf "%.0f", b / 1024}') KiB"
echo
echo "cache hits, $CONNS connections each pacing ${PACE_MS} ms, median of $RUNS runs of $DURATION"
echo "| load | requests/s | p50 ms | p99 ms | errors |"
echo "|---|---|---|---|---|"
echo "| hits, no backup | $I_RPS | $I_P50 | $I_P99 | $I_ERR |"
echo "| hits, backups one after another ($DURING taken, ${DURING_S} s each on average) | $D_RPS | $D_P50 | $D_P99 | $D_ERR |"
echo
echo "WAL before the run with backups: ${WAL_BEFORE} MiB; after it: ${WAL_AFTER} MiB"
echo
echo "misses storing 64 KiB answers on 8 connections for ${MISS_DURATION:-20s} ($M_RPS requests/s), with $MISS_BACKUPS backups one after another:"
echo "WAL peak ${WAL_PEAK} MiB; once the load stopped and 5 more answers were stored: ${WAL_SETTLED} MiB (state.walSizeLimit: 16 MiB)"
steal_summary
