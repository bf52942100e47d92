@testable import AlgoGate
import AlgoTestSupport
import Foundation
import Testing

/// A HEAD's answer has no body: the gateway's refusals carry their message in `X-Error-Message`
/// too, where Algorithmia puts it and the official clients read it.
@Suite struct HeadRefusalTests {
    /// The gateway's refusal of `path` both ways: GET's envelope, HEAD's field.
    static func refusal(_ h: GatewayHarness, _ path: String, headers: [(String, String)])
        async throws -> (get: TestHTTP.Reply, head: TestHTTP.Reply) {
        (try await h.gateway.send(.GET, path, headers: headers), try await h.gateway.send(.HEAD, path, headers: headers))
    }

    @Test func theGatewaysOwnRefusalsOfAHeadCarryTheirMessageInAField() async throws {
        try await GatewayHarness.run { h in
            try await DataPrefixTests.seed(h)
            // Each message as the gateway writes it for a request of that method.
            let cases: [(path: String, headers: [(String, String)], status: Int, message: @Sendable (String) -> String)] = [
                ("/v1/data/.my/team-b/x.txt", simple(Keys.teamA), 403,
                 { _ in "client 'team-a' may not access data://.my/team-b/x.txt: outside its data prefixes (data://.my/team-a/, s3://bucket/team-a/)" }),
                ("/v1/data/.my/team-a/x.txt", simple(Keys.teamB), 403,
                 { "client 'team-b' lacks the 'data:read' scope for \($0) data requests" }),
                ("/v1/data/.my/team-a/x.txt", simple("not-a-key"), 401, { _ in "authorization failed: unknown algogate key" }),
                ("/v1/data/.my/team-a/x.txt", [], 401,
                 { _ in "authorization required: send your algogate key as 'Authorization: Simple KEY'" }),
            ]
            for (path, headers, status, message) in cases {
                let (get, head) = try await Self.refusal(h, path, headers: headers)
                #expect(get.status == status && head.status == status, "\(path): \(get.status) \(head.status)")
                #expect(envelope(get).message == message("GET"), "\(path): \(get.text)")
                #expect(get.header("X-Error-Message") == nil, "a GET's message is in its body only")
                #expect(head.header("X-Error-Message") == message("HEAD"), "\(path)")
                #expect(head.bytes.isEmpty)
                #expect(head.header("Content-Type") == "application/json")
            }
            #expect(h.simulator.stats.snapshot.requestsByClass["data"] == 4)  // only the seeding calls
        }
    }

    @Test func anUpstreamRefusalOfAHeadPassesThroughWithItsOwnField() async throws {
        try await GatewayHarness.run { h in
            try await DataPrefixTests.seed(h)
            let direct = try await h.sim.send(.HEAD, "/v1/data/.my/team-a/absent.txt", headers: simple(Keys.upstream))
            let through = try await h.gateway.send(.HEAD, "/v1/data/.my/team-a/absent.txt", headers: simple(Keys.teamA))
            #expect(direct.status == 404 && through.status == 404)
            let message = try #require(direct.header("X-Error-Message"))
            #expect(!message.isEmpty)
            #expect(through.header("X-Error-Message") == message)
            #expect(through.headers["X-Error-Message"].count == 1)
        }
    }

    @Test func aMessageBecomesAFieldOfVisibleASCIIAtMost2KiB() async throws {
        try await GatewayHarness.run { h in
            try await DataPrefixTests.seed(h)
            // A path in another script, and one long enough to be cut.
            let accented = "/v1/data/.my/team-b/%C3%A9t%C3%A9.txt"
            let (get, head) = try await Self.refusal(h, accented, headers: simple(Keys.teamA))
            let message = try #require(envelope(get).message)
            #expect(message == "client 'team-a' may not access data://.my/team-b/été.txt: outside its data prefixes (data://.my/team-a/, s3://bucket/team-a/)")
            #expect(head.header("X-Error-Message") == "client 'team-a' may not access data://.my/team-b/%C3%A9t%C3%A9.txt: outside its data prefixes (data://.my/team-a/, s3://bucket/team-a/)")

            let long = "/v1/data/.my/team-b/" + String(repeating: "n", count: 3000)
            let cut = try await h.gateway.send(.HEAD, long, headers: simple(Keys.teamA))
            let field = try #require(cut.header("X-Error-Message"))
            #expect(field.utf8.count == GatewayError.maxFieldBytes)
            #expect(field == String("client 'team-a' may not access data://.my/team-b/\(String(repeating: "n", count: 3000))".prefix(GatewayError.maxFieldBytes - 3)) + "...")
        }
        #expect(GatewayError.fieldValue("a\r\nb\u{7F} é%") == "a%0D%0Ab%7F %C3%A9%")
        #expect(GatewayError.fieldValue(String(repeating: "é", count: 2000)).utf8.count <= GatewayError.maxFieldBytes)
    }
}
