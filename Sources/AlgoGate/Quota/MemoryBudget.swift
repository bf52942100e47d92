import DequeModule
import NIOCore
import NIOPosix
import Synchronization

/// Bounds bytes held in memory at once, across every call: the gateway has one for algorithm
/// inputs (`limits.max_buffered_bytes`) and one for algorithm answers
/// (`limits.max_buffered_answer_bytes`). A third bounds bytes on disk, not in memory: those of
/// downloads waiting for slow clients (`limits.spool_max_bytes`, `SpoolPipe`), which only ever
/// take room without waiting (`tryReserve`).
///
/// An algorithm's input is read whole before the cache and the upstream see it, and a call that
/// waits for an upstream slot keeps its input meanwhile. The slots bound the calls in flight, not
/// the calls waiting: a burst of large inputs beyond the account's 80 slots would otherwise be
/// held whole, however many, until memory ran out and the process was killed with every team's
/// calls in it. A call reserves its input's size before any of it is read; when that does not fit
/// beside what is held, it waits, first come first served, its body left unread in the
/// connection, and gets 503 after `upstream.queue_timeout_seconds`. Inputs are reserved for their
/// client, each within a share of the bound (`AlgoInputMiddleware.share(of:limit:)`), so that one
/// client's queued calls cannot keep the others' waiting.
///
/// An answer is read whole too (for the cache, the key check and compression) and held until it
/// has been sent: 80 slots of 15 MB answers would be 1.2 GB. An answer reserves its size when its
/// head arrives and waits, its body left unread in the upstream connection, for answers ahead of
/// it to be sent; a cache hit read from SQLite reserves its size before its body is read. The two
/// budgets are apart so that no wait is for itself: an answer waits only for other answers to
/// reach their clients, never for inputs whose calls wait for answers.
public final class MemoryBudget: Sendable {
    private struct Waiter {
        let id: UInt64
        let bytes: Int
        /// Whose reservation it is, and the most that one may hold (see `reserve`).
        let client: String?
        let share: Int
        let continuation: CheckedContinuation<Void, any Error>
    }

    private struct State {
        var held = 0
        /// What each client's reservations hold, for those made for a client.
        var heldBy: [String: Int] = [:]
        var peak = 0
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
    /// Bytes held now by `client`'s reservations.
    public func held(by client: String) -> Int { state.withLock { $0.heldBy[client] ?? 0 } }
    /// Calls waiting for room now.
    public var waiting: Int { state.withLock { $0.waiters.count } }
    /// The most bytes held at once so far, or since `resetPeak()` (for tests).
    public var peak: Int { state.withLock { $0.peak } }
    /// Starts `peak` over from what is held now (for tests).
    func resetPeak() { state.withLock { $0.peak = $0.held } }

    /// Holds `bytes` within `capacity` (the configuration's, which a reload may change), waiting
    /// for room behind earlier waiters; throws `busy` after `timeout`, or the task's cancellation.
    /// Returns the bytes held, which the caller gives back with `release` (naming the same client).
    ///
    /// Made for a `client`, it holds no more than `share` of the bound with that client's other
    /// reservations, and waits for its own to go when it would: a client's waiters held back by
    /// its share do not hold up other clients' (see `dispatch`). A reservation never waits for a
    /// share smaller than itself (a client holding nothing always fits its share).
    public func reserve(_ bytes: Int, capacity: Int, client: String? = nil, share: Int = .max, timeout: Duration,
                        busy: @autoclosure @escaping @Sendable () -> GatewayError) async throws -> Int {
        // A reservation larger than the whole budget could never be granted (the configuration
        // keeps the budget at least the largest input; a reload could lower it under a waiter).
        let bytes = min(bytes, capacity)
        let (id, granted): (UInt64?, [Waiter]) = state.withLock { state in
            let (admitted, granted) = Self.admit(bytes, capacity: capacity, client: client, share: share, in: &state)
            if admitted { return (nil, granted) }
            state.nextID += 1
            state.arriving.insert(state.nextID)
            return (state.nextID, granted)
        }
        for waiter in granted { waiter.continuation.resume() }
        guard let id else { return bytes }
        let timer = MultiThreadedEventLoopGroup.singleton.any().scheduleTask(in: TimeAmount(timeout)) { self.end(id, with: busy()) }
        defer { timer.cancel() }
        try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, any Error>) in
                let ended: (any Error)? = state.withLock { state in
                    state.arriving.remove(id)
                    if let error = state.ended.removeValue(forKey: id) { return error }
                    state.waiters.append(Waiter(id: id, bytes: bytes, client: client, share: share, continuation: continuation))
                    return nil
                }
                if let ended { continuation.resume(throwing: ended) }
            }
        } onCancel: {
            self.end(id, with: CancellationError())
        }
        return bytes
    }

    /// Holds `bytes` when `reserve` would grant them without waiting, and returns them; nil, holding
    /// nothing, when it would wait. For a caller that waits in its own way (`AnswerRoom`, whose hit
    /// gives its wait up when its client goes).
    public func tryReserve(_ bytes: Int, capacity: Int, client: String? = nil, share: Int = .max) -> Int? {
        let bytes = min(bytes, capacity)
        let (admitted, granted) = state.withLock { Self.admit(bytes, capacity: capacity, client: client, share: share, in: &$0) }
        for waiter in granted { waiter.continuation.resume() }
        return admitted ? bytes : nil
    }

    /// Lets in the waiters that fit `capacity` (the configuration's, which a reload may change),
    /// then takes `bytes` when they fit and no waiter ahead waits for room in the bound itself.
    private static func admit(_ bytes: Int, capacity: Int, client: String?, share: Int, in state: inout State) -> (admitted: Bool, granted: [Waiter]) {
        state.capacity = capacity
        let granted = dispatch(&state)
        guard !state.waiters.contains(where: { !heldBackByShare($0, in: state) }) && fits(bytes, client: client, share: share, in: state) else {
            return (false, granted)
        }
        take(bytes, client: client, in: &state)
        return (true, granted)
    }

    /// Counts `bytes` that are in memory already, without waiting: `held` may go over the
    /// capacity, and waiters wait until it is back under. For bytes the gateway cannot hold back,
    /// such as a cache entry that leaves the hot tier while hits still send it (`HotTier.Residency`).
    /// Given back with `release`.
    public func add(_ bytes: Int) {
        guard bytes > 0 else { return }
        state.withLock { state in
            state.held += bytes
            state.peak = max(state.peak, state.held)
        }
    }

    /// Gives back `bytes` of a reservation (all of it, or what the input turned out not to need),
    /// made for `client` if it was, and lets in the waiters that now fit.
    public func release(_ bytes: Int, client: String? = nil) {
        guard bytes > 0 else { return }
        let granted = state.withLock { state in
            state.held -= bytes
            if let client {
                let left = (state.heldBy[client] ?? 0) - bytes
                state.heldBy[client] = left > 0 ? left : nil
            }
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
    /// smaller one behind it does not pass it, so a large input is not put off for ever. A waiter
    /// larger than the whole budget (queued before a reload lowered it) goes in once nothing is
    /// held, rather than never, holding up everyone behind it. A waiter held back by its client's
    /// share alone is passed: it waits for its own client's room, which no other client's
    /// reservation takes, and holding the others up behind it would let one client's queue keep
    /// every other client waiting.
    private static func dispatch(_ state: inout State) -> [Waiter] {
        var granted: [Waiter] = []
        var index = state.waiters.startIndex
        while index < state.waiters.endIndex {
            let waiter = state.waiters[index]
            if heldBackByShare(waiter, in: state) {
                index += 1
                continue
            }
            guard state.held + waiter.bytes <= state.capacity || state.held == 0 else { break }
            take(waiter.bytes, client: waiter.client, in: &state)
            granted.append(state.waiters.remove(at: index))
        }
        return granted
    }

    /// Whether `bytes` fit in the bound and in `client`'s share.
    private static func fits(_ bytes: Int, client: String?, share: Int, in state: State) -> Bool {
        state.held + bytes <= state.capacity && !exceedsShare(bytes, client: client, share: share, in: state)
    }

    private static func exceedsShare(_ bytes: Int, client: String?, share: Int, in state: State) -> Bool {
        guard let client, let held = state.heldBy[client] else { return false }
        return held + bytes > share
    }

    private static func heldBackByShare(_ waiter: Waiter, in state: State) -> Bool {
        exceedsShare(waiter.bytes, client: waiter.client, share: waiter.share, in: state)
    }

    private static func take(_ bytes: Int, client: String?, in state: inout State) {
        state.held += bytes
        state.peak = max(state.peak, state.held)
        if let client { state.heldBy[client, default: 0] += bytes }
    }
}

/// What one call holds of a `MemoryBudget` (an algorithm's answer, as it is read, inflated and
/// sent), resized as its size becomes known and given back once: by `release()`, or when the
/// call's last reference to it goes, whatever path the call took.
///
/// An answer shared with collapsed waiters (`SingleFlight`) is held until the last of them has
/// sent it: each is one more holder (`share`), and the room goes back at the last `release()`.
final class HeldBytes: Sendable {
    private struct State {
        var bytes = 0
        var holders = 1
    }

    private let budget: MemoryBudget
    private let state = Mutex(State())

    init(in budget: MemoryBudget) {
        self.budget = budget
    }

    var held: Int { state.withLock { $0.bytes } }

    /// Holds `size` bytes, or the whole `capacity` when `size` is more, waiting (as
    /// `MemoryBudget.reserve`) for them: for a room that holds none yet, since one that holds some
    /// never waits for more (`force`, `AnswerRoom.hold`). A call that needs more than the whole
    /// bound (a compressed answer as large as the limit allows, beside its plain bytes while it is
    /// inflated) holds all of it, and waits only for the others to go: it could never have more,
    /// and waiting for it would hold the call until its timeout, and every answer queued behind it.
    func reserve(_ size: Int, capacity: Int, timeout: Duration, busy: @autoclosure @escaping @Sendable () -> GatewayError) async throws {
        guard size > 0 else { return }
        let added = try await budget.reserve(min(size, capacity), capacity: capacity, timeout: timeout, busy: busy())
        state.withLock { $0.bytes += added }
    }

    /// Holds `size` bytes (as `reserve`) when they fit without waiting; false, holding nothing
    /// more, when they would wait.
    func tryReserve(_ size: Int, capacity: Int) -> Bool {
        guard size > 0 else { return true }
        guard let added = budget.tryReserve(min(size, capacity), capacity: capacity) else { return false }
        state.withLock { $0.bytes += added }
        return true
    }

    /// Holds `size` bytes in all, or the whole `capacity` when `size` is more, at once: what it
    /// drops is given back, what it adds is taken without waiting (`MemoryBudget.add`), for a
    /// call that holds room already and must not wait for more while holding it.
    func force(to size: Int, capacity: Int) {
        let size = min(size, capacity)
        let change = state.withLock { state -> Int in
            defer { state.bytes = size }
            return size - state.bytes
        }
        if change > 0 { budget.add(change) } else { budget.release(-change) }
    }

    /// Counts a copy made of an answer holding room here (compressed for a client or for the
    /// cache), which lives beside the answer's `plain` bytes until it has been sent: as many
    /// bytes as the answer while `make` runs, then the copy's own (`size`), taken without
    /// waiting as `force` takes them, up to `capacity` in all. Relative, so copies made at once
    /// for calls sharing the room (collapsed calls) each add their own. Nothing when `room` holds
    /// none (an answer under `AnswerRoom.from`).
    static func counting<Copy>(copyOf plain: Int, in room: HeldBytes?, capacity: Int, _ make: () async throws -> Copy,
                               size: (Copy) -> Int) async throws -> Copy {
        guard let room, room.held > 0 else { return try await make() }
        let making = room.add(plain, capacity: capacity)
        let copy: Copy
        do {
            copy = try await make()
        } catch {
            room.remove(making)
            throw error
        }
        room.remove(making)
        _ = room.add(size(copy), capacity: capacity)
        return copy
    }

    /// Holds `bytes` more at once, up to `capacity` in all; returns how many it added.
    private func add(_ bytes: Int, capacity: Int) -> Int {
        let added = state.withLock { state -> Int in
            let added = max(0, min(bytes, capacity - state.bytes))
            state.bytes += added
            return added
        }
        if added > 0 { budget.add(added) }
        return added
    }

    private func remove(_ bytes: Int) {
        let removed = state.withLock { state -> Int in
            let removed = min(bytes, state.bytes)
            state.bytes -= removed
            return removed
        }
        budget.release(removed)
    }

    /// `count` more requests send the bytes held here, each calling `release()` once it has.
    func share(with count: Int) {
        guard count > 0 else { return }
        state.withLock { $0.holders += count }
    }

    /// One holder is done with the bytes; the last gives them back.
    func release() {
        let given = state.withLock { state -> Int in
            state.holders -= 1
            guard state.holders <= 0 else { return 0 }
            defer { state.bytes = 0 }
            return state.bytes
        }
        budget.release(given)
    }

    deinit {
        // Whoever still held it has gone without releasing (a request dropped before it was sent).
        budget.release(state.withLock { $0.bytes })
    }
}
