import AlgoGate
import AlgoSim
import ArgumentParser
import AsyncHTTPClient
import Foundation
import Hummingbird
import Logging
import ServiceLifecycle

/// `algogate demo`: the simulator and the gateway in one process, with demo client keys.
struct Demo: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run the gateway in front of the simulator, with config/demo.yaml and its demo keys."
    )

    /// The demo keys whose hashes config/demo.yaml lists. Demo only: never use them elsewhere.
    static let demoKeys = ["team-a": "demo-team-a-key", "team-b": "demo-team-b-key", "operator": "demo-admin-key"]

    @Option(help: "The demo configuration.")
    var config = "config/demo.yaml"

    @Option(help: "Port for the simulator (the demo config's upstream.url must point at it).")
    var simPort = 9000

    func run() async throws {
        LargeAllocations.returnToSystem()
        // The simulator's account key is made up fresh, handed to the gateway like a real secret.
        let upstreamKey = "sim-" + UUID().uuidString.lowercased()
        var environment = ProcessInfo.processInfo.environment
        environment["ALGOGATE_DEMO_UPSTREAM_KEY"] = upstreamKey
        let loaded = try loadOrExit(path: config, environment: environment)
        let log = StandardOutputLog(format: .text)
        defer { log.finish() }
        let server = loaded.config.server
        // The gateway forwards to `upstream.url`: a simulator on another port would leave every
        // call to a 502.
        let simulatorURL = "http://127.0.0.1:\(simPort)"
        let upstream = URLComponents(string: loaded.config.upstream.url)
        guard upstream?.port == simPort, ["127.0.0.1", "localhost"].contains(upstream?.host?.lowercased()) else {
            try cannotStart("upstream.url is \(loaded.config.upstream.url), but the simulator listens on \(simulatorURL) (--sim-port): set one to the other",
                            config: config, log: log)
        }
        let gatewayAddress = "\(server.host):\(server.port) (the gateway: server.port in \(config))"
        let simulatorAddress = "127.0.0.1:\(simPort) (the simulator: --sim-port)"
        for (host, port, listening) in [(server.host, server.port, gatewayAddress), ("127.0.0.1", simPort, simulatorAddress)] {
            do {
                try await checkListenable(host: host, port: port)
            } catch {
                guard let reason = startFailure(error, listening: listening) else { throw error }
                try cannotStart(reason, config: config, log: log)
            }
        }
        do {
            try await run(loaded: loaded, upstreamKey: upstreamKey, log: log)
        } catch {
            // Taken between the check and the bind: NIO does not say which listener failed.
            guard let reason = startFailure(error, listening: gatewayAddress + " or " + simulatorAddress) else { throw error }
            try cannotStart(reason, config: config, log: log)
        }
    }

    /// `text` as one word to paste into a shell: as it is when it is plain, else single-quoted
    /// (a `TMPDIR` with a space in it).
    static func shellWord(_ text: String) -> String {
        let plain = text.unicodeScalars.allSatisfy { CharacterSet.alphanumerics.contains($0) && $0.isASCII || "/._-+:@%,".unicodeScalars.contains($0) }
        return plain ? text : "'" + text.replacingOccurrences(of: "'", with: #"'\''"#) + "'"
    }

    private func run(loaded: ConfigLoader.Loaded, upstreamKey: String, log: StandardOutputLog) async throws {
        let logger = log.logger
        let simulator = try Simulator(configuration: SimConfiguration(host: "127.0.0.1", port: simPort, apiKey: upstreamKey))
        defer { simulator.removeTemporaryData() }
        let gateway = try GatewayRunner(loaded: loaded, logger: logger, logWriter: log.writer, redactor: log.redactor).services()
        let base = "http://\(loaded.config.server.host == "0.0.0.0" ? "127.0.0.1" : loaded.config.server.host):\(loaded.config.server.port)"
        // The Python client goes into a virtual environment of its own: Debian's python3 refuses
        // `pip install` outside one (PEP 668), and a fresh machine has no pip but in one.
        let venv = Self.shellWord(FileManager.default.temporaryDirectory.appendingPathComponent("algogate-demo-venv").path)
        let teamA = "-H 'Authorization: Simple \(Self.demoKeys["team-a"]!)'", teamB = "-H 'Authorization: Simple \(Self.demoKeys["team-b"]!)'"
        print("""

        algogate demo: gateway \(base)  ->  simulator http://127.0.0.1:\(simPort)
        demo keys: team-a = \(Self.demoKeys["team-a"]!) (all scopes, data://.my/team-a/), team-b = \(Self.demoKeys["team-b"]!) (algo only, 30 requests a minute)

          curl -s -i \(teamA) -H 'Content-Type: text/plain' -d 'HAL' \(base)/v1/algo/demo/Hello/0.1.0    # X-Cache: MISS the first time, HIT from then on, in later demos too (the cache is kept)
          curl -s \(teamB) \(base)/v1/data/.my/team-a    # 403: team-b has no data scope
          curl -s \(teamA) -H 'Content-Type: application/json' -d '{"name":"team-a"}' \(base)/v1/data/.my    # team-a makes its directory
          curl -s \(teamA) -X PUT --data-binary 'hello' \(base)/v1/data/.my/team-a/hello.txt
          curl -s \(teamA) \(base)/v1/data/.my/team-a/hello.txt
          curl -s \(teamA) \(base)/v1/data/.my/team-b    # 403: outside team-a's data prefixes

          python3 -m venv \(venv) && \(venv)/bin/pip install algorithmia==2.0.5    # the official Python client
          ALGORITHMIA_API=\(base) ALGORITHMIA_API_KEY=\(Self.demoKeys["team-a"]!) \(venv)/bin/python -c 'import Algorithmia; print(Algorithmia.client().algo("demo/Hello/0.1.0").pipe("HAL").result)'

        Ctrl-C stops both; the simulator's files (in a temporary directory) go with it, the cache stays.

        """)
        fflush(nil)  // the banner before the log lines, which the log's own thread writes
        let group = ServiceGroup(configuration: .init(
            services: [simulator.application(logger: logger)] + gateway,
            gracefulShutdownSignals: [.sigterm, .sigint], logger: logger))
        try await group.run()
    }
}
