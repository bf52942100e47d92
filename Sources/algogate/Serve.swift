import AlgoGate
import ArgumentParser
import AsyncHTTPClient
import Foundation
import Hummingbird
import Logging
import NIOCore
import NIOPosix
import ServiceLifecycle

/// `algogate serve`: runs the gateway with a configuration file.
struct Serve: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run the gateway.",
        discussion: """
        The upstream key is read from the variable named by upstream.key_env (or the file \
        upstream.key_file), never from the config file. SIGTERM or SIGINT: stop accepting, let \
        in-flight requests finish (server.drain_timeout_seconds), exit 0. SIGHUP: reload the config \
        file (and the upstream key and TLS certificate it names); a config that does not load is \
        logged and the old one keeps serving. With --watch, a change to any of those files reloads \
        it too. Under a systemd unit of Type=notify or notify-reload ($NOTIFY_SOCKET), it says when \
        it listens, when each reload begins and ends (a refused one in its status), pings the \
        watchdog that WatchdogSec= sets, and says when it stops.
        """
    )

    @Option(help: "The YAML configuration file.")
    var config: String

    @Option(help: "Log format: json (one object per line) or text (key=value).")
    var logFormat: LogLineFormat = .json

    @Option(help: ArgumentHelp(
        "Bytes of log lines that may wait for the reader of standard output.",
        discussion: "Lines are written by a thread of their own; when the reader falls this far behind, new lines are dropped and counted (algogate_log_lines_dropped_total) rather than stalling requests."))
    var logBufferBytes = LogWriter.defaultBufferBytes

    @Option(name: .customLong("watch"), help: ArgumentHelp(
        "Look at the config file, upstream.key_file and the server.tls files every this many seconds, and reload when one has changed.",
        discussion: "For a config or key mounted from a Kubernetes ConfigMap or Secret, which the kubelet updates in place. A change is loaded once it has held for half a second; one that does not load is logged once and the old configuration keeps serving. Off by default: SIGHUP reloads at any time.",
        valueName: "seconds"))
    var watchSeconds: Int?

    func validate() throws {
        guard logBufferBytes >= LogWriter.minimumBufferBytes else {
            throw ValidationError("--log-buffer-bytes must be at least \(LogWriter.minimumBufferBytes)")
        }
        if let watchSeconds, !(1...3600).contains(watchSeconds) {
            throw ValidationError("--watch must be from 1 to 3600 seconds")
        }
    }

    func run() async throws {
        LargeAllocations.returnToSystem()
        let log = StandardOutputLog(format: logFormat, bufferBytes: logBufferBytes)
        defer { log.finish() }
        // Before the upstream key is read: no core file of this process, and no other process of
        // its user reading its memory or environment.
        if !ProcessMemory.keepPrivate() {
            log.logger.warning("could not mark the process not dumpable (prctl PR_SET_DUMPABLE): \(String(cString: strerror(errno)))")
        }
        let loaded: ConfigLoader.Loaded
        do {
            loaded = try ConfigLoader.load(path: config)
        } catch let error as ConfigError {
            // Said a line each on standard error, and on one line in the log, as other start-up
            // failures are, so that a log search for them finds this one too.
            reportInvalid(path: config, error)
            log.logger.critical("cannot start: invalid configuration", metadata: ["config": .string(config), "error": .string(error.description)])
            throw ExitCode(1)
        }
        let server = loaded.config.server
        let listening = "\(server.host):\(server.port) (server.host, server.port)"
        log.logger.info("algogate starting", metadata: startingFacts(loaded, config: config))
        let ignored = ConfigLoader.ignoredProxyVariables(loaded.config, environment: ProcessInfo.processInfo.environment)
        if !ignored.isEmpty { log.logger.warning("\(ignoredProxyNote(ignored))") }
        for note in ConfigLoader.notes(loaded.config) { log.logger.warning("\(note)") }
        if let note = DiskReserve.roomNote(loaded.config) { log.logger.warning("\(note)") }
        if let note = SharedFilesystem.note(loaded.config) { log.logger.warning("\(note)") }
        do {
            try await checkListenable(host: server.host, port: server.port)
            try await GatewayRunner(loaded: loaded, logger: log.logger, logWriter: log.writer, redactor: log.redactor, configPath: config,
                              watchInterval: watchSeconds.map { .seconds($0) }, notifier: SystemdNotifier()).run()
        } catch {
            guard let reason = startFailure(error, listening: listening) else { throw error }
            try cannotStart(reason, config: config, log: log)
        }
    }
}

/// What the gateway's first line says it starts with: its version, files, upstream (whose URL
/// holds no credentials: refused at load) and clients, so a log shows which configuration a run
/// had without the file at hand. Where it listens, Hummingbird's next line says (the port bound,
/// where the configuration asks for any).
func startingFacts(_ loaded: ConfigLoader.Loaded, config: String) -> Logger.Metadata {
    let settings = loaded.config
    var facts: Logger.Metadata = [
        "version": .string(AlgoGateVersion.string), "config": .string(config),
        "tls": .string(settings.server.tls != nil ? "on" : "off"),
        "upstream": .string(settings.upstream.url), "max_concurrency": .stringConvertible(LogNumber(settings.upstream.maxConcurrency)),
        "clients": .stringConvertible(LogNumber(settings.clients.count)), "state_file": .string(settings.cache.path),
        "cache": .string(settings.cache.enabled ? "on" : "off"),
    ]
    if let proxy = settings.upstream.proxy { facts["proxy"] = .string(proxy.url) }
    return facts
}

/// Why a gateway could not start, in words that name the setting, for the failures that have
/// one: its state file (`cache.path`) could not be opened or created (a `ConfigError`), or it
/// could not listen on `listening` (NIO says only `bind(descriptor:ptr:bytes:): Address already
/// in use) (errno: 98)`), a host that does not resolve among the reasons. Nil for any other error.
func startFailure(_ error: any Error, listening: String) -> String? {
    switch error {
    case let error as ConfigError:
        return String(describing: error)
    case let error as IOError where [EADDRINUSE, EADDRNOTAVAIL, EACCES].contains(error.errnoCode):
        return "cannot listen on \(listening): \(String(cString: strerror(error.errnoCode)))"
    case let error as SocketAddressError.UnknownHost:
        return "cannot listen on \(listening): no such host (\(error.errorDescription))"
    default:
        return nil
    }
}

/// Says why the gateway could not start, on standard error and in the log, and exits 1.
func cannotStart(_ reason: String, config: String, log: StandardOutputLog) throws -> Never {
    log.logger.critical("cannot start", metadata: ["error": .string(reason)])
    FileHandle.standardError.write(Data("algogate: cannot start with \(config): \(reason)\n".utf8))
    throw ExitCode(1)
}

extension LogLineFormat: ExpressibleByArgument {}

/// The process's log: lines in `format` on standard output, written by a `LogWriter` thread.
struct StandardOutputLog {
    let writer: LogWriter
    let logger: Logger
    /// Holds the upstream keys once the gateway is told them (`GatewayState`).
    let redactor = LogRedactor()

    init(format: LogLineFormat, bufferBytes: Int = LogWriter.defaultBufferBytes, label: String = "algogate") {
        // A log reader that goes away (a restarted journald, a closed pipe) must not kill the
        // gateway: the writer sees EPIPE and counts the lines as dropped (systemd's IgnoreSIGPIPE).
        signal(SIGPIPE, SIG_IGN)
        let writer = LogWriter(fileDescriptor: STDOUT_FILENO, bufferBytes: bufferBytes) { dropped in
            format.render(LogEvent(level: .warning, message: "log lines dropped: the log's reader fell behind",
                                   metadata: ["dropped": .stringConvertible(LogNumber(dropped))],
                                   source: nil, file: #fileID, function: #function, line: #line), label: label)
        }
        self.writer = writer
        let redactor = redactor
        self.logger = Logger(label: label, factory: { LineLogHandler(label: $0, format: format, writer: writer, redactor: redactor) })
    }

    /// Writes what is still buffered before the process exits; gives up after a few seconds
    /// when the reader is not reading.
    func finish() {
        writer.finish(timeout: .seconds(5))
    }
}

/// Loads a configuration, or prints why it cannot and exits 1 (no usage text: the flags were fine).
func loadOrExit(path: String, environment: [String: String] = ProcessInfo.processInfo.environment,
                also: (GatewayConfig) -> [ConfigError] = { _ in [] }) throws -> ConfigLoader.Loaded {
    do {
        return try ConfigLoader.load(path: path, environment: environment, also: also)
    } catch let error as ConfigError {
        reportInvalid(path: path, error)
        throw ExitCode(1)
    }
}

/// Says on standard error why the configuration at `path` was refused: one problem on the line,
/// several a line each, so that one run names every mistake.
func reportInvalid(path: String, _ error: ConfigError) {
    let text = error.others.isEmpty
        ? "algogate: invalid configuration \(path): \(error)\n"
        : "algogate: invalid configuration \(path): \(error.problems.count) problems:\n" + error.problems.map { "  \($0.line)\n" }.joined()
    FileHandle.standardError.write(Data(text.utf8))
}

/// The validated configuration without the upstream key (operator commands that only open the
/// database), or prints why it is invalid and exits 1.
func loadWithoutKeyOrExit(path: String) throws -> GatewayConfig {
    do {
        return try ConfigLoader.loadWithoutKey(path: path)
    } catch let error as ConfigError {
        reportInvalid(path: path, error)
        throw ExitCode(1)
    }
}

/// The state file of `config` for an operator's command that reads what a gateway made; a
/// missing one is said (`nothing` tells what that leaves undone) and exits 1, rather than being
/// created empty and reported as holding nothing.
func existingStatePath(_ config: GatewayConfig, command: String, nothing: String) throws -> String {
    if let missing = StateDatabase.missing(path: config.cache.path) {
        FileHandle.standardError.write(Data("algogate \(command): \(missing): \(nothing)\n".utf8))
        throw ExitCode(1)
    }
    return config.cache.path
}

/// Builds and runs a gateway from a loaded configuration. SIGTERM or SIGINT: stop accepting,
/// let in-flight requests finish (up to `server.drain_timeout_seconds`), flush and close the
/// cache, exit 0. SIGHUP, or a change to the files when `watchInterval` is set: reload the
/// configuration file (see `ConfigReloader`).
struct GatewayRunner {
    let loaded: ConfigLoader.Loaded
    let logger: Logger
    var logWriter: LogWriter?
    var redactor: LogRedactor?
    var configPath: String?
    var watchInterval: Duration?
    /// systemd's notifications (`serve` under a `Type=notify` unit): ready once listening,
    /// reloading and ready again around each reload, the watchdog's pings, stopping.
    var notifier: SystemdNotifier?

    func services() throws -> [any Service] {
        let state = try GatewayState(loaded, redactor: redactor)
        // Before the HTTP client, which must be shut down once made: the file may not open.
        let storage = try GatewayStorage.open(loaded.config)
        let client = HTTPClient(eventLoopGroupProvider: .singleton,
                                configuration: Forwarder.clientConfiguration(loaded))
        let app = GatewayApp(state: state, httpClient: client, logger: logger, logWriter: logWriter, storage: storage)
        var services: [any Service]
        let serving = ServingStatus()
        do {
            let (notifier, host) = (notifier, loaded.config.server.host)
            services = [try app.application(onServerRunning: { channel in
                serving.text = "serving on \(host):\(channel.localAddress?.port ?? 0)"
                await notifier?.send("READY=1\nSTATUS=\(serving.text)")
            })]
        } catch {
            try? client.syncShutdown()
            throw error
        }
        services.append(FreedMemory())
        if let notifier, notifier.socketPath != nil {
            services.append(SystemdWatchdog(notifier: notifier))
        }
        if let configPath {
            var announce: (@Sendable (ConfigReloader.Progress) async -> Void)?
            if let notifier, notifier.socketPath != nil {
                announce = { progress in await notifier.send(SystemdNotifier.reloadState(progress, serving: serving.text)) }
            }
            services.append(ConfigReloader(path: configPath, state: state, logger: logger, watchInterval: watchInterval, metrics: app.metrics,
                                           announce: announce))
        }
        return services
    }

    func run() async throws {
        var configuration = ServiceGroupConfiguration(services: try services(), gracefulShutdownSignals: [.sigterm, .sigint], logger: logger)
        configuration.maximumGracefulShutdownDuration = .seconds(loaded.config.server.drainTimeoutSeconds)
        try await ServiceGroup(configuration: configuration).run()
        logger.info("algogate stopped")
    }
}
