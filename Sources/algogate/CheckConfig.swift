import AlgoGate
import ArgumentParser
import Foundation

/// `algogate check-config`: validates a configuration (and that its upstream key is readable, and
/// that `cache.path` can be opened or created), changing nothing.
struct CheckConfig: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "check-config",
        abstract: "Validate a configuration file and exit 0 when it is good, 1 naming every bad field.",
        discussion: "Also checks that the upstream key is readable (at least 16 characters, given without 'Simple ') and that cache.path is a SQLite file this user can read and write, or can be created, names the proxy variables of the environment (HTTPS_PROXY and the like) that would apply to the upstream but are not read (upstream.proxy decides), names clients with the algo scope but no data_prefixes when others have them (an algorithm they call can reach every path), names data prefixes that read otherwise than written (a '..' segment, a repeated slash or a backslash is folded), and names settings that cannot take effect (a max_concurrent above upstream.max_concurrency, a limits.max_buffered_bytes under twice max_request_bytes with several clients, cache.rules with the cache off, a cache.max_bytes too small for any answer), a cache.max_bytes larger than the disk holding cache.path can give the cache (with limits.spool_max_bytes beside it), and a cache.path on a network or FUSE filesystem (NFS, Amazon EFS, SMB, CephFS), where SQLite's locks do not hold across machines. Prints the key rotations under way and the upstream slots clients reserve (reserved_concurrent). Nothing is created or changed."
    )

    @Option(help: "The YAML configuration file.")
    var config: String

    func run() async throws {
        // The state file holds the usage counters too, so it is needed with the cache off. Its
        // problem is named with the file's others (one already found with cache.path stands).
        let loaded = try loadOrExit(path: config) { settings in
            StateDatabase.problem(path: settings.cache.path).map { [ConfigError(field: "cache.path", message: $0)] } ?? []
        }
        let clients = clientList(loaded.config.clients.map(\.name))
        // The proxy's URL is shown: it holds no credentials (refused at load).
        let proxy = loaded.config.upstream.proxy.map { " through proxy \($0.url)" + (loaded.proxyAuth != nil ? " (with credentials)" : "") } ?? ""
        print("configuration OK: upstream \(loaded.config.upstream.url)\(proxy), \(loaded.config.clients.count) client(s): \(clients)")
        let ignored = ConfigLoader.ignoredProxyVariables(loaded.config, environment: ProcessInfo.processInfo.environment)
        if !ignored.isEmpty {
            print("note: \(ignoredProxyNote(ignored))")
        }
        for note in ConfigLoader.notes(loaded.config) { print("note: \(note)") }
        let reservations = try ClientRegistry(config: loaded.config).reservations
        if !reservations.isEmpty {
            let kept = reservations.sorted { $0.key < $1.key }.map { "\($0.key) \($0.value)" }.joined(separator: ", ")
            print("upstream slots reserved (quota.reserved_concurrent): \(kept); \(reservations.values.reduce(0, +)) of \(loaded.config.upstream.maxConcurrency)")
        }
        if let note = DiskReserve.roomNote(loaded.config) { print("note: \(note)") }
        if let note = SharedFilesystem.note(loaded.config) { print("note: \(note)") }
        let rotating = loaded.config.clients.filter { $0.previousKeySHA256 != nil }.map(\.name)
            + (loaded.config.admin?.previousKeySHA256 != nil ? ["admin"] : [])
        if !rotating.isEmpty {
            print("key rotation under way (previous_key_sha256 still accepted) for: \(rotating.joined(separator: ", "))")
        }
    }
}

/// The clients the OK line names: every one up to `shown + 1` (so "and 1 more" is never written),
/// else the first `shown` and how many more, so a file of thousands of teams gives a readable line
/// (the notes below it still name every client they concern).
func clientList(_ names: [String], shown: Int = 10) -> String {
    guard names.count > shown + 1 else { return names.joined(separator: ", ") }
    return names.prefix(shown).joined(separator: ", ") + " and \(names.count - shown) more"
}

/// What `serve` logs and `check-config` prints when the environment sets proxy variables the
/// gateway does not read (`ConfigLoader.ignoredProxyVariables`).
func ignoredProxyNote(_ variables: [String]) -> String {
    "the environment sets \(variables.joined(separator: ", ")), which algogate does not read: upstream connections go direct; to go through that proxy, set upstream.proxy.url"
}
