@testable import AlgoGate
import AlgoTestSupport
import Foundation
import Testing

/// `clients[].async_calls`: an asynchronous call (`output=void`) is answered by the upstream at
/// once and its algorithm runs on after the gateway has given its slot back, outside the client's
/// share of the account's concurrency. Such calls are counted by client, and a client configured
/// with `async_calls: false` is refused them.
@Suite struct AsyncCallsTests {
    static let clients = """
        clients:
          - name: team-sync
            key_sha256: "\(ClientRegistry.hash(of: Keys.teamA))"
            scopes: [algo]
            async_calls: false
          - name: team-any
            key_sha256: "\(ClientRegistry.hash(of: Keys.teamB))"
            scopes: [algo]
        """

    static func post(_ h: GatewayHarness, _ path: String, key: String) async throws -> TestHTTP.Reply {
        try await h.gateway.send(.POST, path, headers: simple(key) + textType, text: "HAL")
    }

    @Test func aClientWithoutAsyncCallsIsRefusedThemAndMakesOrdinaryCalls() async throws {
        try await GatewayHarness.run(clientsYAML: Self.clients) { h in
            for path in ["/v1/algo/util/Echo?output=void", "/v1/algo/util/Echo/1.0.0?output=VOID", "/v1/algo/demo/Hello?timeout=20&output=Void"] {
                let refused = try await Self.post(h, path, key: Keys.teamA)
                #expect(refused.status == 403, "\(path)")
                #expect(refused.text == #"{"error":{"error_type":"PermissionDenied","message":"client 'team-sync' may not make asynchronous calls (output=void): the upstream runs such a call's algorithm after it has answered, outside the client's share of the account's concurrency; call without output=void"}}"#, "\(path)")
            }
            #expect(h.simulator.stats.snapshot.algoCalls.isEmpty)

            // An output given twice is the same 400 for every client, not read as either.
            let twice = try await Self.post(h, "/v1/algo/util/Echo?output=void&output=raw", key: Keys.teamA)
            #expect(twice.status == 400)
            #expect(twice.text == #"{"error":{"error_type":"InputError","message":"the query gives the output option more than once: give each of an algorithm call's options once"}}"#)

            let ordinary = try await Self.post(h, "/v1/algo/util/Echo?output=raw", key: Keys.teamA)
            #expect(ordinary.status == 200)
            #expect(ordinary.text == "HAL")
            #expect(h.simulator.stats.snapshot.algoCalls == ["util/Echo": 1])

            let me = try await h.gateway.send(.GET, "/_gateway/me", headers: simple(Keys.teamA))
            #expect(me.object["async_calls"] as? Bool == false)
            let metrics = try await h.gateway.send(.GET, "/metrics").text
            #expect(metricSample(metrics, #"algogate_async_calls_total{client="team-sync"}"#) == nil)
        }
    }

    @Test func otherClientsCallAsynchronouslyAndAreCounted() async throws {
        try await GatewayHarness.run(clientsYAML: Self.clients) { h in
            for _ in 0..<2 {
                let accepted = try await Self.post(h, "/v1/algo/util/Echo/1.0.0?output=void", key: Keys.teamB)
                #expect(accepted.status == 200)
                #expect(accepted.object["async"] as? String == "void")
                #expect((accepted.object["request_id"] as? String)?.hasPrefix("req-") == true)
                #expect(accepted.header("Cache-Status") == "algogate; fwd=uri-miss")
            }
            // An asynchronous call to an algorithm the upstream does not have is refused at once,
            // and not counted.
            let missing = try await Self.post(h, "/v1/algo/util/Nothing?output=void", key: Keys.teamB)
            #expect(missing.status == 404)
            #expect(h.simulator.stats.snapshot.algoCalls == ["util/Echo/1.0.0": 2, "util/Nothing": 1])

            let me = try await h.gateway.send(.GET, "/_gateway/me", headers: simple(Keys.teamB))
            #expect(me.object["async_calls"] as? Bool == true)
            let metrics = try await h.gateway.send(.GET, "/metrics").text
            #expect(metricSample(metrics, #"algogate_async_calls_total{client="team-any"}"#) == 2)
            // Each accepted call's log line says so; the refused one's does not.
            let lines = h.logs.all.filter { $0.contains("client=team-any") && $0.contains("path=/v1/algo/") }
            #expect(lines.count == 3)
            #expect(lines.filter { $0.contains(" async=accepted ") && $0.contains("status=200") }.count == 2, "\(lines)")
            #expect(lines.filter { $0.contains("async=") }.count == 2, "\(lines)")
        }
    }

    /// What the setting is for: the gateway holds an asynchronous call's slot only until the
    /// upstream has accepted it, so its runs go on beside the account's other calls, beyond
    /// `upstream.max_concurrency`, where the gateway cannot count them.
    @Test func asynchronousRunsGoOnOutsideTheGatewaysSlots() async throws {
        try await GatewayHarness.run(upstreamYAML: "max_concurrency: 1", clientsYAML: Self.clients) { h in
            for _ in 0..<3 {
                let accepted = try await h.gateway.send(.POST, "/v1/algo/test/Sleep/1.0.0?output=void", headers: simple(Keys.teamB) + jsonType, text: "60000")
                #expect(accepted.status == 200)
                #expect(accepted.object["async"] as? String == "void")
            }
            // Each run lasts a minute, far longer than the three calls take even on a loaded machine.
            #expect(h.simulator.stats.snapshot.peakAsyncRunning == 3)
            let metrics = try await h.gateway.send(.GET, "/metrics").text
            #expect(metricSample(metrics, "algogate_upstream_in_flight") == 0)
            #expect(metricSample(metrics, #"algogate_async_calls_total{client="team-any"}"#) == 3)
            // The one slot is free: an ordinary call is sent at once, beside the three runs.
            let ordinary = try await Self.post(h, "/v1/algo/util/Echo?output=raw", key: Keys.teamA)
            #expect(ordinary.status == 200 && ordinary.text == "HAL")
        }
    }

    @Test func keygenWritesTheSetting() async throws {
        let made = try await KeyRotationTests.keygen(["--name", "team-sync", "--scopes", "algo", "--no-async-calls"])
        #expect(made.entry.hasSuffix("    scopes: [algo]\n    async_calls: false\n"), "\(made.entry)")
        let loaded = try ConfigLoader.load(yaml: "upstream: {url: \"http://127.0.0.1:1\", key_env: K}\nclients:\n" + made.entry, environment: ["K": "upstream-key-0123"])
        #expect(try ClientRegistry(config: loaded.config).client(for: Secret(made.key))?.asyncCalls == false)
        let plain = try await KeyRotationTests.keygen(["--name", "team-any"])
        #expect(!plain.entry.contains("async_calls"))
    }
}
