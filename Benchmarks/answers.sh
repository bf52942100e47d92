#!/usr/bin/env bash
# Algorithm answers held in memory at once (`limits.max_buffered_answer_bytes`). Release build,
# loopback only: CALLS clients at once ask `test/Big` for ANSWER_BYTES each and read their answers
# slowly (RATE bytes/s, with a 64 KiB receive buffer), so that each answer stays in the gateway
# while it is sent, as with clients on slow links. Run twice, with the bound at BOUND bytes and
# with it out of the way (4 GiB); prints the gateway's peak resident memory, the answers by status
# and the slowest call, both ways.
# Env: CALLS=40 ANSWER_BYTES=8000000 RATE=4M BOUND=67108864
set -euo pipefail
cd "$(dirname "$0")/.."
CALLS="${CALLS:-40}"; ANSWER_BYTES="${ANSWER_BYTES:-8000000}"; RATE="${RATE:-4M}"; BOUND="${BOUND:-67108864}"
source Benchmarks/lib.sh

# answers NAME BOUND: one pair with that bound, CALLS slow clients at once; prints a table row.
answers() {
  start_pair "limits: {max_buffered_answer_bytes: $2}"
  local before
  before=$(awk '/^VmRSS:/{printf "%d", $2/1024}' "/proc/$GW_PID/status")
  python3 - "$GW_PORT" "$CLIENT_KEY" "$ANSWER_BYTES" "$RATE" "$CALLS" >>"$WORK/$1.log" <<'PY'
# CALLS clients at once, each with a small receive buffer, reading its answer at RATE bytes/s:
# what the kernel's socket buffers hold of each answer stays small, so the rest waits in the
# gateway, as with clients on slow links. Prints "status seconds" per call.
import socket, sys, threading, time
port, key, size, rate, calls = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5])
rate = float(rate[:-1]) * {"K": 1 << 10, "M": 1 << 20}[rate[-1].upper()] if rate[-1].isalpha() else float(rate)
lines = []
def call():
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
    s.connect(("127.0.0.1", port))
    started = time.time()
    s.sendall((f"POST /v1/algo/test/Big HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAuthorization: Simple {key}\r\n"
               f"Content-Type: text/plain\r\nContent-Length: {len(size)}\r\nConnection: close\r\n\r\n{size}").encode())
    head, got, first = b"", 0, None
    while chunk := s.recv(65536):
        # Paced from the answer's first byte: a client that waited for it reads no faster after.
        first = first or time.time()
        got += len(chunk)
        if len(head) < 64: head += chunk[:64]
        ahead = got / rate - (time.time() - first)
        if ahead > 0: time.sleep(ahead)
    lines.append(f"{head.split(b' ')[1].decode() if b' ' in head else '000'} {time.time() - started:.3f}")
threads = [threading.Thread(target=call) for _ in range(calls)]
for thread in threads: thread.start()
for thread in threads: thread.join()
print("\n".join(lines))
PY
  local statuses slowest
  statuses=$(awk '{print $1}' "$WORK/$1.log" | sort | uniq -c | awk '{printf "%s%s x%s", sep, $2, $1; sep=", "}')
  slowest=$(awk 'BEGIN{m=0} {if ($2 > m) m = $2} END{printf "%.1f", m}' "$WORK/$1.log")
  echo "| $1 | $((CALLS * ANSWER_BYTES >> 20)) | $before | $(rss_mib "$GW_PID") | $statuses | $slowest |"
  kill "$GW_PID" "$SIM_PID" 2>/dev/null || true
}

echo "answers: $CALLS calls at once, $ANSWER_BYTES-byte answers (test/Big, sent gzip by the simulator), each client reading at $RATE/s"
echo "| limits.max_buffered_answer_bytes | answers in all MiB | gateway RSS before MiB | peak RSS MiB | statuses | slowest call s |"
echo "|---|---|---|---|---|---|"
answers "$BOUND" "$BOUND"
answers "4294967296 (out of the way)" 4294967296
