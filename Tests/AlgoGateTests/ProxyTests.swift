@testable import AlgoGate
import AlgoTestSupport
import AsyncHTTPClient
import Foundation
import Testing

/// `upstream.proxy`: upstream connections through an egress proxy's `CONNECT` tunnels.
@Suite struct ProxyTests {
    static let password = "pa ss:\(UUID().uuidString)"
    static var credentials: String { "egress-user:" + password }
    static var basic: String { "Basic " + Data(credentials.utf8).base64EncodedString() }

    /// `connectTimeout`: how long a refused tunnel is retried before the call's 502. The proxy's
    /// refusal must come within it to be the one reported (else the call's 502 says the upstream
    /// is unreachable): 3 s leaves a loaded machine time. A tunnel that opens gets 30 s: a
    /// whole-suite run beside two CPU hogs once took longer than the default 5 s to open one.
    /// `connectTimeout` covers the connect to the proxy and its tunnel: 6 s, since under a load
    /// of several times the machine a 3 s one ran out before the in-test proxy had answered.
    static func upstreamYAML(proxyPort: Int, auth: Bool = true, connectTimeout: Int = 6) -> String {
        """
        connect_timeout_seconds: \(connectTimeout)
          allow_plain_http: true
          proxy: {url: "http://127.0.0.1:\(proxyPort)"\(auth ? ", auth_env: TEST_PROXY_AUTH" : "")}
        """
    }

    @Test func upstreamCallsGoThroughTheProxysTunnelWithItsCredentials() async throws {
        let proxy = try await TunnelProxy.start(requiring: Self.basic)
        try await GatewayHarness.run(upstreamYAML: Self.upstreamYAML(proxyPort: proxy.port, connectTimeout: 30),
                                     environment: ["TEST_PROXY_AUTH": Self.credentials]) { h in
            let first = try await h.gateway.send(.POST, "/v1/algo/demo/Hello/0.1.0", headers: simple(Keys.teamB) + textType, text: "proxy")
            #expect(first.status == 200, "\(first.text)")
            #expect(first.object["result"] as? String == "Hello proxy")
            let second = try await h.gateway.send(.POST, "/v1/algo/util/Echo", headers: simple(Keys.teamB) + jsonType, text: #"{"n":1}"#)
            #expect(second.status == 200, "\(second.text)")
            // One tunnel, to the upstream's host and port, with the credentials; kept and reused.
            #expect(proxy.connects == [TunnelProxy.Connect(target: "127.0.0.1:\(h.sim.port)", authorization: Self.basic)])
            #expect(proxy.refusedRequests.isEmpty, "every request went inside a tunnel, none to the proxy itself")
            #expect(h.simulator.stats.snapshot.algoCalls == ["demo/Hello/0.1.0": 1, "util/Echo": 1])

            // Data bodies stream through the tunnel both ways.
            let mkdir = try await h.gateway.send(.POST, "/v1/data/.my", headers: simple(Keys.teamA), json: ["name": "team-a"])
            #expect(mkdir.status == 200)
            let bytes = (0..<300_000).map { UInt8(truncatingIfNeeded: $0 &* 31) }
            let put = try await h.gateway.send(.PUT, "/v1/data/.my/team-a/via-proxy.bin", headers: simple(Keys.teamA), body: bytes)
            #expect(put.status == 200)
            let get = try await h.gateway.send(.GET, "/v1/data/.my/team-a/via-proxy.bin", headers: simple(Keys.teamA))
            #expect(get.status == 200)
            #expect(firstDifference(get.bytes, bytes) == nil)
            #expect(proxy.relayedBytes > 2 * bytes.count)
            // Plain http in the tunnel: the proxy could read the key, which is why it takes allow_plain_http.
            #expect(proxy.relayed("Authorization: Simple \(Keys.upstream)"))
            #expect(proxy.connects.allSatisfy { $0 == TunnelProxy.Connect(target: "127.0.0.1:\(h.sim.port)", authorization: Self.basic) })

            #expect(!h.logs.all.contains { $0.contains(Self.password) || $0.contains(Self.basic) })
        }
        await proxy.stop()
    }

    @Test func aProxyThatRefusesTheCredentialsIs502NamingTheSetting() async throws {
        let proxy = try await TunnelProxy.start(requiring: "Basic " + Data("someone:else".utf8).base64EncodedString())
        try await GatewayHarness.run(upstreamYAML: Self.upstreamYAML(proxyPort: proxy.port),
                                     environment: ["TEST_PROXY_AUTH": Self.credentials]) { h in
            let reply = try await h.gateway.send(.POST, "/v1/algo/demo/Hello/0.1.0", headers: simple(Keys.teamB) + textType, text: "HAL")
            #expect(reply.status == 502)
            #expect(reply.text == #"{"error":{"error_type":"UpstreamError","message":"the upstream proxy asked for credentials (407): check upstream.proxy.auth_env"}}"#)
            // With credentials a refused tunnel is not tried again: each try would be a failed login.
            #expect(proxy.connects == [TunnelProxy.Connect(target: "127.0.0.1:\(h.sim.port)", authorization: Self.basic)])
            #expect(h.simulator.stats.snapshot.algoCalls.isEmpty)
            let line = try #require(h.logs.all.first { $0.contains("request") && $0.contains("status=502") })
            #expect(line.hasPrefix("warning"))
            #expect(line.contains("error=the upstream proxy asked for credentials (407)"))
            #expect(!h.logs.all.contains { $0.contains(Self.password) || $0.contains(Self.basic) })
        }
        // Without credentials the same proxy gets a CONNECT without Proxy-Authorization.
        let before = proxy.connects.count
        try await GatewayHarness.run(upstreamYAML: Self.upstreamYAML(proxyPort: proxy.port, auth: false)) { h in
            let reply = try await h.gateway.send(.POST, "/v1/algo/demo/Hello/0.1.0", headers: simple(Keys.teamB) + textType, text: "HAL")
            #expect(reply.status == 502)
            #expect(envelope(reply).message == "the upstream proxy asked for credentials (407): check upstream.proxy.auth_env")
            // Without, a refused tunnel is tried again within the connect timeout, as any connection.
            #expect(proxy.connects.count >= before + 2 && proxy.connects[before...].allSatisfy { $0.authorization == nil })
        }
        await proxy.stop()
    }

    @Test func aProxyThatRefusesTheTunnelOrIsDownIs502() async throws {
        // A "proxy" that answers every request with an error page rather than a tunnel.
        let refusing = try await CannedServer.start(reply: "HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
        try await GatewayHarness.run(upstreamYAML: Self.upstreamYAML(proxyPort: refusing.port, auth: false)) { h in
            let reply = try await h.gateway.send(.POST, "/v1/algo/demo/Hello/0.1.0", headers: simple(Keys.teamB) + textType, text: "HAL")
            #expect(reply.status == 502)
            #expect(envelope(reply).message == "the upstream proxy refused to open a tunnel to the upstream")
        }
        await refusing.stop()
        let closedPort = 1  // privileged and unused on loopback: nothing listens there
        try await GatewayHarness.run(upstreamYAML: Self.upstreamYAML(proxyPort: closedPort, auth: false, connectTimeout: 1)) { h in
            let reply = try await h.gateway.send(.GET, "/v1/data/.my/team-a", headers: simple(Keys.teamA))
            #expect(reply.status == 502)
            #expect(reply.text == #"{"error":{"error_type":"UpstreamError","message":"the upstream is unreachable"}}"#)
        }
        #expect(Forwarder.isUnreachable(HTTPClientError.proxyAuthenticationRequired))
        #expect(Forwarder.isUnreachable(HTTPClientError.invalidProxyResponse))
    }

    @Test func theProxySettingIsCheckedAtStart() throws {
        func refusal(_ proxy: String, url: String = "https://api.algorithmia.com", plain: Bool = false, environment: [String: String] = [:]) -> String? {
            let yaml = """
            upstream:
              url: \(url)
              key_env: UP_KEY
              \(plain ? "allow_plain_http: true" : "")
              proxy: \(proxy)
            clients: [{name: a, key_sha256: "\(String(repeating: "a", count: 64))", scopes: [algo]}]
            """
            do {
                _ = try ConfigLoader.load(yaml: yaml, environment: environment.merging(["UP_KEY": "upstream-key-0123"]) { $1 })
                return nil
            } catch {
                return "\(error)"
            }
        }
        let secret = "hunter2-\(UUID().uuidString)"
        let cases: [(String, String?)] = [
            (#"{url: "http://proxy.internal:3128"}"#, nil),
            (#"{url: "http://proxy.internal"}"#, nil),
            (#"{url: "http://user:\#(secret)@proxy.internal:3128"}"#,
             "upstream.proxy.url: must not hold credentials: put user:password in the variable named by upstream.proxy.auth_env"),
            (#"{url: "https://proxy.internal:3128"}"#,
             "upstream.proxy.url: must be an http:// URL with a host (the gateway speaks plain HTTP to the proxy and tunnels through it)"),
            (#"{url: "proxy.internal:3128"}"#,
             "upstream.proxy.url: must be an http:// URL with a host (the gateway speaks plain HTTP to the proxy and tunnels through it)"),
            (#"{url: "http://proxy.internal:3128/path"}"#,
             "upstream.proxy.url: must be the proxy's origin only (scheme, host, optional port), with no path or query"),
            (#"{url: "http://proxy.internal:3128", auth_env: PROXY_AUTH}"#, "upstream.proxy.auth_env: environment variable PROXY_AUTH is not set"),
            (#"{url: "http://proxy.internal:3128", auth: x}"#, "upstream.proxy.auth: unknown field; did you mean auth_env?"),
            (#"{auth_env: PROXY_AUTH}"#, "upstream.proxy.url: required field is missing"),
        ]
        for (proxy, expected) in cases {
            let got = refusal(proxy)
            #expect(got == expected, "\(proxy)")
            #expect(!(got ?? "").contains(secret))
        }
        // Credentials without a user, or without a colon, are refused without being quoted.
        for value in [":\(secret)", secret] {
            let got = refusal(#"{url: "http://proxy.internal:3128", auth_env: PROXY_AUTH}"#, environment: ["PROXY_AUTH": value])
            #expect(got == "upstream.proxy.auth_env: environment variable PROXY_AUTH must hold user:password")
        }
        #expect(refusal(#"{url: "http://proxy.internal:3128", auth_env: PROXY_AUTH}"#, environment: ["PROXY_AUTH": "u:\(secret)"]) == nil)
        // A plain-http upstream, even on loopback, sends its key through the proxy: refused unless allowed.
        #expect(refusal(#"{url: "http://proxy.internal:3128"}"#, url: "http://127.0.0.1:9000")
            == "upstream.url: plain http through upstream.proxy would send the server-held key unencrypted through the proxy; use https://, or set upstream.allow_plain_http: true on a network you trust")
        #expect(refusal(#"{url: "http://proxy.internal:3128"}"#, url: "http://127.0.0.1:9000", plain: true) == nil)

        let loaded = try ConfigLoader.load(yaml: """
            upstream:
              url: https://api.algorithmia.com
              key_env: UP_KEY
              proxy: {url: "http://10.1.2.3:3128", auth_env: PROXY_AUTH}
            clients: [{name: a, key_sha256: "\(String(repeating: "a", count: 64))", scopes: [algo]}]
            """, environment: ["UP_KEY": "upstream-key-0123", "PROXY_AUTH": "egress:\(secret)"])
        #expect(loaded.proxyAuth?.user == "egress" && loaded.proxyAuth?.password.revealed == secret)
        #expect(!"\(loaded)".contains(secret))
        let proxy = try #require(Forwarder.clientConfiguration(loaded).proxy)
        #expect(proxy.host == "10.1.2.3" && proxy.port == 3128)
        #expect(proxy.authorization == .basic(username: "egress", password: secret))
    }
}
