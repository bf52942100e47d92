import AlgoGate
import ArgumentParser
import AsyncHTTPClient
import Foundation
import Hummingbird
import Logging
import ServiceLifecycle

/// `algogate serve`: runs the gateway with a configuration file.
struct Serve: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run the gateway.",
        discussion: """
        The upstream key is read from the variable named by upstream.key_env (or the file \
        upstream.key_file), never from the config file. SIGTERM or SIGINT: stop accepting, let \
        in-flight requests finish (server.drain_timeout_seconds), exit 0. SIGHUP: reload the config \
        file; a config that does not load is logged and the old one keeps serving.
        """
    )

    @Option(help: "The YAML configuration file.")
    var config: String

    @Option(help: "Log format: json (one object per line) or text.")
    var logFormat: LogFormat = .json

    func run() async throws {
        let loaded = try loadOrExit(path: config)
        try await GatewayRunner(loaded: loaded, logger: logFormat.logger(label: "algogate"), configPath: config).run()
    }
}

enum LogFormat: String, ExpressibleByArgument, CaseIterable {
    case json, text

    func logger(label: String) -> Logger {
        switch self {
        case .json: Logger(label: label, factory: { JSONLogHandler(label: $0) })
        case .text: Logger(label: label, factory: { StreamLogHandler.standardOutput(label: $0) })
        }
    }
}

/// Loads a configuration, or prints why it cannot and exits 1 (no usage text: the flags were fine).
func loadOrExit(path: String, environment: [String: String] = ProcessInfo.processInfo.environment) throws -> ConfigLoader.Loaded {
    do {
        return try ConfigLoader.load(path: path, environment: environment)
    } catch let error as ConfigError {
        FileHandle.standardError.write(Data("algogate: invalid configuration \(path): \(error)\n".utf8))
        throw ExitCode(1)
    }
}

/// The validated configuration without the upstream key (operator commands that only open the
/// database), or prints why it is invalid and exits 1.
func loadWithoutKeyOrExit(path: String) throws -> GatewayConfig {
    do {
        return try ConfigLoader.loadWithoutKey(path: path)
    } catch let error as ConfigError {
        FileHandle.standardError.write(Data("algogate: invalid configuration \(path): \(error)\n".utf8))
        throw ExitCode(1)
    }
}

/// Builds and runs a gateway from a loaded configuration. SIGTERM or SIGINT: stop accepting,
/// let in-flight requests finish (up to `server.drain_timeout_seconds`), flush and close the
/// cache, exit 0. SIGHUP: reload the configuration file (see `ConfigReloader`).
struct GatewayRunner {
    let loaded: ConfigLoader.Loaded
    let logger: Logger
    var configPath: String?

    func services() throws -> [any Service] {
        let state = try GatewayState(loaded)
        let client = HTTPClient(eventLoopGroupProvider: .singleton,
                                configuration: Forwarder.clientConfiguration(loaded.config.upstream))
        let storage = try GatewayStorage.open(loaded.config)
        var services: [any Service] = [try GatewayApp(state: state, httpClient: client, logger: logger, storage: storage).application()]
        if let configPath { services.append(ConfigReloader(path: configPath, state: state, logger: logger)) }
        return services
    }

    func run() async throws {
        var configuration = ServiceGroupConfiguration(services: try services(), gracefulShutdownSignals: [.sigterm, .sigint], logger: logger)
        configuration.maximumGracefulShutdownDuration = .seconds(loaded.config.server.drainTimeoutSeconds)
        try await ServiceGroup(configuration: configuration).run()
        logger.info("algogate stopped")
    }
}
