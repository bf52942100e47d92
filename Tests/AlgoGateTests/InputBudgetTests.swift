import AlgoTestSupport
import Foundation
import Testing
@testable import AlgoGate

/// Algorithm inputs held in memory at once are bounded (`limits.max_buffered_bytes`): a call whose
/// input does not fit waits, unread, for room, and gets 503 when none comes in time.
@Suite struct InputBudgetTests {
    static let mebibyteInput = "\"" + String(repeating: "x", count: 1_048_000) + "\""

    static func call(_ h: GatewayHarness, delayMS: Int) async throws -> TestHTTP.Reply {
        try await h.gateway.send(.POST, "/v1/algo/util/Echo", headers: simple(Keys.teamB) + jsonType + [("X-Sim-Fault", "delay=\(delayMS)")],
                                 text: mebibyteInput)
    }

    @Test func inputsBeyondTheBudgetWaitForRoom() async throws {
        // Room for two such inputs, not three; the upstream has slots for all three.
        try await GatewayHarness.run(extraYAML: "limits: {max_request_bytes: 1048576, max_buffered_bytes: 2621440}") { h in
            let replies = try await withThrowingTaskGroup(of: TestHTTP.Reply.self) { group in
                for _ in 0..<3 { group.addTask { try await Self.call(h, delayMS: 1500) } }
                return try await group.reduce(into: []) { $0.append($1) }
            }
            #expect(replies.map(\.status) == [200, 200, 200])
            #expect(replies.allSatisfy { ($0.object["result"] as? String)?.count == 1_048_000 })
            let stats = h.simulator.stats.snapshot
            #expect(stats.algoCalls == ["util/Echo": 3])
            #expect(stats.peakConcurrency <= 2)
            #expect(h.app.inputBudget.held == 0 && h.app.inputBudget.waiting == 0)
        }
    }

    @Test func anInputThatFindsNoRoomInTimeIs503() async throws {
        try await GatewayHarness.run(upstreamYAML: "queue_timeout_seconds: 1",
                                     extraYAML: "limits: {max_request_bytes: 1048576, max_buffered_bytes: 1048576}") { h in
            let replies = try await withThrowingTaskGroup(of: TestHTTP.Reply.self) { group in
                // Held 5 s: the second call is refused after 1 s, even when a loaded machine sends it late.
                for _ in 0..<2 { group.addTask { try await Self.call(h, delayMS: 5000) } }
                return try await group.reduce(into: []) { $0.append($1) }
            }
            #expect(replies.map(\.status).sorted() == [200, 503])
            let refused = try #require(replies.first { $0.status == 503 })
            #expect(refused.text == #"{"error":{"error_type":"GatewayBusy","message":"the algorithm inputs the gateway holds in memory are at their limit (limits.max_buffered_bytes), and this one did not fit within 1 s; retry shortly"}}"#)
            #expect(refused.header("Retry-After") == "1")
            #expect(h.simulator.stats.snapshot.algoCalls == ["util/Echo": 1])
            // Everything reserved was given back: the next input is read at once.
            #expect(h.app.inputBudget.held == 0)
            let next = try await Self.call(h, delayMS: 0)
            #expect(next.status == 200)
            let metrics = try await h.gateway.send(.GET, "/metrics").text
            #expect(metricSample(metrics, "algogate_buffered_input_bytes") == 0)
            #expect(metricSample(metrics, "algogate_buffered_input_waiting") == 0)
        }
    }

    /// One client's inputs never take the last `max_request_bytes` of the bound: that room is kept
    /// for the other clients. Without it, a team whose calls queue (behind its own
    /// `max_concurrent`, or a busy account) held the whole bound with inputs waiting for its own
    /// slots, and every other team's call waited behind them, first come first served, until it
    /// got 503 `GatewayBusy`, while the slots the account had free went unused.
    @Test func oneClientsQueuedInputsLeaveRoomForTheOthers() async throws {
        let clients = """
            admin: {key_sha256: "\(ClientRegistry.hash(of: Keys.admin))"}
            clients:
              - {name: alpha, key_sha256: "\(ClientRegistry.hash(of: Keys.teamA))", scopes: [algo], quota: {max_concurrent: 1}}
              - {name: beta, key_sha256: "\(ClientRegistry.hash(of: Keys.teamB))", scopes: [algo]}
            """
        try await HeldUpstream.run { upstream, port in
            try await GatewayHarness.run(upstreamYAML: "max_concurrency: 2\n  queue_timeout_seconds: 30",
                                         extraYAML: "limits: {max_request_bytes: 1048576, max_buffered_bytes: 3145728}",
                                         upstreamURL: { _ in "http://127.0.0.1:\(port)" }, clientsYAML: clients) { h in
                let call = { (key: String, text: String) in
                    Task { try await h.gateway.send(.POST, "/v1/algo/test/Hold", headers: simple(key) + jsonType, text: text) }
                }
                // Alpha's first call holds its one slot upstream; its next ones read their inputs
                // and queue behind it, or wait for room.
                let alpha = (0..<4).map { _ in call(Keys.teamA, Self.mebibyteInput) }
                try #require(await eventually { upstream.holds == 1 && h.app.inputBudget.waiting >= 1 }, "alpha's calls never filled their room")
                #expect(h.app.inputBudget.held == 2 * 1_048_002, "alpha holds two inputs, no more")
                // Beta's call is read at once, and goes upstream in the account's free slot (before,
                // it waited until alpha's queued calls gave up, after the 30 s queue timeout).
                let beta = call(Keys.teamB, Self.mebibyteInput)
                #expect(await eventually(within: .seconds(20)) { upstream.holds == 2 }, "beta's call never reached the upstream")
                upstream.release.open()
                let betaReply = try await beta.value
                #expect(betaReply.status == 200)
                #expect((betaReply.object["result"] as? String)?.count == 1_048_000)
                // Alpha's calls, one at a time, as its max_concurrent says.
                for task in alpha { _ = try await task.value }
                #expect(h.app.inputBudget.held == 0 && h.app.inputBudget.waiting == 0)
            }
        }
    }

    /// An input held back by its own client's share, past the queue timeout, is told so; another
    /// client's input is read meanwhile.
    @Test func anInputHeldBackByItsClientsShareIsToldSo() async throws {
        try await HeldUpstream.run { upstream, port in
            // Room for two inputs; one client holds at most one.
            try await GatewayHarness.run(upstreamYAML: "queue_timeout_seconds: 1",
                                         extraYAML: "limits: {max_request_bytes: 1048576, max_buffered_bytes: 2621440}",
                                         upstreamURL: { _ in "http://127.0.0.1:\(port)" }) { h in
                let call = { (key: String) in
                    Task { try await h.gateway.send(.POST, "/v1/algo/test/Hold", headers: simple(key) + jsonType, text: Self.mebibyteInput) }
                }
                let held = call(Keys.teamA)
                try #require(await eventually { upstream.holds == 1 }, "team-a's first call never reached the upstream")
                let refused = try await call(Keys.teamA).value
                #expect(refused.status == 503)
                #expect(refused.text == #"{"error":{"error_type":"GatewayBusy","message":"client 'team-a' holds its share of the memory the gateway gives algorithm inputs (limits.max_buffered_bytes but for the last max_request_bytes, kept for the other clients) with inputs waiting for their calls, and this one did not fit within 1 s; retry shortly"}}"#)
                #expect(refused.header("Retry-After") == "1")
                let other = call(Keys.teamB)
                #expect(await eventually { upstream.holds == 2 }, "team-b's call never reached the upstream")
                upstream.release.open()
                #expect(try await other.value.status == 200)
                #expect(try await held.value.status == 200)
                #expect(h.app.inputBudget.held == 0 && h.app.inputBudget.held(by: "team-a") == 0)
            }
        }
    }

    /// The head of an algorithm call whose input declares `length` bytes, and its first piece.
    static func callHead(length: Int, path: String = "/v1/algo/util/Echo") -> String {
        "POST \(path) HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Simple \(Keys.teamB)\r\nContent-Type: application/json\r\n"
            + "Content-Length: \(length)\r\n\r\n\""
    }

    /// Sends a byte every 100 ms, for 30 s at most, until the connection closes. Returns how many
    /// were sent.
    /// The message of the one answer `connection` got, which must be a 408 `InputTimeout` in
    /// JSON saying `Connection: close`, written `after` its opening at the earliest and within
    /// 15 s (a loaded machine's slack), the connection closed with it.
    static func answeredInputTimeout(on connection: RawConnection, after: Duration) async throws -> String {
        #expect(await connection.waitForClose(within: .seconds(30)), "the connection was kept open")
        let answered = try #require(connection.lastReceivedAt) - connection.openedAt
        #expect(answered >= after && answered < .seconds(15), "answered after \(answered)")
        let responses = RawResponse.parse(connection.text)
        try #require(responses.count == 1, "\(connection.text)")
        #expect(responses[0].statusLine == "HTTP/1.1 408 Request Timeout")
        #expect(responses[0].headers["connection"] == "close")
        #expect(responses[0].headers["content-type"] == "application/json")
        let error = try #require((try? JSONSerialization.jsonObject(with: Data(responses[0].body.utf8)) as? [String: [String: String]])?["error"])
        #expect(error["error_type"] == "InputTimeout")
        return try #require(error["message"])
    }

    static func trickle(_ connection: RawConnection) async throws -> Int {
        var sent = 0
        while connection.closedAt == nil, sent < 300 {
            try? await connection.send("x")
            sent += 1
            try await Task.sleep(for: .milliseconds(100))
        }
        return sent
    }

    /// An input trickled in, a byte now and then, keeps the idle timeout away for as long as the
    /// client likes; the room held for it must not be held that long. It gets 408 at
    /// `limits.input_timeout_seconds`, its room goes back, its connection is closed, and nothing
    /// reaches the upstream.
    @Test func anInputThatDoesNotArriveWithinTheInputTimeoutIs408() async throws {
        try await GatewayHarness.run(extraYAML: "limits: {max_request_bytes: 1048576, max_buffered_bytes: 2097152, input_timeout_seconds: 2}") { h in
            let slow = try await RawConnection.connect(port: h.gatewayPort, sending: Self.callHead(length: 1000))
            #expect(await eventually { h.app.inputBudget.held == 1000 }, "no room was held for the input")
            // A byte every 100 ms: 100 bytes in the first 10 s, well short of the 1,000 declared.
            let sent = try await Self.trickle(slow)
            // Not before the 2 s, and long before the bytes would have all arrived (30 s) or the
            // idle timeout (75 s) would have closed it.
            let text = try await Self.answeredInputTimeout(on: slow, after: .seconds(2))
            // What had come by then: the opening quote, sent with the head, and a byte each 100 ms
            // for 2 s, about 20 (fewer when a loaded machine wakes the test late).
            let prefix = "algorithm input did not arrive whole within 2 s (limits.input_timeout_seconds): ", suffix = " of its 1000 bytes had arrived"
            #expect(text.hasPrefix(prefix) && text.hasSuffix(suffix), "\(text)")
            let received = Int(text.dropFirst(prefix.count).dropLast(suffix.count))
            #expect(received.map { (1...sent + 1).contains($0) } == true, "\(text), \(sent + 1) sent")
            #expect(h.app.inputBudget.held == 0)
            #expect(h.simulator.stats.snapshot.algoCalls.isEmpty)
            #expect(await eventually { h.logs.all.contains { $0.contains("status=408") && $0.contains("error_type=InputTimeout") && $0.contains("client=team-b") } })
        }
    }

    /// A pinned call's small input is first held to be looked up on the event loop
    /// (`CachedHitHandler`), before any key is checked. Trickled, it is held there a second, then
    /// goes on to the pipeline, which holds room for it and bounds its arrival as any other's: 408
    /// at the input timeout after that, not the idle timeout's close after minutes of trickling.
    @Test func aPinnedCallsTrickledInputIsBoundedToo() async throws {
        try await GatewayHarness.run(extraYAML: "limits: {input_timeout_seconds: 2}") { h in
            let slow = try await RawConnection.connect(port: h.gatewayPort, sending: Self.callHead(length: 1000, path: "/v1/algo/util/Echo/1.0.0"))
            _ = try await Self.trickle(slow)
            // The second held on the event loop, then the input timeout's 2 s.
            let text = try await Self.answeredInputTimeout(on: slow, after: .seconds(3))
            #expect(text.hasPrefix("algorithm input did not arrive whole within 2 s (limits.input_timeout_seconds): ") && text.hasSuffix(" of its 1000 bytes had arrived"),
                    "\(text)")
            #expect(h.app.inputBudget.held == 0)
            #expect(h.simulator.stats.snapshot.algoCalls.isEmpty)
        }
    }

    /// The input timeout bounds the input it was set for, not the connection: an input that
    /// arrives in pieces within it is answered, and the connection then serves the next call
    /// after the timeout has passed.
    /// (5 s: with 2, a loaded whole-suite run once woke the test too late to send its pieces in
    /// time.)
    @Test func anInputArrivingInPiecesWithinTheInputTimeoutIsAnswered() async throws {
        try await GatewayHarness.run(extraYAML: "limits: {input_timeout_seconds: 5}") { h in
            let input = "\"" + String(repeating: "y", count: 98) + "\""
            let connection = try await RawConnection.connect(port: h.gatewayPort, sending: Self.callHead(length: 100))
            for piece in [String(repeating: "y", count: 49), String(repeating: "y", count: 49) + "\""] {
                try await Task.sleep(for: .milliseconds(300))
                try await connection.send(piece)
            }
            #expect(await eventually { RawResponse.parse(connection.text).count == 1 })
            try await Task.sleep(for: .seconds(6))
            try await connection.send(Self.callHead(length: 100).dropLast() + input)
            #expect(await eventually { RawResponse.parse(connection.text).count == 2 })
            let responses = RawResponse.parse(connection.text)
            #expect(responses.map(\.statusLine) == ["HTTP/1.1 200 OK", "HTTP/1.1 200 OK"])
            #expect(responses.allSatisfy { $0.body.contains(input) })
            #expect(connection.closedAt == nil)
            #expect(h.simulator.stats.snapshot.algoCalls == ["util/Echo": 2])
            await connection.close()
        }
    }
}
