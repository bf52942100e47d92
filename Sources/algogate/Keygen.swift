import AlgoGate
import ArgumentParser
import Foundation

/// `algogate keygen`: a fresh random client key, shown once, and the config entry that admits it.
struct Keygen: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Print a new client key (once) and its YAML entry for the clients list.",
        discussion: """
            Only the key's SHA-256 goes into the configuration; hand the key itself to the team.

            To rotate a client's key, pass its current key_sha256 as --previous-key-sha256: the entry \
            then admits both keys until that line is removed (and the configuration reloaded).
            """
    )

    @Option(help: "The client's name.")
    var name: String

    @Option(parsing: .upToNextOption, help: "Scopes to grant: algo, data:read, data:write, manage, admin (space- or comma-separated).")
    var scopes: [String] = ["algo", "data:read"]

    @Option(parsing: .upToNextOption, help: "Data URIs the client is confined to, e.g. data://.my/team-a/")
    var dataPrefixes: [String] = []

    @Option(parsing: .upToNextOption, help: "Algorithms the client may call and manage (owner/name or owner/*, space- or comma-separated); all when left out.")
    var algorithms: [String] = []

    @Flag(name: .customLong("no-async-calls"), help: "Refuse the client asynchronous calls (output=void), whose runs go on upstream outside the gateway's slots.")
    var noAsyncCalls = false

    @Option(name: .customLong("previous-key-sha256"), help: "When rotating: the client's current key_sha256, still accepted until removed.")
    var previousKeySHA256: String?

    /// The scopes given, as one list: `--scopes algo,data:read` as `--scopes algo data:read`.
    var grantedScopes: [String] { Self.list(scopes) }
    var algorithmPatterns: [String] { Self.list(algorithms) }

    static func list(_ values: [String]) -> [String] {
        var seen: Set<String> = []
        return values.flatMap { $0.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) } }
            .filter { !$0.isEmpty && seen.insert($0).inserted }
    }

    /// `text` as a YAML double-quoted scalar: a data prefix may hold a `"` or a `\`.
    static func quoted(_ text: String) -> String {
        "\"" + text.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "\"", with: "\\\"") + "\""
    }

    func validate() throws {
        for scope in grantedScopes where Scope(rawValue: scope) == nil {
            throw ValidationError("unknown scope '\(scope)'; use \(Scope.allCases.map(\.rawValue).joined(separator: ", "))")
        }
        if let problem = ConfigLoader.clientNameProblem(name) { throw ValidationError("--name: \(problem)") }
        // As the configuration checks them, so that the entry printed is one it accepts.
        for prefix in dataPrefixes {
            do { _ = try DataURI.parse(uri: prefix) } catch let error as GatewayError {
                throw ValidationError("--data-prefixes: \(error.message)")
            }
        }
        for pattern in algorithmPatterns {
            do { _ = try AlgorithmPattern(parsing: pattern) } catch let error as GatewayError {
                throw ValidationError("--algorithms: \(error.message)")
            }
        }
        if let previousKeySHA256, !ConfigLoader.isSHA256Hex(previousKeySHA256) {
            throw ValidationError("--previous-key-sha256: must be 64 lowercase hex digits (the client's current key_sha256)")
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
        if let previousKeySHA256 {
            print("    previous_key_sha256: \"\(previousKeySHA256)\"   # remove once the team uses the new key")
        }
        print("    scopes: [\(grantedScopes.joined(separator: ", "))]")
        if !dataPrefixes.isEmpty {
            print("    data_prefixes: [\(dataPrefixes.map(Self.quoted).joined(separator: ", "))]")
        }
        if !algorithmPatterns.isEmpty {
            print("    algorithms: [\(algorithmPatterns.map(Self.quoted).joined(separator: ", "))]")
        }
        if noAsyncCalls {
            print("    async_calls: false")
        }
    }
}
