import AlgoGate
import ArgumentParser
import Foundation

/// `algogate cache stats|purge`: the operator's view of the response cache, read straight from
/// its SQLite file (safe while the gateway runs: WAL lets both work at once).
struct CacheCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "cache",
        abstract: "Inspect or purge the response cache.",
        subcommands: [Stats.self, Purge.self]
    )

    struct Stats: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Entries, bytes, hit ratio and top algorithms.")
        @Option(help: "The gateway's YAML configuration file (for cache.path).")
        var config: String
        @Option(help: "How many algorithms to list.")
        var top = 10

        func run() async throws {
            let stats = try await openCache(config, command: "cache stats", nothing: "no cache to show").stats(top: top)
            print("entries: \(stats.entries)")
            print("bytes:   \(stats.bytes)")
            print("hits:    \(stats.hits)   misses: \(stats.misses)   hit ratio: \(String(format: "%.1f%%", stats.hitRatio * 100))")
            if !stats.topAlgorithms.isEmpty {
                print("\n\("algorithm".padding(toLength: 40, withPad: " ", startingAt: 0)) \("entries".leftPad(8)) \("hits".leftPad(8)) \("bytes".leftPad(12))")
                for row in stats.topAlgorithms {
                    print("\(row.algo.padding(toLength: 40, withPad: " ", startingAt: 0)) \(String(row.entries).leftPad(8)) \(String(row.hits).leftPad(8)) \(String(row.bytes).leftPad(12))")
                }
            }
        }
    }

    struct Purge: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Delete cached answers: one version, one algorithm, or all.",
            discussion: "Safe beside a serving gateway: entries go a few MiB per transaction, so the gateway's own writes (new entries, usage counters) go on between them. The gateway drops the purged answers from its memory tier within a second of the purge's end.")
        @Option(help: "The gateway's YAML configuration file (for cache.path).")
        var config: String
        @Option(help: "owner/name or owner/name/version; omit to purge everything.")
        var algo: String?

        func validate() throws {
            // As DELETE /_admin/cache: a typo must not purge nothing and say so quietly.
            if let algo, !OperatorRoutes.isAlgoPattern(algo) {
                throw ValidationError("--algo must be owner/name or owner/name/version, not '\(algo)'")
            }
        }

        func run() async throws {
            let purged = try await openCache(config, command: "cache purge", nothing: "nothing to purge").purge(algo: algo)
            print("purged \(purged) entr\(purged == 1 ? "y" : "ies")\(algo.map { " of \($0)" } ?? "")")
            print("a gateway serving from this file stops answering them from its memory within a second")
        }
    }
}

private func openCache(_ path: String, command: String, nothing: String) throws -> ResponseCache {
    let config = try loadWithoutKeyOrExit(path: path)
    return try ResponseCache(path: try existingStatePath(config, command: command, nothing: nothing), settings: .init(maxBytes: config.cache.maxBytes, memoryBytes: 0,
                                                                 compressMinBytes: config.compression.minBytes, compressLevel: Int32(config.compression.level),
                                                                 staleIfErrorSeconds: config.cache.staleIfErrorSeconds))
}

extension String {
    func leftPad(_ width: Int) -> String { count >= width ? self : String(repeating: " ", count: width - count) + self }
}
