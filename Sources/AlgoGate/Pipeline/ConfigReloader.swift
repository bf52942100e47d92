import Crypto
import Foundation
import Logging
import ServiceLifecycle
import Synchronization
import UnixSignals

/// Re-reads the configuration on SIGHUP, and, when told to watch (`serve --watch`), when the
/// config file changes or a file it names that a reload reads again (`upstream.key_file`, the
/// `server.tls` certificate and key), and swaps it in without dropping a connection: clients,
/// scopes, data prefixes, quotas, limits, timeouts, cache rules, the upstream key and the TLS
/// certificate take effect for the next request (or handshake); each step of a request under way
/// reads the version current when it runs (its client as authenticated, the upstream it is sent
/// to when it gets a slot). A configuration that does not load is logged and the old one stays.
/// Listening address, turning TLS on or off, the cache file and the upstream connection pool are
/// fixed at start-up; a change to them is logged as needing a restart, as is a raised
/// `upstream.timeout_seconds` (the upstream client's read and write timeouts follow it) and a
/// raised `upstream.max_concurrency` (the pool is sized for the slots the gateway started with;
/// lowered, they apply at once).
public struct ConfigReloader: Service {
    /// What started a reload, in its log line.
    public enum Trigger: String, Sendable {
        case signal = "SIGHUP"
        case fileChange = "file changed"
    }

    /// A reload's course, as `announce` is told it: begun, then taken or refused.
    public enum Progress: Sendable {
        case begun, taken, refused
    }

    let path: String
    let state: GatewayState
    let logger: Logger
    let environment: @Sendable () -> [String: String]
    /// How often the files are looked at for a change; nil: reload on SIGHUP only.
    let watchInterval: Duration?
    /// How long a change must hold before it is loaded: a file caught while being written
    /// changes again within it, and is loaded once whole.
    let settle: Duration
    let metrics: GatewayMetrics?
    /// Told as each reload begins and once it has been taken or refused, awaited each time: `serve`
    /// tells systemd (`RELOADING=1`, then `READY=1`), so that under a `Type=notify-reload` unit
    /// `systemctl reload` returns once the reload is over.
    let announce: (@Sendable (Progress) async -> Void)?
    /// The files as they were when last loaded, or refused: a change is a change from this.
    private let seen: SeenFiles
    /// The configuration the gateway started with: what needs a restart runs as it says, however
    /// many reloads have changed the file since.
    private let started: GatewayConfig

    public init(path: String, state: GatewayState, logger: Logger, watchInterval: Duration? = nil, settle: Duration = .milliseconds(500),
                metrics: GatewayMetrics? = nil, announce: (@Sendable (Progress) async -> Void)? = nil,
                environment: @escaping @Sendable () -> [String: String] = { ProcessInfo.processInfo.environment }) {
        self.path = path
        self.announce = announce
        self.state = state
        self.logger = logger
        self.watchInterval = watchInterval
        self.settle = settle
        self.metrics = metrics
        self.environment = environment
        // Taken as the gateway starts, right after the configuration in force was read.
        self.seen = SeenFiles(Self.fingerprint(path: path, config: state.snapshot.config))
        self.started = state.snapshot.config
    }

    public func run() async throws {
        let signals = await UnixSignalsSequence(trapping: .sighup)
        await cancelWhenGracefulShutdown {
            await withDiscardingTaskGroup { group in
                group.addTask {
                    for await _ in signals { await announcedReload(trigger: .signal) }
                }
                if let watchInterval {
                    group.addTask { await watch(every: watchInterval) }
                }
            }
        }
    }

    /// Looks at the files every `interval` and reloads once they have changed and held still for
    /// `settle`. Reading them is cheap: a config file, a key, and a certificate and its key.
    func watch(every interval: Duration) async {
        while !Task.isCancelled {
            do { try await Task.sleep(for: interval) } catch { return }
            let changed = currentFingerprint()
            guard changed != seen.value else { continue }
            do { try await Task.sleep(for: settle) } catch { return }
            guard currentFingerprint() == changed else { continue }
            await announcedReload(trigger: .fileChange)
        }
    }

    /// `reload(trigger:)`, told to `announce` as it begins and ends.
    func announcedReload(trigger: Trigger) async {
        await announce?(.begun)
        let taken = reload(trigger: trigger)
        await announce?(taken ? .taken : .refused)
    }

    /// Loads and applies the file; returns whether the new configuration is in force.
    @discardableResult
    public func reload(trigger: Trigger = .signal) -> Bool {
        // Before reading: a change made while it loads is a change from what this records.
        seen.value = currentFingerprint()
        let loaded: ConfigLoader.Loaded
        do {
            loaded = try ConfigLoader.load(path: path, environment: environment(), slotsInForce: started.upstream.maxConcurrency)
        } catch {
            return refused(error, trigger: trigger)
        }
        let new = loaded.config
        // What needs a restart, against the start, not the last reload: a change that a reload
        // logged as needing one still needs it after the next.
        var fixed: [String] = []
        // `server.public_url` applies to the next request, and the TLS files are read anew (turning
        // TLS on or off needs a restart); the rest of `server` applies from the next start.
        var (oldServer, newServer) = (started.server, new.server)
        (oldServer.publicURL, newServer.publicURL) = (nil, nil)
        if oldServer.tls != nil, newServer.tls != nil { (oldServer.tls, newServer.tls) = (nil, nil) }
        if oldServer != newServer { fixed.append("server") }
        if started.cache.path != new.cache.path || started.cache.enabled != new.cache.enabled { fixed.append("cache.path/cache.enabled") }
        if started.cache.maxBytes != new.cache.maxBytes || started.cache.memoryBytes != new.cache.memoryBytes
            || started.cache.staleIfErrorSeconds != new.cache.staleIfErrorSeconds {
            fixed.append("cache.max_bytes/memory_bytes/stale_if_error_seconds")
        }
        // Lowered, the slots apply now (`GatewayApp`); raised, the pool sized at start holds them back.
        if new.upstream.maxConcurrency > started.upstream.maxConcurrency { fixed.append("upstream.max_concurrency (raised)") }
        if started.upstream.caFile != new.upstream.caFile
            || started.upstream.connectTimeoutSeconds != new.upstream.connectTimeoutSeconds || started.upstream.proxy != new.upstream.proxy
            || started.upstream.idleConnectionSeconds != new.upstream.idleConnectionSeconds {
            fixed.append("upstream connection settings")
        }
        // The upstream client's read and write timeouts follow it (`Forwarder.clientConfiguration`): raised,
        // calls longer than the old value would be cut until a restart.
        if new.upstream.timeoutSeconds > started.upstream.timeoutSeconds { fixed.append("upstream.timeout_seconds (raised)") }
        do {
            try state.replace(with: loaded)
        } catch {
            return refused(error, trigger: trigger)
        }
        metrics?.configReload(applied: true)
        logger.info("configuration reloaded", metadata: [
            "clients": .number(new.clients.count),
            "needs_restart": .string(fixed.isEmpty ? "none" : fixed.joined(separator: ", ")),
            "trigger": .string(trigger.rawValue),
        ])
        for note in ConfigLoader.notes(new) { logger.warning("\(note)") }
        return true
    }

    private func refused(_ error: any Error, trigger: Trigger) -> Bool {
        metrics?.configReload(applied: false)
        logger.error("reload refused: configuration kept as it was", metadata: [
            "reason": "\(error)",
            "trigger": .string(trigger.rawValue),
        ])
        return false
    }

    private func currentFingerprint() -> [UInt8] {
        Self.fingerprint(path: path, config: state.snapshot.config)
    }

    /// A digest of the bytes of the config file and of the files it names that a reload reads
    /// again (`upstream.key_file`, `server.tls`), each marked present or not and length-prefixed.
    /// Compared, never logged or kept beyond the process.
    static func fingerprint(path: String, config: GatewayConfig) -> [UInt8] {
        var hash = SHA256()
        for file in [path, config.upstream.keyFile, config.server.tls?.certFile, config.server.tls?.keyFile] {
            guard let file, let bytes = FileManager.default.contents(atPath: file) else {
                hash.update(data: [0])
                continue
            }
            hash.update(data: [1])
            withUnsafeBytes(of: UInt64(bytes.count).littleEndian) { hash.update(bufferPointer: $0) }
            hash.update(data: bytes)
        }
        return Array(hash.finalize())
    }
}

/// The fingerprint of the files last loaded, shared by the signal and the watch.
private final class SeenFiles: Sendable {
    private let fingerprint: Mutex<[UInt8]>

    init(_ fingerprint: [UInt8]) {
        self.fingerprint = Mutex(fingerprint)
    }

    var value: [UInt8] {
        get { fingerprint.withLock { $0 } }
        set { fingerprint.withLock { $0 = newValue } }
    }
}
