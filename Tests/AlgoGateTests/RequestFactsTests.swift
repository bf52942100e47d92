import Synchronization
import Testing
@testable import AlgoGate

@Suite struct RequestFactsTests {
    /// A completion handler that captures its request's facts must not keep them alive: that
    /// cycle once leaked about 600 bytes a request under load.
    @Test func completionHandlersDoNotOutliveTheRequest() {
        weak var released: RequestFacts?
        let calls = Mutex(0)
        do {
            let facts = RequestFacts()
            facts.onCompletion { _ in _ = facts.state.withLock { $0.upstreamCalled } }
            facts.markUpstreamCall(computeSeconds: 1.5)
            released = facts
            facts.complete(status: 200, bytesIn: 1, bytesOut: 2, elapsed: .zero)
            facts.onCompletion { _ in calls.withLock { $0 += 1 } }
            facts.complete(status: 200, bytesIn: 1, bytesOut: 2, elapsed: .zero)
            facts.complete(status: 200, bytesIn: 1, bytesOut: 2, elapsed: .zero)
        }
        #expect(released == nil)
        #expect(calls.withLock { $0 } == 1)
    }
}
