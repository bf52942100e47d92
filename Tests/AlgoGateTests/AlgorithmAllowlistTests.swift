@testable import AlgoGate
import AlgoTestSupport
import Foundation
import Testing

/// `clients[].algorithms`: a client limited to some algorithms calls and manages those only, cached
/// answers included, and creates only algorithms its list names.
@Suite struct AlgorithmAllowlistTests {
    static let clients = """
        admin: {key_sha256: "\(ClientRegistry.hash(of: Keys.admin))"}
        clients:
          - name: team-x
            key_sha256: "\(ClientRegistry.hash(of: Keys.teamA))"
            scopes: [algo, manage]
            algorithms: ["demo/Hello", "team-x/*"]
          - name: everyone
            key_sha256: "\(ClientRegistry.hash(of: Keys.teamB))"
            scopes: [algo, manage]
        """

    static func post(_ h: GatewayHarness, _ path: String, key: String = Keys.teamA) async throws -> TestHTTP.Reply {
        try await h.gateway.send(.POST, path, headers: simple(key) + textType, text: "HAL")
    }

    @Test func callsAreLimitedToTheListedAlgorithmsCachedAnswersIncluded() async throws {
        try await GatewayHarness.run(clientsYAML: Self.clients) { h in
            let listed = try await Self.post(h, "/v1/algo/demo/Hello/0.1.0")
            #expect(listed.status == 200)
            #expect(listed.object["result"] as? String == "Hello HAL")

            // Another team's call leaves util/Echo in the cache; the limited client still gets 403.
            let primed = try await Self.post(h, "/v1/algo/util/Echo/1.0.0", key: Keys.teamB)
            #expect(primed.status == 200 && primed.header("X-Cache") == "MISS")
            #expect(try await Self.post(h, "/v1/algo/util/Echo/1.0.0", key: Keys.teamB).header("X-Cache") == "HIT")
            for path in ["/v1/algo/util/Echo/1.0.0", "/v1/algo/util/Echo", "/v1/algo/demo/Hello2/0.1.0", "/v1/algo/Demo/Hello/0.1.0"] {
                let refused = try await Self.post(h, path)
                let algorithm = path.split(separator: "/")[2...3].joined(separator: "/")
                #expect(refused.status == 403, "\(path)")
                #expect(refused.text == #"{"error":{"error_type":"PermissionDenied","message":"client 'team-x' may not call \#(algorithm): not among its algorithms"}}"#)
                #expect(refused.header("X-Cache") == nil)
            }
            #expect(h.simulator.stats.snapshot.algoCalls == ["demo/Hello/0.1.0": 1, "util/Echo/1.0.0": 1])

            let me = try await h.gateway.send(.GET, "/_gateway/me", headers: simple(Keys.teamA))
            #expect(me.object["algorithms"] as? [String] == ["demo/Hello", "team-x/*"])
            let unlimited = try await h.gateway.send(.GET, "/_gateway/me", headers: simple(Keys.teamB))
            #expect(unlimited.object["algorithms"] == nil)
        }
    }

    /// `algo://owner/name` and `/owner/name` (the Node clients' spellings) are checked as the
    /// algorithm they name.
    @Test func referencesSpeltAsTheNodeClientsSendThemAreCheckedAsTheAlgorithm() async throws {
        try await GatewayHarness.run(clientsYAML: Self.clients) { h in
            for path in ["/v1/algo/algo://util/Echo/1.0.0", "/v1/algo//util/Echo"] {
                let refused = try await Self.post(h, path)
                #expect(refused.status == 403, "\(path)")
                #expect(refused.text == #"{"error":{"error_type":"PermissionDenied","message":"client 'team-x' may not call util/Echo: not among its algorithms"}}"#)
            }
            #expect(h.simulator.stats.snapshot.algoCalls.isEmpty)
            let listed = try await Self.post(h, "/v1/algo/algo://demo/Hello/0.1.0")
            #expect(listed.status == 200)
            #expect(listed.object["result"] as? String == "Hello HAL")
        }
    }

    /// A call by the algorithm's id (`/v1/algo/{uuid}[/{version}]`): forwarded as it came, never
    /// cached (the id does not say which algorithm it is, for the rules, a purge or the stats), and
    /// refused to a client with an `algorithms` list, which cannot be checked against it.
    @Test func callsByIDAreForwardedUncachedAndRefusedToClientsWithAList() async throws {
        try await GatewayHarness.run(clientsYAML: Self.clients) { h in
            let id = try #require(try await h.sim.send(.GET, "/v1/algorithms/demo/Hello", headers: simple(Keys.upstream)).object["id"] as? String)
            for path in ["/v1/algo/\(id)/0.1.0", "/v1/algo/\(id)/0.1.0/", "/v1/algo/algo://\(id)/0.1.0", "/v1/algo/\(id)"] {
                for _ in 0..<2 {
                    let reply = try await Self.post(h, path, key: Keys.teamB)
                    #expect(reply.status == 200, "\(path)")
                    #expect(reply.object["result"] as? String == "Hello HAL", "\(path)")
                    #expect(reply.header("Cache-Status") == "algogate; fwd=uri-miss", "\(path)")
                    #expect(reply.header("X-Cache") == "BYPASS", "\(path)")
                }
            }
            #expect(h.simulator.stats.snapshot.algoCalls == ["\(id)/0.1.0": 6, id: 2])
            let refused = try await Self.post(h, "/v1/algo/\(id)/0.1.0")
            #expect(refused.status == 403)
            #expect(envelope(refused).message == "client 'team-x' may call only the algorithms it lists, by owner and name: \(id) is an algorithm's id, which does not say which algorithm it is")
            // An id in capitals is the same id (a UUID's hex digits are read in either case).
            let capitals = try await Self.post(h, "/v1/algo/\(id.uppercased())/0.1.0")
            #expect(capitals.status == 403)
            #expect(envelope(capitals).message == "client 'team-x' may call only the algorithms it lists, by owner and name: \(id.uppercased()) is an algorithm's id, which does not say which algorithm it is")
            // More than an id and a version is no algorithm.
            #expect(try await Self.post(h, "/v1/algo/\(id)/0.1.0/x", key: Keys.teamB).status == 404)
            #expect(h.simulator.stats.snapshot.algoCalls == ["\(id)/0.1.0": 6, id: 2])
        }
    }

    @Test func managementIsLimitedToTheListedAlgorithmsAndCreatesAreChecked() async throws {
        try await GatewayHarness.run(clientsYAML: Self.clients) { h in
            func send(_ method: HTTPMethod, _ path: String, _ body: String? = nil) async throws -> TestHTTP.Reply {
                try await h.gateway.send(method, path, headers: simple(Keys.teamA) + jsonType, body: body.map { Array($0.utf8) })
            }
            let create = #"{"name": "Tool", "details": {"label": "Tool"}, "settings": {"language": "python3"}}"#
            let made = try await send(.POST, "/v1/algorithms/team-x", create)
            #expect(made.status == 200)
            #expect(made.object["name"] as? String == "Tool")
            #expect(try await send(.GET, "/v1/algorithms/team-x/Tool").status == 200)
            #expect(try await send(.GET, "/v1/algorithms/team-x/Tool/versions").status == 200)
            #expect(try await send(.GET, "/v1/algorithms/demo/Hello").status == 200)
            // Owner-wide, with team-x/*: passed to the upstream, which has no such endpoint.
            let ownerWide = try await send(.GET, "/v1/algorithms/team-x")
            #expect(ownerWide.status == 404)
            #expect(ownerWide.text.contains("No such management endpoint"))
            let managementCalls = h.simulator.stats.snapshot.requestsByClass["management"]
            // Publishing by id (`/v1/algorithms/{id}/version`, in Algorithmia's API reference): the
            // id does not say which algorithm it is, so a client with a list cannot use it, even
            // for its own algorithm; it publishes by owner and name.
            let id = try #require(made.object["id"] as? String)

            let refusals: [(HTTPMethod, String, String?, Int, String, String)] = [
                (.POST, "/v1/algorithms/\(id)/version", #"{"version_info": {"version_type": "minor"}}"#, 403, "PermissionDenied", "client 'team-x' may not manage \(id)/version: not among its algorithms"),
                (.POST, "/v1/algorithms/demo", create, 403, "PermissionDenied", "client 'team-x' may not create demo/Tool: not among its algorithms"),
                (.DELETE, "/v1/algorithms/demo/Other", nil, 403, "PermissionDenied", "client 'team-x' may not manage demo/Other: not among its algorithms"),
                (.POST, "/v1/algorithms/demo/Other/compile", nil, 403, "PermissionDenied", "client 'team-x' may not manage demo/Other: not among its algorithms"),
                (.GET, "/v1/algorithms/demo", nil, 403, "PermissionDenied", "client 'team-x' may not manage every algorithm of demo: its algorithms do not include demo/*"),
                (.GET, "/v1/algorithms", nil, 403, "PermissionDenied", "client 'team-x' may only manage its own algorithms: name one in the path"),
                // (Dot segments and encoded separators are refused for every client: `RouteClass.checkPlainSegments`.)
                (.GET, "/v1/algorithms/team-x/%2e%2e/demo/Other", nil, 400, "InputError", "the path /v1/algorithms/team-x/%2e%2e/demo/Other has a segment that some servers resolve as '.' or '..' or read as holding a '/': send it resolved, without dot segments or encoded separators"),
                (.GET, "/v1/algorithms/team-x/Tool%2F..%2F..%2Fdemo", nil, 400, "InputError", "the path /v1/algorithms/team-x/Tool%2F..%2F..%2Fdemo has a segment that some servers resolve as '.' or '..' or read as holding a '/': send it resolved, without dot segments or encoded separators"),
                (.GET, "/v1/algorithms/team-x/Tool%20x", nil, 400, "InputError", "/v1/algorithms/team-x/Tool%20x cannot be checked against client 'team-x''s algorithms: use plain names, without encoded characters or dot segments"),
                (.POST, "/v1/algorithms/team-x", "not json", 400, "InputError", #"a POST to /v1/algorithms/team-x must be a JSON object with the new algorithm's "name""#),
                (.POST, "/v1/algorithms/team-x", #"{"Name": "Other", "name": "Tool2"}"#, 400, "InputError", #"the body has a "Name" key beside "name", which some servers read as the name: give the name once, as "name""#),
            ]
            for (method, path, body, status, type, message) in refusals {
                let reply = try await send(method, path, body)
                #expect(reply.status == status, "\(method) \(path)")
                #expect(envelope(reply).type == type, "\(method) \(path)")
                #expect(envelope(reply).message == message, "\(method) \(path)")
            }
            #expect(h.simulator.stats.snapshot.requestsByClass["management"] == managementCalls, "no refusal reached the upstream")
            // The unlimited client manages anything.
            #expect(try await h.gateway.send(.POST, "/v1/algorithms/demo", headers: simple(Keys.teamB) + jsonType, text: create).status == 200)
        }
    }

    /// A created algorithm's name comes from the body, in any spelling: one canonically equivalent
    /// to a listed name (the Kelvin sign U+212A is `K` to Swift's `==`) is another name upstream.
    @Test func namesMatchByteForByte() throws {
        let pattern = try AlgorithmPattern(parsing: "demo/Kelvin")
        #expect(pattern.permits(owner: "demo", name: "Kelvin"))
        #expect("\u{212A}elvin" == "Kelvin")  // what `String`'s `==` says
        #expect(!pattern.permits(owner: "demo", name: "\u{212A}elvin"))
    }

    @Test func patternsAreValidated() throws {
        for (pattern, message) in [("demo", "'demo' is not owner/name or owner/*"), ("demo/*/x", "'demo/*/x' is not owner/name or owner/*"),
                                   ("*/Hello", "'*/Hello' is not owner/name or owner/*"), ("demo/He%6Clo", "'demo/He%6Clo' is not owner/name or owner/*")] {
            #expect(throws: ConfigError(field: "clients[0].algorithms[1]", message: message)) {
                try ConfigLoader.load(yaml: """
                    upstream: {url: "http://127.0.0.1:1", key_env: K}
                    clients: [{name: a, key_sha256: "\(ClientRegistry.hash(of: Keys.teamA))", scopes: [algo], algorithms: ["demo/Hello", "\(pattern)"]}]
                    """, environment: ["K": "upstream-key-0123"])
            }
        }
    }

    @Test func keygenWritesTheList() async throws {
        let made = try await KeyRotationTests.keygen(["--name", "team-x", "--scopes", "algo", "--algorithms", "demo/Hello", "team-x/*"])
        #expect(made.entry.contains(#"algorithms: ["demo/Hello", "team-x/*"]"#))
        let loaded = try ConfigLoader.load(yaml: "upstream: {url: \"http://127.0.0.1:1\", key_env: K}\nclients:\n" + made.entry, environment: ["K": "upstream-key-0123"])
        let client = try ClientRegistry(config: loaded.config).client(for: Secret(made.key))
        #expect(client?.algorithms?.map(\.description) == ["demo/Hello", "team-x/*"])
    }

    /// Lists may be given comma-separated too, and what keygen prints loads as what it was given:
    /// a data prefix may hold a `"` or a `\`, which a YAML double-quoted string escapes.
    @Test func keygenPrintsAnEntryThatLoadsAsGiven() async throws {
        let prefixes = [#"s3://bucket/a"b/"#, #"s3://bucket/c\d/"#, "s3://bucket/#x/"]
        let made = try await KeyRotationTests.keygen(["--name", "team-x", "--scopes", "algo,data:read", "manage", "algo",
                                                      "--algorithms", "demo/Hello,team-x/*", "--data-prefixes"] + prefixes)
        #expect(made.entry.contains("scopes: [algo, data:read, manage]\n"), "\(made.entry)")
        let loaded = try ConfigLoader.load(yaml: "upstream: {url: \"http://127.0.0.1:1\", key_env: K}\nclients:\n" + made.entry, environment: ["K": "upstream-key-0123"])
        let client = try #require(try ClientRegistry(config: loaded.config).client(for: Secret(made.key)))
        #expect(client.scopes == [.algo, .dataRead, .manage])
        #expect(client.algorithms?.map(\.description) == ["demo/Hello", "team-x/*"])
        #expect(client.dataPrefixes?.map(\.description) == (try prefixes.map { try DataURI.parse(uri: $0).description }))
    }

    /// keygen checks data prefixes and names as the configuration does, so that the entry it prints loads.
    @Test func keygenRefusesADataPrefixTheConfigurationWould() async throws {
        let refused = try await ChildProcess.run(arguments: ["keygen", "--name", "team-x", "--data-prefixes", "ftp://files/team-x/"])
        #expect(refused.termination == .exited(64))
        #expect(refused.log.contains("Error: --data-prefixes: unknown data connector 'ftp'; use data, s3, azureblob, gs or dropbox (optionally +label)"), "\(refused.log)")
        // And names: the operator's own is not a team's.
        let operatorName = try await ChildProcess.run(arguments: ["keygen", "--name", "admin", "--scopes", "algo"])
        #expect(operatorName.termination == .exited(64))
        #expect(operatorName.log.contains("Error: --name: 'admin' names the operator (the admin key) in logs, metrics, usage and quotas; choose another name"), "\(operatorName.log)")
        #expect(!operatorName.log.contains("key_sha256"))
        // And scopes and the hash of a key being rotated out.
        for (arguments, error) in [(["--scopes", "algo,fly"], "Error: unknown scope 'fly'; use algo, data:read, data:write, manage, admin"),
                                   (["--previous-key-sha256", String(repeating: "A", count: 64)],
                                    "Error: --previous-key-sha256: must be 64 lowercase hex digits (the client's current key_sha256)")] {
            let run = try await ChildProcess.run(arguments: ["keygen", "--name", "team-x"] + arguments)
            #expect(run.termination == .exited(64), "\(arguments)")
            #expect(run.log.contains(error), "\(run.log)")
            #expect(!run.log.contains("key_sha256:"), "\(run.log)")
        }
        let made = try await KeyRotationTests.keygen(["--name", "team-x", "--data-prefixes", "s3://bucket/team-x/"])
        let loaded = try ConfigLoader.load(yaml: "upstream: {url: \"http://127.0.0.1:1\", key_env: K}\nclients:\n" + made.entry, environment: ["K": "upstream-key-0123"])
        #expect(try ClientRegistry(config: loaded.config).client(for: Secret(made.key))?.dataPrefixes?.map(\.description) == ["s3://bucket/team-x"])
    }

    /// A create body is forwarded as the gateway read it, encoded anew: parsers differ on a key
    /// written twice (Foundation, as most, keeps the last; some keep the first), so the bytes as
    /// sent could create another directory or algorithm upstream than the one checked.
    @Test func createBodiesReachTheUpstreamAsTheyWereChecked() async throws {
        try await RecordingUpstream.run(clientsYAML: Self.clients + """

              - name: confined
                key_sha256: "\(ClientRegistry.hash(of: Keys.reader))"
                scopes: [data:read, data:write]
                data_prefixes: ["data://.my/team-a/"]
            """) { recorder, h in
            let creates: [(path: String, key: String, body: String)] = [
                ("/v1/data/.my/team-a", Keys.reader, #"{"name":"/team-b","name":"x","acl":{"read":["user://*"]}}"#),
                ("/v1/connector/data/.my/team-a/", Keys.reader, #"{"name" : "../../team-b" , "n\u0061me":"y"}"#),
                ("/v1/algorithms/team-x", Keys.teamA, #"{"name":"Other","name":"Tool","details":{"label":"T"},"settings":{"network_access":"full","pipeline_enabled":false,"x":1.5}}"#),
            ]
            let forwarded = [
                #"{"acl":{"read":["user://*"]},"name":"x"}"#,
                #"{"name":"y"}"#,
                #"{"details":{"label":"T"},"name":"Tool","settings":{"network_access":"full","pipeline_enabled":false,"x":1.5}}"#,
            ]
            var raw = KeepAliveClient(port: h.gatewayPort)
            for (create, expected) in zip(creates, forwarded) {
                for chunked in [false, true] {
                    let before = recorder.count
                    if chunked {
                        let size = String(create.body.utf8.count, radix: 16)
                        let reply = try await raw.exchange("POST \(create.path) HTTP/1.1\r\nHost: x\r\nAuthorization: Simple \(create.key)\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n\(size)\r\n\(create.body)\r\n0\r\n\r\n")
                        #expect(reply?.statusLine.hasPrefix("HTTP/1.1 200") == true, "\(create.path) \(String(describing: reply))")
                    } else {
                        let reply = try await h.gateway.send(.POST, create.path, headers: simple(create.key) + jsonType, text: create.body)
                        #expect(reply.status == 200, "\(create.path) \(reply.text)")
                    }
                    let received = recorder.since(before)
                    #expect(received.map(\.body) == [expected], "\(create.path)")
                    let lengths = received.first?.headers.filter { $0[0].lowercased() == "content-length" }.map { $0[1] }
                    #expect(lengths == [String(expected.utf8.count)], "\(create.path)")
                    #expect(received.first?.headers.contains { $0[0].lowercased() == "transfer-encoding" } == false)
                }
            }
            await raw.close()
            // The name the gateway read is the one checked.
            let refused = try await h.gateway.send(.POST, "/v1/data/.my/team-a", headers: simple(Keys.reader) + jsonType,
                                                   text: #"{"name":"x","name":"/team-b"}"#)
            #expect(refused.status == 400)
            let other = try await h.gateway.send(.POST, "/v1/algorithms/team-x", headers: simple(Keys.teamA) + jsonType,
                                                 text: #"{"name":"Tool","name":"Other"}"#)
            #expect(other.status == 200, "team-x/* covers team-x/Other")
            #expect(recorder.since(recorder.count - 1).map(\.body) == [#"{"name":"Other"}"#])
        }
    }
}
