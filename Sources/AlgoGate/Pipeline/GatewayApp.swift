import AsyncHTTPClient
import Foundation
import Hummingbird
import Logging
import NIOCore
import ServiceLifecycle

/// The gateway, wired. A request's path through it reads top to bottom in `router()`:
/// request id → log → errors → authenticate → authorise route and data paths → read algo input →
/// forward.
public struct GatewayApp: Sendable {
    public let state: GatewayState
    let httpClient: HTTPClient
    let logger: Logger

    public init(state: GatewayState, httpClient: HTTPClient, logger: Logger) {
        self.state = state
        self.httpClient = httpClient
        self.logger = logger
    }

    public func router() -> Router<GatewayRequestContext> {
        let state = self.state
        let router = Router(context: GatewayRequestContext.self)
        router.add(middleware: RequestIDMiddleware())
        router.add(middleware: RequestLogMiddleware(logger: logger))
        router.add(middleware: ErrorMiddleware())
        router.add(middleware: AuthenticationMiddleware(registry: { state.snapshot.registry }))
        router.add(middleware: AuthorizationMiddleware())
        router.add(middleware: AlgoInputMiddleware(limits: { state.snapshot.config.limits }))
        router.add(middleware: ForwardMiddleware(forwarder: Forwarder(client: httpClient) {
            let snapshot = state.snapshot
            return Forwarder.Settings(
                origin: snapshot.config.upstream.url.trimmingSuffix("/"), key: snapshot.upstreamKey,
                timeoutSeconds: snapshot.config.upstream.timeoutSeconds,
                maxResponseBytes: snapshot.config.limits.maxResponseBytes)
        }))
        router.get("/healthz") { _, _ in Self.status("ok") }
        router.get("/readyz") { _, _ in Self.status("ready") }
        return router
    }

    /// The runnable server; the HTTP client is shut down after the server has drained.
    public func application(onServerRunning: @escaping @Sendable (any Channel) async -> Void = { _ in }) -> some ApplicationProtocol {
        let server = state.snapshot.config.server
        return Application(
            router: router(),
            configuration: .init(address: .hostname(server.host, port: server.port), serverName: "algogate/\(AlgoGateVersion.string)"),
            services: [HTTPClientService(client: httpClient)],
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
