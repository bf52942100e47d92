import AlgoGate
import AlgoTestSupport
import Foundation
import Hummingbird
import Logging
import NIOCore
import Testing

/// Uploads streamed upstream whose answer comes before the body has ended, or which the client
/// abandons. The upstream may answer a PUT before reading a byte of it (the simulator refuses a
/// file in a missing directory at once, as Algorithmia does). Before `UploadRelay`, the gateway
/// then trapped in NIO (two readers of one request body) and the process died, for every team.
/// These run the gateway as its own process, so such a crash fails a test instead of the suite.
@Suite struct UploadTests {
    static func harness() async throws -> ProcessHarness {
        try await ProcessHarness { ProcessHarness.standardYAML(simPort: $0, gatewayPort: $1, work: $2) }
    }

    static func putHead(_ path: String, length: Int, fields: String = "") -> String {
        "PUT \(path) HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Simple \(Keys.teamA)\r\n\(fields)Content-Length: \(length)\r\n\r\n"
    }

    /// The simulator's answer, passed through as it is (its key order varies: compare canonically).
    static let missingDirectory = #"{"error":{"error_type":"EntityNotFoundError","message":"directory data://.my/team-a/missing does not exist"}}"#

    @Test func anUploadAnsweredBeforeItEndsGetsTheAnswerAndTheConnectionGoesOn() async throws {
        let h = try await Self.harness()
        defer { h.stop() }
        let client = try await RawConnection.connect(port: h.gatewayPort, sending: Self.putHead("/v1/data/.my/team-a/missing/f.txt", length: 100_000) + "abc")
        #expect(await eventually { RawResponse.parse(client.text).count == 1 })
        let refused = try #require(RawResponse.parse(client.text).first)
        #expect(refused.statusLine == "HTTP/1.1 404 Not Found")
        #expect(canonicalJSON(literal: refused.body) == canonicalJSON(literal: Self.missingDirectory))
        #expect(refused.headers["connection"] == nil)

        // The rest of the body is read and dropped; the connection then serves the next request.
        try await client.send(String(repeating: "x", count: 99_997))
        try await Self.expectTheNextRequestServed(on: client, by: h)
    }

    /// Once the early-answered upload's body has all been sent, the same connection serves the
    /// next request, and the gateway is still running.
    static func expectTheNextRequestServed(on client: RawConnection, by h: ProcessHarness) async throws {
        try await client.send("GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        #expect(await eventually { RawResponse.parse(client.text).count == 2 })
        let next = try #require(RawResponse.parse(client.text).last)
        #expect(next.statusLine == "HTTP/1.1 200 OK")
        #expect(next.body == #"{"status":"ok"}"#)
        #expect(h.gateway.isRunning)
        await client.close()
    }

    /// An upstream may also accept an upload before reading it, and go on reading it. The HTTP
    /// client then goes on streaming the body after the answer has been relayed (it stops at once
    /// only for 3xx and above): the relay must end the body for it once the answer has been sent,
    /// or the client and Hummingbird's drain of the rest would both read it (a trap in NIO).
    @Test func anUploadAcceptedBeforeItEndsGetsTheAnswerAndTheConnectionGoesOn() async throws {
        let router = Router()
        router.put("/v1/data/.my/team-a/early.txt") { _, _ in
            Response(status: .ok, headers: [.contentType: "application/json"], body: .init(byteBuffer: ByteBuffer(string: #"{"result":"accepted early"}"#)))
        }
        try await LiveServer.run({ onServerRunning in
            Application(router: router, configuration: .init(address: .hostname("127.0.0.1", port: 0)), onServerRunning: onServerRunning,
                        logger: { var logger = Logger(label: "early-upstream"); logger.logLevel = .warning; return logger }())
        }) { upstreamPort in
            let h = try await ProcessHarness { ProcessHarness.standardYAML(simPort: upstreamPort, gatewayPort: $1, work: $2) }
            defer { h.stop() }
            let client = try await RawConnection.connect(port: h.gatewayPort, sending: Self.putHead("/v1/data/.my/team-a/early.txt", length: 30_000) + "abc")
            #expect(await eventually { RawResponse.parse(client.text).count == 1 })
            let accepted = try #require(RawResponse.parse(client.text).first)
            #expect(accepted.statusLine == "HTTP/1.1 200 OK")
            #expect(accepted.body == #"{"result":"accepted early"}"#)

            // The rest comes in pieces, each after the last was read: a reader the relay let go
            // on would be reading beside the drain.
            for _ in 0..<3 {
                try await client.send(String(repeating: "x", count: 9_999))
                try await Task.sleep(for: .milliseconds(200))
            }
            try await Self.expectTheNextRequestServed(on: client, by: h)
        }
    }

    /// A body still arriving `server.idle_timeout_seconds` after its early answer is not read
    /// for ever: the connection is closed (nginx's `lingering_time`). Bytes keep arriving, so the
    /// idle timeout alone would never close it. The bound is the connection's latest upload's: one
    /// before it on the same connection, answered early too and then sent whole, leaves none behind.
    /// (10 s: the first upload's rest must arrive within it, however late a loaded machine lets
    /// the test see the first answer; 5 s was too short in a whole-suite run beside five CPU hogs.)
    @Test func theRestOfAnEarlyAnsweredUploadIsReadForAtMostTheIdleTimeout() async throws {
        let h = try await ProcessHarness {
            ProcessHarness.standardYAML(simPort: $0, gatewayPort: $1, work: $2, server: "idle_timeout_seconds: 10", upstream: "queue_timeout_seconds: 0")
        }
        defer { h.stop() }
        let client = try await RawConnection.connect(port: h.gatewayPort, sending: Self.putHead("/v1/data/.my/team-a/missing/e.txt", length: 1_000) + "abc")
        #expect(await eventually { RawResponse.parse(client.text).count == 1 })
        try await client.send(String(repeating: "x", count: 997) + Self.putHead("/v1/data/.my/team-a/missing/f.txt", length: 100_000) + "abc")
        #expect(await eventually { RawResponse.parse(client.text).count == 2 })
        #expect(RawResponse.parse(client.text).map(\.statusLine) == ["HTTP/1.1 404 Not Found", "HTTP/1.1 404 Not Found"])
        let answered = ContinuousClock.now
        var sent = 3
        while client.closedAt == nil, ContinuousClock.now - answered < .seconds(30) {
            try? await client.send("x")
            sent += 1
            try await Task.sleep(for: .milliseconds(250))
        }
        // (Without the bound it stays open as long as bytes come. No lower bound is asserted: on a
        // loaded machine the test may notice the answer late.)
        #expect(client.closedAt != nil, "still open 30 s after the answer")
        #expect(sent < 100_000, "the body had ended")
        #expect(RawResponse.parse(client.text).count == 2)
        // The gateway goes on serving.
        #expect(try await TestHTTP(port: h.gatewayPort).send(.GET, "/healthz").status == 200)
    }

    @Test(arguments: ["", "Content-Encoding: gzip\r\n"])
    func aClientLeavingAfterAnEarlyAnswerLeavesTheGatewayRunning(encoding: String) async throws {
        let h = try await Self.harness()
        defer { h.stop() }
        for _ in 0..<3 {
            let client = try await RawConnection.connect(port: h.gatewayPort)
            // A gzip stream's first bytes when compressed, plain text otherwise.
            try await client.send(Self.putHead("/v1/data/.my/team-a/missing/f.txt", length: 100_000, fields: encoding) + "\u{1f}")
            #expect(await eventually { RawResponse.parse(client.text).count == 1 })
            #expect(canonicalJSON(literal: RawResponse.parse(client.text).first?.body ?? "") == canonicalJSON(literal: Self.missingDirectory))
            await client.close()
        }
        let health = try await TestHTTP(port: h.gatewayPort).send(.GET, "/healthz")
        #expect(health.status == 200)
        #expect(h.gateway.isRunning)
    }

    @Test func anUploadCutOffBeforeAnyAnswerIsTheClientsErrorAndStoresNothing() async throws {
        let h = try await Self.harness()
        defer { h.stop() }
        let gateway = TestHTTP(port: h.gatewayPort)
        let made = try await gateway.send(.POST, "/v1/data/.my", headers: simple(Keys.teamA), json: ["name": "team-a"])
        #expect(made.status == 200)
        for _ in 0..<6 {  // more than the circuit breaker's 5: a client's failure says nothing of the upstream
            let client = try await RawConnection.connect(port: h.gatewayPort, sending: Self.putHead("/v1/data/.my/team-a/f.txt", length: 100_000) + "abc")
            try await Task.sleep(for: .milliseconds(100))
            await client.close()
        }
        #expect(await eventually { h.gateway.log.components(separatedBy: #""method":"PUT""#).count == 7 })
        let lines = h.gateway.log.split(separator: "\n").filter { $0.contains(#""method":"PUT""#) }
        #expect(lines.count == 6)
        #expect(lines.allSatisfy { $0.contains(#""status":400"#) && $0.contains(#""bytes_in":3"#) }, "\(lines)")
        let read = try await gateway.send(.GET, "/v1/data/.my/team-a/f.txt", headers: simple(Keys.teamA))
        #expect(read.status == 404, "no partial file was committed upstream")
        let health = try await gateway.send(.GET, "/v1/data/.my/team-a", headers: simple(Keys.teamA))
        #expect(health.status == 200, "the circuit stayed closed")
        #expect(h.gateway.isRunning)
    }

    /// A client resetting its connection mid-upload (RST, not FIN) fails the upstream exchange
    /// with a connection error of its own: that is the client's, not a sign the upstream is
    /// unreachable. Before, five in a row opened the circuit breaker for every team.
    @Test func uploadsResetByTheClientDoNotOpenTheCircuit() async throws {
        let h = try await Self.harness()
        defer { h.stop() }
        let gateway = TestHTTP(port: h.gatewayPort)
        #expect(try await gateway.send(.POST, "/v1/data/.my", headers: simple(Keys.teamA), json: ["name": "team-a"]).status == 200)
        for _ in 0..<6 {
            let client = try await RawConnection.connect(port: h.gatewayPort, sending: Self.putHead("/v1/data/.my/team-a/f.txt", length: 100_000) + "abc")
            try await Task.sleep(for: .milliseconds(100))
            try await client.reset()
        }
        #expect(await eventually { h.gateway.log.components(separatedBy: #""method":"PUT""#).count == 7 })
        let lines = h.gateway.log.split(separator: "\n").filter { $0.contains(#""method":"PUT""#) }
        #expect(lines.allSatisfy { $0.contains(#""status":400"#) }, "\(lines)")
        #expect(!h.gateway.log.contains("upstream circuit opened"))
        let listing = try await gateway.send(.GET, "/v1/data/.my/team-a", headers: simple(Keys.teamA))
        #expect(listing.status == 200)
        let metrics = try await gateway.send(.GET, "/metrics").text
        #expect(metricSample(metrics, "algogate_upstream_circuit_open") == 0)
    }

    /// The official Java client's `DataFile.put(File)` sends a file as a stream of unknown length:
    /// chunked, without `Content-Length`. Its chunks go upstream as they come and the file is
    /// stored whole; a chunked download of it comes back the same.
    @Test func aChunkedUploadWithoutALengthIsStoredWhole() async throws {
        try await GatewayHarness.run { h in
            let made = try await h.gateway.send(.POST, "/v1/data/.my", headers: simple(Keys.teamA), json: ["name": "team-a"])
            #expect(made.status == 200)
            let chunks = (0..<5).map { index in String(repeating: String(UnicodeScalar(UInt8(0x61 + index))), count: 40_000 + index) }
            let body = chunks.map { String($0.utf8.count, radix: 16) + "\r\n" + $0 + "\r\n" }.joined() + "0\r\n\r\n"
            let client = try await RawConnection.connect(port: h.gatewayPort, sending: "PUT /v1/data/.my/team-a/java.bin HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                + "Authorization: Simple \(Keys.teamA)\r\nContent-Type: application/octet-stream\r\nTransfer-Encoding: chunked\r\n\r\n")
            for piece in stride(from: 0, to: body.utf8.count, by: 65_536) {
                try await client.send(String(decoding: Array(body.utf8)[piece..<min(piece + 65_536, body.utf8.count)], as: UTF8.self))
            }
            #expect(await eventually { RawResponse.parse(client.text).count == 1 })
            let answer = try #require(RawResponse.parse(client.text).first)
            #expect(answer.statusLine == "HTTP/1.1 200 OK")
            #expect(canonicalJSON(literal: answer.body) == canonicalJSON(literal: #"{"result":"data://.my/team-a/java.bin"}"#))
            await client.close()
            let stored = try await h.sim.send(.GET, "/v1/data/.my/team-a/java.bin", headers: simple(Keys.upstream))
            #expect(stored.status == 200)
            #expect(stored.text == chunks.joined())
        }
    }

    @Test func aHalfSentUploadGetsAnEnvelopeNamingWhatHappened() async throws {
        let h = try await Self.harness()
        defer { h.stop() }
        let made = try await TestHTTP(port: h.gatewayPort).send(.POST, "/v1/data/.my", headers: simple(Keys.teamA), json: ["name": "team-a"])
        #expect(made.status == 200)
        let client = try await RawConnection.connect(port: h.gatewayPort, sending: Self.putHead("/v1/data/.my/team-a/f.txt", length: 100_000) + "abc")
        try await client.shutdownOutput()  // the client's side ends; it still reads the answer
        #expect(await eventually { RawResponse.parse(client.text).count == 1 })
        let answer = try #require(RawResponse.parse(client.text).first)
        #expect(answer.statusLine == "HTTP/1.1 400 Bad Request")
        #expect(answer.body == #"{"error":{"error_type":"InputError","message":"the connection ended before the whole request arrived"}}"#)
        #expect(answer.headers["content-type"] == "application/json")
        #expect(answer.headers["x-request-id"] != nil)
    }
}
