import Foundation
import Logging
import ServiceLifecycle
import UnixSignals

/// Re-reads the configuration on SIGHUP and swaps it in without dropping a connection: clients,
/// scopes, data prefixes, quotas, limits, timeouts and cache rules take effect for the next
/// request; each step of a request under way reads the version current when it runs (its client
/// as authenticated, the upstream it is sent to when it gets a slot). A configuration that does not
/// load is logged and the old one stays. Listening address, TLS, the cache file and the upstream
/// connection pool are fixed at start-up; a change to them is logged as needing a restart, as is
/// a raised `upstream.timeout_seconds` (the upstream client's read and write timeouts follow it).
public struct ConfigReloader: Service {
    let path: String
    let state: GatewayState
    let logger: Logger
    let environment: @Sendable () -> [String: String]

    public init(path: String, state: GatewayState, logger: Logger,
                environment: @escaping @Sendable () -> [String: String] = { ProcessInfo.processInfo.environment }) {
        self.path = path
        self.state = state
        self.logger = logger
        self.environment = environment
    }

    public func run() async throws {
        let signals = await UnixSignalsSequence(trapping: .sighup)
        await cancelWhenGracefulShutdown {
            for await _ in signals { reload() }
        }
    }

    /// Loads and applies the file; returns whether the new configuration is in force.
    @discardableResult
    public func reload() -> Bool {
        let loaded: ConfigLoader.Loaded
        do {
            loaded = try ConfigLoader.load(path: path, environment: environment())
        } catch {
            logger.error("reload refused: configuration kept as it was", metadata: ["reason": "\(error)"])
            return false
        }
        let old = state.snapshot.config
        let new = loaded.config
        var fixed: [String] = []
        // `server.public_url` applies to the next request; the rest of `server` to the next start.
        var (oldServer, newServer) = (old.server, new.server)
        (oldServer.publicURL, newServer.publicURL) = (nil, nil)
        if oldServer != newServer { fixed.append("server") }
        if old.cache.path != new.cache.path || old.cache.enabled != new.cache.enabled { fixed.append("cache.path/cache.enabled") }
        if old.cache.maxBytes != new.cache.maxBytes || old.cache.memoryBytes != new.cache.memoryBytes
            || old.cache.staleIfErrorSeconds != new.cache.staleIfErrorSeconds {
            fixed.append("cache.max_bytes/memory_bytes/stale_if_error_seconds")
        }
        if old.upstream.maxConcurrency != new.upstream.maxConcurrency || old.upstream.caFile != new.upstream.caFile
            || old.upstream.connectTimeoutSeconds != new.upstream.connectTimeoutSeconds || old.upstream.proxy != new.upstream.proxy {
            fixed.append("upstream connection settings")
        }
        // The upstream client's read and write timeouts follow it (`Forwarder.clientConfiguration`): raised,
        // calls longer than the old value would be cut until a restart.
        if new.upstream.timeoutSeconds > old.upstream.timeoutSeconds { fixed.append("upstream.timeout_seconds (raised)") }
        do {
            try state.replace(with: loaded)
        } catch {
            logger.error("reload refused: configuration kept as it was", metadata: ["reason": "\(error)"])
            return false
        }
        logger.info("configuration reloaded", metadata: [
            "clients": .stringConvertible(new.clients.count),
            "needs_restart": .string(fixed.isEmpty ? "none" : fixed.joined(separator: ", ")),
        ])
        return true
    }
}
