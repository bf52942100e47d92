"""Memory the gateway holds per request in flight: opens N connections, then sends one request
on each at once and waits for every answer. Prints the gateway's resident memory (from /proc)
before, with the connections open and idle, at its peak (VmHWM), 1 s and 12 s after they
closed (the gateway gives freed memory back every 10 s: `FreedMemory`), and the growth per
request beyond the open connections.

usage: inflight.py GATEWAY_PID PORT KEY KIND N   (KIND: healthz, algo, pinned, data)
"""
import asyncio, collections, sys

pid, port, key, kind, n = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4], int(sys.argv[5])
delay = 500  # ms the simulator holds each call (X-Sim-Fault), so the calls are in flight together


def memory_kib(field):
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])


def request(i):
    auth = f"Authorization: Simple {key}\r\nX-Sim-Fault: delay={delay}\r\n"
    if kind == "healthz":
        return b"GET /healthz HTTP/1.1\r\nHost: bench\r\n\r\n"
    if kind == "data":
        return f"GET /v1/data/.my/bench/file HTTP/1.1\r\nHost: bench\r\n{auth}\r\n".encode()
    # algo: unpinned, passed through; pinned: a miss, a different input each.
    path = "/v1/algo/util/Echo" if kind == "algo" else "/v1/algo/util/Echo/1.0.0"
    body = f'"input {i}"'.encode()
    head = f"POST {path} HTTP/1.1\r\nHost: bench\r\n{auth}Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    return head.encode() + body


async def answer(reader):
    status = await reader.readline()
    length = 0
    while (line := await reader.readline()) not in (b"\r\n", b""):
        name, _, value = line.decode().partition(":")
        if name.lower() == "content-length":
            length = int(value)
    await reader.readexactly(length)
    return status.split(b" ")[1].decode()


async def main():
    before = memory_kib("VmRSS")
    connections = []
    for start in range(0, n, 500):
        connections += await asyncio.gather(*[asyncio.open_connection("127.0.0.1", port) for _ in range(min(500, n - start))])
    await asyncio.sleep(1)
    opened = memory_kib("VmRSS")
    for i, (_, writer) in enumerate(connections):
        writer.write(request(i))
    await asyncio.gather(*[writer.drain() for _, writer in connections])
    statuses = collections.Counter(await asyncio.gather(*[answer(reader) for reader, _ in connections]))
    peak = memory_kib("VmHWM")
    for _, writer in connections:
        writer.close()
    await asyncio.sleep(1)
    after = memory_kib("VmRSS")
    await asyncio.sleep(11)
    later = memory_kib("VmRSS")
    per_request = (peak - opened) / n
    print(f"| {kind} | {n} | {before // 1024} | {opened // 1024} | {peak // 1024} | {after // 1024} | {later // 1024} | {per_request:.1f} | "
          + ", ".join(f"{count} × {status}" for status, count in sorted(statuses.items())) + " |")

asyncio.run(main())
