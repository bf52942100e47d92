import Synchronization

/// Lets concurrent identical cache misses make one upstream call: the first caller leads, the
/// rest wait for its answer without holding an upstream slot.
final class SingleFlight<Value: Sendable>: Sendable {
    enum Outcome: Sendable {
        /// The leader's answer, shared.
        case shared(Value)
        /// The leader finished before this caller could wait; look again (the cache likely has it).
        case retry
        /// The leader's answer came and was refused for what it is (`GatewayError.refusesTheAnswer`):
        /// an identical call would get it again, so this is the waiter's answer too.
        case refused(GatewayError)
        /// The leader failed without an answer (the upstream timed out, say), with its failure
        /// when it had one: the caller decides whether that is its answer too, or looks again,
        /// when one of the waiters leads anew (`CacheMiddleware`).
        case leaderFailed((any Error)?)
        /// The waiter stopped waiting (its task was cancelled: its client went, or its own
        /// timeout passed, `CacheMiddleware`) before the leader finished.
        case cancelled
    }

    private struct Waiter {
        let id: Int
        let continuation: CheckedContinuation<Outcome, Never>
    }

    private struct State {
        var flights: [String: [Waiter]] = [:]
        var lastID = 0
    }

    private let state = Mutex(State())

    /// True when the caller leads and must call `finish`; false when another call is in flight.
    func lead(_ key: String) -> Bool {
        state.withLock { state in
            guard state.flights[key] == nil else { return false }
            state.flights[key] = []
            return true
        }
    }

    /// Waits for the leader of `key`; a cancelled wait leaves the flight at once (`.cancelled`),
    /// not counted among those the answer is shared with, unless the leader finished first.
    func wait(_ key: String) async -> Outcome {
        let id = state.withLock { state in
            state.lastID += 1
            return state.lastID
        }
        return await withTaskCancellationHandler {
            await withCheckedContinuation { continuation in
                let outcome = state.withLock { state -> Outcome? in
                    guard state.flights[key] != nil else { return .retry }
                    // A cancellation that came first found no waiter to take out.
                    if Task.isCancelled { return .cancelled }
                    state.flights[key]!.append(Waiter(id: id, continuation: continuation))
                    return nil
                }
                if let outcome { continuation.resume(returning: outcome) }
            }
        } onCancel: {
            let waiter = state.withLock { state -> Waiter? in
                guard let index = state.flights[key]?.firstIndex(where: { $0.id == id }) else { return nil }
                return state.flights[key]!.remove(at: index)
            }
            waiter?.continuation.resume(returning: .cancelled)
        }
    }

    /// Calls waiting for a leader now (for metrics and tests).
    var waiting: Int {
        state.withLock { state in state.flights.values.reduce(0) { $0 + $1.count } }
    }

    /// Ends the flight: waiters get the leader's answer, or its `failure` when that refused the
    /// answer itself, or `.leaderFailed` with it. `sharing` is told how many get the answer before any of
    /// them does.
    func finish(_ key: String, with value: Value?, failure: (any Error)? = nil, sharing: (Int) -> Void = { _ in }) {
        let outcome: Outcome = if let value {
            .shared(value)
        } else if let refusal = failure as? GatewayError, refusal.refusesTheAnswer {
            .refused(refusal)
        } else {
            .leaderFailed(failure)
        }
        end(key, outcome, sharing: sharing)
    }

    /// Ends a flight whose leader found the answer stored after all: waiters look again.
    func finishFound(_ key: String) {
        end(key, .retry)
    }

    private func end(_ key: String, _ outcome: Outcome, sharing: (Int) -> Void = { _ in }) {
        let waiters = state.withLock { $0.flights.removeValue(forKey: key) ?? [] }
        if case .shared = outcome { sharing(waiters.count) }
        for waiter in waiters { waiter.continuation.resume(returning: outcome) }
    }
}
