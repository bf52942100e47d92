@testable import AlgoGate
import AlgoTestSupport
import Foundation
import Testing

/// Generated queries for algorithm calls, sent byte for byte through a live gateway to an upstream
/// that records each request target. An option the gateway reads (the cache keys answers by
/// `output` and `stdout`, and it clamps `timeout`) must be read the same way by every reader the
/// upstream might be: names case-sensitive or not (Unicode's case rules and compatibility forms
/// included), percent-decoded or not, the first or the last of two, values decoded or not. What
/// the gateway cannot read one way only must be refused (400) and reach nothing.
@Suite struct AlgoOptionsPropertyTests {
    /// One way a server reads a query's parameters.
    struct Reader: CustomStringConvertible {
        /// How a reader compares a parameter's name with an option's.
        enum Fold: CaseIterable {
            /// Byte for byte.
            case none
            /// Lowercased first (Swift's, Python's `lower`, Go's `ToLower`): `SUDO` is `sudo`.
            case lowercase
            /// Java's `equalsIgnoreCase`, character by character: equal, or equal uppercased, or
            /// equal lowercased after that. `ſudo` (long s, U+017F) is `sudo`, as `tımeout`
            /// (dotless i, U+0131) is `timeout`.
            case ignoreCase
            /// Compatibility-folded (NFKC), then lowercased: fullwidth `ｓｕｄｏ` and `ﬆdout`
            /// (the st ligature) are options.
            case compatibility
        }

        var decodesNames: Bool
        var fold: Fold
        var firstWins: Bool
        var decodesValues: Bool
        var plusIsSpace: Bool

        var description: String {
            "names \(decodesNames ? "decoded" : "raw")\(fold == .none ? "" : " folded (\(fold))"), \(firstWins ? "first" : "last") wins, values \(decodesValues ? "decoded" : "raw")\(plusIsSpace ? " (+ is space)" : "")"
        }

        static let all: [Reader] = [false, true].flatMap { decodesNames in
            Fold.allCases.flatMap { fold in
                [false, true].flatMap { firstWins in
                    [(false, false), (true, false), (true, true)].map {
                        Reader(decodesNames: decodesNames, fold: fold, firstWins: firstWins, decodesValues: $0.0, plusIsSpace: $0.1)
                    }
                }
            }
        }

        /// The value this reader gives the option `name`, if it finds it.
        func value(of name: String, in query: String) -> String? {
            var found: [String] = []
            for pair in query.split(separator: "&") {
                let parts = pair.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
                var key = String(parts[0])
                if decodesNames { key = key.replacingOccurrences(of: "+", with: plusIsSpace ? " " : "+").removingPercentEncoding ?? key }
                guard Self.same(key, name, fold) else { continue }
                var value = parts.count > 1 ? String(parts[1]) : ""
                if decodesValues { value = (plusIsSpace ? value.replacingOccurrences(of: "+", with: " ") : value).removingPercentEncoding ?? value }
                found.append(value)
            }
            return firstWins ? found.first : found.last
        }

        static func same(_ key: String, _ name: String, _ fold: Fold) -> Bool {
            switch fold {
            case .none: key == name
            case .lowercase: key.lowercased() == name
            case .compatibility: key.precomposedStringWithCompatibilityMapping.lowercased() == name
            case .ignoreCase:
                // Java compares UTF-16 units with simple (one-to-one) case mappings; for the
                // characters here the full mapping's first scalar is the simple one (`İ` lowercases
                // to `i`).
                key.unicodeScalars.count == name.unicodeScalars.count && zip(key.unicodeScalars, name.unicodeScalars).allSatisfy { a, b in
                    func upper(_ s: Unicode.Scalar) -> Unicode.Scalar { s.properties.uppercaseMapping.unicodeScalars.first ?? s }
                    func lower(_ s: Unicode.Scalar) -> Unicode.Scalar { s.properties.lowercaseMapping.unicodeScalars.first ?? s }
                    return a == b || upper(a) == upper(b) || lower(upper(a)) == lower(upper(b))
                }
            }
        }
    }

    /// Letters some readers take for an ASCII one, percent-encoded (a raw one is refused by the
    /// HTTP parser): long s, dotless i, dotted capital I, fullwidth forms, the st ligature.
    static let lookalikes: [(ascii: String, spelling: String)] = [
        ("s", "%C5%BF"), ("i", "%C4%B1"), ("i", "%C4%B0"), ("st", "%EF%AC%86"),
        ("o", "%EF%BD%8F"), ("u", "%EF%BD%95"), ("t", "%EF%BC%B4"), ("d", "%EF%BD%84"),
    ]

    static let names = ["timeout", "output", "stdout", "sudo"]

    /// A query of up to five parameters: options and others, each spelt plainly or otherwise.
    static func generate(_ random: inout SplitMix64) -> String {
        let values = ["raw", "void", "default", "true", "false", "False", "TRUE", "1", "300", "20", "5000", "0", "", "%72aw", "ra+w", "a%20b", "tr%75e", "Raw"]
        var pairs: [String] = []
        for _ in 0..<Int.random(in: 0...5, using: &random) {
            var name = (names + ["other", "x", "outputs", "std_out"]).randomElement(using: &random)!
            switch Int.random(in: 0..<10, using: &random) {
            case 0: name = name.uppercased()
            case 1: name = name.prefix(1).uppercased() + name.dropFirst()
            case 2: name = "%" + String(format: "%02X", name.utf8.first!) + name.dropFirst()
            case 3: name += "+"
            case 4:
                if let (ascii, spelling) = lookalikes.filter({ name.contains($0.ascii) }).randomElement(using: &random),
                   let range = name.range(of: ascii) {
                    name.replaceSubrange(range, with: spelling)
                }
            default: break
            }
            switch Int.random(in: 0..<12, using: &random) {
            case 0: pairs.append(name)
            case 1: pairs.append("")
            default: pairs.append(name + "=" + values.randomElement(using: &random)!)
            }
        }
        return pairs.joined(separator: "&")
    }

    @Test func everyReaderReadsTheOptionsTheGatewayRead() async throws {
        let (seed, count) = SplitMix64.run("QUERY")
        var random = SplitMix64(seed: seed)
        try await RecordingUpstream.run { recorder, h in
            var client = KeepAliveClient(port: h.gatewayPort)
            var accepted = 0
            for _ in 0..<count {
                let query = Self.generate(&random)
                let before = recorder.count
                let request = "POST /v1/algo/team-a/Echo\(query.isEmpty ? "" : "?" + query) HTTP/1.1\r\nHost: x\r\nAuthorization: Simple \(Keys.teamB)\r\nContent-Type: text/plain\r\nContent-Length: 3\r\n\r\nHAL"
                guard let response = try await client.exchange(request) else {
                    Issue.record("seed \(seed): no answer to ?\(query)")
                    continue
                }
                let reached = recorder.since(before)
                guard let options = try? AlgoOptions.parse(query) else {
                    #expect(response.statusLine.hasPrefix("HTTP/1.1 400"), "seed \(seed): ?\(query) -> \(response.statusLine)")
                    #expect(response.body.contains(#""error_type":"InputError""#), "seed \(seed): ?\(query) -> \(response.body)")
                    #expect(reached.isEmpty, "seed \(seed): refused ?\(query) reached the upstream")
                    continue
                }
                accepted += 1
                #expect(response.statusLine.hasPrefix("HTTP/1.1 200"), "seed \(seed): ?\(query) -> \(response.statusLine) \(response.body)")
                guard reached.count == 1, let target = reached.first?.target else {
                    Issue.record("seed \(seed): ?\(query) reached the upstream \(reached.count) times")
                    continue
                }
                let forwarded = target.split(separator: "?", maxSplits: 1).dropFirst().first.map(String.init) ?? ""
                // The gateway's reading, with the timeout as it clamps it (to the harness's 300 s,
                // Algorithmia's default: a call without one is left without one, and 0 is the default).
                let read = ["timeout": options.timeout.map { String($0 == 0 ? 300 : min($0, 300)) }, "output": options.output, "stdout": options.stdout, "sudo": options.sudo]
                for reader in Reader.all {
                    for name in Self.names {
                        #expect(reader.value(of: name, in: forwarded) == read[name] ?? nil,
                                "seed \(seed): ?\(query) forwarded as ?\(forwarded): \(reader) reads \(name) as \(reader.value(of: name, in: forwarded) ?? "nothing"), the gateway as \(read[name].flatMap { $0 } ?? "nothing")")
                    }
                }
            }
            await client.close()
            // The generator must reach both sides, or the property says little.
            #expect(accepted * 5 >= count && (count - accepted) * 5 >= count, "accepted \(accepted) of \(count)")
            print("AlgoOptionsPropertyTests: seed \(seed), \(count) queries, \(accepted) accepted")
        }
    }
}
