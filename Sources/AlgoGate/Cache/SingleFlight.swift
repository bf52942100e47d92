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
        /// The leader failed without an answer (the upstream timed out, say): go upstream on your
        /// own, rather than one after another behind a new leader each.
        case leaderFailed
    }

    private let flights = Mutex<[String: [CheckedContinuation<Outcome, Never>]]>([:])

    /// True when the caller leads and must call `finish`; false when another call is in flight.
    func lead(_ key: String) -> Bool {
        flights.withLock { flights in
            guard flights[key] == nil else { return false }
            flights[key] = []
            return true
        }
    }

    /// Waits for the leader of `key`.
    func wait(_ key: String) async -> Outcome {
        await withCheckedContinuation { continuation in
            let joined = flights.withLock { flights -> Bool in
                guard flights[key] != nil else { return false }
                flights[key]!.append(continuation)
                return true
            }
            if !joined { continuation.resume(returning: .retry) }
        }
    }

    /// Calls waiting for a leader now (for metrics and tests).
    var waiting: Int {
        flights.withLock { flights in flights.values.reduce(0) { $0 + $1.count } }
    }

    /// Ends the flight: waiters get the leader's answer, or its `failure` when that refused the
    /// answer itself, or `.leaderFailed`. `sharing` is told how many get the answer before any of
    /// them does.
    func finish(_ key: String, with value: Value?, failure: (any Error)? = nil, sharing: (Int) -> Void = { _ in }) {
        let outcome: Outcome = if let value {
            .shared(value)
        } else if let refusal = failure as? GatewayError, refusal.refusesTheAnswer {
            .refused(refusal)
        } else {
            .leaderFailed
        }
        end(key, outcome, sharing: sharing)
    }

    /// Ends a flight whose leader found the answer stored after all: waiters look again.
    func finishFound(_ key: String) {
        end(key, .retry)
    }

    private func end(_ key: String, _ outcome: Outcome, sharing: (Int) -> Void = { _ in }) {
        let waiters = flights.withLock { $0.removeValue(forKey: key) ?? [] }
        if case .shared = outcome { sharing(waiters.count) }
        for waiter in waiters { waiter.resume(returning: outcome) }
    }
}
