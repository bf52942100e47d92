import AlgoGate
import AlgoSim
import AlgoTestSupport
import AsyncHTTPClient
import Foundation
import Logging
import Synchronization

/// Keys used across the gateway tests. Each is checked never to appear in a response or a log.
enum Keys {
    static let upstream = "upstream-secret-\(UUID().uuidString)"
    static let teamA = "team-a-key-\(UUID().uuidString)"
    static let teamB = "team-b-key-\(UUID().uuidString)"
    static let reader = "reader-key-\(UUID().uuidString)"
    static let admin = "admin-key-\(UUID().uuidString)"
    static var all: [String] { [upstream, teamA, teamB, reader, admin] }
}

/// Collects every log record as a rendered line, for tests that read the logs.
final class LogCapture: Sendable {
    private let lines = Mutex<[String]>([])
    var all: [String] { lines.withLock { $0 } }
    func append(_ line: String) { lines.withLock { $0.append(line) } }

    var logger: Logger {
        let capture = self
        var logger = Logger(label: "algogate-test", factory: { _ in CaptureHandler(capture: capture) })
        logger.logLevel = .trace
        return logger
    }

    struct CaptureHandler: LogHandler {
        let capture: LogCapture
        var metadata: Logger.Metadata = [:]
        var logLevel: Logger.Level = .trace
        subscript(metadataKey key: String) -> Logger.Metadata.Value? {
            get { metadata[key] }
            set { metadata[key] = newValue }
        }
        func log(event: LogEvent) {
            let merged = metadata.merging(event.metadata ?? [:]) { $1 }
            let fields = merged.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: " ")
            capture.append("\(event.level) \(event.message) \(fields)")
        }
    }
}

/// The gateway in front of a live simulator, both on ephemeral loopback ports.
struct GatewayHarness {
    let gateway: TestHTTP
    let gatewayPort: Int
    let sim: TestHTTP
    let simulator: Simulator
    let logs: LogCapture
    let app: GatewayApp

    /// Standard clients: team-a (all scopes, confined to data://.my/team-a/), team-b (algo only),
    /// reader (data:read, no prefixes), and the admin key.
    static func clientsYAML() -> String {
        """
        admin: {key_sha256: "\(ClientRegistry.hash(of: Keys.admin))"}
        clients:
          - name: team-a
            key_sha256: "\(ClientRegistry.hash(of: Keys.teamA))"
            scopes: [algo, data:read, data:write, manage]
            data_prefixes: ["data://.my/team-a/", "s3://bucket/team-a/"]
          - name: team-b
            key_sha256: "\(ClientRegistry.hash(of: Keys.teamB))"
            scopes: [algo]
          - name: reader
            key_sha256: "\(ClientRegistry.hash(of: Keys.reader))"
            scopes: [data:read]
        """
    }

    static func run<Value: Sendable>(
        host: String = "127.0.0.1",
        serverYAML: String = "",
        upstreamYAML: String = "",
        cacheYAML: String = "",
        extraYAML: String = "",
        upstreamURL: ((Int) -> String)? = nil,
        now: @escaping @Sendable () -> Double = { Date().timeIntervalSince1970 },
        cachePath: String? = nil,
        usageStore: (any UsageStore)? = nil,
        // Smaller than a served gateway's 16 MiB: many gateways run at once in the tests.
        reserveBytes: Int = 1 << 20,
        clientsYAML: String? = nil,
        environment: [String: String] = [:],
        maintenanceInterval: Duration = .seconds(1),
        fastHitHold: Duration = .seconds(1),
        uploadRateWindow: Duration = .seconds(20),
        _ body: (GatewayHarness) async throws -> Value
    ) async throws -> Value {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("gwtest-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: directory) }
        let simulator = try Simulator(configuration: SimConfiguration(apiKey: Keys.upstream, dataDirectory: directory.appendingPathComponent("sim")))
        return try await LiveServer.run({ simulator.application(onServerRunning: $0) }) { simPort in
            let yaml = """
            server: {host: "\(host)", port: 0\(serverYAML.isEmpty ? "" : ", " + serverYAML)}
            upstream:
              url: \(upstreamURL?(simPort) ?? "http://127.0.0.1:\(simPort)")
              key_env: TEST_UPSTREAM_KEY
              \(upstreamYAML)
            cache:
              path: \(cachePath ?? directory.appendingPathComponent("cache.sqlite").path)
              \(cacheYAML)
            \(extraYAML)
            \(clientsYAML ?? Self.clientsYAML())
            """
            let loaded = try ConfigLoader.load(yaml: yaml, environment: environment.merging(["TEST_UPSTREAM_KEY": Keys.upstream]) { $1 })
            let logs = LogCapture()
            let client = HTTPClient(eventLoopGroupProvider: .singleton, configuration: Forwarder.clientConfiguration(loaded))
            let storage = try GatewayStorage.open(loaded.config, reserveBytes: reserveBytes)
            let app = GatewayApp(state: try GatewayState(loaded), httpClient: client, logger: logs.logger,
                                 storage: usageStore.map { GatewayStorage(pool: storage.pool, cache: storage.cache, usage: $0) } ?? storage, now: now,
                                 maintenanceInterval: maintenanceInterval, fastHitHold: fastHitHold,
                                 uploadRateWindow: uploadRateWindow)
            return try await LiveServer.run({ try! app.application(onServerRunning: $0) }) { gatewayPort in
                try await body(GatewayHarness(gateway: TestHTTP(port: gatewayPort), gatewayPort: gatewayPort, sim: TestHTTP(port: simPort), simulator: simulator, logs: logs, app: app))
            }
        }
    }
}

extension GatewayHarness {
    /// Points the gateway at another upstream, as a reload that changes `upstream.url` does.
    func pointUpstream(at url: String) throws {
        var config = app.state.snapshot.config
        config.upstream.url = url
        try app.state.replace(with: ConfigLoader.Loaded(config: config, upstreamKey: app.state.snapshot.upstreamKey))
    }
}

extension GatewayHarness {
    /// Sets `upstream.max_concurrency`, as a reload that changes it does.
    func setSlots(_ slots: Int) throws {
        var config = app.state.snapshot.config
        config.upstream.maxConcurrency = slots
        try app.state.replace(with: ConfigLoader.Loaded(config: config, upstreamKey: app.state.snapshot.upstreamKey))
    }
}

/// The value of one series (`name{labels}` exactly as exposed) in a Prometheus text exposition.
func metricSample(_ exposition: String, _ series: String) -> Double? {
    exposition.split(separator: "\n").first { $0.hasPrefix(series + " ") }
        .flatMap { Double($0.dropFirst(series.count + 1)) }
}

func simple(_ key: String) -> [(String, String)] { [("Authorization", "Simple \(key)")] }
let textType = [("Content-Type", "text/plain")]
let jsonType = [("Content-Type", "application/json")]

/// The error envelope's message and type, for exact assertions.
func envelope(_ reply: TestHTTP.Reply) -> (message: String?, type: String?) {
    let error = reply.object["error"] as? [String: Any]
    return (error?["message"] as? String, error?["error_type"] as? String)
}

/// A clock tests move by hand (cache TTLs).
final class TestClock: Sendable {
    private let seconds = Mutex<Double>(1_800_000_000)
    var now: Double { seconds.withLock { $0 } }
    func advance(by delta: Double) { seconds.withLock { $0 += delta } }
}

/// Runs `body` with `client` and shuts the client down afterwards, also when `body` throws: an
/// HTTP client dropped without a shutdown is a fatal error that would take the whole test run down
/// with one failed expectation.
func using<Value>(_ client: HTTPClient, _ body: (HTTPClient) async throws -> Value) async throws -> Value {
    let value: Value
    do {
        value = try await body(client)
    } catch {
        try? await client.shutdown()
        throw error
    }
    try await client.shutdown()
    return value
}
