import AlgoGate
import AlgoTestSupport
import Testing

@Suite struct DataPrefixTests {
    /// Sets up data://.my/team-a and data://.my/team-b with a file each, straight at the simulator.
    static func seed(_ h: GatewayHarness) async throws {
        let upstream = simple(Keys.upstream)
        for team in ["team-a", "team-b"] {
            _ = try await h.sim.send(.POST, "/v1/data/.my", headers: upstream, json: ["name": team])
            _ = try await h.sim.send(.PUT, "/v1/data/.my/\(team)/x.txt", headers: upstream, text: "\(team) secret")
        }
    }

    @Test func traversalAndEncodingTricksAreDenied() async throws {
        try await GatewayHarness.run { h in
            try await Self.seed(h)
            let forbidden = [
                "/v1/data/.my/team-b/x.txt",
                "/v1/data/.my/team-a/%2e%2e/team-b/x.txt",
                "/v1/data/.my/team-a/%2E%2E%2Fteam-b%2Fx.txt",
                "/v1/data/.my/team-a/..%2fteam-b/x.txt",
                "/v1/data/.my/team-a/..%5cteam-b%5cx.txt",
                "/v1/data/.my/team-a%2f..%2f..%2f.my%2fteam-b/x.txt",
                "/v1/data/.my//team-b/x.txt",
                "/v1/data/.my/./team-b/x.txt",
                "/v1/data/data://.my/team-b/x.txt",
                "/v1/data/DATA://.my/team-b/x.txt",
                "/v1/data/data:///.my/team-b/x.txt",
                "/v1/connector/data/.my/team-b/x.txt",
                "/v1/data/.my/team-a-evil/x.txt",
                "/v1/data/.my",
                "/v1/data/s3://bucket/team-b/k",
                "/v1/connector/s3/bucket/team-a/../team-b/k",
                "/v1/connector/S3/bucket//team-b/k",
            ]
            for path in forbidden {
                let reply = try await h.gateway.send(.GET, path, headers: simple(Keys.teamA))
                #expect(reply.status == 403, "\(path) -> \(reply.status) \(reply.text)")
                #expect(envelope(reply).type == "PermissionDenied", "\(path)")
            }
            let refused = [
                "/v1/data/.my/team-a/%252e%252e/team-b/x.txt",   // double encoding
                "/v1/data/.my/team-a/%00/x.txt",                  // NUL
                "/v1/data/.my/../../etc/passwd",                  // above the root
                "/v1/connector/ftp/host/x",                       // unknown connector
            ]
            for path in refused {
                let reply = try await h.gateway.send(.GET, path, headers: simple(Keys.teamA))
                #expect(reply.status == 400, "\(path) -> \(reply.status) \(reply.text)")
            }
            #expect(h.simulator.stats.snapshot.requestsByClass["data"] == 4)  // only the seeding calls
        }
    }

    @Test func pathsAreForwardedNormalised() async throws {
        try await GatewayHarness.run { h in
            try await Self.seed(h)
            for path in ["/v1/data/.my/team-a/x.txt", "/v1/data/.my/team-a/./sub/../x.txt", "/v1/data/.my//team-a///x.txt",
                         "/v1/data/data://.my/team-a/x.txt", "/v1/data/%2emy/team-a/x%2etxt", "/v1/data/.my/team-a/sub%2f..%2fx.txt"] {
                let reply = try await h.gateway.send(.GET, path, headers: simple(Keys.teamA))
                #expect(reply.status == 200, "\(path) -> \(reply.status) \(reply.text)")
                #expect(reply.text == "team-a secret", "\(path)")
            }
            let put = try await h.gateway.send(.PUT, "/v1/data/s3://bucket/team-a/k.bin", headers: simple(Keys.teamA), body: [1, 2, 3])
            #expect(put.text == #"{"result":"s3://bucket/team-a/k.bin"}"#)
            let viaConnector = try await h.gateway.send(.GET, "/v1/connector/s3/bucket/team-a/k.bin", headers: simple(Keys.teamA))
            #expect(viaConnector.bytes == [1, 2, 3])
        }
    }

    @Test func directoryCreationIsCheckedForTheNewDirectory() async throws {
        try await GatewayHarness.run { h in
            let own = try await h.gateway.send(.POST, "/v1/data/.my", headers: simple(Keys.teamA), json: ["name": "team-a"])
            #expect(own.status == 200)
            #expect(own.text == #"{"result":"data://.my/team-a"}"#)
            let nested = try await h.gateway.send(.POST, "/v1/data/.my/team-a", headers: simple(Keys.teamA), json: ["name": "reports"])
            #expect(nested.text == #"{"result":"data://.my/team-a/reports"}"#)
            let other = try await h.gateway.send(.POST, "/v1/data/.my", headers: simple(Keys.teamA), json: ["name": "team-b"])
            #expect(other.status == 403)
            #expect(envelope(other).message == "client 'team-a' may not access data://.my/team-b: outside its data prefixes")
            let sneaky = try await h.gateway.send(.POST, "/v1/data/.my/team-a", headers: simple(Keys.teamA), json: ["name": "../team-b"])
            #expect(sneaky.status == 400)
            let encoded = try await h.gateway.send(.POST, "/v1/data/.my/team-a", headers: simple(Keys.teamA), json: ["name": "%2e%2e"])
            #expect(encoded.status == 400)
            let notJSON = try await h.gateway.send(.POST, "/v1/data/.my/team-a", headers: simple(Keys.teamA) + textType, text: "hello")
            #expect(notJSON.status == 400)
        }
    }

    @Test func dataURIsInsideAlgorithmInputsAreChecked() async throws {
        try await GatewayHarness.run { h in
            let nested = try await h.gateway.send(.POST, "/v1/algo/util/Echo/1.0.0", headers: simple(Keys.teamA),
                                                  json: ["files": ["data://.my/team-a/ok.csv", ["deep": "data://.my/team-b/secret.csv"]]])
            #expect(nested.status == 403)
            #expect(envelope(nested).message == "algorithm input references data://.my/team-b/secret.csv, outside client 'team-a' data prefixes")
            let text = try await h.gateway.send(.POST, "/v1/algo/util/Echo/1.0.0", headers: simple(Keys.teamA) + textType, text: "dropbox://elsewhere/x")
            #expect(text.status == 403)
            let traversal = try await h.gateway.send(.POST, "/v1/algo/util/Echo/1.0.0", headers: simple(Keys.teamA), json: ["f": "data://.my/team-a/../team-b/x"])
            #expect(traversal.status == 403)
            let allowed = try await h.gateway.send(.POST, "/v1/algo/util/Echo/1.0.0", headers: simple(Keys.teamA), json: ["f": "data://.my/team-a/ok.csv", "n": 1])
            #expect(allowed.status == 200)
            #expect(canonicalJSON(allowed.object["result"]) == #"{"f":"data://.my/team-a/ok.csv","n":1}"#)
            // team-b has no data prefixes: its inputs are not restricted
            let unrestricted = try await h.gateway.send(.POST, "/v1/algo/util/Echo/1.0.0", headers: simple(Keys.teamB) + textType, text: "data://.my/team-a/x")
            #expect(unrestricted.status == 200)
            #expect(h.simulator.stats.snapshot.algoCalls == ["util/Echo/1.0.0": 2])
        }
    }

    @Test func normalisationFoldsEveryEquivalentSpelling() throws {
        let base = try DataURI.parse(uri: "data://.my/team-a/")
        #expect(base.description == "data://.my/team-a")
        #expect(try DataURI.parse(dataPath: "./.my/team-a/b/../c").description == "data://.my/team-a/c")
        #expect(try DataURI.parse(dataPath: ".my\\team-a\\c").isWithin(base))
        #expect(try !DataURI.parse(dataPath: ".my/team-ab").isWithin(base))
        #expect(try DataURI.parse(connectorPath: "dropbox+Work/a b/c").upstreamPath(connectorForm: true) == "/v1/connector/dropbox+work/a%20b/c")
        #expect(try DataURI.parse(dataPath: "s3://b/k").upstreamPath(connectorForm: false) == "/v1/data/s3://b/k")
        #expect(throws: GatewayError.self) { try DataURI.parse(dataPath: "a/%252e") }
        #expect(throws: GatewayError.self) { try DataURI.parse(dataPath: "../x") }
    }
}
