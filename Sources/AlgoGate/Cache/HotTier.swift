import NIOCore
import Synchronization

/// Recently used answers in memory, in front of SQLite, bounded in bytes. A hit here costs a
/// dictionary look-up under a lock; no database read, no decompression.
final class HotTier: Sendable {
    struct Item: Sendable {
        let answer: CachedAnswer
        var lastUsed: UInt64
    }

    private struct State {
        var items: [String: Item] = [:]
        var bytes = 0
        var tick: UInt64 = 0
    }

    private let state = Mutex(State())
    let capacity: Int

    init(capacity: Int) { self.capacity = capacity }

    func get(_ key: String) -> CachedAnswer? {
        guard capacity > 0 else { return nil }
        return state.withLock { state in
            guard var item = state.items[key] else { return nil }
            state.tick += 1
            item.lastUsed = state.tick
            state.items[key] = item
            return item.answer
        }
    }

    func put(_ key: String, _ answer: CachedAnswer) {
        let size = answer.size
        guard capacity > 0, size <= capacity / 4 else { return }
        state.withLock { state in
            if let old = state.items[key] { state.bytes -= old.answer.size }
            state.tick += 1
            state.items[key] = Item(answer: answer, lastUsed: state.tick)
            state.bytes += size
            guard state.bytes > capacity else { return }
            // Evict the least recently used down to three quarters, so this sort is rare.
            for (victim, item) in state.items.sorted(by: { $0.value.lastUsed < $1.value.lastUsed }) {
                guard state.bytes > capacity * 3 / 4 else { break }
                state.items[victim] = nil
                state.bytes -= item.answer.size
            }
        }
    }

    func remove(where shouldRemove: (String, CachedAnswer) -> Bool) {
        state.withLock { state in
            for (key, item) in state.items where shouldRemove(key, item.answer) {
                state.items[key] = nil
                state.bytes -= item.answer.size
            }
        }
    }

    func removeAll() {
        state.withLock { $0 = State() }
    }
}

extension CachedAnswer {
    /// Bytes this answer holds in memory.
    var size: Int { body.readableBytes + (gzipBody?.readableBytes ?? 0) }
}
