import Synchronization

/// The configuration in force and what is derived from it, swapped whole on reload so a request
/// sees one consistent version from start to end of each step.
public final class GatewayState: Sendable {
    /// A class, so reading the snapshot (several times per request) copies one reference.
    public final class Snapshot: Sendable {
        public let config: GatewayConfig
        public let upstreamKey: Secret
        public let registry: ClientRegistry
        /// The upstream the cache keys its entries under (`CachePolicy.origin(of:)`), worked out
        /// once per configuration rather than per call.
        let cacheOrigin: String?

        init(config: GatewayConfig, upstreamKey: Secret, registry: ClientRegistry) {
            self.config = config
            self.upstreamKey = upstreamKey
            self.registry = registry
            self.cacheOrigin = CachePolicy.origin(of: config.upstream.url)
        }
    }

    private let current: Mutex<Snapshot>
    /// Told of each upstream key before requests can use it, so no log line can quote one unseen.
    private let redactor: LogRedactor?

    public init(_ loaded: ConfigLoader.Loaded, redactor: LogRedactor? = nil) throws {
        redactor?.add(loaded.upstreamKey)
        current = Mutex(try Self.snapshot(loaded))
        self.redactor = redactor
    }

    public var snapshot: Snapshot { current.withLock { $0 } }

    /// Replaces the configuration; on error the old one stays in force.
    public func replace(with loaded: ConfigLoader.Loaded) throws {
        let next = try Self.snapshot(loaded)
        redactor?.add(loaded.upstreamKey)
        current.withLock { $0 = next }
    }

    private static func snapshot(_ loaded: ConfigLoader.Loaded) throws -> Snapshot {
        Snapshot(config: loaded.config, upstreamKey: loaded.upstreamKey, registry: try ClientRegistry(config: loaded.config))
    }
}
