import AlgoGate
import AlgoTestSupport
import AsyncHTTPClient
import Foundation
import NIOPosix
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// `serve` under a `Type=notify` systemd unit (sd_notify(3)), with a datagram socket of the
/// test's standing in for systemd's: `READY=1` once it listens, `RELOADING=1` and `READY=1`
/// around a reload, `WATCHDOG=1` as `WATCHDOG_USEC` asks, `STOPPING=1` as it drains.
/// `Tests/systemd-runtime.sh` runs the unit under systemd itself.
@Suite struct SystemdNotifyTests {
    @Test func serveSaysReadyOnceListeningThenPingsTheWatchdogAndSaysStopping() async throws {
        try await withTemporaryDirectory("notify") { work in
            let socket = try NotifySocket(path: work.appendingPathComponent("notify").path)
            defer { socket.close() }
            // Pings every 0.2 s.
            let pair = try await ProcessHarness(environment: ["NOTIFY_SOCKET": socket.name, "WATCHDOG_USEC": "400000"]) {
                ProcessHarness.standardYAML(simPort: $0, gatewayPort: $1, work: $2)
            }
            defer { pair.stop() }
            let ready = "READY=1\nSTATUS=serving on 127.0.0.1:\(pair.gatewayPort)"
            try #require(await eventually { socket.received.contains(ready) }, "\(socket.received)")
            // Ready means serving: the first request after it is answered.
            let health = try await HTTPClient.shared.get(url: pair.gatewayURL + "/healthz").get()
            #expect(health.status == .ok)
            let before = socket.received.count
            #expect(await eventually { socket.received.count >= before + 3 }, "no pings after READY=1: \(socket.received)")
            pair.gateway.signal(SIGTERM)
            await pair.gateway.exited()
            #expect(pair.gateway.termination == .exited(0))
            // A ping under way as the drain began may come after STOPPING=1: systemd ignores it.
            #expect(await eventually(within: .seconds(5)) { socket.received.contains("STOPPING=1") }, "\(socket.received.suffix(5))")
            // Pings (from the start), ready once, pings, stopping once: nothing else.
            let said = socket.received
            #expect(said.filter { $0 != "WATCHDOG=1" } == [ready, "STOPPING=1"], "\(said)")
            #expect(said.drop { $0 != ready }.filter { $0 == "WATCHDOG=1" }.count >= 3, "\(said)")
        }
    }

    /// Each reload is told as it begins (`RELOADING=1` with the monotonic time, as a
    /// `Type=notify-reload` unit needs, to know it for one begun after its signal) and once it is
    /// over (`READY=1`, the status saying when it was refused and the configuration before it
    /// kept), in that order.
    @Test func eachReloadIsToldAsItBeginsAndOnceItIsOver() async throws {
        try await withTemporaryDirectory("notify") { work in
            let socket = try NotifySocket(path: work.appendingPathComponent("notify").path)
            defer { socket.close() }
            let pair = try await ProcessHarness(environment: ["NOTIFY_SOCKET": socket.name]) {
                ProcessHarness.standardYAML(simPort: $0, gatewayPort: $1, work: $2)
            }
            defer { pair.stop() }
            let serving = "serving on 127.0.0.1:\(pair.gatewayPort)"
            try #require(await eventually { socket.received == ["READY=1\nSTATUS=\(serving)"] }, "\(socket.received)")
            let good = try String(contentsOf: pair.configURL, encoding: .utf8)
            let reloadings = { socket.received.filter { $0.hasPrefix("RELOADING=1\n") } }
            // SIGHUP, then what it was told, each reload's two messages after the start's.
            func reload(expecting count: Int) async throws -> (reloading: String, ready: String, sent: (UInt64, UInt64)) {
                let before = Self.monotonicMicroseconds()
                pair.gateway.signal(SIGHUP)
                try #require(await eventually { socket.received.count == 1 + 2 * count }, "\(socket.received)")
                let after = Self.monotonicMicroseconds()
                return (socket.received[2 * count - 1], socket.received[2 * count], (before, after))
            }
            let taken = try await reload(expecting: 1)
            let fields = taken.reloading.split(separator: "\n")
            #expect(fields.count == 3 && fields[0] == "RELOADING=1" && fields[2] == "STATUS=reloading the configuration", "\(taken.reloading)")
            let stamp = try #require(fields.count == 3 ? UInt64(fields[1].dropFirst("MONOTONIC_USEC=".count)) : nil, "\(taken.reloading)")
            #expect(fields[1].hasPrefix("MONOTONIC_USEC=") && taken.sent.0 <= stamp && stamp <= taken.sent.1, "\(stamp) not within \(taken.sent)")
            #expect(taken.ready == "READY=1\nSTATUS=\(serving)")
            let keyEnv = "key_env: \(ProcessHarness.keyVariable)"
            try #require(good.contains(keyEnv))
            try good.replacingOccurrences(of: keyEnv, with: keyEnv + ", max_concurrency: -1").write(to: pair.configURL, atomically: true, encoding: .utf8)
            let refused = try await reload(expecting: 2)
            #expect(refused.reloading.hasPrefix("RELOADING=1\nMONOTONIC_USEC="))
            #expect(refused.ready == "READY=1\nSTATUS=\(serving); the last reload was refused, the configuration before it kept (see the log)")
            try good.write(to: pair.configURL, atomically: true, encoding: .utf8)
            let again = try await reload(expecting: 3)
            #expect(again.ready == "READY=1\nSTATUS=\(serving)")
            #expect(reloadings().count == 3)
            let health = try await HTTPClient.shared.get(url: pair.gatewayURL + "/healthz").get()
            #expect(health.status == .ok)
        }
    }

    /// CLOCK_MONOTONIC in microseconds, as systemd reads `MONOTONIC_USEC`.
    static func monotonicMicroseconds() -> UInt64 {
        var now = timespec()
        clock_gettime(CLOCK_MONOTONIC, &now)
        return UInt64(now.tv_sec) * 1_000_000 + UInt64(now.tv_nsec) / 1_000
    }

    /// A reader that falls behind (the kernel queues ten datagrams at a socket) loses nothing:
    /// with pings every 10 ms and the socket not read, its queue is full when the gateway is told
    /// to stop, and STOPPING=1 waits for room (up to 5 s) rather than being dropped, as a dropped
    /// READY=1 would have systemd kill a gateway that serves.
    @Test func aReaderThatFallsBehindLosesNothing() async throws {
        try await withTemporaryDirectory("notify") { work in
            let socket = try NotifySocket(path: work.appendingPathComponent("notify").path, reading: false)
            defer { socket.close() }
            let pair = try await ProcessHarness(environment: ["NOTIFY_SOCKET": socket.name, "WATCHDOG_USEC": "20000"]) {
                ProcessHarness.standardYAML(simPort: $0, gatewayPort: $1, work: $2)
            }
            defer { pair.stop() }
            try await Task.sleep(for: .milliseconds(500))   // fifty pings' time: the queue is full
            pair.gateway.signal(SIGTERM)
            // Counted on the socket's own thread: a loaded test run may wake this task late.
            socket.startReading(after: .seconds(1))
            await pair.gateway.exited()
            #expect(pair.gateway.termination == .exited(0))
            // A ping waiting for room beside it may come after it.
            #expect(await eventually(within: .seconds(10)) { socket.received.contains("STOPPING=1") }, "\(socket.received.filter { $0 != "WATCHDOG=1" })")
            #expect(socket.received.filter { $0 == "STOPPING=1" }.count == 1)
        }
    }

    /// An abstract socket (`@name`, as systemd may give in a container), and a watchdog systemd
    /// asks of another process (`WATCHDOG_PID`, left by a parent): ready and stopping, no pings.
    @Test func anAbstractSocketAndAWatchdogForAnotherProcess() async throws {
        let socket = try NotifySocket(path: "@algogate-test-\(UUID().uuidString)")
        defer { socket.close() }
        let pair = try await ProcessHarness(environment: ["NOTIFY_SOCKET": socket.name, "WATCHDOG_USEC": "200000", "WATCHDOG_PID": "1"]) {
            ProcessHarness.standardYAML(simPort: $0, gatewayPort: $1, work: $2)
        }
        defer { pair.stop() }
        let ready = "READY=1\nSTATUS=serving on 127.0.0.1:\(pair.gatewayPort)"
        try #require(await eventually { socket.received.contains(ready) }, "\(socket.received)")
        // Five of the pings' intervals: none comes.
        try await Task.sleep(for: .seconds(1))
        pair.gateway.signal(SIGTERM)
        await pair.gateway.exited()
        #expect(pair.gateway.termination == .exited(0))
        #expect(await eventually(within: .seconds(5)) { socket.received.count == 2 })
        #expect(socket.received == [ready, "STOPPING=1"])
    }
}

/// A datagram socket bound at a path, or at an abstract name given as `@name`, read as systemd
/// reads its own: all the time, on a thread of its own (a blocking read must not hold a thread
/// Swift's tasks share).
final class NotifySocket: @unchecked Sendable {
    // `@unchecked`: `descriptor` and `name` are set in init; the rest is guarded by `lock`.
    let name: String
    private let descriptor: Int32
    private let lock = NSLock()
    private var messages: [String] = []
    private var closed = false
    private var delay: Duration = .zero
    private let started = DispatchSemaphore(value: 0)

    /// `reading`: false, and nothing is read until `startReading()`, so that the queue fills.
    init(path: String, reading: Bool = true) throws {
        name = path
        descriptor = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard descriptor >= 0 else { throw POSIXError(POSIXErrorCode(rawValue: errno) ?? .EIO) }
        var bytes = Array(path.utf8)
        let abstract = bytes.first == UInt8(ascii: "@")
        if abstract { bytes[0] = 0 }
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &address.sun_path) { $0.copyBytes(from: bytes) }
        let length = socklen_t(MemoryLayout<sa_family_t>.size + bytes.count + (abstract ? 0 : 1))
        let bound = withUnsafePointer(to: &address) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(descriptor, $0, length) } }
        guard bound == 0 else { let code = errno; Glibc.close(descriptor); throw POSIXError(POSIXErrorCode(rawValue: code) ?? .EIO) }
        var limit = timeval(tv_sec: 0, tv_usec: 100_000)
        setsockopt(descriptor, SOL_SOCKET, SO_RCVTIMEO, &limit, socklen_t(MemoryLayout<timeval>.size))
        let thread = Thread { [self] in
            started.wait()
            let delay = lock.withLock { self.delay }
            Thread.sleep(forTimeInterval: Double(delay.components.seconds) + Double(delay.components.attoseconds) / 1e18)
            var buffer = [UInt8](repeating: 0, count: 4096)
            while !lock.withLock({ closed }) {
                let count = recv(descriptor, &buffer, buffer.count, 0)
                if count > 0 {
                    let message = String(decoding: buffer[..<count], as: UTF8.self)
                    lock.withLock { messages.append(message) }
                }
            }
            Glibc.close(descriptor)
            if !path.hasPrefix("@") { unlink(path) }
        }
        thread.start()
        if reading { startReading() }
    }

    /// Reads from `delay` on.
    func startReading(after delay: Duration = .zero) {
        lock.withLock { self.delay = delay }
        started.signal()
    }

    /// Every message received so far, in order.
    var received: [String] { lock.withLock { messages } }

    /// Stops the reading; its thread closes the socket within a read's timeout (0.1 s).
    func close() {
        lock.withLock { closed = true }
        started.signal()
    }
}
