@testable import AlgoGate
import AlgoTestSupport
import Foundation
import NIOCore
import Testing

/// Data prefixes against generated paths: thousands of requests built from the tricks a path can
/// hide a climb in (encoded dots and slashes, backslashes, double encoding, `;` parameters,
/// fullwidth forms, connector spellings, directory names in POST bodies), sent byte for byte to a
/// live gateway as team-a (`data://.my/team-a/`, `s3://bucket/team-a/`), in front of an upstream
/// that records the exact request target it receives.
///
/// The property: whatever reached the upstream lies under one of team-a's prefixes however a
/// server reads it, strictly (one percent-decoding, `.` and `..` resolved) or in each of
/// `LaxReading`'s laxer ways (path parameters, decoding twice, Windows trimming, Unicode
/// compatibility folding), a created directory's name read as a segment or as a path of its
/// own (relative to its parent, or absolute when it starts with a separator). This is `DataPrefixTests`' generated-path check taken end to end: the request's bytes
/// through a live gateway, methods, connector routes and directory names included, and what
/// the upstream received read back. And the gateway answers each request
/// with a forward (200) or a refusal (400, 403), never with an error of its own.
///
/// The generator is seeded, so a failure names the seed and the request and comes back the same;
/// `ALGOGATE_PATH_CASES` runs more cases (and `ALGOGATE_PATH_SEED` another seed) locally.
@Suite struct DataPathPropertyTests {
    static let routes = ["/v1/data/", "/v1/data/", "/v1/data/", "/v1/connector/data/", "/v1/connector/s3/", "/v1/data/s3://",
                         "/v1/data/data://", "/v1/connector/S3/", "/v1/connector/dropbox/", "/v1/data/s3:/", "/v1/data/s3:%2f%2f",
                         "/v1/connector/data+x/", "/v1/data/S3%3a//", "/v1/data/DATA://", "/v1/connector/s3%2f..%2fdata/"]
    static let starts = [".my/team-a/", ".my/team-a/", "bucket/team-a/", ".my/team-a", ".my/", "bucket/", ""]
    static let plainTokens = [".my", "team-a", "team-a", "team-b", "team-a-evil", "bucket", "x.txt", "sub", "..", ".", "a%20b", "%41"]
    static let trickyTokens = ["%2e", "%2E", "%2e%2e",
                         ".%2e", "%2e.", "%252e%252e", "%25", "%2f", "%5c", "%3b", ";", "..;", "..;x", "x;..", "%00", "%0a", "%20",
                         "..%20", "...", ".%20.", "%EF%BC%8E%EF%BC%8E", "%EF%BC%8F", "%EF%BC%85%32%65", "%EF%BC%BC", "%c0%ae%c0%ae",
                         "data:", "s3:", "s3:%2f%2fbucket", "%3a%2f%2f", "~", "team-a%2f..%2f..%2fteam-b", "x%3f", "%23frag",
                         // joined to a neighbouring `/` as one `Character`: a combining mark after it, a prepended mark before it
                         "%CC%81", "x%D8%80", "%D8%80", "%E2%80%8D", "..%D8%80", "x%D8%80%EF%BC%8F..", "..%5C%CC%81x", "%5c%D6%A4"]
    static let separators = ["/", "/", "/", "/", "/", "/", "/", "/", "//", "%2f", "%2F", "%5c", "\\", "/./", "/../", "%2f..%2f"]
    static let names = ["team-a", "team-b", "x", "/team-b", "..", ".", "%2e%2e", "a/b", "..\\team-b", "../team-b", "．．", "x;y", "..;", ". .",
                        "team-a/../team-b", "%2fteam-b", ""]

    struct Case: Sendable, CustomStringConvertible {
        let method: String
        let target: String
        let name: String?
        var description: String { "\(method) \(target)" + (name.map { " {\"name\": \($0.debugDescription)}" } ?? "") }
    }

    static func generate(count: Int, seed: UInt64) -> [Case] {
        var random = SplitMix64(seed: seed)
        return (0..<count).map { _ in
            let route = Int.random(in: 0..<3, using: &random) == 0 ? routes.randomElement(using: &random)! : "/v1/data/"
            // Mostly inside the prefix the route names, so that the tricks after it decide.
            let inside = route.lowercased().contains("s3") ? "bucket/team-a/" : ".my/team-a/"
            var path = route + (Int.random(in: 0..<4, using: &random) > 0 ? inside : starts.randomElement(using: &random)!)
            for index in 0..<Int.random(in: 1...4, using: &random) {
                if index > 0 { path += separators.randomElement(using: &random)! }
                path += (Int.random(in: 0..<10, using: &random) < 8 ? plainTokens : trickyTokens).randomElement(using: &random)!
            }
            if Int.random(in: 0..<4, using: &random) == 0 { path += "/" }
            switch Int.random(in: 0..<20, using: &random) {
            case 0..<11: return Case(method: "GET", target: path, name: nil)
            case 11..<14: return Case(method: "PUT", target: path, name: nil)
            case 14..<16: return Case(method: "DELETE", target: path, name: nil)
            default: return Case(method: "POST", target: path, name: names.randomElement(using: &random)!)
            }
        }
    }

    /// The bytes of one keep-alive request.
    static func request(_ item: Case) throws -> String {
        let body: String
        switch item.method {
        case "POST":
            body = String(decoding: try JSONSerialization.data(withJSONObject: ["name": item.name ?? ""]), as: UTF8.self)
        case "PUT": body = "contents"
        default: body = ""
        }
        var head = "\(item.method) \(item.target) HTTP/1.1\r\nHost: gateway\r\nAuthorization: Simple \(Keys.teamA)\r\n"
        if !body.isEmpty || item.method == "PUT" || item.method == "POST" {
            head += "Content-Type: \(item.method == "POST" ? "application/json" : "application/octet-stream")\r\nContent-Length: \(body.utf8.count)\r\n"
        }
        return head + "\r\n" + body
    }

    // MARK: The oracle: how a server could read what the upstream received.

    /// The data locations a server could read `target` as, with a directory `name` created in it
    /// (read as one more segment, or as a path of its own): one strict reading (decoded once,
    /// `.` and `..` resolved) and each of `LaxReading`'s. A reading whose segments are nil climbs
    /// above its root, an error there. The connector is the route's (`/v1/connector/{type}/`) or
    /// what comes before `://` in a data path; a data path in which a laxer decoding finds a
    /// `://` the forwarded bytes do not show is read as no connector at all (`?`).
    static func readings(of target: String, name: String?) -> [(reading: String, connector: String, segments: [String]?)] {
        let path = String(target.prefix { $0 != "?" })
        var connector = "data"
        var rest: String
        if let tail = path.dropPrefix("/v1/connector/") {
            connector = String(tail.prefix { $0 != "/" })
            rest = String(tail.dropFirst(connector.count))
        } else if let tail = path.dropPrefix("/v1/data/") {
            rest = String(tail)
            if let scheme = rest.range(of: "://") {
                connector = String(rest[..<scheme.lowerBound])
                rest = String(rest[scheme.upperBound...])
            } else {
                var decoded = rest
                for _ in 0..<4 { decoded = decoded.removingPercentEncoding ?? decoded }
                if decoded.precomposedStringWithCompatibilityMapping.contains("://") { connector = "?" }
            }
        } else {
            return [("route", "?", [])]
        }
        let raw = rest + (name.map { "/" + $0 } ?? "")
        var strict: [String]? = []
        if let decoded = rest.removingPercentEncoding {
            for segment in decoded.scalarSplit("/") + (name.map { [$0] } ?? []) {
                switch segment {
                case ".": continue
                case "..": if strict?.popLast() == nil { strict = nil }
                default: strict?.append(segment)
                }
                if strict == nil { break }
            }
        } else {
            strict = ["?"]  // not decodable: no location a server would agree on
        }
        // A name that starts with a separator, read as an absolute path: what joining paths does
        // in many languages (Python's os.path.join(parent, "/team-b") is "/team-b").
        var absolute: [(String, String, [String]?)] = []
        if let name {
            var decoded = name
            for _ in 0..<4 { decoded = decoded.removingPercentEncoding ?? decoded }
            decoded = String(String.UnicodeScalarView(decoded.precomposedStringWithCompatibilityMapping.unicodeScalars.map { $0 == "\\" ? "/" : $0 }))
            if decoded.hasPrefix("/") { absolute = [("absolute name", connector, LaxReading.decodeFirst.resolve(decoded))] }
        }
        return [("strict", connector, strict)] + LaxReading.allCases.map { ("\($0)", connector, $0.resolve(raw)) } + absolute
    }

    /// Whether every reading of `target` lies inside team-a's prefixes (or is an error there).
    static func staysInsideTeamA(_ target: String, name: String? = nil) -> [String] {
        readings(of: target, name: name).compactMap { reading in
            guard let segments = reading.segments else { return nil }
            let inside = (reading.connector == "data" && segments.starts(with: [".my", "team-a"]))
                || (reading.connector == "s3" && segments.starts(with: ["bucket", "team-a"]))
            return inside ? nil : "\(reading.reading): \(reading.connector)://\(segments.joined(separator: "/"))"
        }
    }

    /// The oracle itself, on paths whose reading is known: it must tell in from out, or the
    /// property below would hold vacuously.
    @Test func theOracleTellsInFromOut() {
        let inside = ["/v1/data/.my/team-a/x", "/v1/data/.my/team-a", "/v1/connector/s3/bucket/team-a/k", "/v1/data/s3://bucket/team-a/k",
                      "/v1/data/.my/team-b/../team-a/x", "/v1/data/.my/team-a/a%20b?x=1"]
        let outside = ["/v1/data/.my/team-b/x", "/v1/data/.my/team-a/%2e%2e/team-b", "/v1/data/.my/team-a/..%252f..%252fteam-b",
                       "/v1/data/.my/team-a/..;/team-b", "/v1/data/.my/team-a/%EF%BC%8E%EF%BC%8E/team-b", "/v1/data/.my/team-a/..%5cteam-b",
                       "/v1/data/.my/team-a/..%20/team-b", "/v1/connector/S3/bucket/team-a/k", "/v1/data/.my/team-a-evil/x",
                       "/v1/data/dropbox://.my/team-a/x", "/v1/data/.my/team-a/s3%253A%252F%252Fbucket", "/v1/algo/x", "/v1/data/.my/team-a/%zz"]
        for target in inside { #expect(Self.staysInsideTeamA(target) == [], "\(target)") }
        for target in outside { #expect(Self.staysInsideTeamA(target) != [], "\(target)") }
        #expect(Self.staysInsideTeamA("/v1/data/.my", name: "team-a") == [])
        #expect(Self.staysInsideTeamA("/v1/data/.my/team-a", name: "team-b") == [])
        #expect(Self.staysInsideTeamA("/v1/data/.my", name: "team-b") != [])
        for name in ["/team-b", "%2fteam-b", "\\team-b", "..", "../team-b", "x/../../team-b", "..\\x", "\u{FF0E}\u{FF0E}", ".. ", "%2e%2e", "..;"] {
            #expect(Self.staysInsideTeamA("/v1/data/.my/team-a", name: name) != [], "\(name)")
        }
    }

    @Test func nothingOutsideTheTeamsPrefixesReachesTheUpstream() async throws {
        let (seed, count) = SplitMix64.run("PATH", seed: 0x616C_676F_6761_7465)
        let cases = Self.generate(count: count, seed: seed)
        try await RecordingUpstream.run { recorder, h in
            var statuses: [Int: Int] = [:]
            var client = KeepAliveClient(port: h.gatewayPort)
            for item in cases {
                let before = recorder.count
                guard let response = try await client.exchange(try Self.request(item)) else {
                    Issue.record("seed \(seed): no answer to \(item)")
                    continue
                }
                let status = Int(response.statusLine.split(separator: " ")[1]) ?? 0
                statuses[status, default: 0] += 1
                #expect([200, 400, 403].contains(status), "seed \(seed): \(item) -> \(response.statusLine) \(response.body)")
                if status != 200 { #expect(response.body.hasPrefix(#"{"error":{"#), "seed \(seed): \(item) -> \(response.body)") }
                let reached = recorder.since(before)
                #expect(reached.count == (status == 200 ? 1 : 0), "seed \(seed): \(item) -> \(status), \(reached.count) upstream requests")
                for upstream in reached {
                    let name = item.method == "POST" ? (JSON.object(ByteBuffer(string: upstream.body))?["name"] as? String) : nil
                    #expect(item.method != "POST" || name != nil, "seed \(seed): \(item) reached the upstream without its name")
                    let outside = Self.staysInsideTeamA(upstream.target, name: name)
                    #expect(outside == [], "seed \(seed): \(item) reached the upstream as \(upstream.method) \(upstream.target) \(upstream.body), read outside team-a as \(outside)")
                }
            }
            await client.close()
            // The generator must reach both sides of the check, or the property says little.
            let total = cases.count
            #expect(statuses[200, default: 0] * 5 >= total, "forwarded: \(statuses)")
            #expect((statuses[400, default: 0] + statuses[403, default: 0]) * 5 >= total, "refused: \(statuses)")
            print("DataPathPropertyTests: seed \(seed), \(total) requests, statuses \(statuses.sorted { $0.key < $1.key })")
        }
    }
}
