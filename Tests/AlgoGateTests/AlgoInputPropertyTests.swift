import Foundation
import Testing

/// Algorithm inputs against generated strings: thousands of inputs built from the ways a data
/// location can be written (schemes in any case or percent-encoded, bare paths with or without a
/// leading `/`, the `.my` pseudonym however spelt, dot segments in every spelling, encoded and
/// fullwidth separators, and marks that Swift joins to a neighbouring `/` as one `Character`),
/// sent as team-a (`data://.my/team-a/`, `s3://bucket/team-a/`) through a live gateway to the
/// simulator's echo algorithm, as JSON or as text.
///
/// The property: an algorithm given an input the gateway forwarded cannot read outside team-a's
/// prefixes with it. The algorithm is taken to hand the string to the official Python client,
/// which takes a connector's scheme as written, or else strips one leading `/` and reads the rest
/// as a `data://` path, and requests it; the path is then read by `LaxReading`'s ways and
/// literally (urllib3 resolves dot segments before sending, without decoding), and by the data
/// API finding a scheme in it once decoded. Every such reading must lie under team-a's prefix
/// of its connector, except a bare path outside the `.my` pseudonym (`user/dir/file`), which the
/// gateway cannot tell from text (README, Known limits). And the algorithm receives the input
/// exactly as sent.
@Suite struct AlgoInputPropertyTests {
    static let heads = ["data://", "data://", "data://", "", "", "", "/", "s3://", "DATA://", "dropbox://", "data:%2f%2f", "s3:%2F%2F",
                        "\u{301}", "/\u{301}", "x\u{600}/", "data://\u{301}/", " ", "data+x://"]
    static let starts = [".my/team-a/", ".my/team-a/", ".my/team-a/", "bucket/team-a/", ".my/", "", "x/", "%2emy/team-a/", "\u{FF0E}my/", ".MY/"]
    static let tokens = ["team-a", "team-b", "team-b", ".my", "bucket", "x", "report.csv", "a b", "..", "..", ".", "%2e%2e", "..;", "%2f", "\\",
                         "\u{301}", "x\u{600}", "\u{600}", "%CC%81", "x%D8%80", "\u{FF0E}\u{FF0E}", "\u{FF0F}", "%252e%252e", ";", "%2574eam-b",
                         "..%20", "%"]
    static let separators = ["/", "/", "/", "/", "//", "\\", "%2f", "/\u{301}", "\u{600}/", "/./", "/../"]

    static func generate(_ random: inout SplitMix64) -> String {
        var text = heads.randomElement(using: &random)! + starts.randomElement(using: &random)!
        for index in 0..<Int.random(in: 1...5, using: &random) {
            if index > 0 { text += separators.randomElement(using: &random)! }
            text += tokens.randomElement(using: &random)!
        }
        return text
    }

    // MARK: The oracle: how the Python client, and the data API after it, could read a string.

    struct Reading: CustomStringConvertible {
        let way: String
        let connector: String
        let bare: Bool
        let segments: [String]?
        var description: String { "\(way): \(connector)://\((segments ?? ["(above its root)"]).joined(separator: "/"))" }
    }

    static let connectors: Set<String> = ["data", "s3", "azureblob", "gs", "dropbox"]

    /// `.my`, in any case or compatibility form (`.MY`, `．my`).
    static func isMyPseudonym(_ segment: String) -> Bool {
        segment.precomposedStringWithCompatibilityMapping.lowercased() == ".my"
    }

    /// The scheme before a `://` (found in scalars) when it is a connector's, and the rest.
    static func scheme(of text: String) -> (connector: String, rest: String)? {
        let scalars = Array(text.unicodeScalars)
        guard scalars.count >= 3, let at = (0...(scalars.count - 3)).first(where: { scalars[$0] == ":" && scalars[$0 + 1] == "/" && scalars[$0 + 2] == "/" })
        else { return nil }
        let scheme = String(String.UnicodeScalarView(scalars[..<at])).lowercased()
        guard connectors.contains(String(scheme.prefix { $0 != "+" })) else { return nil }
        return (scheme, String(String.UnicodeScalarView(scalars[(at + 3)...])))
    }

    /// The path urllib3 sends: dot segments resolved as written, without decoding (a climb above
    /// the root stops at it, RFC 3986 §5.2.4).
    static func sent(_ path: String) -> String {
        var resolved: [String] = []
        for part in path.scalarSplit("/") {
            switch Array(part.utf8) {
            case Array(".".utf8): continue
            case Array("..".utf8): _ = resolved.popLast()
            default: resolved.append(part)
            }
        }
        return resolved.joined(separator: "/")
    }

    static func readings(of text: String) -> [Reading] {
        var connector = "data", path = text, bare = true
        if let (found, rest) = scheme(of: text) {
            (connector, path, bare) = (found, rest, false)
        } else if text.unicodeScalars.first == "/" {
            path = String(String.UnicodeScalarView(text.unicodeScalars.dropFirst()))
        }
        // The server reads the path as urllib3 sent it, or as written (another client).
        var readings: [Reading] = []
        for (sender, sentPath) in [("as sent by urllib3", sent(path)), ("as written", path)] {
            readings += LaxReading.allCases.map { Reading(way: "\(sender), \($0)", connector: connector, bare: bare, segments: $0.resolve(sentPath)) }
            // The data API reads a scheme in a data path once decoded (`/v1/data/s3:%2f%2fbucket/k`).
            if bare, let decoded = sentPath.removingPercentEncoding, let (found, rest) = scheme(of: decoded) {
                readings += LaxReading.allCases.map { Reading(way: "\(sender), decoded scheme, \($0)", connector: found, bare: false, segments: $0.resolve(rest)) }
            }
        }
        return readings
    }

    /// The readings of `text` outside team-a's prefixes; empty when it may be forwarded.
    static func outsideTeamA(_ text: String) -> [Reading] {
        readings(of: text).filter { reading in
            guard let segments = reading.segments else { return false }  // above its root: an error there
            if reading.bare, segments.first.map(Self.isMyPseudonym) != true { return false }  // the known limit
            let inside = (reading.connector == "data" && segments.starts(with: [".my", "team-a"]))
                || (reading.connector == "s3" && segments.starts(with: ["bucket", "team-a"]))
            return !inside
        }
    }

    /// The oracle itself, on strings whose reading is known.
    @Test func theOracleTellsInFromOut() {
        for text in ["data://.my/team-a/x", ".my/team-a/x", "/.my/team-a/x", "s3://bucket/team-a/k", "plain text", "user/dir/file", "x/../.my/team-a/y"] {
            #expect(Self.outsideTeamA(text).isEmpty, "\(text)")
        }
        for text in ["data://.my/team-b/x", ".my/team-b/x", "x/../.my/team-b", "data://\u{301}/../.my/team-b/f", ".my/team-a/x\u{600}/../../team-b",
                     "s3:%2f%2fbucket/team-b", "dropbox://x", "data://user/x", "%2emy/team-b", ".my/team-a/..;/team-b", ".my/team-b\\..\\team-a/x", "\u{FF0E}my/team-b"] {
            #expect(!Self.outsideTeamA(text).isEmpty, "\(text.debugDescription)")
        }
    }

    @Test func noForwardedInputReadsOutsideTheTeamsPrefixes() async throws {
        let (seed, count) = SplitMix64.run("INPUT")
        var random = SplitMix64(seed: seed)
        try await GatewayHarness.run { h in
            var statuses: [Int: Int] = [:]
            for _ in 0..<count {
                let text = Self.generate(&random)
                let asJSON = Int.random(in: 0..<4, using: &random) > 0
                let reply = asJSON
                    ? try await h.gateway.send(.POST, "/v1/algo/util/Echo", headers: simple(Keys.teamA), json: ["f": text])
                    : try await h.gateway.send(.POST, "/v1/algo/util/Echo", headers: simple(Keys.teamA) + textType, text: text)
                let shown = "seed \(seed): \(asJSON ? "JSON" : "text") \(text.debugDescription) \(text.unicodeScalars.filter { !$0.isASCII }.map { String($0.value, radix: 16) })"
                statuses[reply.status, default: 0] += 1
                #expect([200, 403].contains(reply.status), "\(shown) -> \(reply.status) \(reply.text)")
                guard reply.status == 200 else {
                    #expect(envelope(reply).type == "PermissionDenied", "\(shown) -> \(reply.text)")
                    continue
                }
                let received = asJSON ? (reply.object["result"] as? [String: String])?["f"] : reply.object["result"] as? String
                #expect(received == text, "\(shown): the algorithm received \(received.debugDescription)")
                let outside = Self.outsideTeamA(text)
                #expect(outside.isEmpty, "\(shown) was forwarded, and reads outside team-a as \(outside.prefix(2))")
            }
            // The generator must reach both sides of the check, or the property says little.
            #expect(statuses[200, default: 0] * 5 >= count && statuses[403, default: 0] * 5 >= count, "statuses \(statuses)")
            print("AlgoInputPropertyTests: seed \(seed), \(count) inputs, statuses \(statuses.sorted { $0.key < $1.key })")
        }
    }
}
