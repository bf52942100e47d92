import AlgoTestSupport
import NIOHTTP1
import Testing
@testable import AlgoGate

/// The gateway's own endpoints: the right methods answer, any other is a 405 that names them.
@Suite struct EndpointTests {
    @Test func otherMethodsOnTheGatewaysOwnEndpointsAre405WithAllow() async throws {
        try await GatewayHarness.run { h in
            // The table is the router's own routes, outside the forwarded API: an endpoint left out
            // of it (`/_admin/concurrency` once was) answered another method with 404 "no such endpoint".
            var routed: [String: Set<String>] = [:]
            for route in h.app.router().routes where !route.path.description.hasPrefix("/v1") {
                routed[route.path.description, default: []].insert(route.method.rawValue)
            }
            #expect(routed == ErrorMiddleware.gatewayEndpoints.mapValues { Set($0.map(\.rawValue)) })
            for (path, methods) in ErrorMiddleware.gatewayEndpoints.sorted(by: { $0.key < $1.key }) {
                // The table agrees with the routes: each listed method is served.
                let key = path == "/_gateway/me" ? Keys.teamA : Keys.admin
                let allowed = methods.map(\.rawValue)
                for method in allowed {
                    let served = try await h.gateway.send(HTTPMethod(rawValue: method), path, headers: simple(key))
                    #expect(served.status == 200, "\(method) \(path)")
                }
                for method in [HTTPMethod.POST, .PUT, .PATCH] where !allowed.contains(method.rawValue) {
                    let refused = try await h.gateway.send(method, path, headers: simple(key))
                    #expect(refused.status == 405, "\(method) \(path)")
                    #expect(refused.header("Allow") == allowed.joined(separator: ", "))
                    #expect(refused.text == #"{"error":{"error_type":"InputError","message":"\#(path) takes \#(allowed.joined(separator: " or ")), not \#(method.rawValue)"}}"#)
                }
            }
            let unknown = try await h.gateway.send(.GET, "/_admin/nothing", headers: simple(Keys.admin))
            #expect(unknown.status == 404)
            #expect(unknown.text == #"{"error":{"error_type":"EntityNotFoundError","message":"no such endpoint: /_admin/nothing; the gateway's own are /_admin/cache, /_admin/concurrency, /_admin/usage, /_gateway/me"}}"#)
            // Without the slash, before any key is asked for: the same list.
            let bare = try await h.gateway.send(.GET, "/_admin")
            #expect(bare.status == 404)
            #expect(envelope(bare).message == "no such endpoint: /_admin; the gateway's own are /_admin/cache, /_admin/concurrency, /_admin/usage, /_gateway/me")
            // A team's mistyped `/_gateway/me` gets the list too.
            let mistyped = try await h.gateway.send(.GET, "/_gateway/mine", headers: simple(Keys.teamA))
            #expect(mistyped.status == 404)
            #expect(envelope(mistyped).message == "no such endpoint: /_gateway/mine; the gateway's own are /_admin/cache, /_admin/concurrency, /_admin/usage, /_gateway/me")
        }
    }

    /// CONNECT and TRACE are answered by the gateway itself, whatever the target, before any key
    /// is asked for. A CONNECT comes from a client given the gateway as its proxy: it gets the
    /// envelope saying so and its connection is closed with the answer (NIO frames every answer to
    /// a CONNECT as bodyless; before, the client got headers with no framing and waited for the
    /// idle timeout). A TRACE never reaches the upstream, which would echo the server key.
    @Test func connectAndTraceAreRefusedByTheGatewayItself() async throws {
        try await GatewayHarness.run { h in
            let before = h.simulator.stats.snapshot.totalRequests
            let allow = "GET, HEAD, POST, PUT, PATCH, DELETE"
            let proxyMessage = "CONNECT is not supported: algogate is not a proxy. Give it to the client as the API address (ALGORITHMIA_API=http://algogate:8080), not as an HTTP(S) proxy"
            for (target, auth) in [("api.algorithmia.com:443", ""), ("/v1/data/.my/team-a/x", "Authorization: Simple \(Keys.teamA)\r\n")] {
                let connection = try await RawConnection.connect(port: h.gatewayPort, sending: "CONNECT \(target) HTTP/1.1\r\nHost: \(target)\r\n\(auth)\r\n")
                // Well inside the idle timeout (75 s), which is what the client waited for before.
                #expect(await connection.waitForClose(within: .seconds(30)), "CONNECT \(target)")
                let text = connection.text
                let head = text.components(separatedBy: "\r\n\r\n").first ?? ""
                let body = text.components(separatedBy: "\r\n\r\n").dropFirst().joined(separator: "\r\n\r\n")
                #expect(head.hasPrefix("HTTP/1.1 405 Method Not Allowed\r\n"), "CONNECT \(target)")
                #expect(head.contains("\r\nConnection: close"))
                #expect(head.contains("\r\nAllow: \(allow)"))
                #expect(body == #"{"error":{"error_type":"InputError","message":"\#(proxyMessage)"}}"#)
                await connection.close()
            }
            // TRACE: refused with a key that could write the data path (it went upstream before) or with
            // none, and the connection serves the next request.
            let connection = try await RawConnection.connect(port: h.gatewayPort, sending:
                "TRACE /v1/data/.my/team-a/x HTTP/1.1\r\nHost: x\r\nAuthorization: Simple \(Keys.teamA)\r\n\r\nTRACE /v1/algo/demo/Hello HTTP/1.1\r\nHost: x\r\n\r\nGET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            #expect(await eventually { RawResponse.parse(connection.text).count == 3 })
            let answers = RawResponse.parse(connection.text)
            for answer in answers.prefix(2) {
                #expect(answer.statusLine == "HTTP/1.1 405 Method Not Allowed")
                #expect(answer.headers["allow"] == allow)
                #expect(answer.body == #"{"error":{"error_type":"InputError","message":"TRACE is not supported by the gateway"}}"#)
            }
            #expect(answers.last?.statusLine == "HTTP/1.1 200 OK")
            #expect(connection.closedAt == nil)
            await connection.close()
            #expect(h.simulator.stats.snapshot.totalRequests == before)
        }
    }

    /// `server.metrics_access: admin` puts `/metrics` behind the admin key (Prometheus can send it
    /// as a bearer token); a reload opens it again. Without an admin key the setting is refused.
    @Test func metricsCanBeKeptForTheAdminKey() async throws {
        try await GatewayHarness.run(serverYAML: "metrics_access: admin") { h in
            let anonymous = try await h.gateway.send(.GET, "/metrics")
            #expect(anonymous.status == 401)
            #expect(envelope(anonymous).type == "AuthorizationError")
            let team = try await h.gateway.send(.GET, "/metrics", headers: simple(Keys.teamA))
            #expect(team.status == 403)
            #expect(team.text == #"{"error":{"error_type":"PermissionDenied","message":"/metrics needs the admin key (server.metrics_access: admin)"}}"#)
            let admin = try await h.gateway.send(.GET, "/metrics", headers: [("Authorization", "Bearer \(Keys.admin)")])
            #expect(admin.status == 200)
            #expect(admin.text.contains("# TYPE algogate_requests_total counter"))
            // The health endpoints stay open.
            #expect(try await h.gateway.send(.GET, "/healthz").status == 200)

            var config = h.app.state.snapshot.config
            config.server.metricsAccess = .open
            try h.app.state.replace(with: ConfigLoader.Loaded(config: config, upstreamKey: h.app.state.snapshot.upstreamKey))
            #expect(try await h.gateway.send(.GET, "/metrics").status == 200)
        }
        let refused = #expect(throws: ConfigError.self) {
            try ConfigLoader.load(yaml: """
                server: {metrics_access: admin}
                upstream: {url: "http://127.0.0.1:9000", key_env: K}
                clients: [{name: a, key_sha256: "\(String(repeating: "a", count: 64))", scopes: [algo]}]
                """, environment: ["K": "upstream-key-0123"])
        }
        #expect(refused?.description == "server.metrics_access: 'admin' needs an admin key (admin.key_sha256): without one nobody could read /metrics")
    }
}
