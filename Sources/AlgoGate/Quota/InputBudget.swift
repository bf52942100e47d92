import DequeModule
import NIOCore
import NIOPosix
import Synchronization

/// Bounds the bytes of algorithm input held in memory at once, across every call
/// (`limits.max_buffered_bytes`).
///
/// An algorithm's input is read whole before the cache and the upstream see it, and a call that
/// waits for an upstream slot keeps its input meanwhile. The slots bound the calls in flight, not
/// the calls waiting: a burst of large inputs beyond the account's 80 slots would otherwise be
/// held whole, however many, until memory ran out and the process was killed with every team's
/// calls in it. A call reserves its input's size before any of it is read; when that does not fit
/// beside what is held, it waits, first come first served, its body left unread in the
/// connection, and gets 503 after `upstream.queue_timeout_seconds`.
public final class InputBudget: Sendable {
    private struct Waiter {
        let id: UInt64
        let bytes: Int
        let continuation: CheckedContinuation<Void, any Error>
    }

    private struct State {
        var held = 0
        var capacity = Int.max
        var waiters: Deque<Waiter> = []
        var nextID: UInt64 = 0
        /// Waits handed an id and not queued yet.
        var arriving: Set<UInt64> = []
        /// Waits that ended (timed out, cancelled) before they were queued, with why.
        var ended: [UInt64: any Error] = [:]
    }

    private let state = Mutex(State())

    public init() {}

    /// Bytes held now (for metrics and tests).
    public var held: Int { state.withLock { $0.held } }
    /// Calls waiting for room now.
    public var waiting: Int { state.withLock { $0.waiters.count } }

    /// Holds `bytes` within `capacity` (the configuration's, which a reload may change), waiting
    /// for room behind earlier waiters; throws 503 after `timeout`, or the task's cancellation.
    /// Returns the bytes held, which the caller gives back with `release`.
    public func reserve(_ bytes: Int, capacity: Int, timeout: Duration) async throws -> Int {
        // A reservation larger than the whole budget could never be granted (the configuration
        // keeps the budget at least the largest input; a reload could lower it under a waiter).
        let bytes = min(bytes, capacity)
        let (id, granted): (UInt64?, [Waiter]) = state.withLock { state in
            state.capacity = capacity
            let granted = Self.dispatch(&state)
            if state.waiters.isEmpty && state.held + bytes <= capacity {
                state.held += bytes
                return (nil, granted)
            }
            state.nextID += 1
            state.arriving.insert(state.nextID)
            return (state.nextID, granted)
        }
        for waiter in granted { waiter.continuation.resume() }
        guard let id else { return bytes }
        let busy = GatewayError(status: .serviceUnavailable, errorType: "GatewayBusy",
                                message: "the algorithm inputs the gateway holds in memory are at their limit (limits.max_buffered_bytes), and this one did not fit within \(timeout.components.seconds) s; retry shortly",
                                headers: [.retryAfter: "1"])
        let timer = MultiThreadedEventLoopGroup.singleton.any().scheduleTask(in: TimeAmount(timeout)) { self.end(id, with: busy) }
        defer { timer.cancel() }
        try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, any Error>) in
                let ended: (any Error)? = state.withLock { state in
                    state.arriving.remove(id)
                    if let error = state.ended.removeValue(forKey: id) { return error }
                    state.waiters.append(Waiter(id: id, bytes: bytes, continuation: continuation))
                    return nil
                }
                if let ended { continuation.resume(throwing: ended) }
            }
        } onCancel: {
            self.end(id, with: CancellationError())
        }
        return bytes
    }

    /// Gives back `bytes` of a reservation (all of it, or what the input turned out not to need),
    /// and lets in the waiters that now fit.
    public func release(_ bytes: Int) {
        guard bytes > 0 else { return }
        let granted = state.withLock { state in
            state.held -= bytes
            return Self.dispatch(&state)
        }
        for waiter in granted { waiter.continuation.resume() }
    }

    /// Ends a wait that has not been granted: a queued waiter is turned away, one still arriving is
    /// turned away as it arrives; one already granted is left alone.
    private func end(_ id: UInt64, with error: any Error) {
        let (waiter, granted): (Waiter?, [Waiter]) = state.withLock { state in
            if let index = state.waiters.firstIndex(where: { $0.id == id }) {
                let waiter = state.waiters.remove(at: index)
                // The waiters behind it may fit now that it is gone.
                return (waiter, Self.dispatch(&state))
            }
            if state.arriving.remove(id) != nil { state.ended[id] = error }
            return (nil, [])
        }
        waiter?.continuation.resume(throwing: error)
        for waiter in granted { waiter.continuation.resume() }
    }

    /// First come, first served: the waiter at the head goes in when it fits, then the next. A
    /// smaller one behind it does not pass it, so a large input is not put off for ever.
    private static func dispatch(_ state: inout State) -> [Waiter] {
        var granted: [Waiter] = []
        while let first = state.waiters.first, state.held + first.bytes <= state.capacity {
            state.held += first.bytes
            granted.append(state.waiters.removeFirst())
        }
        return granted
    }
}
