import AlgoGate
import AlgoSim
import ArgumentParser
import Foundation
import Logging

/// `algogate sim`: the Algorithmia-compatible simulator, as an upstream to try the gateway against.
struct Sim: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run the Algorithmia-compatible simulator.",
        discussion: """
        Serves the algorithm, data and management APIs with built-in algorithms (demo/Hello, nlp/LDA, \
        util/Echo, test/Sleep, test/Fail, test/Big). Test endpoints: GET /__sim/stats, POST /__sim/reset. \
        Faults per request with the header X-Sim-Fault: delay=MS, status=CODE, drop (comma-separated).
        """
    )

    @Option(help: "Address to listen on.")
    var host = "127.0.0.1"

    @Option(help: "Port to listen on.")
    var port = 9000

    @Option(help: "The account key clients must present. Defaults to $ALGOSIM_KEY.")
    var key: String?

    @Option(help: "Directory for data API files (default: a new temporary directory, removed as the simulator stops).")
    var dataDir: String?

    @Option(help: "The account's user name, which .my stands for.")
    var username = "sim"

    @Option(help: "Entries per directory-listing page.")
    var pageSize = 1000

    @Option(help: "A fault for every request, e.g. 'delay=50' or 'status=503' or 'drop' or 'drop-first' (only a request ID's first attempt).")
    var fault: String?

    /// The account key: `--key`, else `$ALGOSIM_KEY`.
    private var accountKey: String? {
        (key ?? ProcessInfo.processInfo.environment["ALGOSIM_KEY"]).flatMap { $0.isEmpty ? nil : $0 }
    }

    /// Refused before anything starts, with this command's usage.
    func validate() throws {
        guard accountKey != nil else { throw ValidationError("--key (or $ALGOSIM_KEY) is required") }
        if let fault, Fault(parsing: fault) == nil { throw ValidationError("--fault: cannot parse '\(fault)'") }
    }

    func run() async throws {
        LargeAllocations.returnToSystem()
        guard let key = accountKey else { throw ValidationError("--key (or $ALGOSIM_KEY) is required") }
        let defaultFault = fault.flatMap(Fault.init(parsing:))
        let simulator = try Simulator(configuration: SimConfiguration(
            host: host, port: port, apiKey: key, username: username,
            dataDirectory: dataDir.map { URL(fileURLWithPath: $0) }, pageSize: pageSize, defaultFault: defaultFault
        ))
        defer { simulator.removeTemporaryData() }
        do {
            try await checkListenable(host: host, port: port)
            try await simulator.application().runService()
        } catch {
            guard let reason = startFailure(error, listening: "\(host):\(port) (--host, --port)") else { throw error }
            FileHandle.standardError.write(Data("algogate sim: cannot start: \(reason)\n".utf8))
            throw ExitCode(1)
        }
    }
}
