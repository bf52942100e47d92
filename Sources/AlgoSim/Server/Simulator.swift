import Foundation
import Hummingbird
import Logging
import NIOCore

/// An Algorithmia-compatible API server for tests, demos and offline trials of the gateway.
///
/// Besides the Algorithmia API it serves `GET /__sim/stats` (what reached it: calls per algorithm,
/// Authorization values and header names seen, peak concurrency) and `POST /__sim/reset`.
public struct Simulator: Sendable {
    public let configuration: SimConfiguration
    public let stats = SimStats()
    let registry = AlgorithmRegistry()
    let store: DataStore

    public init(configuration: SimConfiguration) throws {
        self.configuration = configuration
        self.store = try DataStore(root: configuration.dataDirectory, username: configuration.username)
    }

    /// Removes the data folder when the simulator made it (`SimConfiguration.dataDirectoryIsTemporary`):
    /// a demo's or a trial's files go as it stops, rather than pile up under the temporary
    /// directory one folder per run. A folder given with `--data-dir` is kept.
    public func removeTemporaryData() {
        guard configuration.dataDirectoryIsTemporary else { return }
        try? FileManager.default.removeItem(at: configuration.dataDirectory)
    }

    /// The router with every simulator route; exposed for `app.test(.router)`-style tests.
    public func router() -> Router<SimRequestContext> {
        let router = Router(context: SimRequestContext.self)
        router.add(middleware: StatsMiddleware(stats: stats))
        router.add(middleware: SimAuthMiddleware(apiKey: configuration.apiKey))
        router.add(middleware: FaultMiddleware(defaultFault: configuration.defaultFault))
        router.add(middleware: SimAPI(
            algorithms: AlgoRoutes(registry: registry, stats: stats),
            data: DataRoutes(store: store, pageSize: configuration.pageSize),
            management: ManagementRoutes(registry: registry)
        ))
        let stats = self.stats
        router.get("/__sim/stats") { _, _ -> Response in
            let data = try JSONEncoder().encode(stats.snapshot)
            return Response(status: .ok, headers: [.contentType: "application/json"], body: .init(byteBuffer: ByteBuffer(bytes: data)))
        }
        router.post("/__sim/reset") { _, _ -> HTTPResponse.Status in
            stats.reset()
            return .noContent
        }
        router.get("/__sim/health") { _, _ in "ok" }
        return router
    }

    /// The runnable server. `onServerRunning` receives the bound channel (its port, when 0 was asked).
    public func application(
        logger: Logger = Logger(label: "algosim"),
        onServerRunning: @escaping @Sendable (any Channel) async -> Void = { _ in }
    ) -> some ApplicationProtocol {
        Application(
            router: router(),
            server: .http1(configuration: .init(additionalChannelHandlers: [ContinueAtOnce()])),
            configuration: .init(address: .hostname(configuration.host, port: configuration.port), serverName: "algosim"),
            onServerRunning: onServerRunning,
            logger: logger
        )
    }
}
