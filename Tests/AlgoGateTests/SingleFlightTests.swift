@testable import AlgoGate
import AlgoTestSupport
import Synchronization
import Testing

/// The primitive under single flight: waiters cancelled at any moment beside the leader's
/// finish. Each waiter must be resumed exactly once (a continuation resumed twice traps; one never
/// resumed hangs the test), and the answer's holders counted (`sharing`) must be exactly the
/// waiters that get it: a room shared with one that left would never be given back before its
/// last reference goes.
@Suite struct SingleFlightTests {
    @Test func everyWaiterIsResumedOnceAndOnlyThoseGivenTheAnswerAreCounted() async {
        for round in 0..<300 {
            let flights = SingleFlight<Int>()
            #expect(flights.lead("key"))
            let waiters = (0..<16).map { _ in Task { await flights.wait("key") } }
            // Let some join before anything happens, others race what follows.
            if round % 3 != 0 { await Task.yield() }
            let cancelled = Set((0..<16).filter { ($0 + round) % 3 == 0 })
            let counted = Atomic<Int>(-1)
            let canceller = Task { for index in cancelled.sorted() { waiters[index].cancel() } }
            if round % 2 == 0 { await Task.yield() }
            flights.finish("key", with: round, sharing: { counted.store($0, ordering: .relaxed) })
            await canceller.value

            var shared = 0
            for (index, waiter) in waiters.enumerated() {
                switch await waiter.value {
                case .shared(let value):
                    #expect(value == round)
                    shared += 1
                case .retry:
                    break  // it came to wait once the flight had ended
                case .cancelled:
                    #expect(cancelled.contains(index), "round \(round): waiter \(index) was told it was cancelled")
                case .refused, .leaderFailed:
                    Issue.record("round \(round): an outcome the finish did not give")
                }
            }
            #expect(counted.load(ordering: .relaxed) == shared, "round \(round)")
            #expect(flights.waiting == 0)
        }
    }

    /// A waiter cancelled while the flight goes on leaves it at once: it is no longer counted as
    /// waiting, and the leader's answer is shared with the others only.
    @Test func aCancelledWaiterLeavesTheFlightAtOnce() async {
        let flights = SingleFlight<String>()
        #expect(flights.lead("key"))
        let staying = Task { await flights.wait("key") }
        let leaving = Task { await flights.wait("key") }
        #expect(await eventually { flights.waiting == 2 })
        leaving.cancel()
        guard case .cancelled = await leaving.value else {
            Issue.record("the cancelled waiter was not told so")
            return
        }
        #expect(flights.waiting == 1)
        let counted = Atomic<Int>(0)
        flights.finish("key", with: "answer", sharing: { counted.store($0, ordering: .relaxed) })
        guard case .shared("answer") = await staying.value else {
            Issue.record("the staying waiter did not get the answer")
            return
        }
        #expect(counted.load(ordering: .relaxed) == 1)
    }
}
