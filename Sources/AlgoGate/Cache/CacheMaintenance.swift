import Foundation
import Logging
import ServiceLifecycle

/// Applies the cache's gathered access times and counters every few seconds, drops expired
/// entries, and flushes once more when the gateway shuts down.
struct CacheMaintenance: Service {
    let cache: ResponseCache
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
            try cache.close()
        } catch {
            logger.error("cache close failed", metadata: ["error": "\(error)"])
        }
    }

    private func flush() async {
        do {
            try await cache.flush(now: Date().timeIntervalSince1970)
        } catch {
            logger.error("cache flush failed", metadata: ["error": "\(error)"])
        }
    }
}
