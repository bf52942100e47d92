@testable import AlgoGate
import AlgoTestSupport
import Foundation
import Testing

/// Management and other `/v1` paths are forwarded as they came, so no server's reading of one may
/// land on another route than the one the gateway granted: generated paths (dot segments in every
/// spelling, encoded separators, path parameters, fullwidth forms) go byte for byte through a live
/// gateway to an upstream that records each request target, and every `LaxReading` of every
/// target it received must stay under `/v1/algorithms` (or the `/v1/{name}` it was granted as).
@Suite struct RoutePathPropertyTests {
    static let segments = ["demo", "Hello", "versions", "0.1.0", "data", ".my", "team-b", "algo", "connector", "x%20y", "a;b", "",
                           ".", "..", "%2e", "%2e%2e", "%2E.", ".%2E", "..%2f", "%2f..", "..%5c", "%5C", "..;", "..;x", "..%20", "%252e%252e",
                           "%EF%BC%8E%EF%BC%8E", "..%EF%BC%8F", ".%20.", "...", ".hidden",
                           "%CC%81", "x%D8%80", "x%D8%80%EF%BC%8F.."]

    /// A path under `/v1/algorithms` or `/v1/{name}`, of up to six segments.
    static func generate(_ random: inout SplitMix64) -> String {
        let root = Bool.random(using: &random) ? "/v1/algorithms" : "/v1/" + ["users", "organizations", "scms", "x"].randomElement(using: &random)!
        let count = Int.random(in: 0...6, using: &random)
        var path = root
        for _ in 0..<count {
            // Mostly plain names, so both sides of the check are reached.
            path += "/" + (Int.random(in: 0..<3, using: &random) == 0 ? segments[..<4].randomElement(using: &random)! : segments.randomElement(using: &random)!)
        }
        return path
    }

    @Test func noReadingOfAForwardedPathLeavesItsRoute() async throws {
        let (seed, count) = SplitMix64.run("ROUTE")
        var random = SplitMix64(seed: seed)
        try await RecordingUpstream.run { recorder, h in
            var client = KeepAliveClient(port: h.gatewayPort)
            var statuses: [Int: Int] = [:]
            for _ in 0..<count {
                let path = Self.generate(&random)
                let route = Array(path.split(separator: "/").prefix(2).map(String.init))
                let before = recorder.count
                // team-a has the manage scope, the admin key the admin scope (every other /v1 path).
                let key = route == ["v1", "algorithms"] ? Keys.teamA : Keys.admin
                guard let response = try await client.exchange("GET \(path) HTTP/1.1\r\nHost: x\r\nAuthorization: Simple \(key)\r\n\r\n") else {
                    Issue.record("seed \(seed): no answer to \(path)")
                    continue
                }
                let status = Int(response.statusLine.split(separator: " ")[1]) ?? 0
                statuses[status, default: 0] += 1
                #expect([200, 400].contains(status), "seed \(seed): \(path) -> \(response.statusLine) \(response.body)")
                let reached = recorder.since(before)
                #expect(reached.count == (status == 200 ? 1 : 0), "seed \(seed): \(path) -> \(status), reached the upstream \(reached.count) times")
                for target in reached.map(\.target) {
                    let forwarded = String(target.prefix { $0 != "?" })
                    for reading in LaxReading.allCases {
                        guard let resolved = reading.resolve(forwarded) else { continue }  // climbs above the root: an error there
                        #expect(resolved.starts(with: route), "seed \(seed): \(path), forwarded as \(forwarded), is \(resolved) to \(reading)")
                    }
                }
            }
            await client.close()
            // The generator must reach both sides of the check, or the property says little.
            #expect(statuses[200, default: 0] * 5 >= count && statuses[400, default: 0] * 5 >= count, "statuses \(statuses)")
            print("RoutePathPropertyTests: seed \(seed), \(count) paths, statuses \(statuses.sorted { $0.key < $1.key })")
        }
    }
}
