import NIOCore
import Synchronization

/// Recently used answers in memory, in front of SQLite, bounded in bytes. A hit here costs a
/// dictionary look-up under a lock; no database read, no decompression.
///
/// The bound is on what the entries hold in memory, not on their answers' lengths: an entry's
/// buffers are copied into storage of their own when they are slices of larger ones (the gzip
/// copy the cache stores is a slice of zlib's worst-case output buffer: 112 bytes of a 2 kB
/// answer held 4 kB), and counted as NIO allocates them, in powers of two, with the entry's key,
/// fields and slot besides (`residentBytes`). Counted by answer lengths, a full tier grew the
/// gateway by 4.1 times its bound with 170-byte answers and 4.5 times with 2 kB ones; counted
/// so, by 0.9 and 1.0 to 1.1 times (`Benchmarks/hottier.sh`).
///
/// A hit sends the bytes the tier holds and holds no room of its own under
/// `limits.max_buffered_answer_bytes`, so a hit from memory never waits. An entry that leaves the
/// tier (evicted, replaced, purged or expired) while hits are still sending it stays in memory
/// until they have, no longer counted by the tier: its bytes are counted under the answer budget
/// until the last of those hits has sent them (`Residency`).
final class HotTier: Sendable {
    struct Item: Sendable {
        let answer: CachedAnswer
        /// What the entry holds in memory, as the tier counts it (`residentBytes`).
        let bytes: Int
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
        let bytes = Self.residentBytes(key: key, answer)
        guard capacity > 0, bytes <= capacity / 4 else { return }
        let answer = answer.ownStorage()
        let size = answer.size
        let budget = size >= AnswerRoom.from ? answers.withLock { $0 } : nil
        let residency = budget.map { Residency(bytes: bytes, budget: $0) }
        let left = state.withLock { state -> [Item] in
            var left: [Item] = []
            if let old = state.items[key] {
                state.bytes -= old.bytes
                left.append(old)
            }
            state.tick += 1
            state.items[key] = Item(answer: answer, bytes: bytes, lastUsed: state.tick, residency: residency)
            state.bytes += bytes
            guard state.bytes > capacity else { return left }
            // Evict the least recently used down to three quarters, so this sort is rare.
            for (victim, item) in state.items.sorted(by: { $0.value.lastUsed < $1.value.lastUsed }) {
                guard state.bytes > capacity * 3 / 4 else { break }
                state.items[victim] = nil
                state.bytes -= item.bytes
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
                state.bytes -= item.bytes
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

    /// Bytes the tier holds, as it counts them (for tests).
    var bytes: Int { state.withLock { $0.bytes } }

    /// Entries the tier holds (for tests).
    var count: Int { state.withLock { $0.items.count } }

    /// The answers the tier holds (for tests).
    var heldAnswers: [CachedAnswer] { state.withLock { $0.items.values.map(\.answer) } }

    /// What an entry holds in memory once its buffers are its own (`CachedAnswer.ownStorage`):
    /// each buffer's storage, a power of two at least its length as NIO allocates it, its key,
    /// algorithm and content type, and `entryOverhead` for the rest.
    static func residentBytes(key: String, _ answer: CachedAnswer) -> Int {
        storage(answer.body.readableBytes) + (answer.gzipBody.map { storage($0.readableBytes) } ?? 0)
            + key.utf8.count + answer.algo.utf8.count + answer.contentType.utf8.count + entryOverhead
    }

    /// The rest of an entry: the buffers' storage objects and malloc's headers, the strings'
    /// headers, the item and its slot in the dictionary (whose table is kept at most three
    /// quarters full): about 600 bytes, measured as resident memory per entry over 100,000
    /// entries of 16 to 4,000 bytes.
    static let entryOverhead = 600

    /// The memory a buffer of `bytes` holds: NIO allocates the next power of two, all of it
    /// resident for a block from the allocator's heaps. A block of `mappedFrom` or more is mapped
    /// on its own (the executable sets glibc's mmap threshold there, `LargeAllocations`), and only
    /// the pages written are resident.
    static func storage(_ bytes: Int) -> Int {
        let allocated = allocation(bytes)
        return allocated >= mappedFrom ? (bytes + pageSize - 1) / pageSize * pageSize : allocated
    }

    /// The block NIO allocates for a buffer of `bytes`: the next power of two.
    static func allocation(_ bytes: Int) -> Int {
        bytes <= 0 ? 0 : 1 << (Int.bitWidth - (bytes - 1).leadingZeroBitCount)
    }

    static let mappedFrom = 1 << 20
    static let pageSize = 4096

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
    /// Bytes of this answer: its body and its gzip copy.
    var size: Int { body.readableBytes + (gzipBody?.readableBytes ?? 0) }

    /// The same answer without a lease, its buffers in storage of their own: a buffer whose
    /// storage is larger than its length needs (a slice of a read buffer, or of zlib's worst-case
    /// output) is copied, so that the tier does not keep the rest alive. Not a large one, mapped
    /// on its own: only the pages of its block that were written are resident (`HotTier.storage`).
    func ownStorage() -> CachedAnswer {
        func own(_ buffer: ByteBuffer) -> ByteBuffer {
            let allocation = HotTier.allocation(buffer.readableBytes)
            guard allocation < HotTier.mappedFrom, buffer.storageCapacity > allocation else { return buffer }
            var copy = ByteBufferAllocator().buffer(capacity: buffer.readableBytes)
            copy.writeImmutableBuffer(buffer)
            return copy
        }
        return CachedAnswer(algo: algo, status: status, contentType: contentType, body: own(body), gzipBody: gzipBody.map(own),
                            createdAt: createdAt, expiresAt: expiresAt)
    }
}
