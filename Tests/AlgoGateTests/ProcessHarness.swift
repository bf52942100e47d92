import AlgoGate
import AlgoTestSupport
import Foundation

/// The simulator and `algogate serve` as separate processes, for tests that need signals, a
/// process's own memory figures, or a kill.
final class ProcessHarness: @unchecked Sendable {
    // `@unchecked`: every stored property is set in init and never mutated afterwards.
    let work: URL
    let simPort: Int
    /// The port the gateway bound: both processes start on port 0 and report theirs.
    let gatewayPort: Int
    let sim: ChildProcess
    let gateway: ChildProcess
    let configURL: URL
    static let keyVariable = "PROC_UPSTREAM_KEY"

    /// `gatewayYAML` receives the simulator's port, the gateway's port to configure (0) and the
    /// work directory, and returns the whole gateway configuration. `writeConfig` puts it in place
    /// and returns its path (by default `gateway.yaml` in the work directory); `serveArguments`
    /// follow `serve --config PATH`; `environment` is added to the gateway's.
    init(serveArguments: [String] = [], environment: [String: String] = [:], writeConfig: ((_ yaml: String, _ work: URL) throws -> URL)? = nil,
         gatewayYAML: (_ simPort: Int, _ gatewayPort: Int, _ work: URL) -> String) async throws {
        work = FileManager.default.temporaryDirectory.appendingPathComponent("proc-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: work, withIntermediateDirectories: true)
        sim = try ChildProcess(arguments: ["sim", "--port", "0", "--key", Keys.upstream, "--data-dir", work.appendingPathComponent("data").path])
        simPort = try await sim.listeningPort()
        let yaml = gatewayYAML(simPort, 0, work)
        if let writeConfig {
            configURL = try writeConfig(yaml, work)
        } else {
            configURL = work.appendingPathComponent("gateway.yaml")
            try yaml.write(to: configURL, atomically: true, encoding: .utf8)
        }
        gateway = try ChildProcess(arguments: ["serve", "--config", configURL.path] + serveArguments, environment: environment.merging([Self.keyVariable: Keys.upstream]) { $1 })
        gatewayPort = try await gateway.listeningPort()
    }

    /// The usual configuration: the gateway on its port, the simulator upstream, the test clients.
    static func standardYAML(simPort: Int, gatewayPort: Int, work: URL, clients: String = GatewayHarness.clientsYAML(), extra: String = "",
                             server: String = "", upstream: String = "") -> String {
        """
        server: {host: 127.0.0.1, port: \(gatewayPort)\(server.isEmpty ? "" : ", " + server)}
        upstream: {url: "http://127.0.0.1:\(simPort)", key_env: \(keyVariable)\(upstream.isEmpty ? "" : ", " + upstream)}
        cache: {path: "\(work.appendingPathComponent("cache.sqlite").path)"}
        \(extra)
        \(clients)
        """
    }

    var gatewayURL: String { "http://127.0.0.1:\(gatewayPort)" }

    /// Stops both processes, the gateway first, and removes the work directory once they have
    /// exited; returns at once (`ChildProcess.stop`).
    func stop() {
        let (sim, work) = (sim, work)
        gateway.stop {
            sim.stop { try? FileManager.default.removeItem(at: work) }
        }
    }
}
