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
/// test's standing in for systemd's: `READY=1` once it listens, `WATCHDOG=1` as `WATCHDOG_USEC`
/// asks, `STOPPING=1` as it drains. `Tests/systemd-runtime.sh` runs the unit under systemd itself.
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
            var before: [String] = []
            var ready: String?
            while ready == nil, before.count < 100 {
                let message = try #require(await socket.receive(within: .seconds(30)), "no READY=1: \(before)")
                if message.hasPrefix("READY=1") { ready = message } else { before.append(message) }
            }
            #expect(ready == "READY=1\nSTATUS=serving on 127.0.0.1:\(pair.gatewayPort)")
            #expect(before.allSatisfy { $0 == "WATCHDOG=1" }, "\(before)")
            // Ready means serving: the first request after it is answered.
            let health = try await HTTPClient.shared.get(url: pair.gatewayURL + "/healthz").get()
            #expect(health.status == .ok)
            for _ in 0..<3 {
                #expect(await socket.receive(within: .seconds(10)) == "WATCHDOG=1")
            }
            pair.gateway.signal(SIGTERM)
            var message = await socket.receive(within: .seconds(10))
            while message == "WATCHDOG=1" { message = await socket.receive(within: .seconds(10)) }
            #expect(message == "STOPPING=1", "\(socket.received.suffix(5))")
            await pair.gateway.exited()
            #expect(pair.gateway.termination == .exited(0))
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
        #expect(await socket.receive(within: .seconds(30)) == "READY=1\nSTATUS=serving on 127.0.0.1:\(pair.gatewayPort)")
        // Five of the pings' intervals: none comes.
        #expect(await socket.receive(within: .seconds(1)) == nil)
        pair.gateway.signal(SIGTERM)
        #expect(await socket.receive(within: .seconds(10)) == "STOPPING=1")
        await pair.gateway.exited()
        #expect(pair.gateway.termination == .exited(0))
        #expect(socket.received == ["READY=1\nSTATUS=serving on 127.0.0.1:\(pair.gatewayPort)", "STOPPING=1"])
    }
}

/// A datagram socket bound at a path, or at an abstract name given as `@name`, read on NIO's
/// thread pool (a blocking read must not hold a thread Swift's tasks share).
final class NotifySocket: @unchecked Sendable {
    // `@unchecked`: `descriptor` and `name` are set in init; `messages` is guarded by `lock`.
    let name: String
    private let descriptor: Int32
    private let lock = NSLock()
    private var messages: [String] = []

    init(path: String) throws {
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
    }

    /// Every message received so far, in order.
    var received: [String] { lock.withLock { messages } }

    /// The next message, or nil when none comes within `timeout`.
    func receive(within timeout: Duration) async -> String? {
        let (descriptor, seconds) = (descriptor, timeout.components.seconds)
        let microseconds = timeout.components.attoseconds / 1_000_000_000_000
        let message: String? = try? await NIOThreadPool.singleton.runIfActive {
            var limit = timeval(tv_sec: Int(seconds), tv_usec: Int(microseconds))
            setsockopt(descriptor, SOL_SOCKET, SO_RCVTIMEO, &limit, socklen_t(MemoryLayout<timeval>.size))
            var buffer = [UInt8](repeating: 0, count: 4096)
            let count = recv(descriptor, &buffer, buffer.count, 0)
            return count > 0 ? String(decoding: buffer[..<count], as: UTF8.self) : nil
        }
        if let message { lock.withLock { messages.append(message) } }
        return message
    }

    func close() {
        Glibc.close(descriptor)
        if !name.hasPrefix("@") { unlink(name) }
    }
}
