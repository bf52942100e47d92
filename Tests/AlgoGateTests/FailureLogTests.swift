@testable import AlgoGate
import AlgoTestSupport
import Foundation
import Hummingbird
import Logging
import NIOCore
import Testing

/// When the gateway fails to get an answer, its request line says why: the operator reads the
/// log, not the client's body.
@Suite struct FailureLogTests {
    /// The request line of `requestID`, once written.
    static func line(_ h: GatewayHarness, _ requestID: String) async -> String {
        _ = await eventually { h.logs.all.contains { $0.contains(" request ") && $0.contains("request_id=\(requestID) ") } }
        return h.logs.all.first { $0.contains(" request ") && $0.contains("request_id=\(requestID) ") } ?? "no line for \(requestID)"
    }

    /// The value of `field` in a captured line (fields are sorted, so the next one starts " name=").
    static func field(_ line: String, _ name: String) -> String? {
        guard let start = line.range(of: " \(name)=") else { return nil }
        let rest = line[start.upperBound...]
        let end = rest.range(of: #" [a-z_]+="#, options: .regularExpression)?.lowerBound ?? rest.endIndex
        return String(rest[..<end])
    }

    /// An upstream that refuses the server key (revoked, rotated, or the wrong one configured)
    /// answers 401, which goes to the client as it came and reads as if the client's own key were
    /// wrong: the request line is an `error` that names the server key, and a counter moves. The
    /// gateway's own 401 (the client's key) stays `info`, without it.
    @Test func anUpstreamThatRefusesTheServerKeyIsAnErrorNamingIt() async throws {
        try await GatewayHarness.run { h in
            let config = h.app.state.snapshot.config
            try h.app.state.replace(with: ConfigLoader.Loaded(config: config, upstreamKey: Secret("revoked-\(UUID().uuidString)")))
            let algo = try await h.gateway.send(.POST, "/v1/algo/demo/Hello", headers: simple(Keys.teamB) + textType + [("X-Request-ID", "refused-algo")], text: "HAL")
            let data = try await h.gateway.send(.GET, "/v1/data/.my/team-a", headers: simple(Keys.teamA) + [("X-Request-ID", "refused-data")])
            for (reply, id) in [(algo, "refused-algo"), (data, "refused-data")] {
                #expect(reply.status == 401, "\(id)")
                #expect(envelope(reply).type == "AuthorizationError", "\(id): the upstream's answer, passed on")
                let line = await Self.line(h, id)
                #expect(line.hasPrefix("error request "), "\(line)")
                #expect(Self.field(line, "status") == "401")
                #expect(Self.field(line, "upstream") == "refused the server key (401): check upstream.key_env or upstream.key_file")
            }
            let own = try await h.gateway.send(.POST, "/v1/algo/demo/Hello", headers: simple("not-a-key") + textType + [("X-Request-ID", "own-401")], text: "HAL")
            #expect(own.status == 401)
            let line = await Self.line(h, "own-401")
            #expect(line.hasPrefix("info request "), "\(line)")
            #expect(Self.field(line, "upstream") == nil)
            let metrics = try await h.gateway.send(.GET, "/metrics")
            #expect(metricSample(metrics.text, "algogate_upstream_key_refused_total") == 2)
        }
    }

    @Test func aDroppedConnectionIsAWarningNamingWhatTheTransportSaid() async throws {
        try await GatewayHarness.run { h in
            let reply = try await h.gateway.send(.POST, "/v1/algo/demo/Hello", headers: simple(Keys.teamB) + textType + [("X-Sim-Fault", "drop"), ("X-Request-ID", "dropped-1")], text: "HAL")
            #expect(reply.status == 502)
            let line = await Self.line(h, "dropped-1")
            #expect(line.hasPrefix("warning request "), "\(line)")
            #expect(Self.field(line, "status") == "502")
            #expect(Self.field(line, "error_type") == "UpstreamError")
            #expect(Self.field(line, "error") == "the upstream closed the connection before answering")
            #expect(Self.field(line, "cause") == "HTTPClientError.remoteConnectionClosed")
            #expect(Self.field(line, "cut") == nil)
        }
    }

    /// Before, such a failure said only "the upstream request failed", to the client and the log alike.
    @Test func brokenHTTPFromTheUpstreamIsNamedInTheLog() async throws {
        let broken = try await CannedServer.start(reply: "HTTP/1.1 200 OK\r\nContent-Length: twelve\r\n\r\nhello")
        try await GatewayHarness.run(upstreamURL: { _ in "http://127.0.0.1:\(broken.port)" }) { h in
            let reply = try await h.gateway.send(.GET, "/v1/data/.my/team-a/f.txt", headers: simple(Keys.teamA) + [("X-Request-ID", "broken-1")])
            #expect(reply.status == 502)
            #expect(envelope(reply).message == "the upstream request failed")
            let line = await Self.line(h, "broken-1")
            #expect(line.hasPrefix("warning request "), "\(line)")
            #expect(Self.field(line, "error") == "the upstream request failed")
            #expect(Self.field(line, "cause") == "invalid character in content-length header")
        }
        await broken.stop()
    }

    @Test func aTimeoutIsAWarningWithItsBound() async throws {
        try await GatewayHarness.run(upstreamYAML: "timeout_seconds: 1") { h in
            let reply = try await h.gateway.send(.GET, "/v1/data/.my", headers: simple(Keys.reader) + [("X-Sim-Fault", "delay=3000"), ("X-Request-ID", "slow-1")])
            #expect(reply.status == 504)
            let line = await Self.line(h, "slow-1")
            #expect(line.hasPrefix("warning request "), "\(line)")
            #expect(Self.field(line, "error_type") == "UpstreamTimeout")
            #expect(Self.field(line, "error") == "the upstream did not answer within 1 second")
            #expect(Self.field(line, "cause") == "the call's deadline (its timeout and the grace) passed before all of its answer had come")
        }
    }

    /// A refusal is the client's doing: `info`, with its type, and without its message, which may
    /// quote the input (here a data URI from the body).
    @Test func refusalsStayInfoWithTheirTypeAndNoMessage() async throws {
        try await GatewayHarness.run { h in
            let reply = try await h.gateway.send(.POST, "/v1/algo/util/Echo/1.0.0", headers: simple(Keys.teamA) + jsonType + [("X-Request-ID", "refused-1")],
                                                 text: #""data://.my/team-b/payroll-2026.csv""#)
            #expect(reply.status == 403)
            let line = await Self.line(h, "refused-1")
            #expect(line.hasPrefix("info request "), "\(line)")
            #expect(Self.field(line, "error_type") == "PermissionDenied")
            #expect(Self.field(line, "error") == nil)
            #expect(!line.contains("payroll"))

            // The upstream's own error status is its answer, passed on: info, no error fields.
            let upstream = try await h.gateway.send(.POST, "/v1/algo/demo/Hello", headers: simple(Keys.teamB) + textType + [("X-Sim-Fault", "status=500"), ("X-Request-ID", "passed-1")], text: "HAL")
            #expect(upstream.status == 500)
            let passed = await Self.line(h, "passed-1")
            #expect(passed.hasPrefix("info request "), "\(passed)")
            #expect(Self.field(passed, "status") == "500")
            #expect(Self.field(passed, "error_type") == nil)
        }
    }

    /// A download the client leaves part-way is `cut=client`, at info; one whose upstream breaks
    /// part-way is `cut=upstream`, a warning with what broke. Both were "status=200" and nothing more.
    @Test func aStreamCutShortSaysWhichSideCutIt() async throws {
        let endless = try await CannedServer.start(reply: "HTTP/1.1 200 OK\r\nContent-Length: 1000000000\r\n\r\n", trickle: String(repeating: "a", count: 1000))
        try await GatewayHarness.run(upstreamURL: { _ in "http://127.0.0.1:\(endless.port)" }) { h in
            let connection = try await RawConnection.connect(port: h.gatewayPort, sending:
                "GET /v1/data/.my/team-a/big.bin HTTP/1.1\r\nHost: x\r\nAuthorization: Simple \(Keys.teamA)\r\nX-Request-ID: walked-1\r\n\r\n")
            #expect(await eventually { connection.text.contains("aaaa") })
            try await connection.reset()
            let line = await Self.line(h, "walked-1")
            #expect(line.hasPrefix("info request "), "\(line)")
            #expect(Self.field(line, "status") == "200")
            #expect(Self.field(line, "cut") == "client")
            #expect(Self.field(line, "error") == nil)
            #expect(try await eventually { metricSample(try await h.gateway.send(.GET, "/metrics").text, "algogate_upstream_in_flight") == 0 })
        }
        await endless.stop()
        let truncated = try await CannedServer.start(reply: "HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\nhello")
        try await GatewayHarness.run(upstreamURL: { _ in "http://127.0.0.1:\(truncated.port)" }) { h in
            let connection = try await RawConnection.connect(port: h.gatewayPort, sending:
                "GET /v1/data/.my/team-a/f.txt HTTP/1.1\r\nHost: x\r\nAuthorization: Simple \(Keys.teamA)\r\nX-Request-ID: upstream-cut-1\r\n\r\n")
            #expect(await connection.waitForClose(within: .seconds(30)))
            #expect(connection.text.hasPrefix("HTTP/1.1 200 OK"))
            let line = await Self.line(h, "upstream-cut-1")
            #expect(line.hasPrefix("warning request "), "\(line)")
            #expect(Self.field(line, "cut") == "upstream")
            #expect(Self.field(line, "error") == "the answer was cut short: its stream from the upstream failed")
            #expect(Self.field(line, "cause") == "stream ended at an unexpected time")
        }
        await truncated.stop()
    }

    /// An error nothing else expected is a 500 to the client, saying only that; the line is an
    /// `error` with what was thrown.
    @Test func anInternalErrorIsLoggedAsAnErrorWithWhatWasThrown() async throws {
        struct Unexpected: Error, CustomStringConvertible { var description: String { "the disk is on fire" } }
        let failure = ErrorMiddleware.gatewayError(for: Unexpected(), request: Request(head: .init(method: .get, scheme: "http", authority: "x", path: "/v1/data/x"), body: .init(buffer: ByteBuffer())))
        #expect(failure == .internalError("internal gateway error"))
        #expect(failure.body == ByteBuffer(string: #"{"error":{"error_type":"InternalError","message":"internal gateway error"}}"#))
        let logs = LogCapture()
        RequestLogMiddleware.log(logs.logger, requestID: "internal-1", client: "team-a", viaPreviousKey: false, route: "data", method: "GET", path: "/v1/data/x",
                                 status: 500, elapsed: .milliseconds(1), bytesIn: 0, bytesOut: 80, remote: "127.0.0.1", forwardedFor: "", shortfall: Shortfall(failure: failure))
        let line = logs.all.first ?? ""
        #expect(line.hasPrefix("error request "), "\(line)")
        #expect(Self.field(line, "error_type") == "InternalError")
        #expect(Self.field(line, "cause") == "the disk is on fire")
    }

    /// A cause is cut at 500 characters, and one that quotes the upstream key is not logged.
    @Test func causesAreBoundedAndNeverHoldTheKey() async throws {
        struct Wordy: Error, CustomStringConvertible { let description: String }
        let long = GatewayError.badGateway("x").caused(by: Wordy(description: String(repeating: "y", count: 2000)))
        #expect(long.cause == String(repeating: "y", count: 500))
        let forwarder = Forwarder(client: .shared) {
            .init(origin: "http://127.0.0.1:1", key: Secret(Keys.upstream), timeoutSeconds: 1, maxResponseBytes: 1)
        }
        let quoted = forwarder.failure(Wordy(description: "refused: Authorization: Simple \(Keys.upstream)"), timeoutSeconds: 1)
        #expect(quoted == .badGateway("the upstream request failed"))
        #expect(quoted.cause == "(not shown: the description held the upstream key)")
        let plain = forwarder.failure(Wordy(description: "connection refused"), timeoutSeconds: 1)
        #expect(plain.cause == "connection refused")
    }
}
