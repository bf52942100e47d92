@testable import AlgoGate
import Foundation
import Testing

/// A configuration with several mistakes is refused naming each of them: generated files, each
/// with a few of a set of mistakes that touch different fields, are refused with exactly the
/// problems each mistake is refused with alone, none lost, none added, none named twice.
@Suite struct ConfigPropertyTests {
    /// One mistake: entries put in (or taken out of) a valid file's blocks.
    struct Mistake {
        /// Entries added to a block (`server`, `upstream`, `clients[1]`, ...), which replace
        /// the valid file's entry of the same name.
        var entries: [String: [String: String]] = [:]
        /// The upstream key's variable is not set.
        var withoutKey = false
    }

    static let mistakes: [Mistake] = [
        Mistake(entries: ["server": ["port": "70000"]]),
        Mistake(entries: ["server": ["drain_timeout_seconds": "soon"]]),
        Mistake(entries: ["server": ["colour": "red"]]),
        Mistake(entries: ["server": ["metrics_access": "closed"]]),
        Mistake(entries: ["upstream": ["connect_timeout_seconds": "0"]]),
        Mistake(entries: ["upstream": ["abandoned_calls": "stop"]]),
        Mistake(entries: ["upstream": ["max_concurency": "8"]]),
        Mistake(entries: ["limits": ["max_request_bytes": "0"]]),
        Mistake(entries: ["cache": ["ttl_seconds": "0"]]),
        Mistake(entries: ["cache": ["rules": "[{algo: demo}]"]]),
        Mistake(entries: ["cache": ["fast_hits": "sometimes"]]),
        Mistake(entries: ["compression": ["level": "10"]]),
        Mistake(entries: ["compression": ["types": "[json]"]]),
        Mistake(entries: ["quota": ["requests_per_minute": "0"]]),
        Mistake(entries: ["clients[0]": ["key_sha256": "\"ABC\""]]),
        Mistake(entries: ["clients[0]": ["scopes": "[algo, fly]"]]),
        Mistake(entries: ["clients[1]": ["name": "\"team/b\""]]),
        Mistake(entries: ["clients[1]": ["data_prefixes": "[\"ftp://x/\"]"]]),
        Mistake(entries: ["clients[1]": ["quota": "{max_concurrent: 0}"]]),
        Mistake(withoutKey: true),
    ]

    static let valid: [String: [String: String]] = [
        "server": ["port": "8080"],
        "upstream": ["url": "\"http://127.0.0.1:9000\"", "key_env": "UP_KEY"],
        "limits": [:], "cache": [:], "compression": [:], "quota": [:],
        "clients[0]": ["name": "a", "key_sha256": "\"\(ConfigTests.hashA)\"", "scopes": "[algo]"],
        "clients[1]": ["name": "b", "key_sha256": "\"\(ConfigTests.hashB)\"", "scopes": "[algo]"],
    ]

    /// The file with `mistakes` made in it, and the environment it is loaded with.
    static func file(with mistakes: [Mistake]) -> (yaml: String, environment: [String: String]) {
        var blocks = valid
        for mistake in mistakes {
            for (block, entries) in mistake.entries { blocks[block, default: [:]].merge(entries) { $1 } }
        }
        func mapping(_ block: String) -> String {
            "{" + (blocks[block] ?? [:]).sorted { $0.key < $1.key }.map { "\($0.key): \($0.value)" }.joined(separator: ", ") + "}"
        }
        let yaml = ["server", "upstream", "limits", "cache", "compression", "quota"].map { "\($0): \(mapping($0))" }.joined(separator: "\n")
            + "\nclients:\n  - \(mapping("clients[0]"))\n  - \(mapping("clients[1]"))\n"
        return (yaml, mistakes.contains { $0.withoutKey } ? [:] : ConfigTests.env)
    }

    static func problems(_ mistakes: [Mistake]) -> [String] {
        let (yaml, environment) = file(with: mistakes)
        return ConfigTests.refusal(yaml, environment: environment)?.problems.map(\.line) ?? []
    }

    @Test func aFileWithSeveralMistakesIsRefusedWithEachOnesProblems() {
        #expect(Self.problems([]) == [], "the valid file is valid")
        // Each mistake alone is refused with one problem of its own.
        let alone = Self.mistakes.map { Self.problems([$0]) }
        #expect(alone.allSatisfy { $0.count == 1 }, "\(alone)")
        #expect(Set(alone.flatMap { $0 }).count == Self.mistakes.count, "\(alone)")

        let (seed, cases) = SplitMix64.run("CONFIG", cases: 300)
        var generator = SplitMix64(seed: seed)
        for _ in 0..<cases {
            let chosen = Self.mistakes.indices.filter { _ in Int.random(in: 0..<4, using: &generator) == 0 }
            let found = Self.problems(chosen.map { Self.mistakes[$0] })
            let expected = chosen.flatMap { alone[$0] }
            #expect(found.count == expected.count && Set(found) == Set(expected), "seed \(seed), mistakes \(chosen): \(found)")
        }
    }
}
