import NIOCore
import Synchronization

/// Recently used answers in memory, in front of SQLite, bounded in bytes. A hit here costs a
/// dictionary look-up under a lock; no database read, no decompression.
///
/// A hit sends the bytes the tier holds and holds no room of its own under
/// `limits.max_buffered_answer_bytes`, so a hit from memory never waits. An entry that leaves the
/// tier (evicted, replaced, purged or expired) while hits are still sending it stays in memory
/// until they have, no longer counted by the tier: its bytes are counted under the answer budget
/// until the last of those hits has sent them (`Residency`).
final class HotTier: Sendable {
    struct Item: Sendable {
        let answer: CachedAnswer
        var lastUsed: UInt64
        let residency: Residency?
    }

    private struct State {
        var items: [String: Item] = [:]
        var bytes = 0
        var tick: UInt64 = 0
    }

    private let state = Mutex(State())
    private let answers = Mutex<MemoryBudget?>(nil)
    let capacity: Int

    init(capacity: Int) { self.capacity = capacity }

    /// Entries of at least `AnswerRoom.from` bytes that leave the tier while hits send them are
    /// counted in `budget` (the gateway's answer budget) until sent. Set once, by `GatewayApp`.
    func countSendsOfLeavingEntries(in budget: MemoryBudget) {
        answers.withLock { $0 = budget }
    }

    /// The entry for `key`, with a lease (`CachedAnswer.lease`) when its bytes are counted once
    /// it leaves: the caller keeps the answer, lease included, until it has been sent.
    func get(_ key: String) -> CachedAnswer? {
        guard capacity > 0 else { return nil }
        return state.withLock { state in
            guard var item = state.items[key] else { return nil }
            state.tick += 1
            item.lastUsed = state.tick
            state.items[key] = item
            var answer = item.answer
            // Taken under the tier's lock: an entry found here has not left yet, so it is
            // counted if it leaves while this lease lives.
            answer.lease = item.residency?.enter()
            return answer
        }
    }

    func put(_ key: String, _ answer: CachedAnswer) {
        let size = answer.size
        guard capacity > 0, size <= capacity / 4 else { return }
        var answer = answer
        answer.lease = nil
        let budget = size >= AnswerRoom.from ? answers.withLock { $0 } : nil
        let residency = budget.map { Residency(bytes: size, budget: $0) }
        let left = state.withLock { state -> [Item] in
            var left: [Item] = []
            if let old = state.items[key] {
                state.bytes -= old.answer.size
                left.append(old)
            }
            state.tick += 1
            state.items[key] = Item(answer: answer, lastUsed: state.tick, residency: residency)
            state.bytes += size
            guard state.bytes > capacity else { return left }
            // Evict the least recently used down to three quarters, so this sort is rare.
            for (victim, item) in state.items.sorted(by: { $0.value.lastUsed < $1.value.lastUsed }) {
                guard state.bytes > capacity * 3 / 4 else { break }
                state.items[victim] = nil
                state.bytes -= item.answer.size
                left.append(item)
            }
            return left
        }
        for item in left { item.residency?.leave() }
    }

    func remove(where shouldRemove: (String, CachedAnswer) -> Bool) {
        let left = state.withLock { state -> [Item] in
            var left: [Item] = []
            for (key, item) in state.items where shouldRemove(key, item.answer) {
                state.items[key] = nil
                state.bytes -= item.answer.size
                left.append(item)
            }
            return left
        }
        for item in left { item.residency?.leave() }
    }

    func removeAll() {
        let left = state.withLock { state -> [Item] in
            defer { state = State() }
            return Array(state.items.values)
        }
        for item in left { item.residency?.leave() }
    }

    /// Bytes the tier holds (for tests).
    var bytes: Int { state.withLock { $0.bytes } }

    /// Hits sending large entries of the tier now (for tests).
    var leases: Int { state.withLock { $0.items.values.reduce(0) { $0 + ($1.residency?.senders ?? 0) } } }
}

extension HotTier {
    /// A large entry's bytes, as the tier and the hits sending them hold them. While the entry
    /// is in the tier, they count under `cache.memory_bytes`; once it has left, if hits still
    /// send it, they count under the answer budget (taken without waiting: they are in memory
    /// already) until the last of those hits lets its lease go.
    final class Residency: Sendable {
        private struct State {
            var senders = 0
            var counted = false
        }

        let bytes: Int
        let budget: MemoryBudget
        private let state = Mutex(State())

        init(bytes: Int, budget: MemoryBudget) {
            self.bytes = bytes
            self.budget = budget
        }

        /// Hits holding a lease now.
        var senders: Int { state.withLock { $0.senders } }

        fileprivate func enter() -> Lease {
            state.withLock { $0.senders += 1 }
            return Lease(self)
        }

        /// The entry has left the tier. The budget is changed under this lock, so that a lease
        /// let go at the same moment cannot give back what was not yet counted.
        fileprivate func leave() {
            state.withLock { state in
                guard state.senders > 0 else { return }
                state.counted = true
                budget.add(bytes)
            }
        }

        fileprivate func senderDone() {
            state.withLock { state in
                state.senders -= 1
                guard state.senders == 0, state.counted else { return }
                state.counted = false
                budget.release(bytes)
            }
        }
    }

    /// One hit's hold on a large entry's bytes, from its look-up until its answer has been sent:
    /// let go when the last reference to it goes, whatever path the request took.
    final class Lease: Sendable {
        let residency: Residency

        fileprivate init(_ residency: Residency) { self.residency = residency }

        deinit { residency.senderDone() }
    }
}

extension CachedAnswer {
    /// Bytes this answer holds in memory.
    var size: Int { body.readableBytes + (gzipBody?.readableBytes ?? 0) }
}
