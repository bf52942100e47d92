import AlgoGate
import AlgoTestSupport
import Foundation
import Testing

/// Rotating a team's key: `keygen --previous-key-sha256` writes an entry that admits the new key
/// and the old one as the same client, and the old key's use is visible until it stops.
@Suite struct KeyRotationTests {
    /// Runs `algogate keygen` and returns the key it printed and its YAML client entry.
    static func keygen(_ arguments: [String]) async throws -> (key: String, entry: String) {
        let run = try await ChildProcess.run(arguments: ["keygen"] + arguments)
        #expect(run.termination == .exited(0))
        let lines = run.log.split(separator: "\n", omittingEmptySubsequences: false)
        let key = try #require(lines.first { $0.hasPrefix("#   ag_") }).dropFirst(4)
        let entry = lines.drop { !$0.hasPrefix("  - name:") }.joined(separator: "\n")
        return (String(key), entry)
    }

    @Test func bothKeysAreOneClientUntilThePreviousOneIsRemoved() async throws {
        let old = try await Self.keygen(["--name", "team-r", "--scopes", "algo"])
        #expect(old.entry.contains("key_sha256: \"\(ClientRegistry.hash(of: old.key))\""))
        #expect(!old.entry.contains("previous_key_sha256"))
        // 32 random bytes, in hex after `ag_`.
        #expect(old.key.hasPrefix("ag_") && ConfigLoader.isSHA256Hex(String(old.key.dropFirst(3))), "\(old.key.count) characters")
        let new = try await Self.keygen(["--name", "team-r", "--scopes", "algo", "--previous-key-sha256", ClientRegistry.hash(of: old.key)])
        #expect(new.key != old.key)
        #expect(new.entry.contains("key_sha256: \"\(ClientRegistry.hash(of: new.key))\""))
        #expect(new.entry.contains("previous_key_sha256: \"\(ClientRegistry.hash(of: old.key))\""))

        // One minute window of 2 requests, shared by both keys: they are one client. The operator's
        // key rotates the same way. The clock stands still: a real minute boundary between the calls
        // would open a new window and admit the third.
        let clock = TestClock()
        let oldAdminKey = "old-admin-\(UUID().uuidString)"
        let admin = #"admin: {key_sha256: "\#(ClientRegistry.hash(of: Keys.admin))", previous_key_sha256: "\#(ClientRegistry.hash(of: oldAdminKey))"}"#
        try await GatewayHarness.run(extraYAML: "quota: {requests_per_minute: 2}", now: { clock.now }, clientsYAML: admin + "\nclients:\n" + new.entry) { h in
            let viaNew = try await h.gateway.send(.POST, "/v1/algo/demo/Hello/0.1.0", headers: simple(new.key) + textType, text: "new")
            #expect(viaNew.status == 200)
            #expect(viaNew.object["result"] as? String == "Hello new")
            let viaOld = try await h.gateway.send(.POST, "/v1/algo/demo/Hello/0.1.0", headers: simple(old.key) + textType, text: "old")
            #expect(viaOld.status == 200)
            #expect(viaOld.object["result"] as? String == "Hello old")
            let third = try await h.gateway.send(.POST, "/v1/algo/demo/Hello/0.1.0", headers: simple(old.key) + textType, text: "old")
            #expect(third.status == 429)
            #expect(envelope(third).message?.hasPrefix("client 'team-r' is over its requests_per_minute quota (2); retry in ") == true)

            // A team can ask which of its keys it is using.
            let meOld = try await h.gateway.send(.GET, "/_gateway/me", headers: simple(old.key))
            #expect(meOld.object["name"] as? String == "team-r")
            #expect(meOld.object["key"] as? String == "previous")
            let meNew = try await h.gateway.send(.GET, "/_gateway/me", headers: simple(new.key))
            #expect(meNew.object["key"] as? String == "current")

            for key in [Keys.admin, oldAdminKey] {
                #expect(try await h.gateway.send(.GET, "/_admin/usage", headers: simple(key)).status == 200)
            }

            // The operator sees the old key still in use: counted per client, and marked in the log.
            #expect(try await eventually {
                let text = try await h.gateway.send(.GET, "/metrics").text
                return text.contains(#"algogate_previous_key_requests_total{client="team-r"} 3"#)
                    && text.contains(#"algogate_previous_key_requests_total{client="admin"} 1"#)
            }, "the old keys' requests are counted")
            let requestLines = h.logs.all.filter { $0.contains("info request") && $0.contains("client=team-r") }
            #expect(requestLines.count == 5)
            #expect(requestLines.filter { $0.contains(" key=previous") }.count == 3)
            for line in h.logs.all {
                #expect(!line.contains(old.key) && !line.contains(new.key) && !line.contains(oldAdminKey), "a log line holds a key")
            }
        }

        // With the previous line removed, the old key is refused and the new one still admitted.
        let rotated = try ConfigLoader.load(yaml: """
            upstream: {url: "http://127.0.0.1:1", key_env: K}
            clients:
            \(new.entry.split(separator: "\n").filter { !$0.contains("previous_key_sha256") }.joined(separator: "\n"))
            """, environment: ["K": "upstream-key-0123"])
        let registry = try ClientRegistry(config: rotated.config)
        #expect(registry.client(for: Secret(old.key)) == nil)
        #expect(registry.client(for: Secret(new.key))?.name == "team-r")
        #expect(registry.client(for: Secret(new.key))?.viaPreviousKey == false)
    }

    @Test func aPreviousKeyMustBeAFreshHash() {
        let a = String(repeating: "a", count: 64), b = String(repeating: "b", count: 64)
        let cases: [(String, String)] = [
            ("clients: [{name: x, key_sha256: \"\(a)\", previous_key_sha256: \"\(a)\", scopes: [algo]}]",
             "clients[0].previous_key_sha256: the same key hash is used twice"),
            ("clients: [{name: x, key_sha256: \"\(a)\", scopes: [algo]}, {name: y, key_sha256: \"\(b)\", previous_key_sha256: \"\(a)\", scopes: [algo]}]",
             "clients[1].previous_key_sha256: the same key hash is used twice"),
            ("admin: {key_sha256: \"\(b)\", previous_key_sha256: \"\(a)\"}\nclients: [{name: x, key_sha256: \"\(a)\", scopes: [algo]}]",
             "clients[0].key_sha256: the same key hash is used twice"),
            ("clients: [{name: x, key_sha256: \"\(a)\", previous_key_sha256: \"old\", scopes: [algo]}]",
             "clients[0].previous_key_sha256: must be 64 lowercase hex digits (sha256sum of the key)"),
        ]
        for (clients, expected) in cases {
            #expect(ConfigTests.refusal(ConfigTests.yaml(clients))?.description == expected, "\(expected)")
        }
    }

    @Test func checkConfigNamesTheRotationsUnderWay() async throws {
        try await withTemporaryDirectory("rotation") { directory in
            let file = directory.appendingPathComponent("rotating.yaml")
            try ConfigTests.yaml("""
                admin: {key_sha256: "\(String(repeating: "c", count: 64))", previous_key_sha256: "\(String(repeating: "d", count: 64))"}
                clients: [{name: x, key_sha256: "\(String(repeating: "a", count: 64))", previous_key_sha256: "\(String(repeating: "b", count: 64))", scopes: [algo]},
                          {name: y, key_sha256: "\(String(repeating: "e", count: 64))", scopes: [algo]}]
                """).write(to: file, atomically: true, encoding: .utf8)
            let check = try await ChildProcess.run(arguments: ["check-config", "--config", file.path], environment: ["UP_KEY": "upstream-key-0123"])
            #expect(check.termination == .exited(0))
            #expect(check.log.contains("key rotation under way (previous_key_sha256 still accepted) for: x, admin\n"))
        }
    }

    /// Rotating the account's own key: the new key written to `upstream.key_file` (a mounted
    /// Secret, say) and a reload (SIGHUP) put it in the next upstream request, with no restart and
    /// no request refused for the change. The simulator holds one key, so the test rotates to a
    /// key it refuses (its 401 proves the gateway sent the new one) and back.
    @Test func theUpstreamKeyInKeyFileRotatesOnReload() async throws {
        let next = "rotated-\(UUID().uuidString)"
        let pair = try await ProcessHarness { simPort, gatewayPort, work in
            try? (Keys.upstream + "\n").write(to: work.appendingPathComponent("upstream.key"), atomically: true, encoding: .utf8)
            return ProcessHarness.standardYAML(simPort: simPort, gatewayPort: gatewayPort, work: work)
                .replacingOccurrences(of: "key_env: \(ProcessHarness.keyVariable)", with: "key_file: \"\(work.appendingPathComponent("upstream.key").path)\"")
        }
        defer { pair.stop() }
        let http = TestHTTP(port: pair.gatewayPort), sim = TestHTTP(port: pair.simPort)
        func call() async throws -> TestHTTP.Reply {
            try await http.send(.POST, "/v1/algo/demo/Hello", headers: simple(Keys.teamB) + textType, text: "HAL")
        }
        func rotate(to key: String, reloads: Int) async throws {
            try (key + "\n").write(to: pair.work.appendingPathComponent("upstream.key"), atomically: true, encoding: .utf8)
            pair.gateway.signal(SIGHUP)
            #expect(await eventually { pair.gateway.log.components(separatedBy: "configuration reloaded").count - 1 == reloads }, "reload \(reloads) not logged")
        }
        #expect(try await call().status == 200)

        try await rotate(to: next, reloads: 1)
        let refused = try await call()
        #expect(refused.status == 401)
        #expect(!refused.text.contains(next) && !refused.text.contains(Keys.upstream))
        #expect(await eventually { pair.gateway.log.contains("refused the server key (401)") })
        let stats = try await sim.send(.GET, "/__sim/stats").object
        #expect(stats["authorizations"] as? [String] == ["Simple \(Keys.upstream)", "Simple \(next)"].sorted())

        try await rotate(to: Keys.upstream, reloads: 2)
        let back = try await call()
        #expect(back.status == 200)
        #expect(back.object["result"] as? String == "Hello HAL")
        #expect(!pair.gateway.log.contains(next) && !pair.gateway.log.contains(Keys.upstream), "a log line holds the upstream key")
    }
}
