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
    /// The certificate and key served with `server.tls`, read anew at each reload; nil for plain
    /// HTTP (turning TLS on or off needs a restart).
    public let tls: TLSCredentials?
    /// Told of each configuration swapped in, for state kept outside the snapshot (the upstream
    /// slots in force and their reservations).
    private let observers = Mutex<[@Sendable (Snapshot) -> Void]>([])

    public init(_ loaded: ConfigLoader.Loaded, redactor: LogRedactor? = nil) throws {
        redactor?.add(loaded.upstreamKey)
        current = Mutex(try Self.snapshot(loaded))
        tls = try loaded.config.server.tls.map { settings in TLSCredentials(try loaded.tls ?? TLSCredentials.read(settings)) }
        self.redactor = redactor
    }

    public var snapshot: Snapshot { current.withLock { $0 } }

    /// Replaces the configuration, and the TLS certificate and key with the files `server.tls`
    /// names now; on error the old ones stay in force.
    public func replace(with loaded: ConfigLoader.Loaded) throws {
        let pair = try tls.flatMap { _ in try loaded.config.server.tls.map { settings in try loaded.tls ?? TLSCredentials.read(settings) } }
        let next = try Self.snapshot(loaded)
        redactor?.add(loaded.upstreamKey)
        if let pair { tls?.replace(with: pair) }
        // Told under the lock, so two reloads at once reach the observers in the order they were
        // swapped in.
        let observers = observers.withLock { $0 }
        current.withLock { current in
            current = next
            for observer in observers { observer(next) }
        }
    }

    /// Calls `observer` with each configuration swapped in from now on, as it is swapped in: it
    /// must not read `snapshot`, whose lock is held.
    public func whenReplaced(_ observer: @escaping @Sendable (Snapshot) -> Void) {
        observers.withLock { $0.append(observer) }
    }

    private static func snapshot(_ loaded: ConfigLoader.Loaded) throws -> Snapshot {
        Snapshot(config: loaded.config, upstreamKey: loaded.upstreamKey, registry: try ClientRegistry(config: loaded.config))
    }
}
