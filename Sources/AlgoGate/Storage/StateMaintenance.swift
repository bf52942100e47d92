import Foundation
import Logging
import ServiceLifecycle

/// Every second: usage counters to the database, the cache's access times and counters, expired
/// entries out. On shutdown (after the server has drained): one last flush, a WAL checkpoint, and
/// the database closed cleanly.
struct StateMaintenance: Service {
    let storage: GatewayStorage
    let ledger: QuotaLedger
    let interval: Duration
    let logger: Logger

    func run() async throws {
        try? await cancelWhenGracefulShutdown {
            while true {
                try await Task.sleep(for: interval)
                await flush()
            }
        }
        await flush()
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

    private func flush() async {
        if await !ledger.flush() {
            logger.error("usage counters could not be written; requests are refused until they can")
        }
        do {
            try await storage.cache?.flush(now: Date().timeIntervalSince1970)
        } catch is CancellationError {
            // Stopping: a drain's final flush follows.
        } catch {
            logger.error("cache flush failed", metadata: ["error": "\(error)"])
        }
    }
}
