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
}
