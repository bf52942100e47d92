import AlgoGate
import AlgoTestSupport
import Testing

@Suite struct AuthenticationTests {
    @Test func simpleBareAndBearerKeysAreAccepted() async throws {
        try await GatewayHarness.run { h in
            // Scheme names in any case, and runs of spaces around and between the words.
            for value in ["Simple \(Keys.teamB)", Keys.teamB, "Bearer \(Keys.teamB)", "simple \(Keys.teamB)", "BEARER \(Keys.teamB)",
                          "  Simple   \(Keys.teamB)  ", "  \(Keys.teamB) "] {
                let reply = try await h.gateway.send(.POST, "/v1/algo/demo/Hello/0.1.0", headers: [("Authorization", value)] + textType, text: "HAL")
                #expect(reply.status == 200, "\(value.prefix(7))")
                #expect(reply.object["result"] as? String == "Hello HAL")
            }
        }
    }

    @Test func missingUnknownAndDuplicateCredentialsAreRefused() async throws {
        try await GatewayHarness.run { h in
            let missing = try await h.gateway.send(.POST, "/v1/algo/demo/Hello/0.1.0", headers: textType, text: "HAL")
            #expect(missing.status == 401)
            #expect(missing.header("Content-Type") == "application/json")
            #expect(missing.header("WWW-Authenticate") == #"Simple realm="algogate""#)
            #expect(missing.text == #"{"error":{"error_type":"AuthorizationError","message":"authorization required: send your algogate key as 'Authorization: Simple KEY'"}}"#)

            let unknown = try await h.gateway.send(.POST, "/v1/algo/demo/Hello/0.1.0", headers: simple("not-a-key") + textType, text: "HAL")
            #expect(unknown.status == 401)
            #expect(unknown.header("WWW-Authenticate") == #"Simple realm="algogate""#)
            #expect(envelope(unknown).message == "authorization failed: unknown algogate key")

            // The upstream key itself is not a client key.
            let upstreamKey = try await h.gateway.send(.POST, "/v1/algo/demo/Hello/0.1.0", headers: simple(Keys.upstream) + textType, text: "HAL")
            #expect(upstreamKey.status == 401)

            let twice = try await h.gateway.send(.POST, "/v1/algo/demo/Hello/0.1.0", headers: simple(Keys.teamB) + simple(Keys.teamA) + textType, text: "HAL")
            #expect(twice.status == 400)
            #expect(envelope(twice).message == "more than one Authorization header")
            #expect(envelope(twice).type == "InputError")

            let scheme = try await h.gateway.send(.GET, "/v1/data/.my", headers: [("Authorization", "Basic dXNlcjpwYXNz")])
            #expect(scheme.status == 401)
            #expect(scheme.header("WWW-Authenticate") == #"Simple realm="algogate""#)
            #expect(envelope(scheme).message == "unsupported Authorization scheme: use 'Simple KEY', 'Bearer KEY' or the bare key")
            let threeWords = try await h.gateway.send(.POST, "/v1/algo/demo/Hello/0.1.0", headers: [("Authorization", "Simple \(Keys.teamB) x")] + textType, text: "HAL")
            #expect(threeWords.status == 401)
            #expect(envelope(threeWords).message == "unsupported Authorization scheme: use 'Simple KEY', 'Bearer KEY' or the bare key")

            let query = try await h.gateway.send(.POST, "/v1/algo/demo/Hello/0.1.0?api_key=\(Keys.teamB)", headers: textType, text: "HAL")
            #expect(query.status == 401)
            #expect(h.simulator.stats.snapshot.algoCalls.isEmpty)
        }
    }

    @Test func healthAndReadinessNeedNoKey() async throws {
        try await GatewayHarness.run { h in
            let health = try await h.gateway.send(.GET, "/healthz")
            #expect(health.status == 200)
            #expect(health.text == #"{"status":"ok"}"#)
            let ready = try await h.gateway.send(.GET, "/readyz")
            #expect(ready.status == 200)
            #expect(ready.text == #"{"status":"ready"}"#)
            let unknown = try await h.gateway.send(.GET, "/elsewhere", headers: simple(Keys.teamA))
            #expect(unknown.status == 404)
            #expect(unknown.text == #"{"error":{"error_type":"EntityNotFoundError","message":"no such endpoint: /elsewhere"}}"#)
        }
    }

    @Test func keysAreMatchedByHash() throws {
        let registry = try ClientRegistry(config: GatewayConfig(
            upstream: .init(url: "http://127.0.0.1:1", keyEnv: "K"),
            clients: [.init(name: "a", keySHA256: ClientRegistry.hash(of: "alpha"), scopes: [.algo])]))
        #expect(registry.client(for: Secret("alpha"))?.name == "a")
        #expect(registry.client(for: Secret("alpha ")) == nil)
        #expect(registry.client(for: Secret("")) == nil)
        #expect(ClientRegistry.hash(of: "abc") == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
    }
}
