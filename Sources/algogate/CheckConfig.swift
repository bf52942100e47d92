import AlgoGate
import ArgumentParser
import Foundation

/// `algogate check-config`: validates a configuration (and that its upstream key is readable).
struct CheckConfig: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "check-config",
        abstract: "Validate a configuration file and exit 0 when it is good, 1 naming the bad field."
    )

    @Option(help: "The YAML configuration file.")
    var config: String

    func run() async throws {
        let loaded = try loadOrExit(path: config)
        let clients = loaded.config.clients.map(\.name).joined(separator: ", ")
        print("configuration OK: upstream \(loaded.config.upstream.url), \(loaded.config.clients.count) client(s): \(clients)")
        let rotating = loaded.config.clients.filter { $0.previousKeySHA256 != nil }.map(\.name)
            + (loaded.config.admin?.previousKeySHA256 != nil ? ["admin"] : [])
        if !rotating.isEmpty {
            print("key rotation under way (previous_key_sha256 still accepted) for: \(rotating.joined(separator: ", "))")
        }
    }
}
