import AlgoGate
import AlgoTestSupport
import Foundation
import Testing

/// Algorithmia's browser-side JavaScript client calls the API from a web page: the browser sends
/// a preflight first, then the call with the page's `Origin`. A key is for the pages its client's
/// `cors_origins` list, as Algorithmia's keys can be restricted to some sites.
@Suite struct CORSTests {
    static let dashboard = "https://dash.example.com"
    static let local = "http://localhost:3000"
    static let stranger = "https://evil.example.net"
    static let anyKey = "browser-any-\(UUID().uuidString)"

    static func clients() -> String {
        """
        clients:
          - name: team-a
            key_sha256: "\(ClientRegistry.hash(of: Keys.teamA))"
            scopes: [algo, data:read]
            cors_origins: ["https://Dash.example.com:443", "http://localhost:3000/"]
          - name: team-b
            key_sha256: "\(ClientRegistry.hash(of: Keys.teamB))"
            scopes: [algo]
          - name: kiosk
            key_sha256: "\(ClientRegistry.hash(of: anyKey))"
            scopes: [algo]
            cors_origins: ["*"]
        """
    }

    static func preflight(_ h: GatewayHarness, origin: String, method: String = "POST",
                          headers: String? = "authorization,content-type") async throws -> TestHTTP.Reply {
        var fields = [("Origin", origin), ("Access-Control-Request-Method", method)]
        if let headers { fields.append(("Access-Control-Request-Headers", headers)) }
        return try await h.gateway.send(.OPTIONS, "/v1/algo/demo/Hello/0.1.0", headers: fields)
    }

    /// Algorithmia's browser client (`algorithmia.js`) calls `{address}/v1/web/algo/owner/name`,
    /// with these fields: from a listed page, a team key's call is answered, readable by the page.
    @Test func theBrowserClientsCallsAreAnsweredFromAListedPage() async throws {
        try await GatewayHarness.run(clientsYAML: Self.clients()) { h in
            let path = "/v1/web/algo/demo/Hello/0.1.0"
            let preflight = try await h.gateway.send(.OPTIONS, path, headers: [("Origin", Self.dashboard), ("Access-Control-Request-Method", "POST"),
                                                                              ("Access-Control-Request-Headers", "authorization,content-type")])
            #expect(preflight.status == 204)
            #expect(preflight.header("Access-Control-Allow-Origin") == Self.dashboard)
            let fields = [("Origin", Self.dashboard), ("Content-Type", "application/json"), ("Accept", "application/json, text/javascript"),
                          ("Authorization", "Simple \(Keys.teamA)")]
            let call = try await h.gateway.send(.POST, path, headers: fields, text: #""page""#)
            #expect(call.status == 200)
            #expect(call.object["result"] as? String == "Hello page")
            #expect(call.header("Access-Control-Allow-Origin") == Self.dashboard)
            #expect(call.header("Access-Control-Expose-Headers") == "X-Request-ID, Cache-Status, X-Cache, RateLimit, RateLimit-Policy, Retry-After, X-Error-Message")
            // team-b lists no page: its key is refused from one, on this endpoint as on /v1/algo.
            let unlisted = try await h.gateway.send(.POST, path, headers: [("Origin", Self.dashboard), ("Content-Type", "application/json"),
                                                                           ("Authorization", "Simple \(Keys.teamB)")], text: #""page""#)
            #expect(unlisted.status == 403)
            #expect(h.simulator.stats.snapshot.algoCalls == ["demo/Hello/0.1.0": 1])
        }
    }

    @Test func aPreflightIsAnsweredForTheOriginsOfEveryClient() async throws {
        try await GatewayHarness.run(clientsYAML: Self.clients()) { h in
            for origin in [Self.dashboard, Self.local] {
                let reply = try await Self.preflight(h, origin: origin)
                #expect(reply.status == 204, "\(origin)")
                #expect(reply.header("Access-Control-Allow-Origin") == origin)
                #expect(reply.header("Access-Control-Allow-Methods") == "GET, HEAD, POST, PUT, PATCH, DELETE")
                #expect(reply.header("Access-Control-Allow-Headers") == "authorization,content-type")
                #expect(reply.header("Access-Control-Max-Age") == "600")
                #expect(reply.headers["Vary"] == ["Origin", "Access-Control-Request-Method, Access-Control-Request-Headers"])
                #expect(reply.body.readableBytes == 0)
            }
            // The kiosk's `*` admits any page's preflight, its origin echoed.
            let other = try await Self.preflight(h, origin: Self.stranger)
            #expect(other.status == 204 && other.header("Access-Control-Allow-Origin") == Self.stranger)
            // A list of requested headers that is not one is not echoed: the browser then refuses.
            let odd = try await Self.preflight(h, origin: Self.dashboard, headers: "authorization, bad header")
            #expect(odd.status == 204 && odd.header("Access-Control-Allow-Headers") == nil)
            // Preflights are logged, as route `preflight`, with no client.
            #expect(await eventually { h.logs.all.filter { $0.contains("route=preflight") && $0.contains("status=204") && $0.contains("client=-") }.count == 4 })
            // No upstream saw any of them.
            #expect(h.simulator.stats.snapshot.totalRequests == 0)
        }
    }

    @Test func aPreflightFromAPageNoClientListsIsRefusedWithoutCORSFields() async throws {
        let onlyTeamA = Self.clients().components(separatedBy: "  - name: kiosk")[0]
        try await GatewayHarness.run(clientsYAML: onlyTeamA) { h in
            let reply = try await Self.preflight(h, origin: Self.stranger)
            #expect(reply.status == 403)
            #expect(envelope(reply).message == "the web page at \(Self.stranger) may not call the gateway: no client's cors_origins list it")
            #expect(envelope(reply).type == "PermissionDenied")
            #expect(reply.header("Access-Control-Allow-Origin") == nil)
            // Same-looking origins that are other origins: another port, another scheme.
            for origin in ["https://dash.example.com:8443", "http://dash.example.com", "null"] {
                #expect(try await Self.preflight(h, origin: origin).status == 403, "\(origin)")
            }
        }
    }

    @Test func aCallFromAListedPageIsAnsweredWithCORSFields() async throws {
        try await GatewayHarness.run(clientsYAML: Self.clients()) { h in
            let page = [("Origin", Self.dashboard)]
            let first = try await h.gateway.send(.POST, "/v1/algo/demo/Hello/0.1.0", headers: simple(Keys.teamA) + textType + page, text: "web")
            #expect(first.status == 200)
            #expect(first.object["result"] as? String == "Hello web")
            #expect(first.header("Access-Control-Allow-Origin") == Self.dashboard)
            #expect(first.header("Access-Control-Expose-Headers") == "X-Request-ID, Cache-Status, X-Cache, RateLimit, RateLimit-Policy, Retry-After, X-Error-Message")
            #expect(first.headers["Vary"].contains("Origin"))
            #expect(first.header("X-Cache") == "MISS")
            // The repeat is a hit, answered by the pipeline (a page's call is not answered on the
            // event loop), with the same fields.
            let hit = try await h.gateway.send(.POST, "/v1/algo/demo/Hello/0.1.0", headers: simple(Keys.teamA) + textType + page, text: "web")
            #expect(hit.status == 200 && hit.text == first.text)
            #expect(hit.header("X-Cache") == "HIT")
            #expect(hit.header("Access-Control-Allow-Origin") == Self.dashboard)
            #expect(try await h.gateway.send(.GET, "/metrics").text.contains("algogate_cache_fast_hits_total 0"))
            // An origin as the browser serializes it matches the configured one however that was written.
            let local = try await h.gateway.send(.POST, "/v1/algo/demo/Hello/0.1.0", headers: simple(Keys.teamA) + textType + [("Origin", Self.local)], text: "l")
            #expect(local.status == 200 && local.header("Access-Control-Allow-Origin") == Self.local)
            // A refusal carries the fields too, so the page can read why.
            let refused = try await h.gateway.send(.GET, "/v1/algorithms/demo/Hello", headers: simple(Keys.teamA) + page)
            #expect(refused.status == 403)
            #expect(envelope(refused).message == "client 'team-a' lacks the 'manage' scope for GET manage requests")
            #expect(refused.header("Access-Control-Allow-Origin") == Self.dashboard)
            let unknown = try await h.gateway.send(.POST, "/v1/algo/demo/Hello/0.1.0", headers: simple("no-such-key") + textType + page, text: "x")
            #expect(unknown.status == 401 && unknown.header("Access-Control-Allow-Origin") == Self.dashboard)
            // Its own description says which pages the key is for.
            let me = try await h.gateway.send(.GET, "/_gateway/me", headers: simple(Keys.teamA) + page)
            #expect(me.object["cors_origins"] as? [String] == [Self.local, Self.dashboard])
            #expect(try await h.gateway.send(.GET, "/_gateway/me", headers: simple(Self.anyKey) + page).object["cors_origins"] as? [String] == ["*"])
            #expect(try await h.gateway.send(.GET, "/_gateway/me", headers: simple(Keys.teamB)).object["cors_origins"] == nil)
        }
    }

    @Test func aKeyIsRefusedFromAPageItsClientDoesNotList() async throws {
        try await GatewayHarness.run(clientsYAML: Self.clients()) { h in
            // team-b's key is not for browsers; team-a's is for its two pages only. Both pages
            // pass the preflight (some client lists them), so the call itself is refused.
            let cases = [(Keys.teamB, "team-b", Self.dashboard), (Keys.teamA, "team-a", Self.stranger)]
            for (key, name, origin) in cases {
                let reply = try await h.gateway.send(.POST, "/v1/algo/demo/Hello/0.1.0", headers: simple(key) + textType + [("Origin", origin)], text: "x")
                #expect(reply.status == 403, "\(name)")
                #expect(envelope(reply).message == "client '\(name)' may not be used from the web page at \(origin): its cors_origins do not list it")
                #expect(reply.header("Access-Control-Allow-Origin") == origin)
            }
            // Nothing reached the upstream, and the refusals count as team-b's and team-a's.
            #expect(h.simulator.stats.snapshot.totalRequests == 0)
            #expect(await eventually { h.logs.all.filter { $0.contains("status=403") && $0.contains("error_type=PermissionDenied") }.count == 2 })
            // The same keys with no Origin (a program, not a page) are answered as ever, without CORS fields.
            for key in [Keys.teamA, Keys.teamB] {
                let plain = try await h.gateway.send(.POST, "/v1/algo/demo/Hello/0.1.0", headers: simple(key) + textType, text: "x")
                #expect(plain.status == 200 && plain.header("Access-Control-Allow-Origin") == nil && plain.header("Access-Control-Expose-Headers") == nil)
            }
        }
    }

    @Test func corsOriginsMustBeOrigins() {
        let hash = String(repeating: "a", count: 64)
        for (entry, message) in [
            ("dash.example.com", "'dash.example.com' is not an origin: write scheme://host[:port] (http or https, no path), or * for any"),
            ("https://dash.example.com/app", "'https://dash.example.com/app' is not an origin: write scheme://host[:port] (http or https, no path), or * for any"),
            ("ftp://files.example.com", "'ftp://files.example.com' is not an origin: write scheme://host[:port] (http or https, no path), or * for any"),
        ] {
            let yaml = ConfigTests.yaml("clients: [{name: a, key_sha256: \"\(hash)\", scopes: [algo], cors_origins: [\"https://ok.example.com\", \"\(entry)\"]}]")
            #expect(ConfigTests.refusal(yaml)?.description == "clients[0].cors_origins[1]: \(message)")
        }
        #expect(ConfigTests.refusal(ConfigTests.yaml("clients: [{name: a, key_sha256: \"\(hash)\", scopes: [algo], cors_origins: [\"http://[::1]:8080\", \"*\"]}]")) == nil)
        let origins = try? BrowserOrigins(parsing: ["HTTP://[::1]:80", "https://Example.COM:8443/"])
        #expect(origins?.origins == ["http://[::1]", "https://example.com:8443"])
        #expect(origins?.permits("http://[::1]") == true && origins?.permits("https://example.com:8443") == true)
        #expect(origins?.permits("https://example.com") == false && origins?.permits("null") == false)
        // A user name is no part of an origin (RFC 6454 §4).
        #expect((try? BrowserOrigins(parsing: ["https://user@dash.example.com"])) == nil)
        // A preflight is answered for every client's origins: one client's `*` stays whatever
        // lists come after it.
        let all = BrowserOrigins.union([try? BrowserOrigins(parsing: ["*"]), try? BrowserOrigins(parsing: ["https://a.example.com"])].compactMap { $0 })
        #expect(all.any && all.permits("https://elsewhere.example.com"))
    }
}
