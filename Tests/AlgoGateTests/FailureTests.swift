@testable import AlgoGate
import AlgoTestSupport
import AsyncHTTPClient
import Foundation
import NIOCore
import Testing

@Suite struct FailureTests {
    @Test func oversizedAlgorithmInputIs413BeforeTheUpstream() async throws {
        try await GatewayHarness.run(extraYAML: "limits: {max_request_bytes: 1000}") { h in
            let big = [UInt8](repeating: 0x61, count: 1001)
            let known = try await h.gateway.send(.POST, "/v1/algo/util/Echo/1.0.0", headers: simple(Keys.teamB) + textType, body: big)
            #expect(known.status == 413)
            #expect(known.text == #"{"error":{"error_type":"RequestTooLarge","message":"algorithm input exceeds the 1000-byte limit (limits.max_request_bytes)"}}"#)

            var chunked = HTTPClientRequest(url: h.gateway.base + "/v1/algo/util/Echo/1.0.0")
            chunked.method = .POST
            chunked.headers.add(name: "Authorization", value: "Simple \(Keys.teamB)")
            chunked.headers.add(name: "Content-Type", value: "text/plain")
            let parts = (0..<5).map { _ in ByteBuffer(repeating: 0x62, count: 300) }
            chunked.body = .stream(parts.async, length: .unknown)
            let response = try await HTTPClient.shared.execute(chunked, timeout: .seconds(30))
            #expect(response.status.code == 413)
            let body = try await response.body.collect(upTo: 1 << 16)
            #expect(String(buffer: body).contains("RequestTooLarge"))

            let fits = try await h.gateway.send(.POST, "/v1/algo/util/Echo/1.0.0", headers: simple(Keys.teamB) + textType, body: Array(big.dropLast()))
            #expect(fits.status == 200)
            #expect(h.simulator.stats.snapshot.algoCalls == ["util/Echo/1.0.0": 1])
        }
    }

    @Test func oversizedAlgorithmOutputIs502() async throws {
        try await GatewayHarness.run(extraYAML: "limits: {max_response_bytes: 10000}") { h in
            let reply = try await h.gateway.send(.POST, "/v1/algo/test/Big/1.0.0", headers: simple(Keys.teamB) + jsonType, text: "20000")
            #expect(reply.status == 502)
            #expect(reply.text == #"{"error":{"error_type":"UpstreamError","message":"the algorithm's response exceeds the gateway's 10000-byte limit (limits.max_response_bytes)"}}"#)
            let small = try await h.gateway.send(.POST, "/v1/algo/test/Big/1.0.0", headers: simple(Keys.teamB) + jsonType, text: "100")
            #expect(small.status == 200)
        }
    }

    @Test func anUnreachableUpstreamIs502() async throws {
        let closedPort = 1  // privileged and unused on loopback: nothing listens there
        try await GatewayHarness.run(upstreamYAML: "connect_timeout_seconds: 1", upstreamURL: { _ in "http://127.0.0.1:\(closedPort)" }) { h in
            let algo = try await h.gateway.send(.POST, "/v1/algo/demo/Hello/0.1.0", headers: simple(Keys.teamB) + textType, text: "HAL")
            #expect(algo.status == 502)
            #expect(algo.text == #"{"error":{"error_type":"UpstreamError","message":"the upstream is unreachable"}}"#)
            let data = try await h.gateway.send(.GET, "/v1/data/.my/team-a", headers: simple(Keys.teamA))
            #expect(data.status == 502)
        }
    }

    /// Connections to an upstream that never completes them (a host that drops them, a listener
    /// whose queue is full) are a 502 once `connect_timeout_seconds` has passed, for every call
    /// waiting on them. AsyncHTTPClient fails a call waiting for a pooled connection while others
    /// are open as `getConnectionFromPoolTimeout` rather than `connectTimeout`: the same thing for
    /// the caller, and for the circuit breaker.
    @Test func anUpstreamThatNeverCompletesAConnectionIs502() async throws {
        let blackHole = try BlackHoleListener()
        try await GatewayHarness.run(upstreamYAML: "connect_timeout_seconds: 1\n  circuit_breaker: {failures: 0}",
                                     upstreamURL: { _ in "http://127.0.0.1:\(blackHole.port)" }) { h in
            let replies = try await withThrowingTaskGroup(of: TestHTTP.Reply.self) { group in
                for _ in 0..<8 {
                    group.addTask { try await h.gateway.send(.POST, "/v1/algo/demo/Hello", headers: simple(Keys.teamB) + textType, text: "HAL") }
                }
                return try await group.reduce(into: []) { $0.append($1) }
            }
            #expect(replies.map(\.status) == Array(repeating: 502, count: 8))
            for reply in replies {
                #expect(reply.text == #"{"error":{"error_type":"UpstreamError","message":"the upstream is unreachable"}}"#)
            }
        }
        #expect(Forwarder.translate(HTTPClientError.getConnectionFromPoolTimeout, timeoutSeconds: 300).message == "the upstream is unreachable")
        #expect(Forwarder.isUnreachable(HTTPClientError.getConnectionFromPoolTimeout))
    }

    @Test func aDroppedUpstreamConnectionIs502() async throws {
        try await GatewayHarness.run { h in
            let reply = try await h.gateway.send(.POST, "/v1/algo/demo/Hello/0.1.0", headers: simple(Keys.teamB) + textType + [("X-Sim-Fault", "drop")], text: "HAL")
            #expect(reply.status == 502)
            #expect(envelope(reply).type == "UpstreamError")
            #expect(envelope(reply).message == "the upstream closed the connection before answering")
        }
    }

    /// A lost connection (a stale keep-alive connection looks the same) costs a bodiless GET or HEAD
    /// one more attempt on a new connection; an algorithm call or an upload is never sent twice.
    @Test func lostConnectionsAreRetriedOnceForIdempotentBodilessRequestsOnly() async throws {
        try await GatewayHarness.run { h in
            func retries(_ route: String) async throws -> Int {
                let text = try await h.gateway.send(.GET, "/metrics").text
                return metricSample(text, #"algogate_upstream_retries_total{route="\#(route)"}"#).map { Int($0) } ?? 0
            }
            let dropFirst = [("X-Sim-Fault", "drop-first")]
            let listing = try await h.gateway.send(.GET, "/v1/data/.my/team-a", headers: simple(Keys.teamA) + dropFirst + [("X-Request-ID", "retry-get")])
            #expect(listing.status == 404)  // the directory does not exist: the simulator's own answer, on the second attempt
            #expect(listing.header("X-Request-ID") == "retry-get")
            #expect(h.simulator.stats.snapshot.requestsByClass["data"] == 2)

            let head = try await h.gateway.send(.HEAD, "/v1/data/.my/team-a", headers: simple(Keys.teamA) + dropFirst + [("X-Request-ID", "retry-head")])
            #expect(head.status == 404)
            #expect(h.simulator.stats.snapshot.requestsByClass["data"] == 4)
            #expect(try await retries("data") == 2)

            // Dropped every time: one retry, then the 502.
            let always = try await h.gateway.send(.GET, "/v1/algorithms/demo/Hello", headers: simple(Keys.teamA) + [("X-Sim-Fault", "drop")])
            #expect(always.status == 502)
            #expect(envelope(always).message == "the upstream closed the connection before answering")
            #expect(h.simulator.stats.snapshot.requestsByClass["management"] == 2)
            #expect(try await retries("manage") == 1)

            // Never replayed: an algorithm call (POST), a data upload (PUT with a body), a DELETE.
            let algo = try await h.gateway.send(.POST, "/v1/algo/demo/Hello/0.1.0", headers: simple(Keys.teamB) + textType + dropFirst, text: "HAL")
            #expect(algo.status == 502)
            #expect(h.simulator.stats.snapshot.requestsByClass["algo"] == 1)
            let put = try await h.gateway.send(.PUT, "/v1/data/.my/team-a/f.txt", headers: simple(Keys.teamA) + dropFirst, text: "x")
            #expect(put.status == 502)
            let delete = try await h.gateway.send(.DELETE, "/v1/data/.my/team-a/f.txt", headers: simple(Keys.teamA) + dropFirst)
            #expect(delete.status == 502)
            #expect(h.simulator.stats.snapshot.requestsByClass["data"] == 6)
            #expect(try await retries("data") == 2)
            #expect(try await retries("algo") == 0)
        }
    }

    /// How a transport failure is classed and told. A bodiless request is sent again after a
    /// connection lost under it (closed, ended, reset, a broken pipe), never after a refused
    /// connect or a timeout; each is a failure to reach the upstream for the circuit breaker. A
    /// whole call's read timeout is told as its deadline, which came first; a write timeout is a 504.
    @Test func transportFailuresAreClassedAndTold() {
        let lost: [any Error] = [HTTPClientError.remoteConnectionClosed, ChannelError.ioOnClosedChannel, ChannelError.eof,
                                 ChannelError.outputClosed, ChannelError.alreadyClosed,
                                 IOError(errnoCode: ECONNRESET, reason: "read"), IOError(errnoCode: EPIPE, reason: "write")]
        for error in lost {
            #expect(Forwarder.isLostConnection(error), "\(error)")
            #expect(Forwarder.isUnreachable(error), "\(error)")
        }
        let notLost: [any Error] = [HTTPClientError.connectTimeout, HTTPClientError.readTimeout, IOError(errnoCode: ECONNREFUSED, reason: "connect")]
        for error in notLost {
            #expect(!Forwarder.isLostConnection(error), "\(error)")
        }
        #expect(Forwarder.translate(HTTPClientError.readTimeout, timeoutSeconds: 30, wholeCall: true)
            == .gatewayTimeout("the upstream did not answer within 30 seconds"))
        #expect(Forwarder.translate(HTTPClientError.readTimeout, timeoutSeconds: 30)
            == .gatewayTimeout("the upstream sent nothing for longer than upstream.timeout_seconds (and 5 s of grace)"))
        #expect(Forwarder.translate(HTTPClientError.writeTimeout, timeoutSeconds: 30) == .gatewayTimeout("the upstream did not answer within 30 seconds"))
        // A connection lost under the request was reached: told as closed, whether it ended or was reset.
        for error in lost {
            #expect(Forwarder.translate(error, timeoutSeconds: 30) == .badGateway("the upstream closed the connection before answering"), "\(error)")
        }
        #expect(Forwarder.translate(IOError(errnoCode: ECONNREFUSED, reason: "connect"), timeoutSeconds: 30) == .badGateway("the upstream is unreachable"))
    }

    /// An upstream answering with broken HTTP is the upstream's fault: 502, never a 400 that would
    /// blame the client's request (NIO reports both with the same parser error type).
    @Test func anUpstreamSpeakingBrokenHTTPIs502() async throws {
        let broken = try await CannedServer.start(reply: "HTTP/1.1 200 OK\r\nContent-Length: twelve\r\n\r\nhello")
        try await GatewayHarness.run(upstreamURL: { _ in "http://127.0.0.1:\(broken.port)" }) { h in
            for (method, path, body) in [("GET", "/v1/data/.my/team-a/f.txt", nil), ("PUT", "/v1/data/.my/team-a/f.txt", "abc"), ("POST", "/v1/algo/util/Echo/1.0.0", "1")] as [(String, String, String?)] {
                let reply = try await h.gateway.send(.RAW(value: method), path, headers: simple(Keys.teamA) + jsonType, body: body.map { Array($0.utf8) })
                #expect(reply.status == 502, "\(method) \(path)")
                #expect(envelope(reply).type == "UpstreamError")
                #expect(envelope(reply).message == "the upstream request failed")
            }
        }
        await broken.stop()
    }

    /// An upstream that sends an algorithm answer's head and then nothing more (a connection that
    /// died silently mid-answer) is given up at the call's timeout and the grace, which bound its
    /// whole exchange, rather than the call hanging for ever: 504, and its slot is free. A
    /// cacheable call too, though it is fetched for the cache whether or not its client waits.
    /// (The read timeout's own 504, for other calls, is in `anUploadSlowerThanTheTimeoutIsNotCut`.)
    @Test(arguments: ["/v1/algo/test/NoisyGzip", "/v1/algo/test/NoisyGzip/1.0.0"])
    func anUpstreamThatStopsSendingMidAnswerIs504(path: String) async throws {
        try await HeldUpstream.run { upstream, port in
            upstream.release.open()
            try await GatewayHarness.run(upstreamYAML: "timeout_seconds: 1", upstreamURL: { _ in "http://127.0.0.1:\(port)" }) { h in
                let started = ContinuousClock.now
                let reply = try await h.gateway.send(.POST, path, headers: simple(Keys.teamB) + jsonType, text: "600000")
                #expect(reply.status == 504)
                #expect(reply.text == #"{"error":{"error_type":"UpstreamTimeout","message":"the upstream did not answer within 1 second"}}"#)
                #expect(ContinuousClock.now - started >= .seconds(5.5))
                let metrics = try await h.gateway.send(.GET, "/metrics").text
                #expect(metricSample(metrics, "algogate_upstream_in_flight") == 0)
                #expect(h.app.answerBudget.held == 0)
            }
        }
    }

    /// An upstream that sends an answer's head in time and then its body too slowly to finish
    /// within the call's timeout, though never silent long enough for the read timeout, is given
    /// up at the timeout and the grace: 504, and its slot is free. A cacheable call too. Before,
    /// such a call ran as long as the upstream kept sending (here 30 s, then 200). The answer must
    /// come well before that: under 20 s, room for a machine loaded several times over (a run
    /// with two busy loops beside the suite took over 11 s, the bound before).
    @Test(arguments: ["/v1/algo/test/Trickle", "/v1/algo/test/Trickle/1.0.0"])
    func anAnswerStillArrivingAtTheTimeoutIs504(path: String) async throws {
        try await HeldUpstream.run { _, port in
            try await GatewayHarness.run(upstreamYAML: "timeout_seconds: 1", upstreamURL: { _ in "http://127.0.0.1:\(port)" }) { h in
                let started = ContinuousClock.now
                let reply = try await h.gateway.send(.POST, path, headers: simple(Keys.teamB) + jsonType + [("X-Request-ID", "trickle-1")], text: "30000")
                let elapsed = ContinuousClock.now - started
                #expect(reply.status == 504)
                #expect(reply.text == #"{"error":{"error_type":"UpstreamTimeout","message":"the upstream did not answer within 1 second"}}"#)
                #expect(elapsed >= .seconds(5.9) && elapsed < .seconds(20), "answered after \(elapsed)")
                // The operator's line says it was the deadline, not the upstream client's wait for a head.
                let line = await FailureLogTests.line(h, "trickle-1")
                #expect(FailureLogTests.field(line, "cause") == "the call's deadline (its timeout and the grace) passed before all of its answer had come", "\(line)")
                let metrics = try await h.gateway.send(.GET, "/metrics").text
                #expect(metricSample(metrics, "algogate_upstream_in_flight") == 0)
                #expect(h.app.answerBudget.held == 0)
                // The connection serves the next call, whose time is its own.
                let next = try await h.gateway.send(.POST, "/v1/algo/demo/Hello/0.1.0", headers: simple(Keys.teamB) + jsonType, text: "1")
                #expect(next.status == 200)
            }
        }
    }

    /// An upload that takes longer than `upstream.timeout_seconds` to arrive, though it never
    /// stops arriving, is not cut: the time is the client's, not the upstream's. The upstream is
    /// given the timeout to answer once the upload has ended (its read timeout, which starts
    /// then). Before, the timeout ran from the request's start, and a 1 GB upload slower than
    /// 300 s got a 504 however fast the upstream was.
    ///
    /// 4 s, and the upload takes 6: with 1 s, a loaded whole-suite run once took the simulator
    /// longer than that to answer a call through the gateway, and with 2 s (7 s of silence with
    /// the grace) another once got the 504. What the test does besides the two uploads goes to
    /// the simulator itself, with no timeout of the gateway's.
    @Test func anUploadSlowerThanTheTimeoutIsNotCut() async throws {
        try await GatewayHarness.run(upstreamYAML: "timeout_seconds: 4") { h in
            let made = try await h.sim.send(.POST, "/v1/data/.my", headers: simple(Keys.upstream), json: ["name": "team-a"])
            #expect(made.status == 200)
            let client = try await RawConnection.connect(
                port: h.gatewayPort,
                sending: "PUT /v1/data/.my/team-a/slow.txt HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Simple \(Keys.teamA)\r\nContent-Length: 6\r\n\r\ns")
            for byte in "lowly" {
                try await Task.sleep(for: .milliseconds(1200))
                try await client.send(String(byte))
            }
            #expect(await eventually { RawResponse.parse(client.text).count == 1 })
            let answer = try #require(RawResponse.parse(client.text).first)
            #expect(answer.statusLine == "HTTP/1.1 200 OK", "\(answer.body)")
            await client.close()
            let read = try await h.sim.send(.GET, "/v1/data/.my/team-a/slow.txt", headers: simple(Keys.upstream))
            #expect(read.status == 200)
            #expect(read.text == "slowly")

            // The upstream's own time still counts: an upload it does not answer within the
            // timeout and the grace of its end gets a 504.
            let started = ContinuousClock.now
            let unanswered = try await h.gateway.send(.PUT, "/v1/data/.my/team-a/late.txt", headers: simple(Keys.teamA) + [("X-Sim-Fault", "delay=15000")], text: "late")
            #expect(unanswered.status == 504)
            #expect(unanswered.text == #"{"error":{"error_type":"UpstreamTimeout","message":"the upstream sent nothing for longer than upstream.timeout_seconds (and 5 s of grace)"}}"#)
            #expect(ContinuousClock.now - started >= .seconds(8.5))
        }
    }

    @Test func aSlowUpstreamIs504() async throws {
        try await GatewayHarness.run(upstreamYAML: "timeout_seconds: 1") { h in
            let data = try await h.gateway.send(.GET, "/v1/data/.my", headers: simple(Keys.reader) + [("X-Sim-Fault", "delay=3000")])
            #expect(data.status == 504)
            #expect(data.text == #"{"error":{"error_type":"UpstreamTimeout","message":"the upstream did not answer within 1 second"}}"#)
            // algorithm calls get the algorithm's own timeout plus a grace period to report it (1 + 5 s;
            // the upstream answers 3 s after that, so a late timer on a loaded machine still sees no answer)
            let algo = try await h.gateway.send(.POST, "/v1/algo/demo/Hello/0.1.0", headers: simple(Keys.teamB) + textType + [("X-Sim-Fault", "delay=9000")], text: "HAL")
            #expect(algo.status == 504)
            #expect(envelope(algo).type == "UpstreamTimeout")
        }
    }
}

/// A loopback listener that never accepts, its queue filled at once: a connection to it is never
/// completed (the kernel drops the handshakes a full queue cannot take), as with a host that
/// drops packets.
final class BlackHoleListener: Sendable {
    let port: Int
    private let descriptors: [Int32]

    init() throws {
        let listener = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let bound = withUnsafeMutablePointer(to: &address) { pointer in
            pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(listener, $0, length) == 0 && listen(listener, 0) == 0
                && getsockname(listener, $0, &length) == 0 }
        }
        guard listener >= 0, bound else { throw POSIXError(.EADDRNOTAVAIL) }
        // A backlog of 0 queues one connection; these fill the queue and never leave it.
        var fillers: [Int32] = []
        for _ in 0..<3 {
            let filler = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
            _ = fcntl(filler, F_SETFL, O_NONBLOCK)
            _ = withUnsafePointer(to: &address) { pointer in
                pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(filler, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
            }
            fillers.append(filler)
        }
        port = Int(UInt16(bigEndian: address.sin_port))
        descriptors = [listener] + fillers
    }

    deinit { for descriptor in descriptors { close(descriptor) } }
}
