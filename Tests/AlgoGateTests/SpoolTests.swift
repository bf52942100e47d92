@testable import AlgoGate
import AlgoTestSupport
import Crypto
import Foundation
import NIOCore
import Testing

/// `limits.spool_max_bytes`: a download whose client reads slower than the upstream sends waits
/// on disk for it, so its upstream slot is free once the upstream has sent it all; the client
/// still gets every byte, in order. Without room on disk, the download holds its slot until its
/// client has read it, as with the spool off.
@Suite struct SpoolTests {
    static let size = 32 << 20
    static let path = "/v1/data/.my/team-a/big.bin"
    static let request = "GET \(path) HTTP/1.1\r\nHost: algogate\r\nAuthorization: Simple \(Keys.teamA)\r\n\r\n"

    /// A file of `size` bytes that are not all alike, stored in the simulator; returns its SHA-256.
    static func upload(_ h: GatewayHarness) async throws -> String {
        let mkdir = try await h.sim.send(.POST, "/v1/data/.my", headers: simple(Keys.upstream) + jsonType, text: #"{"name":"team-a"}"#)
        try #require(mkdir.status == 200)
        // A block of a prime length, so no two of the spool's reads see the same bytes at the
        // same place, repeated (built by copies: a debug build's per-byte loop takes seconds).
        let block = (0..<65_521).map { UInt8(truncatingIfNeeded: $0 &* 2_654_435_761 >> 7) }
        var bytes: [UInt8] = []
        bytes.reserveCapacity(size + block.count)
        while bytes.count < size { bytes.append(contentsOf: block) }
        bytes.removeLast(bytes.count - size)
        let put = try await h.sim.send(.PUT, path, headers: simple(Keys.upstream), body: bytes)
        try #require(put.status == 200)
        return digest(bytes)
    }

    /// Reads what a stalled connection was sent until its whole answer is in: its head, and its
    /// body's SHA-256.
    static func readAll(_ connection: RawConnection) async throws -> (head: String, digest: String) {
        try await connection.startReading()
        try #require(await eventually(within: .seconds(60)) { connection.receivedCount >= size }, "\(connection.receivedCount) bytes received")
        let first = connection.bytes
        let split = try #require(first.indices.first { first[$0..<min($0 + 4, first.count)].elementsEqual("\r\n\r\n".utf8) })
        try #require(await eventually(within: .seconds(60)) { connection.receivedCount >= split + 4 + size }, "\(connection.receivedCount) bytes received")
        let received = connection.bytes
        #expect(received.count == split + 4 + size)
        return (String(decoding: received[..<split], as: UTF8.self), digest(received[(split + 4)...]))
    }

    static func digest<Bytes: Sequence<UInt8>>(_ bytes: Bytes) -> String {
        SHA256.hash(data: Array(bytes)).map { String(format: "%02x", $0) }.joined()
    }

    /// The request's log line, once written.
    static func line(_ h: GatewayHarness) async throws -> String {
        try #require(await eventually { h.logs.all.contains { $0.contains("path=\(path)") } }, "no line for the download")
        return h.logs.all.first { $0.contains("path=\(path)") } ?? ""
    }

    @Test func aSlowReaderDoesNotHoldTheSlotOnceTheUpstreamHasSentItAll() async throws {
        try await GatewayHarness.run { h in
            let digest = try await Self.upload(h)
            let stalled = try await RawConnection.connect(port: h.gatewayPort, sending: Self.request, reading: false)
            // The client has read nothing, yet the upstream has sent it all: the slot is free,
            // and what the client has not taken waits on disk.
            #expect(await eventually { h.app.spoolBudget.held > 0 })
            #expect(await eventually { h.app.gate.inFlight == 0 }, "the slot is still held")
            #expect(stalled.receivedCount < Self.size / 2)
            let onDisk = h.app.spoolBudget.held
            #expect(onDisk > Self.size / 2 && onDisk <= Self.size, "\(onDisk) bytes on disk")
            let metrics = try await h.gateway.send(.GET, "/metrics").text
            #expect(metricSample(metrics, "algogate_spool_bytes") == Double(onDisk))
            #expect(metricSample(metrics, "algogate_spool_max_bytes") == 1_073_741_824)
            // The slot's time is the upstream's, not the client's.
            #expect((metricSample(metrics, #"algogate_upstream_slot_seconds_total{client="team-a"}"#) ?? 0) > 0)

            let (head, received) = try await Self.readAll(stalled)
            #expect(head.hasPrefix("HTTP/1.1 200 OK\r\n"), "\(head)")
            #expect(head.lowercased().contains("content-length: \(Self.size)"), "\(head)")
            #expect(received == digest)
            // Done: its file is gone, and the log line says how much waited on disk.
            #expect(await eventually { h.app.spoolBudget.held == 0 })
            let line = try await Self.line(h)
            #expect(line.contains(" status=200") && line.contains(" bytes_out=\(Self.size) "), "\(line)")
            let spooled = try #require(FailureLogTests.field(line, "spooled_bytes").flatMap(Int.init), "\(line)")
            #expect(spooled >= onDisk && spooled <= Self.size)
            await stalled.close()

            // A reader that keeps up takes it all without the disk.
            let fast = try await h.gateway.send(.GET, Self.path, headers: simple(Keys.teamA))
            #expect(fast.status == 200 && fast.bytes.count == Self.size)
            #expect(Self.digest(fast.bytes) == digest)
        }
    }

    /// With less room on disk than the download needs, the pipe takes what fits and the upstream
    /// then waits for the client, its slot held, as without a spool; every byte still arrives.
    @Test func aSpoolWithoutRoomForTheRestHoldsTheSlotAndLosesNothing() async throws {
        try await GatewayHarness.run(extraYAML: "limits: {spool_max_bytes: 4194304}") { h in
            let digest = try await Self.upload(h)
            let stalled = try await RawConnection.connect(port: h.gatewayPort, sending: Self.request, reading: false)
            // Full, but for less than a part of the upstream's (at most 64 KiB each).
            try #require(await eventually { h.app.spoolBudget.held > (4 << 20) - (64 << 10) }, "the spool never filled: \(h.app.spoolBudget.held)")
            // Full: the upstream waits, and its slot is held.
            try await Task.sleep(for: .milliseconds(500))
            #expect(h.app.gate.inFlight == 1)
            let (head, received) = try await Self.readAll(stalled)
            #expect(head.hasPrefix("HTTP/1.1 200 OK\r\n"))
            #expect(received == digest)
            #expect(h.app.spoolBudget.peak <= 4 << 20)
            #expect(await eventually { h.app.spoolBudget.held == 0 && h.app.gate.inFlight == 0 })
            await stalled.close()
        }
    }

    /// `spool_max_bytes: 0`: nothing goes to disk, and a stalled download holds its slot.
    @Test func noSpoolHoldsTheSlotUntilTheClientHasRead() async throws {
        try await GatewayHarness.run(extraYAML: "limits: {spool_max_bytes: 0}") { h in
            let digest = try await Self.upload(h)
            let stalled = try await RawConnection.connect(port: h.gatewayPort, sending: Self.request, reading: false)
            try #require(await eventually { h.app.gate.inFlight == 1 }, "the download never took a slot")
            try await Task.sleep(for: .seconds(1))
            #expect(h.app.gate.inFlight == 1)
            #expect(h.app.spoolBudget.peak == 0)
            let (_, received) = try await Self.readAll(stalled)
            #expect(received == digest)
            #expect(await eventually { h.app.gate.inFlight == 0 })
            await stalled.close()
        }
    }

    /// A client that goes mid-download takes its spooled bytes with it: the file is closed (it
    /// was unlinked when made) and its room given back.
    @Test func aClientThatGoesLeavesNothingOnDisk() async throws {
        try await GatewayHarness.run { h in
            _ = try await Self.upload(h)
            let stalled = try await RawConnection.connect(port: h.gatewayPort, sending: Self.request, reading: false)
            try #require(await eventually { h.app.spoolBudget.held > Self.size / 2 && h.app.gate.inFlight == 0 })
            try await stalled.reset()
            #expect(await eventually { h.app.spoolBudget.held == 0 })
            let line = try await Self.line(h)
            #expect(line.contains(" cut=client") && line.contains(" spooled_bytes="), "\(line)")
            // No file of it is left in the spool's directory (the state file's).
            let directory = (h.app.state.snapshot.config.cache.path as NSString).deletingLastPathComponent
            let names = try FileManager.default.contentsOfDirectory(atPath: directory)
            #expect(!names.contains { $0.hasPrefix(".algogate-spool-") }, "\(names)")
        }
    }

    /// A client that goes while the upstream is still sending: the upstream exchange is given up
    /// with it (the task taking the upstream's bytes is cancelled), its slot freed at once, not
    /// held until an upstream that never finishes has sent everything.
    @Test func aClientThatGoesWhileTheUpstreamSendsEndsTheExchange() async throws {
        let head = "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: 100000000\r\n\r\n"
        let upstream = try await CannedServer.start(reply: head + String(repeating: "a", count: 200_000),
                                                    trickle: String(repeating: "b", count: 1000), every: .milliseconds(10))
        try await GatewayHarness.run(upstreamURL: { _ in "http://127.0.0.1:\(upstream.port)" }) { h in
            let reading = try await RawConnection.connect(port: h.gatewayPort, sending: Self.request)
            try #require(await eventually { reading.receivedCount > 200_000 }, "\(reading.receivedCount) bytes received")
            #expect(h.app.gate.inFlight == 1)
            try await reading.reset()
            #expect(await eventually(within: .seconds(10)) { h.app.gate.inFlight == 0 }, "the slot is still held")
            #expect(await eventually { h.app.spoolBudget.held == 0 })
            let line = try await Self.line(h)
            #expect(line.contains(" cut=client"), "\(line)")
        }
        await upstream.stop()
    }

    /// An upstream that ends its answer short: what came is passed on from the pipe, then the
    /// client's connection is closed, so it sees the answer cut, as without a spool.
    @Test func anAnswerTheUpstreamCutsShortIsCutForTheClient() async throws {
        let head = "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: 1000000\r\n\r\n"
        let upstream = try await CannedServer.start(reply: head + String(repeating: "a", count: 300_000))
        try await GatewayHarness.run(upstreamURL: { _ in "http://127.0.0.1:\(upstream.port)" }) { h in
            let reading = try await RawConnection.connect(port: h.gatewayPort, sending: Self.request)
            #expect(await reading.waitForClose(within: .seconds(20)), "still open: \(reading.receivedCount) bytes received")
            #expect(reading.text.hasPrefix("HTTP/1.1 200 OK\r\n"))
            let body = reading.receivedCount - (reading.text.range(of: "\r\n\r\n").map { reading.text.utf8.distance(from: reading.text.startIndex, to: $0.upperBound) } ?? 0)
            // What came, but for its last part, which the key check holds back until the next
            // (`KeyEchoGuard.Stream`), as without a spool: short of the declared length.
            #expect(body < 300_000, "\(body)")
            #expect(await eventually { h.app.gate.inFlight == 0 && h.app.spoolBudget.held == 0 })
        }
        await upstream.stop()
    }

    /// The pipe alone: what it could not hold waits for the taker; once the taker has emptied the
    /// file, the room the file held goes back to the budget (the file starts again from nothing),
    /// and every part comes out whole and in order.
    @Test func aPipeGivesItsRoomBackWhenItsFileHasBeenTaken() async throws {
        try await withTemporaryDirectory("spool-pipe") { directory in
            let budget = MemoryBudget()
            let size = 64 << 10
            let pipe = SpoolPipe(settings: .init(directory: directory.path, capacity: 1 << 20, memoryBytes: size, rewindBytes: 4 << 20), budget: budget)
            let pusher = Task {
                for index in 0..<40 { try await pipe.push(ByteBuffer(repeating: UInt8(index), count: size)) }
                pipe.finish()
            }
            // One part in memory, sixteen in the file (its 1 MiB), and the pusher waits.
            try #require(await eventually { budget.held == 1 << 20 }, "\(budget.held)")
            var index = 0
            var lowest = budget.held
            while let part = try await pipe.next() {
                #expect(part.readableBytes == size && part.readableBytesView.allSatisfy { $0 == UInt8(index) }, "part \(index)")
                index += 1
                lowest = min(lowest, budget.held)
            }
            try await pusher.value
            #expect(index == 40)
            #expect(lowest < 1 << 20, "the file's room was never given back while the pipe ran")
            #expect(pipe.spooled >= 16 * size)
            pipe.close()
            #expect(budget.held == 0)
        }
    }
}
