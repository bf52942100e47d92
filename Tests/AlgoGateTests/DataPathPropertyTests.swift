@testable import AlgoGate
import AlgoTestSupport
import Foundation
import Hummingbird
import Logging
import Synchronization
import Testing

/// Data prefixes against generated paths: thousands of requests built from the tricks a path can
/// hide a climb in (encoded dots and slashes, backslashes, double encoding, `;` parameters,
/// fullwidth forms, connector spellings, directory names in POST bodies), sent byte for byte to a
/// live gateway as team-a (`data://.my/team-a/`, `s3://bucket/team-a/`), in front of an upstream
/// that records the exact request target it receives.
///
/// The property: whatever reached the upstream lies under one of team-a's prefixes however a
/// server reads it, both strictly (one percent-decoding, `.` and `..` resolved) and laxly
/// (decoding until nothing changes, Unicode compatibility folding, backslashes as slashes,
/// segments cut at `;`, names of dots and spaces as `..`). And the gateway answers each request
/// with a forward (200) or a refusal (400, 403), never with an error of its own.
///
/// The generator is seeded, so a failure names the seed and the request and comes back the same;
/// `ALGOGATE_PATH_CASES` runs more cases (and `ALGOGATE_PATH_SEED` another seed) locally.
@Suite struct DataPathPropertyTests {
    /// What the in-test upstream received: method, raw request target, body.
    struct Received: Sendable { let method: String; let target: String; let body: String }

    final class Recorder: Sendable {
        let received = Mutex<[Received]>([])
    }

    struct RecordingResponder: HTTPResponder {
        typealias Context = BasicRequestContext
        let recorder: Recorder
        func respond(to request: Request, context: Context) async throws -> Response {
            let body = String(buffer: try await request.body.collect(upTo: 1 << 20))
            recorder.received.withLock { $0.append(Received(method: request.method.rawValue, target: request.head.path ?? "", body: body)) }
            return Response(status: .ok, headers: [.contentType: "application/json"], body: .init(byteBuffer: ByteBuffer(string: "{}")))
        }
    }

    /// SplitMix64: a small seeded generator, so each seed gives the same cases everywhere.
    struct SeededGenerator: RandomNumberGenerator {
        var state: UInt64
        mutating func next() -> UInt64 {
            state &+= 0x9E37_79B9_7F4A_7C15
            var z = state
            z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
            z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
            return z ^ (z >> 31)
        }
    }

    static let routes = ["/v1/data/", "/v1/data/", "/v1/data/", "/v1/connector/data/", "/v1/connector/s3/", "/v1/data/s3://",
                         "/v1/data/data://", "/v1/connector/S3/", "/v1/connector/dropbox/", "/v1/data/s3:/", "/v1/data/s3:%2f%2f",
                         "/v1/connector/data+x/", "/v1/data/S3%3a//", "/v1/data/DATA://", "/v1/connector/s3%2f..%2fdata/"]
    static let starts = [".my/team-a/", ".my/team-a/", "bucket/team-a/", ".my/team-a", ".my/", "bucket/", ""]
    static let plainTokens = [".my", "team-a", "team-a", "team-b", "team-a-evil", "bucket", "x.txt", "sub", "..", ".", "a%20b", "%41"]
    static let trickyTokens = ["%2e", "%2E", "%2e%2e",
                         ".%2e", "%2e.", "%252e%252e", "%25", "%2f", "%5c", "%3b", ";", "..;", "..;x", "x;..", "%00", "%0a", "%20",
                         "..%20", "...", ".%20.", "%EF%BC%8E%EF%BC%8E", "%EF%BC%8F", "%EF%BC%85%32%65", "%EF%BC%BC", "%c0%ae%c0%ae",
                         "data:", "s3:", "s3:%2f%2fbucket", "%3a%2f%2f", "~", "team-a%2f..%2f..%2fteam-b", "x%3f", "%23frag"]
    static let separators = ["/", "/", "/", "/", "/", "/", "/", "/", "//", "%2f", "%2F", "%5c", "\\", "/./", "/../", "%2f..%2f"]
    static let names = ["team-a", "team-b", "x", "..", ".", "%2e%2e", "a/b", "..\\team-b", "../team-b", "．．", "x;y", "..;", ". .",
                        "team-a/../team-b", "%2fteam-b", ""]

    struct Case: Sendable, CustomStringConvertible {
        let method: String
        let target: String
        let name: String?
        var description: String { "\(method) \(target)" + (name.map { " {\"name\": \($0.debugDescription)}" } ?? "") }
    }

    static func generate(count: Int, seed: UInt64) -> [Case] {
        var random = SeededGenerator(state: seed)
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

    enum Reading { case strict, lax }

    /// The data location `target` (and a directory `name` created in it) names when read `how`,
    /// as connector and segments; nil when that reading climbs above its root or cannot be decoded.
    static func location(of target: String, name: String?, _ how: Reading) -> (connector: String, segments: [String])? {
        var path = String(target.prefix { $0 != "?" })
        var created = name
        switch how {
        case .strict:
            guard let decoded = path.removingPercentEncoding else { return nil }
            path = decoded
        case .lax:
            for _ in 0..<4 {
                guard let decoded = path.removingPercentEncoding, decoded != path else { break }
                path = decoded
            }
            path = path.precomposedStringWithCompatibilityMapping.replacingOccurrences(of: "\\", with: "/")
            created = name.map { name in
                var name = name
                for _ in 0..<4 { guard let decoded = name.removingPercentEncoding, decoded != name else { break }; name = decoded }
                return name.precomposedStringWithCompatibilityMapping.replacingOccurrences(of: "\\", with: "/")
            }
        }
        var connector = "data"
        var rest: Substring
        if let tail = path.dropPrefix("/v1/connector/") {
            connector = String(tail.prefix { $0 != "/" })
            rest = tail.dropFirst(connector.count)
        } else if let tail = path.dropPrefix("/v1/data/") {
            rest = tail[...]
            if let scheme = rest.range(of: "://") {
                connector = String(rest[..<scheme.lowerBound])
                rest = rest[scheme.upperBound...]
            }
        } else {
            return nil
        }
        var segments: [String] = []
        let all = rest.split(separator: "/").map(String.init) + (created.map { [$0] } ?? [])
        for raw in all {
            var segment = raw
            if how == .lax {
                segment = String(segment.prefix { $0 != ";" })
                if !segment.isEmpty, segment.allSatisfy({ $0 == "." || $0 == " " }) {
                    segment = segment.count(where: { $0 == "." }) >= 2 ? ".." : "."
                }
                if created != nil, raw == all.last, raw.contains("/") { return nil }  // a name that is a path
            }
            switch segment {
            case "", ".": continue
            case "..":
                guard !segments.isEmpty else { return nil }
                segments.removeLast()
            default: segments.append(segment)
            }
        }
        return (how == .lax ? connector.lowercased() : connector, segments)
    }

    static func isTeamA(_ location: (connector: String, segments: [String])?) -> Bool {
        guard let location else { return false }
        return (location.connector == "data" && location.segments.starts(with: [".my", "team-a"]))
            || (location.connector == "s3" && location.segments.starts(with: ["bucket", "team-a"]))
    }

    /// The oracle itself, on paths whose reading is known: it must tell in from out, or the
    /// property below would hold vacuously.
    @Test func theOracleTellsInFromOut() {
        let inside = ["/v1/data/.my/team-a/x", "/v1/data/.my/team-a", "/v1/connector/s3/bucket/team-a/k", "/v1/data/s3://bucket/team-a/k",
                      "/v1/data/.my/team-b/../team-a/x"]
        let outside = ["/v1/data/.my/team-b/x", "/v1/data/.my/team-a/%2e%2e/team-b", "/v1/data/.my/team-a/..%252f..%252fteam-b",
                       "/v1/data/.my/team-a/..;/team-b", "/v1/data/.my/team-a/%EF%BC%8E%EF%BC%8E/team-b", "/v1/data/.my/team-a/..%5cteam-b",
                       "/v1/data/.my/team-a/.. /team-b", "/v1/connector/S3/bucket/team-a/k", "/v1/data/.my/team-a-evil/x",
                       "/v1/data/dropbox://.my/team-a/x", "/v1/data/.my/../../x"]
        for target in inside { #expect(Self.isTeamA(Self.location(of: target, name: nil, .strict)) && Self.isTeamA(Self.location(of: target, name: nil, .lax)), "\(target)") }
        for target in outside {
            #expect(!(Self.isTeamA(Self.location(of: target, name: nil, .strict)) && Self.isTeamA(Self.location(of: target, name: nil, .lax))), "\(target)")
        }
        #expect(Self.isTeamA(Self.location(of: "/v1/data/.my", name: "team-a", .lax)))
        #expect(Self.isTeamA(Self.location(of: "/v1/data/.my/team-a", name: "team-b", .lax)))
        #expect(!Self.isTeamA(Self.location(of: "/v1/data/.my", name: "team-b", .lax)))
        for name in ["..", "../team-b", "..\\x", "．．", ".. "] {
            #expect(!Self.isTeamA(Self.location(of: "/v1/data/.my/team-a", name: name, .lax)), "\(name)")
        }
    }

    @Test func nothingOutsideTheTeamsPrefixesReachesTheUpstream() async throws {
        let environment = ProcessInfo.processInfo.environment
        let seed = environment["ALGOGATE_PATH_SEED"].flatMap(UInt64.init) ?? 0x616C_676F_6761_7465
        let cases = Self.generate(count: environment["ALGOGATE_PATH_CASES"].flatMap(Int.init) ?? 2_000, seed: seed)
        let recorder = Recorder()
        try await LiveServer.run({ onRunning in
            Application(responder: RecordingResponder(recorder: recorder), configuration: .init(address: .hostname("127.0.0.1", port: 0)),
                        onServerRunning: onRunning, logger: { var logger = Logger(label: "recording-upstream"); logger.logLevel = .warning; return logger }())
        }) { port in
            try await GatewayHarness.run(upstreamURL: { _ in "http://127.0.0.1:\(port)" }) { h in
                var statuses: [Int: Int] = [:]
                var connection: RawConnection?
                var answered = 0
                for item in cases {
                    if connection == nil || answered == 20 {
                        await connection?.close()
                        connection = try await RawConnection.connect(port: h.gatewayPort)
                        answered = 0
                    }
                    let before = recorder.received.withLock { $0.count }
                    try await connection!.send(try Self.request(item))
                    var response: RawResponse?
                    let deadline = ContinuousClock.now + .seconds(10)
                    while response == nil, ContinuousClock.now < deadline {
                        let responses = RawResponse.parse(connection!.text)
                        if responses.count > answered { response = responses[answered] }
                        else if connection!.closedAt != nil { break }
                        else { try await Task.sleep(for: .milliseconds(1)) }
                    }
                    guard let response else {
                        Issue.record("seed \(seed): no answer to \(item)")
                        connection = nil
                        continue
                    }
                    answered += 1
                    let status = Int(response.statusLine.split(separator: " ")[1]) ?? 0
                    statuses[status, default: 0] += 1
                    #expect([200, 400, 403].contains(status), "seed \(seed): \(item) -> \(response.statusLine) \(response.body)")
                    if status != 200 { #expect(response.body.hasPrefix(#"{"error":{"#), "seed \(seed): \(item) -> \(response.body)") }
                    let reached = recorder.received.withLock { Array($0[before...]) }
                    #expect(reached.count == (status == 200 ? 1 : 0), "seed \(seed): \(item) -> \(status), \(reached.count) upstream requests")
                    for upstream in reached {
                        let name = item.method == "POST" ? (JSON.object(ByteBuffer(string: upstream.body))?["name"] as? String) : nil
                        #expect(item.method != "POST" || name != nil, "seed \(seed): \(item) reached the upstream without its name")
                        for how in [Reading.strict, .lax] {
                            #expect(Self.isTeamA(Self.location(of: upstream.target, name: name, how)),
                                    "seed \(seed): \(item) reached the upstream as \(upstream.method) \(upstream.target) \(upstream.body), outside team-a read \(how)")
                        }
                    }
                    if connection!.closedAt != nil { connection = nil }
                }
                await connection?.close()
                // The generator must reach both sides of the check, or the property says little.
                let total = cases.count
                #expect(statuses[200, default: 0] * 5 >= total, "forwarded: \(statuses)")
                #expect((statuses[400, default: 0] + statuses[403, default: 0]) * 5 >= total, "refused: \(statuses)")
                print("DataPathPropertyTests: seed \(seed), \(total) requests, statuses \(statuses.sorted { $0.key < $1.key })")
            }
        }
    }
}
