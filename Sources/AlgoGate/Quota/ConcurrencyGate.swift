import DequeModule
import NIOCore
import NIOPosix
import Synchronization

/// Shares the account's concurrent upstream requests (`upstream.max_concurrency`) fairly.
///
/// A request takes a slot for the time its upstream call is in flight, within both the global cap
/// and its client's `max_concurrent`. When none is free it waits in its client's queue; a freed
/// slot goes to the next client in round-robin order that has a waiter and room under its own
/// limit, so one team's burst cannot push the others out. A waiter that has not got a slot within
/// `upstream.queue_timeout_seconds` is refused with 503 and `Retry-After`.
///
/// Slots a client reserves (`quota.reserved_concurrent`) are kept for it: another client takes a
/// slot only if as many stay free as the reservations have not used, so a team that reserved
/// slots gets them at once however long the other teams' calls run (round robin alone hands a
/// slot over only when a call ends). Reserved slots stay idle while their client has nothing to run.
public final class ConcurrencyGate: Sendable {
    private struct Waiter {
        let id: UInt64
        let continuation: CheckedContinuation<Void, any Error>
    }

    private struct State {
        var capacity: Int
        var inFlight = 0
        var perClient: [String: Int] = [:]
        var limits: [String: Int] = [:]
        var queues: [String: Deque<Waiter>] = [:]
        /// Clients in the order slots are offered to them.
        var ring: [String] = []
        var cursor = 0
        var queued = 0
        var nextID: UInt64 = 0
        /// Waits handed an id and not queued yet.
        var arriving: Set<UInt64> = []
        /// Waiters whose time ran out (or were cancelled) before they were queued, with why.
        var expired: [UInt64: any Error] = [:]
        var peakPerClient: [String: Int] = [:]
        var peak = 0
        /// Slots kept for each client that reserved some.
        var reserved: [String: Int] = [:]
        /// Reserved slots not in use by their clients: the free slots no other client may take.
        var unusedReserved = 0
    }

    private let state: Mutex<State>

    public init(capacity: Int) {
        state = Mutex(State(capacity: capacity))
    }

    public var inFlight: Int { state.withLock { $0.inFlight } }
    /// The slots in force: `upstream.max_concurrency`, at most as the gateway started (a reload
    /// may lower it, not raise it past the connection pool sized at start).
    public var capacity: Int { state.withLock { $0.capacity } }
    public var queued: Int { state.withLock { $0.queued } }
    /// The most slots one client has held at once (for tests and operators).
    public func peak(for client: String) -> Int { state.withLock { $0.peakPerClient[client] ?? 0 } }
    public var peak: Int { state.withLock { $0.peak } }
    /// Reserved slots their clients are not using, which no other client may take.
    public var unusedReserved: Int { state.withLock { $0.unusedReserved } }

    /// What the gate holds now, for `GET /_admin/concurrency`.
    public struct Standing: Sendable {
        public struct Client: Sendable, Equatable {
            public var inFlight = 0
            public var queued = 0
            /// The most slots the client has held at once since the gateway started.
            public var peak = 0
        }
        public let capacity: Int
        public let inFlight: Int
        public let queued: Int
        public let unusedReserved: Int
        /// Every client that has held a slot or waited for one since the gateway started.
        public let clients: [String: Client]
    }

    public func standing() -> Standing {
        state.withLock { state in
            var clients: [String: Standing.Client] = [:]
            for (name, peak) in state.peakPerClient { clients[name, default: .init()].peak = peak }
            for (name, held) in state.perClient { clients[name, default: .init()].inFlight = held }
            for (name, queue) in state.queues { clients[name, default: .init()].queued = queue.count }
            return Standing(capacity: state.capacity, inFlight: state.inFlight, queued: state.queued,
                            unusedReserved: state.unusedReserved, clients: clients)
        }
    }

    /// Sets the slots each client keeps for itself (`quota.reserved_concurrent`, by client name;
    /// absent is none), at start and on each reload, and hands out any slot the change frees.
    public func reserve(_ reservations: [String: Int]) {
        configure(capacity: nil, reservations: reservations)
    }

    /// Sets the slots in force (nil: as they are) and the reservations together, on a reload, and
    /// hands out any slot the change frees. Slots lowered below the calls in flight take effect as
    /// those end: none is granted, reserved or not, until fewer are in flight than the new figure.
    public func configure(capacity: Int?, reservations: [String: Int]) {
        let granted = state.withLock { state -> [Waiter] in
            if let capacity { state.capacity = capacity }
            state.reserved = reservations
            state.unusedReserved = reservations.reduce(0) { $0 + max(0, $1.value - (state.perClient[$1.key] ?? 0)) }
            return Self.dispatch(&state)
        }
        for waiter in granted { waiter.continuation.resume() }
    }

    /// Takes a slot if one is free for the client now, as `acquire` would without waiting.
    public func tryAcquire(client: String, limit: Int?) -> Bool {
        state.withLock { state in
            Self.grantAtOnce(client, limit: limit ?? .max, in: &state)
        }
    }

    /// Waits for a slot; throws 503 after `timeout`, or the task's cancellation. Returns how long
    /// the request waited in the queue, or nil when a slot was free at once.
    @discardableResult
    public func acquire(client: String, limit: Int?, timeout: Duration) async throws -> Duration? {
        let limit = limit ?? .max
        let id: UInt64? = state.withLock { state in
            if Self.grantAtOnce(client, limit: limit, in: &state) { return nil }
            state.nextID += 1
            state.arriving.insert(state.nextID)
            return state.nextID
        }
        guard let id else { return nil }
        let queuedAt = ContinuousClock.now
        // An event loop's scheduled task, removed when cancelled; a sleeping task would keep its
        // timer alive for the whole timeout after every queued request.
        let timer = MultiThreadedEventLoopGroup.singleton.any().scheduleTask(in: TimeAmount(timeout)) {
            self.expire(id, client: client, with: self.busy(client, limit: limit, waited: timeout))
        }
        defer { timer.cancel() }
        try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, any Error>) in
                let outcome: Result<Void, any Error>? = state.withLock { state in
                    state.arriving.remove(id)
                    if let error = state.expired.removeValue(forKey: id) { return .failure(error) }
                    if Self.grantAtOnce(client, limit: limit, in: &state) { return .success(()) }
                    state.limits[client] = limit
                    if state.queues[client] == nil { state.queues[client] = []; state.ring.append(client) }
                    state.queues[client]!.append(Waiter(id: id, continuation: continuation))
                    state.queued += 1
                    return nil
                }
                if let outcome { continuation.resume(with: outcome) }
            }
        } onCancel: {
            self.expire(id, client: client, with: CancellationError())
        }
        return ContinuousClock.now - queuedAt
    }

    /// Gives a slot back and hands freed slots to waiting clients in round-robin order.
    public func release(client: String) {
        let granted = state.withLock { state -> [Waiter] in
            state.inFlight -= 1
            state.perClient[client, default: 1] -= 1
            if state.perClient[client]! < state.reserved[client] ?? 0 { state.unusedReserved += 1 }
            return Self.dispatch(&state)
        }
        for waiter in granted { waiter.continuation.resume() }
    }

    /// The 503 for a request that found no slot in time, saying what held it back as things
    /// stand when its time runs out.
    private func busy(_ client: String, limit: Int, waited: Duration) -> GatewayError {
        let why = state.withLock { state in
            if state.perClient[client] ?? 0 >= limit {
                return "client '\(client)' kept its max_concurrent (\(limit)) calls under way"
            }
            if state.inFlight < state.capacity {
                return "the upstream slots not in use stayed reserved for other clients (quota.reserved_concurrent: \(state.unusedReserved) unused)"
            }
            return "all upstream slots stayed busy"
        }
        return GatewayError(status: .serviceUnavailable, errorType: "UpstreamBusy",
                            message: "\(why) for \(waited.components.seconds) s (upstream.queue_timeout_seconds); retry shortly",
                            headers: [.retryAfter: "1"])
    }

    private func expire(_ id: UInt64, client: String, with error: any Error) {
        let waiter: Waiter? = state.withLock { state in
            guard var queue = state.queues[client], let index = queue.firstIndex(where: { $0.id == id }) else {
                // Not queued yet: turned away as it arrives. Already granted: nothing to do (an id
                // kept for it would never be taken out again).
                if state.arriving.remove(id) != nil { state.expired[id] = error }
                return nil
            }
            let waiter = queue.remove(at: index)
            state.queues[client] = queue
            state.queued -= 1
            return waiter
        }
        waiter?.continuation.resume(throwing: error)
    }

    /// Whether a slot is free for the client: under the account's cap and its own, and either
    /// one it reserved or one that leaves every other reservation's unused slots free. The cap is
    /// checked first, for every client: after a reload lowered it, more calls may be in flight
    /// than it allows, and a reservation then waits like any other call.
    private static func canRun(_ client: String, limit: Int, in state: State) -> Bool {
        let holding = state.perClient[client] ?? 0
        guard state.inFlight < state.capacity, holding < limit else { return false }
        return holding < state.reserved[client] ?? 0 || state.capacity - state.inFlight > state.unusedReserved
    }

    /// Grants a slot when one is free for the client and none of its calls is queued before it
    /// (a call does not pass its own client's queue); says whether it did.
    private static func grantAtOnce(_ client: String, limit: Int, in state: inout State) -> Bool {
        guard canRun(client, limit: limit, in: state) && (state.queues[client]?.isEmpty ?? true) else { return false }
        grant(client, in: &state)
        return true
    }

    private static func grant(_ client: String, in state: inout State) {
        if state.perClient[client] ?? 0 < state.reserved[client] ?? 0 { state.unusedReserved -= 1 }
        state.inFlight += 1
        state.perClient[client, default: 0] += 1
        state.peak = max(state.peak, state.inFlight)
        state.peakPerClient[client] = max(state.peakPerClient[client] ?? 0, state.perClient[client]!)
    }

    private static func dispatch(_ state: inout State) -> [Waiter] {
        var granted: [Waiter] = []
        var idle = 0
        while state.inFlight < state.capacity, !state.ring.isEmpty, idle < state.ring.count {
            if state.cursor >= state.ring.count { state.cursor = 0 }
            let client = state.ring[state.cursor]
            state.cursor += 1
            guard var queue = state.queues[client], !queue.isEmpty,
                  canRun(client, limit: state.limits[client] ?? .max, in: state) else {
                idle += 1
                continue
            }
            idle = 0
            granted.append(queue.removeFirst())
            state.queues[client] = queue
            state.queued -= 1
            grant(client, in: &state)
        }
        // Forget clients with nothing queued, so the ring stays small.
        let empty = state.ring.filter { state.queues[$0]?.isEmpty ?? true }
        if !empty.isEmpty {
            for client in empty { state.queues[client] = nil }
            state.ring.removeAll { empty.contains($0) }
            state.cursor = state.ring.isEmpty ? 0 : state.cursor % state.ring.count
        }
        return granted
    }
}
