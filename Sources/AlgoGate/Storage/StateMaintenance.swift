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
        // In a task of its own: when the service group cancels rather than drains (another service
        // failed, such as a listener that could not bind), GRDB refuses work in a cancelled task,
        // and the last second's usage counts would be lost with the file left unchecked-pointed.
        await Task { [self] in
            await flush()
            do {
                _ = try await storage.pool.writeWithoutTransaction { db in try db.checkpoint(.truncate) }
                try storage.pool.close()
            } catch {
                logger.error("closing the database failed", metadata: ["error": "\(error)"])
            }
        }.value
    }

    private func flush() async {
        if await !ledger.flush() {
            logger.error("usage counters could not be written; requests are refused until they can")
        }
        do {
            try await storage.cache?.flush(now: Date().timeIntervalSince1970)
        } catch is CancellationError {
            // Stopping: the final flush follows, outside the cancelled task.
        } catch {
            logger.error("cache flush failed", metadata: ["error": "\(error)"])
        }
    }
}
