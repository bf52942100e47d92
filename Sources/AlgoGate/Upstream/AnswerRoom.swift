import NIOCore

/// The room one algorithm answer holds under `limits.max_buffered_answer_bytes` (the gateway's
/// answer `MemoryBudget`) while it is read, inflated and sent: sized to each step's bytes as they
/// become known, and given back by the request's facts once the answer has been sent.
///
/// A cache hit read from SQLite holds room too, from before its body is read until it has been
/// sent; one from the hot tier holds none, since it shares the bytes the tier holds already
/// (unless the entry leaves the tier while it is sent: `HotTier.Residency`).
///
/// Answers smaller than `from` hold none: at most `upstream.max_concurrency` of them are in
/// flight, a few MB in all, and the common small answer pays nothing for the bound.
struct AnswerRoom {
    static let from = 64 * 1024

    let budget: MemoryBudget?
    let capacity: Int
    /// How long the answer may wait for room: the call's own timeout for an upstream answer,
    /// `upstream.queue_timeout_seconds` for a cache hit; `timeoutName` names it in the 503.
    let timeout: Duration
    let timeoutName: String
    let facts: RequestFacts
    /// The client connection whose going ends a wait for room (`ClientDeparture`): a cache hit's.
    /// Nil for an upstream answer, whose whole call is watched already (`ForwardMiddleware`).
    let leavesWith: (any Channel)?
    private var held: HeldBytes?

    init(budget: MemoryBudget?, capacity: Int, timeout: Duration, timeoutName: String = "the call's whole timeout", facts: RequestFacts,
         leavesWith channel: (any Channel)? = nil) {
        self.budget = budget
        self.capacity = capacity
        self.timeout = timeout
        self.timeoutName = timeoutName
        self.facts = facts
        self.leavesWith = channel
    }

    /// Holds `size` bytes from now on. An answer holding no room waits for it (503 `GatewayBusy`
    /// after `timeout`); one holding some already never waits: it gives back what it drops and
    /// takes what it adds at once. Two answers each holding room and waiting for more would wait
    /// for each other until both timed out, so an answer reserves, while it holds none, all it
    /// will need (its compressed bytes and the most they inflate to, say), and only grows later
    /// by bytes already in memory (a gzip trailer that understated its size).
    mutating func hold(_ size: Int) async throws {
        let size = size >= Self.from ? size : 0
        guard let budget, size > 0 || held != nil else { return }
        let room = held ?? HeldBytes(in: budget)
        held = room
        // The answer the request sends is the one holding room (an upstream answer that fails
        // over to a stale cache entry is replaced by the entry).
        if size > 0 { facts.holdAnswer(in: room) }
        guard room.held == 0 else {
            room.force(to: size, capacity: capacity)
            return
        }
        if room.tryReserve(size, capacity: capacity) { return }
        let (capacity, timeout, timeoutName) = (capacity, timeout, timeoutName)
        let wait = { @Sendable in
            try await room.reserve(size, capacity: capacity, timeout: timeout,
                                   busy: GatewayError(status: .serviceUnavailable, errorType: "GatewayBusy",
                                                      message: "the algorithm answers the gateway holds in memory stayed at their limit (limits.max_buffered_answer_bytes) for \(timeoutName)"))
        }
        // A hit whose client goes while it waits leaves the queue (499), rather than waiting on
        // for room, then reading and sending an answer nobody reads. Room granted just as the
        // client went is held by `room`, which the request's facts give back.
        guard let channel = leavesWith, let departure = await ClientDeparture.of(channel) else { return try await wait() }
        try await departure.watching(departures: true) { _ in try await wait() }
    }
}
