@testable import AlgoGate
import AlgoTestSupport
import Foundation
import Testing

/// Header forwarding against generated requests: 1,000 requests, each with a random mix of
/// end-to-end fields (repeated ones included), hop-by-hop fields, fields its `Connection` names,
/// credentials, cookies, `Proxy-*` and what a load balancer adds, names in any case, sent byte
/// for byte to a live gateway in front of an upstream that records every field it receives.
///
/// The property: the upstream receives exactly one `Authorization`, the server key's; exactly
/// the client's end-to-end fields, with their values, in their order; and besides them only the
/// fields the gateway sets (`Accept-Encoding`, `Via` after the client's own, `X-Request-ID`,
/// and the message's own framing and host).
@Suite struct HeaderPropertyTests {
    /// Fields that cross: (name, values to pick from).
    static let endToEnd: [(String, [String])] = [
        ("X-Team-Trace", ["t-1", "a b c", "\"quoted\""]), ("User-Agent", ["algorithmia-python/2.0.5", "curl/8"]),
        ("Accept", ["application/json", "*/*"]), ("traceparent", ["00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"]),
        ("Accept-Language", ["en", "de;q=0.5"]), ("X-Custom", ["1", "2", ""]), ("If-None-Match", ["\"abc\""]),
        ("Via", ["1.1 edge-proxy", "1.0 lb"]),
    ]
    /// Fields that never cross, whatever their case.
    static let neverCross: [(String, [String])] = [
        ("Keep-Alive", ["timeout=5"]), ("Proxy-Connection", ["keep-alive"]), ("TE", ["trailers"]), ("Trailer", ["X-Sum"]),
        ("Cookie", ["session=abc"]), ("Proxy-Authorization", ["Basic eDp5"]), ("Proxy-Anything", ["1"]),
        ("X-Forwarded-For", ["10.20.30.40"]), ("X-Forwarded-Host", ["algogate.internal"]), ("X-Forwarded-Proto", ["https"]),
        ("X-Forwarded-Port", ["443"]), ("Forwarded", ["for=10.20.30.40"]), ("X-Real-IP", ["10.20.30.40"]),
        ("Accept-Encoding", ["br", "gzip, deflate"]),
    ]
    /// Names a `Connection` field may list besides `X-Hop` (a field sent only with one that names
    /// it): each then stays on the client's connection.
    static let connectionTokens = ["keep-alive", "x-team-trace", "X-Custom", "Via", "User-Agent", "cookie"]

    static func randomCase(_ name: String, _ random: inout SplitMix64) -> String {
        String(name.map { Bool.random(using: &random) ? Character($0.uppercased()) : Character($0.lowercased()) })
    }

    struct Case: Sendable, CustomStringConvertible {
        let fields: [[String]]
        let algo: Bool
        let requestID: String?
        var description: String { (algo ? "POST algo " : "GET data ") + fields.map { "\($0[0]): \($0[1])" }.joined(separator: " | ") }
    }

    static func generate(count: Int, seed: UInt64) -> [Case] {
        var random = SplitMix64(seed: seed)
        return (0..<count).map { _ in
            var fields: [[String]] = []
            for _ in 0..<Int.random(in: 0...9, using: &random) {
                let (name, values) = Int.random(in: 0..<3, using: &random) == 0
                    ? neverCross.randomElement(using: &random)! : endToEnd.randomElement(using: &random)!
                fields.append([randomCase(name, &random), values.randomElement(using: &random)!])
            }
            if Bool.random(using: &random) {
                var tokens = (0..<Int.random(in: 0...3, using: &random)).map { _ in randomCase(connectionTokens.randomElement(using: &random)!, &random) }
                tokens.insert(randomCase("X-Hop", &random), at: Int.random(in: 0...tokens.count, using: &random))
                fields.insert(["Connection", tokens.joined(separator: Bool.random(using: &random) ? ", " : ",")], at: Int.random(in: 0...fields.count, using: &random))
                fields.append(["X-Hop", "secret"])
            }
            let requestID = [nil, "req-\(Int.random(in: 1...1_000_000, using: &random))", "not valid!"].randomElement(using: &random)!
            return Case(fields: fields, algo: Bool.random(using: &random), requestID: requestID)
        }
    }

    static func request(_ item: Case) -> String {
        var head = item.algo ? "POST /v1/algo/team-a/Echo HTTP/1.1\r\n" : "GET /v1/data/.my/team-a/x.txt HTTP/1.1\r\n"
        head += "Host: gateway\r\nAuthorization: Simple \(Keys.teamA)\r\n"
        for field in item.fields { head += "\(field[0]): \(field[1])\r\n" }
        if let id = item.requestID { head += "X-Request-ID: \(id)\r\n" }
        if item.algo { head += "Content-Type: text/plain\r\nContent-Length: 3\r\n" }
        return head + "\r\n" + (item.algo ? "HAL" : "")
    }

    /// The fields the upstream should receive of the client's, in order.
    static func expectedEndToEnd(_ item: Case) -> [[String]] {
        let named = Set(item.fields.filter { $0[0].lowercased() == "connection" }.flatMap { $0[1].split(separator: ",") }
            .map { $0.trimmingCharacters(in: .whitespaces).lowercased() })
        let dropped = Set(neverCross.map { $0.0.lowercased() } + ["connection"])
        return item.fields.filter { !dropped.contains($0[0].lowercased()) && !named.contains($0[0].lowercased()) }
            .map { [$0[0].lowercased(), $0[1]] }
    }

    @Test func theUpstreamGetsTheServerKeyAndExactlyTheEndToEndFields() async throws {
        let (seed, count) = SplitMix64.run("HEADER")
        let cases = Self.generate(count: count, seed: seed)
        try await RecordingUpstream.run { recorder, h in
            var client = KeepAliveClient(port: h.gatewayPort)
            let gatewaySets: Set<String> = ["authorization", "accept-encoding", "via", "x-request-id", "host", "content-length", "content-type"]
            for item in cases {
                let before = recorder.count
                guard let response = try await client.exchange(Self.request(item)) else {
                    Issue.record("seed \(seed): no answer to \(item)")
                    continue
                }
                #expect(response.statusLine.hasPrefix("HTTP/1.1 200"), "seed \(seed): \(item) -> \(response.statusLine) \(response.body)")
                let reached = recorder.since(before)
                guard reached.count == 1, let upstream = reached.first else {
                    Issue.record("seed \(seed): \(item) reached the upstream \(reached.count) times")
                    continue
                }
                let fields = upstream.headers.map { [$0[0].lowercased(), $0[1]] }
                #expect(fields.filter { $0[0] == "authorization" }.map { $0[1] } == ["Simple \(Keys.upstream)"], "seed \(seed): \(item)")
                let clientFields = fields.filter { !gatewaySets.contains($0[0]) }
                #expect(clientFields == Self.expectedEndToEnd(item).filter { $0[0] != "via" },
                        "seed \(seed): \(item)\nupstream got \(upstream.headers)")
                let via = Self.expectedEndToEnd(item).filter { $0[0] == "via" }.map { $0[1] } + ["1.1 algogate"]
                #expect(fields.filter { $0[0] == "via" }.map { $0[1] } == via, "seed \(seed): \(item)")
                let id = fields.filter { $0[0] == "x-request-id" }.map { $0[1] }
                #expect(id.count == 1 && (item.requestID == "not valid!" || item.requestID == nil || id == [item.requestID!]), "seed \(seed): \(item) -> \(id)")
                #expect(response.headers["x-request-id"] == id.first)
            }
            await client.close()
        }
    }

    /// Answer fields that cross back to the client, and those that never do.
    static let answerEndToEnd: [(String, [String])] = [
        ("X-Upstream-Trace", ["u-1", "a b"]), ("X-Build", ["42"]), ("Warning", ["199 - \"note\""]), ("X-Custom", ["1", "2"]),
    ]
    static let answerNeverCross: [(String, [String])] = [
        ("Set-Cookie", ["upstream-session=abc; HttpOnly"]), ("Keep-Alive", ["timeout=5"]), ("Proxy-Connection", ["keep-alive"]),
        ("Trailer", ["X-Sum"]), ("Server", ["upstream/1.0"]),
    ]

    /// The same the other way: 500 answers with random mixes of fields, and the client gets the
    /// end-to-end ones as sent, in order, and none of the others (`Set-Cookie`: the upstream's
    /// session is the account's, not a team's).
    @Test func theClientGetsExactlyTheAnswersEndToEndFields() async throws {
        var random = SplitMix64(seed: 2026_12_05)
        try await RecordingUpstream.run { _, h in
            for _ in 0..<500 {
                var fields: [[String]] = []
                for _ in 0..<Int.random(in: 0...7, using: &random) {
                    let (name, values) = Int.random(in: 0..<3, using: &random) == 0
                        ? Self.answerNeverCross.randomElement(using: &random)! : Self.answerEndToEnd.randomElement(using: &random)!
                    fields.append([Self.randomCase(name, &random), values.randomElement(using: &random)!])
                }
                if Bool.random(using: &random) {
                    fields.insert(["Connection", Self.randomCase("X-Hop-Answer", &random)], at: Int.random(in: 0...fields.count, using: &random))
                    fields.append([Self.randomCase("X-Hop-Answer", &random), "secret"])
                }
                let algo = Bool.random(using: &random)
                let asked = String(decoding: try JSONSerialization.data(withJSONObject: fields), as: UTF8.self)
                let reply = algo
                    ? try await h.gateway.send(.POST, "/v1/algo/team-a/Echo", headers: simple(Keys.teamA) + textType + [("X-Test-Answer-Fields", asked)], text: "HAL")
                    : try await h.gateway.send(.GET, "/v1/data/.my/team-a/x.txt", headers: simple(Keys.teamA) + [("X-Test-Answer-Fields", asked)])
                #expect(reply.status == 200, "\(fields)")
                let dropped = Set(Self.answerNeverCross.map { $0.0.lowercased() } + ["connection", "x-hop-answer"])
                let expected = fields.filter { !dropped.contains($0[0].lowercased()) }.map { [$0[0].lowercased(), $0[1]] }
                let crossing = Set(Self.answerEndToEnd.map { $0.0.lowercased() } + ["x-hop-answer"])
                let got = reply.headers.filter { crossing.contains($0.0.lowercased()) }.map { [$0.0.lowercased(), $0.1] }
                #expect(got == expected, "\(algo ? "algo" : "data") answer \(fields) reached the client as \(reply.headers)")
                #expect(reply.header("Set-Cookie") == nil && reply.header("Keep-Alive") == nil && reply.header("Proxy-Connection") == nil
                        && reply.header("Trailer") == nil && reply.header("Server") != "upstream/1.0", "\(reply.headers)")
            }
        }
    }
}
