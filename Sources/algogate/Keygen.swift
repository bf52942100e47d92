import AlgoGate
import ArgumentParser
import Foundation

/// `algogate keygen`: a fresh random client key, shown once, and the config entry that admits it.
struct Keygen: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Print a new client key (once) and its YAML entry for the clients list.",
        discussion: "Only the key's SHA-256 goes into the configuration; hand the key itself to the team."
    )

    @Option(help: "The client's name.")
    var name: String

    @Option(parsing: .upToNextOption, help: "Scopes to grant: algo, data:read, data:write, manage, admin.")
    var scopes: [String] = ["algo", "data:read"]

    @Option(parsing: .upToNextOption, help: "Data URIs the client is confined to, e.g. data://.my/team-a/")
    var dataPrefixes: [String] = []

    func validate() throws {
        for scope in scopes where Scope(rawValue: scope) == nil {
            throw ValidationError("unknown scope '\(scope)'; use \(Scope.allCases.map(\.rawValue).joined(separator: ", "))")
        }
        guard !name.isEmpty, name.allSatisfy({ $0.isLetter || $0.isNumber || "-_.".contains($0) }) else {
            throw ValidationError("--name: use letters, digits, '-', '_' and '.'")
        }
    }

    func run() async throws {
        var generator = SystemRandomNumberGenerator()  // getrandom(2) on Linux
        let bytes = (0..<32).map { _ in UInt8.random(in: .min ... .max, using: &generator) }
        let key = "ag_" + bytes.map { String(format: "%02x", $0) }.joined()
        print("# key for \(name) (shown once; store it as the team's ALGORITHMIA_API_KEY):")
        print("#   \(key)")
        print("  - name: \(name)")
        print("    key_sha256: \"\(ClientRegistry.hash(of: key))\"")
        print("    scopes: [\(scopes.joined(separator: ", "))]")
        if !dataPrefixes.isEmpty {
            print("    data_prefixes: [\(dataPrefixes.map { "\"\($0)\"" }.joined(separator: ", "))]")
        }
    }
}
