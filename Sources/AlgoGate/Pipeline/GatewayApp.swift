import AsyncHTTPClient
import Foundation
import GRDB
import Hummingbird
import HummingbirdCore
import HummingbirdTLS
import Logging
import NIOCore
import NIOSSL
import ServiceLifecycle

/// What the gateway keeps on disk: its SQLite file, the response cache in it (nil when
/// `cache.enabled` is false), and where usage counters go.
public struct GatewayStorage: Sendable {
    public let pool: DatabasePool
    public let cache: ResponseCache?
    public let usage: any UsageStore
    /// Room held on the file's disk for the usage counters (`DiskReserve`).
    public let reserve: DiskReserve?

    public init(pool: DatabasePool, cache: ResponseCache?, usage: any UsageStore, reserve: DiskReserve? = nil) {
        self.pool = pool
        self.cache = cache
        self.usage = usage
        self.reserve = reserve
    }

    /// Opens `cache.path` (creating it when needed) with every table brought up to date, and
    /// takes `reserveBytes` of room beside it (`DiskReserve`; a disk without that room leaves the
    /// cache storing nothing until it has).
    public static func open(_ config: GatewayConfig, reserveBytes: Int = DiskReserve.defaultBytes) throws -> GatewayStorage {
        let pool = try StateDatabase.open(path: config.cache.path)
        let reserve = DiskReserve(besideDatabase: config.cache.path, bytes: reserveBytes)
        reserve.take()
        let cache = config.cache.enabled ? ResponseCache(pool: pool, settings: .init(
            maxBytes: config.cache.maxBytes, memoryBytes: config.cache.memoryBytes,
            compressMinBytes: config.compression.minBytes, compressLevel: Int32(config.compression.level),
            staleIfErrorSeconds: config.cache.staleIfErrorSeconds), reserve: reserve) : nil
        return GatewayStorage(pool: pool, cache: cache, usage: SQLiteUsageStore(pool: pool), reserve: reserve)
    }
}

/// The gateway, wired. A request's path through it reads top to bottom in `router()`:
/// event-loop affinity → request id → log → metrics → CORS → errors →
/// compression → authenticate → authorise route and data paths → read algo input → quota →
/// cache → upstream slot and forward.
/// Ahead of it all, on the connection, `CachedHits` answers hits held in memory with the same
/// checks, and hands everything else to this pipeline.
public struct GatewayApp: Sendable {
    public let state: GatewayState
    let httpClient: HTTPClient
    let logger: Logger
    public let storage: GatewayStorage
    public let ledger: QuotaLedger
    public let gate: ConcurrencyGate
    /// Bounds the algorithm input held in memory at once (`limits.max_buffered_bytes`).
    public let inputBudget = MemoryBudget()
    /// Bounds the algorithm answers held in memory at once (`limits.max_buffered_answer_bytes`).
    public let answerBudget = MemoryBudget()
    /// Concurrent identical cache misses, one upstream call each (`CacheMiddleware`).
    let flights = SingleFlight<CacheMiddleware.Shared>()
    /// Refuses requests at once while the upstream cannot be reached (`upstream.circuit_breaker`).
    public let breaker: CircuitBreaker
    public let metrics = GatewayMetrics()
    /// The writer behind `logger`, when it is one: its dropped lines are a metric.
    let logWriter: LogWriter?
    let now: @Sendable () -> Double
    /// How often `StateMaintenance` runs: usage counters and the cache's access times written
    /// down, expired entries out, evictions, the disk's reserve retaken (1 s; tests slow it).
    let maintenanceInterval: Duration
    /// How long a call may take to arrive and still be held for a hit on the event loop
    /// (`CachedHits.hold`: 1 s; tests lengthen it).
    let fastHitHold: Duration
    /// The window over which an upload's rate is judged (`UploadRelay.MinimumRate`: 20 s; tests
    /// shorten it).
    let uploadRateWindow: Duration

    public var cache: ResponseCache? { storage.cache }

    public init(state: GatewayState, httpClient: HTTPClient, logger: Logger, logWriter: LogWriter? = nil, storage: GatewayStorage,
                now: @escaping @Sendable () -> Double = { Date().timeIntervalSince1970 }, maintenanceInterval: Duration = .seconds(1),
                fastHitHold: Duration = .seconds(1), uploadRateWindow: Duration = .seconds(20)) {
        self.state = state
        self.maintenanceInterval = maintenanceInterval
        self.fastHitHold = fastHitHold
        self.uploadRateWindow = uploadRateWindow
        self.httpClient = httpClient
        self.logger = logger
        self.logWriter = logWriter
        self.storage = storage
        self.now = now
        self.ledger = QuotaLedger(store: storage.usage, now: now)
        // The connection pool is sized once, for the slots the gateway starts with: a reload may
        // lower them (an account's limit cut, or shared with another replica), and a raise waits
        // for a restart. The reservations (`quota.reserved_concurrent`) apply on reload too.
        let startSlots = state.snapshot.config.upstream.maxConcurrency
        self.gate = ConcurrencyGate(capacity: startSlots)
        gate.reserve(state.snapshot.registry.reservations)
        state.whenReplaced { [gate] in
            gate.configure(capacity: min($0.config.upstream.maxConcurrency, startSlots), reservations: $0.registry.reservations)
        }
        self.breaker = CircuitBreaker(settings: { state.snapshot.config.upstream.circuitBreaker }, now: now, logger: logger)
        // A large entry that leaves the hot tier while hits send it counts as an answer held.
        storage.cache?.hot.countSendsOfLeavingEntries(in: answerBudget)
    }

    /// What downloads waiting for slow clients hold on disk (`limits.spool_max_bytes`).
    public let spoolBudget = MemoryBudget()

    /// The spool's files go beside the state file, on the disk the gateway is given to write on.
    static func spoolDirectory(statePath: String) -> String {
        let directory = (statePath as NSString).deletingLastPathComponent
        return directory.isEmpty ? "." : directory
    }

    /// The `Server` header of every answer.
    static let serverName = "algogate/\(AlgoGateVersion.string)"

    public func router() -> Router<GatewayRequestContext> {
        let state = self.state, uploadRateWindow = TimeAmount(self.uploadRateWindow)
        let router = Router(context: GatewayRequestContext.self)
        router.add(middleware: EventLoopAffinityMiddleware())
        router.add(middleware: RequestIDMiddleware())
        router.add(middleware: RequestLogMiddleware(logger: logger))
        router.add(middleware: MetricsMiddleware(metrics: metrics))
        router.add(middleware: CORSMiddleware(origins: { state.snapshot.registry.browserOrigins }))
        router.add(middleware: ErrorMiddleware())
        router.add(middleware: ExpectContinueMiddleware())
        router.add(middleware: ResponseCompressionMiddleware(settings: { state.snapshot.config.compression },
                                                             answerCapacity: { state.snapshot.config.limits.maxBufferedAnswerBytes }))
        router.add(middleware: AuthenticationMiddleware(registry: { state.snapshot.registry },
                                                        metricsNeedKey: { state.snapshot.config.server.metricsAccess == .admin },
                                                        upstreamKey: { state.snapshot.upstreamKey }, metrics: metrics))
        router.add(middleware: AuthorizationMiddleware())
        router.add(middleware: AlgoInputMiddleware(limits: { state.snapshot.config.limits }, budget: inputBudget,
                                                   queueTimeout: { .seconds(state.snapshot.config.upstream.queueTimeoutSeconds) }))
        router.add(middleware: QuotaMiddleware(ledger: ledger))
        if let cache {
            router.add(middleware: CacheMiddleware(cache: cache, flights: flights,
                                                   policy: { let snapshot = state.snapshot; return CachePolicy(config: snapshot.config.cache, origin: snapshot.cacheOrigin) },
                                                   compression: { state.snapshot.config.compression }, now: now,
                                                   answerBudget: answerBudget, limits: { state.snapshot.config.limits },
                                                   queueTimeout: { .seconds(state.snapshot.config.upstream.queueTimeoutSeconds) },
                                                   upstreamTimeout: { state.snapshot.config.upstream.timeoutSeconds },
                                                   metrics: metrics))
        }
        router.add(middleware: ForwardMiddleware(
            forwarder: Forwarder(client: httpClient, breaker: breaker, metrics: metrics, answerBudget: answerBudget, spoolBudget: spoolBudget) {
                let snapshot = state.snapshot
                return Forwarder.Settings(
                    origin: snapshot.config.upstream.url.trimmingSuffix("/"), key: snapshot.upstreamKey,
                    timeoutSeconds: snapshot.config.upstream.timeoutSeconds,
                    maxResponseBytes: snapshot.config.limits.maxResponseBytes,
                    maxBufferedAnswerBytes: snapshot.config.limits.maxBufferedAnswerBytes,
                    publicURL: snapshot.config.server.publicURL, tls: snapshot.config.server.tls != nil,
                    uploadMinimumRate: .init(bytesPerSecond: snapshot.config.limits.uploadMinBytesPerSecond, window: uploadRateWindow),
                    spool: snapshot.config.limits.spoolMaxBytes == 0 ? nil
                        : SpoolPipe.Settings(directory: Self.spoolDirectory(statePath: snapshot.config.cache.path), capacity: snapshot.config.limits.spoolMaxBytes))
            },
            gate: gate,
            queueTimeout: { .seconds(state.snapshot.config.upstream.queueTimeoutSeconds) },
            abandonedCalls: { state.snapshot.config.upstream.abandonedCalls },
            metrics: metrics, ledger: ledger))
        // Health probes answer GET and HEAD (some load balancers probe with HEAD).
        let healthz: @Sendable (Request, GatewayRequestContext) async throws -> Response = { _, _ in Self.status("ok") }
        router.get("/healthz", use: healthz)
        router.head("/healthz", use: healthz)
        let pool = storage.pool
        let ledger = ledger
        let readyz: @Sendable (Request, GatewayRequestContext) async throws -> Response = { _, _ in
            do {
                _ = try await pool.read { db in try Int.fetchOne(db, sql: "SELECT 1") }
            } catch {
                throw GatewayError.unavailable("the gateway's database cannot be read").caused(by: error)
            }
            // A replica refusing every team request is not ready: a load balancer sends them elsewhere.
            guard ledger.isHealthy else {
                throw GatewayError.unavailable("usage counters cannot be read or written, so team requests are refused (quotas fail closed)")
            }
            return Self.status("ready")
        }
        router.get("/readyz", use: readyz)
        router.head("/readyz", use: readyz)
        let metrics = metrics
        let gate = gate
        let logWriter = logWriter, breaker = breaker, answerBudget = answerBudget, flights = flights, reserve = storage.reserve
        router.get("/metrics") { _, context in
            if state.snapshot.config.server.metricsAccess == .admin, context.client?.isOperator != true {
                throw GatewayError.forbidden("/metrics needs the admin key (server.metrics_access: admin)")
            }
            return Response(status: .ok, headers: [.contentType: "text/plain; version=0.0.4; charset=utf-8"],
                     body: .init(byteBuffer: ByteBuffer(bytes: metrics.exposition(gate: gate, inputBudget: inputBudget, answerBudget: answerBudget, spoolBudget: spoolBudget,
                                                                                      collapsedWaiting: flights.waiting, breaker: breaker, logWriter: logWriter,
                                                                                      ledger: ledger, reserve: reserve, cache: cache,
                                                                                      limits: state.snapshot.config.limits))))
        }
        OperatorRoutes(cache: cache, ledger: ledger, usage: storage.usage,
                       configuredClients: { [state] in state.snapshot.config.clients.map(\.name) }, gate: gate,
                       quotas: { [state] in state.snapshot.registry.quotas },
                       uploadMinimum: { [state] in state.snapshot.config.limits.uploadMinBytesPerSecond }, now: now).register(on: router)
        return router
    }

    /// The runnable server. The day's usage is read back before it accepts requests; on shutdown
    /// the server drains first, then counters and cache are flushed and the database closed, then
    /// the HTTP client is shut down.
    public func application(onServerRunning: @escaping @Sendable (any Channel) async -> Void = { _ in }) throws -> some ApplicationProtocol {
        let server = state.snapshot.config.server
        // Idle keep-alive connections, and requests whose bytes stop arriving, are closed after
        // the idle timeout; a request being answered (an algorithm running) is never cut by it.
        // Requests the HTTP parser refuses get the error envelope too (`MalformedRequestHandler`);
        // `Expect: 100-continue` is answered when the body is first read (`ExpectContinueMiddleware`);
        // HTTP/1.0 and `Connection: close` requests are answered on a connection that then closes;
        // the rest of a body answered early is read for at most the idle timeout; a client that
        // reads nothing of its answer for the send timeout has its connection closed.
        // A path's leading `//` is read as one slash (`LeadingSlashesHandler`). Cache hits held in
        // memory are answered on the event loop (`CachedHits`).
        let (requestLogger, metrics, serverName) = (logger, metrics, Self.serverName)
        let hits = cache.map { CachedHits(state: state, cache: $0, ledger: self.ledger, metrics: metrics, logger: requestLogger, serverName: serverName,
                                              hold: TimeAmount(fastHitHold), now: self.now) }
        let http1 = HTTP1Channel.Configuration(
            additionalChannelHandlers: [PeerAddressRecorder(), ConnectionPersistenceInstaller(linger: .seconds(Int64(server.idleTimeoutSeconds))),
                                        SendTimeoutHandler(timeout: .seconds(Int64(server.sendTimeoutSeconds)), onTimeout: { metrics.clientSendTimedOut() }),
                                        MalformedRequestHandler(logger: requestLogger, metrics: metrics, serverName: serverName),
                                        ContinueHandler(), LeadingSlashesHandler()] + (hits.map { [CachedHitInstaller(hits: $0)] } ?? []),
            idleTimeout: .seconds(Int64(server.idleTimeoutSeconds)))
        // A client that speaks plain HTTP to the HTTPS port, or TLS to the plain one, is told
        // which the port serves (`ProbedChannel`).
        var builder = HTTPServerBuilder { responder in
            ProbedChannel(base: HTTP1Channel(responder: responder, configuration: http1), probe: { TLSHandshakeOnPlainPortHandler() })
        }
        if let tls = state.tls {
            let tlsConfiguration = tls.serverConfiguration()
            builder = HTTPServerBuilder { responder in
                ProbedChannel(base: try TLSChannel(HTTP1Channel(responder: responder, configuration: http1), tlsConfiguration: tlsConfiguration),
                              probe: { PlainRequestOnTLSPortHandler(logger: requestLogger, metrics: metrics, serverName: serverName) })
            }
        }
        var app = Application(
            router: router(),
            server: builder,
            configuration: .init(address: .hostname(server.host, port: server.port), serverName: Self.serverName, backlog: server.listenBacklog,
                                 availableConnectionsDelegate: .maximum(server.maxConnections, logger: logger)),
            services: [HTTPClientService(client: httpClient),
                       StateMaintenance(storage: storage, ledger: ledger, interval: maintenanceInterval, logger: logger)],
            onServerRunning: onServerRunning,
            logger: logger
        )
        let ledger = ledger
        let logger = logger
        app.beforeServerStarts {
            do {
                try await ledger.load()
            } catch {
                // Fail closed: requests get 503 until the store answers (every flush retries).
                logger.error("usage counters cannot be read; refusing requests until they can", metadata: ["error": "\(error)"])
            }
        }
        return app
    }

    static func status(_ text: String) -> Response {
        Response(status: .ok, headers: [.contentType: "application/json"], body: .init(byteBuffer: ByteBuffer(string: #"{"status":"\#(text)"}"#)))
    }
}

/// Shuts the shared upstream client down once the application is shutting down.
struct HTTPClientService: Service {
    let client: HTTPClient

    func run() async throws {
        try? await gracefulShutdown()
        try await client.shutdown()
    }
}

extension String {
    func trimmingSuffix(_ suffix: String) -> String {
        var text = self
        while text.hasSuffix(suffix) { text.removeLast(suffix.count) }
        return text
    }
}
