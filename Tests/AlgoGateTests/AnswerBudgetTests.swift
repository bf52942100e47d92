import AlgoGate
import AlgoTestSupport
import Foundation
import Testing

/// Algorithm answers held in memory at once are bounded (`limits.max_buffered_answer_bytes`): an
/// answer that does not fit beside those being sent waits, unread upstream, for them to go.
@Suite struct AnswerBudgetTests {
    /// Three answers of 600,000 bytes arrive together under a 1,000,000-byte bound: they are held
    /// one at a time, and each reaches its client whole. Small answers hold no room.
    @Test func largeAnswersAreHeldOneAtATimeUnderTheBound() async throws {
        try await HeldUpstream.run { upstream, port in
            try await GatewayHarness.run(extraYAML: "limits: {max_response_bytes: 600000, max_buffered_answer_bytes: 1000000}",
                                         upstreamURL: { _ in "http://127.0.0.1:\(port)" }) { h in
                let small = try await h.gateway.send(.POST, "/v1/algo/demo/Hello/0.1.0", headers: simple(Keys.teamB) + jsonType, text: #""B""#)
                #expect(small.status == 200)
                #expect(h.app.answerBudget.peak == 0)

                let calls = (0..<3).map { _ in
                    Task { try await h.gateway.send(.POST, "/v1/algo/test/Large", headers: simple(Keys.teamB) + jsonType, text: "600000") }
                }
                try #require(await eventually { upstream.holds == 3 }, "the calls never reached the upstream")
                upstream.release.open()
                for call in calls {
                    let answer = try await call.value
                    #expect(answer.status == 200)
                    #expect(answer.bytes.count == 600_000)
                    #expect(answer.text == HeldUpstream.large(600_000))
                }
                #expect(h.app.answerBudget.peak == 600_000)
                #expect(await eventually { h.app.answerBudget.held == 0 && h.app.answerBudget.waiting == 0 })
                let metrics = try await h.gateway.send(.GET, "/metrics")
                #expect(metricSample(metrics.text, "algogate_buffered_answer_bytes") == 0)
                #expect(metricSample(metrics.text, "algogate_buffered_answer_waiting") == 0)
            }
        }
    }

    /// A plain answer that declares more than `max_response_bytes` is refused (502) before any of
    /// it is read, so it never holds room.
    @Test func anAnswerDeclaredTooLargeIsRefusedWithoutHoldingRoom() async throws {
        try await HeldUpstream.run { upstream, port in
            upstream.release.open()
            try await GatewayHarness.run(extraYAML: "limits: {max_response_bytes: 100000, max_buffered_answer_bytes: 100000}",
                                         upstreamURL: { _ in "http://127.0.0.1:\(port)" }) { h in
                let refused = try await h.gateway.send(.POST, "/v1/algo/test/Large", headers: simple(Keys.teamB) + jsonType, text: "100001")
                #expect(refused.status == 502)
                #expect(refused.text == #"{"error":{"error_type":"UpstreamError","message":"the algorithm's response exceeds the gateway's 100000-byte limit (limits.max_response_bytes)"}}"#)
                #expect(h.app.answerBudget.peak == 0)
                let fits = try await h.gateway.send(.POST, "/v1/algo/test/Large", headers: simple(Keys.teamB) + jsonType, text: "100000")
                #expect(fits.status == 200)
                #expect(fits.text == HeldUpstream.large(100_000))
                #expect(h.app.answerBudget.peak == 100_000)
                #expect(await eventually { h.app.answerBudget.held == 0 })
            }
        }
    }
}
