import Foundation
import Logging
import ServiceLifecycle
import Synchronization

/// Every second: usage counters to the database, the cache's access times and counters, expired
/// entries out, and the disk's reserve taken again once it has room (`DiskReserve`). On shutdown
/// (after the server has drained): one last flush, a WAL checkpoint, and the database closed
/// cleanly.
struct StateMaintenance: Service {
    let storage: GatewayStorage
    let ledger: QuotaLedger
    let interval: Duration
    let logger: Logger

    func run() async throws {
        if let reserve = storage.reserve, !reserve.isHeld {
            logger.warning("the disk holding cache.path is nearly full: cannot hold \(Formatting.size(reserve.bytes)) beside it for the usage counters; the cache stores nothing until the disk has \(Formatting.size(2 * reserve.bytes)) free",
                           metadata: ["reserve": "\(reserve.path)"])
        }
        let reserveHeld = Mutex(storage.reserve?.isHeld ?? true)
        try? await cancelWhenGracefulShutdown {
            while true {
                try await Task.sleep(for: interval)
                await flush(reserveHeld: reserveHeld)
            }
        }
        await flush(reserveHeld: reserveHeld)
        do {
            _ = try await storage.pool.writeWithoutTransaction { db in try db.checkpoint(.truncate) }
            try storage.pool.close()
        } catch is CancellationError {
            // The service group cancelled rather than drained (another service failed): GRDB does
            // no work in a cancelled task, so the file is closed without its checkpoint (SQLite
            // checkpoints when the last connection closes).
            try? storage.pool.close()
        } catch {
            logger.error("closing the database failed", metadata: ["error": "\(error)"])
        }
    }

    private func flush(reserveHeld: borrowing Mutex<Bool>) async {
        // A full disk: the reserve's room goes to the counters, and their write is made again.
        // Made again too when a cache store that found the disk full gave the room back first
        // (the two writes can fail together, the store's giving it back between them).
        if await !ledger.flush(makingRoom: { [reserve = storage.reserve] in
            guard let reserve, reserve.bytes > 0 else { return false }
            reserve.release()
            return true
        }) {
            logger.error("usage counters could not be written; requests are refused until they can",
                         metadata: ["error": "\(ledger.lastFailure ?? "unknown")"])
        }
        for (algo, reason) in storage.cache?.takeCorruptEntries() ?? [] {
            logger.warning("a cache entry did not read back as stored, and was deleted: the call went upstream",
                           metadata: ["algo": "\(algo)", "reason": "\(reason)"])
        }
        do {
            try await storage.cache?.flush(now: Date().timeIntervalSince1970)
        } catch is CancellationError {
            // Stopping: a drain's final flush follows.
        } catch {
            logger.error("cache flush failed", metadata: ["error": "\(error)"])
        }
        guard let reserve = storage.reserve else { return }
        _ = reserve.retakeIfRoom()
        let held = reserve.isHeld
        guard reserveHeld.withLock({ was in defer { was = held }; return was != held }) else { return }
        if held {
            logger.notice("the disk holding cache.path has room again: \(Formatting.size(reserve.bytes)) held beside it anew, and the cache stores again",
                          metadata: ["reserve": "\(reserve.path)"])
        } else {
            logger.error("the disk holding cache.path is full: gave back the \(Formatting.size(reserve.bytes)) held beside it, so usage is still counted; the cache stores nothing until the disk has \(Formatting.size(2 * reserve.bytes)) free",
                         metadata: ["reserve": "\(reserve.path)"])
        }
    }
}
