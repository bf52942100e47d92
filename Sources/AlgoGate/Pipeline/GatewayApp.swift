import AsyncHTTPClient
import Foundation
import Hummingbird
import Logging
import NIOCore
import ServiceLifecycle
import HummingbirdTLS
import HummingbirdCore
import NIOSSL

/// The gateway, wired. A request's path through it reads top to bottom in `router()`:
/// request id → log → errors → authenticate → authorise route and data paths → read algo input →
/// cache → forward.
public struct GatewayApp: Sendable {
    public let state: GatewayState
    let httpClient: HTTPClient
    let logger: Logger
    /// The response cache; nil when `cache.enabled` is false.
    public let cache: ResponseCache?
    let now: @Sendable () -> Double

    public init(state: GatewayState, httpClient: HTTPClient, logger: Logger, cache: ResponseCache? = nil,
                now: @escaping @Sendable () -> Double = { Date().timeIntervalSince1970 }) {
        self.state = state
        self.httpClient = httpClient
        self.logger = logger
        self.cache = cache
        self.now = now
    }

    /// Opens the cache the configuration describes (nil when disabled).
    public static func openCache(_ config: GatewayConfig) throws -> ResponseCache? {
        guard config.cache.enabled else { return nil }
        return try ResponseCache(path: config.cache.path, settings: .init(
            maxBytes: config.cache.maxBytes, memoryBytes: config.cache.memoryBytes,
            compressMinBytes: config.compression.minBytes, compressLevel: Int32(config.compression.level)))
    }

    public func router() -> Router<GatewayRequestContext> {
        let state = self.state
        let router = Router(context: GatewayRequestContext.self)
        router.add(middleware: RequestIDMiddleware())
        router.add(middleware: RequestLogMiddleware(logger: logger))
        router.add(middleware: ErrorMiddleware())
        router.add(middleware: ResponseCompressionMiddleware(settings: { state.snapshot.config.compression }))
        router.add(middleware: AuthenticationMiddleware(registry: { state.snapshot.registry }))
        router.add(middleware: AuthorizationMiddleware())
        router.add(middleware: AlgoInputMiddleware(limits: { state.snapshot.config.limits }))
        if let cache {
            router.add(middleware: CacheMiddleware(cache: cache, flights: SingleFlight(),
                                                   policy: { CachePolicy(config: state.snapshot.config.cache) }, now: now))
        }
        router.add(middleware: ForwardMiddleware(forwarder: Forwarder(client: httpClient) {
            let snapshot = state.snapshot
            return Forwarder.Settings(
                origin: snapshot.config.upstream.url.trimmingSuffix("/"), key: snapshot.upstreamKey,
                timeoutSeconds: snapshot.config.upstream.timeoutSeconds,
                maxResponseBytes: snapshot.config.limits.maxResponseBytes)
        }))
        router.get("/healthz") { _, _ in Self.status("ok") }
        let cache = self.cache
        router.get("/readyz") { _, _ in
            if let cache, await !cache.isReadable() {
                throw GatewayError.unavailable("the cache database cannot be read")
            }
            return Self.status("ready")
        }
        OperatorRoutes(cache: cache).register(on: router)
        return router
    }

    /// The runnable server; the HTTP client is shut down after the server has drained.
    public func application(onServerRunning: @escaping @Sendable (any Channel) async -> Void = { _ in }) throws -> some ApplicationProtocol {
        let server = state.snapshot.config.server
        var builder: HTTPServerBuilder = .http1()
        if let tls = server.tls {
            let chain = try NIOSSLCertificate.fromPEMFile(tls.certFile).map { NIOSSLCertificateSource.certificate($0) }
            let configuration = TLSConfiguration.makeServerConfiguration(certificateChain: chain, privateKey: .file(tls.keyFile))
            builder = try .tls(.http1(), tlsConfiguration: configuration)
        }
        return Application(
            router: router(),
            server: builder,
            configuration: .init(address: .hostname(server.host, port: server.port), serverName: "algogate/\(AlgoGateVersion.string)"),
            services: [HTTPClientService(client: httpClient)]
                + (cache.map { [CacheMaintenance(cache: $0, interval: .seconds(2), logger: logger)] } ?? []),
            onServerRunning: onServerRunning,
            logger: logger
        )
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
