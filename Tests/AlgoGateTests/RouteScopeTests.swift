import AlgoTestSupport
import Foundation
import Testing
@testable import AlgoGate

@Suite struct RouteScopeTests {
    @Test func everyRouteClassNeedsItsScope() async throws {
        try await GatewayHarness.run { h in
            // algo: team-b has it, reader does not
            let algoOK = try await h.gateway.send(.POST, "/v1/algo/demo/Hello/0.1.0", headers: simple(Keys.teamB) + textType, text: "x")
            #expect(algoOK.status == 200)
            let algoNo = try await h.gateway.send(.POST, "/v1/algo/demo/Hello/0.1.0", headers: simple(Keys.reader) + textType, text: "x")
            #expect(algoNo.status == 403)
            #expect(algoNo.text == #"{"error":{"error_type":"PermissionDenied","message":"client 'reader' lacks the 'algo' scope for POST algo requests"}}"#)

            // data:read for GET/HEAD, data:write for the rest
            let readOK = try await h.gateway.send(.GET, "/v1/data/.my", headers: simple(Keys.reader))
            #expect(readOK.status == 200)
            let headOK = try await h.gateway.send(.HEAD, "/v1/data/.my", headers: simple(Keys.reader))
            #expect(headOK.status == 200)
            // `/v1/data` alone names the root, `data://`: a data read, not the operator's.
            let rootOK = try await h.gateway.send(.GET, "/v1/data", headers: simple(Keys.reader))
            #expect(rootOK.status == 200, "\(rootOK.text)")
            let rootOutside = try await h.gateway.send(.GET, "/v1/data", headers: simple(Keys.teamA))
            #expect(rootOutside.status == 403)
            #expect(envelope(rootOutside).message == "client 'team-a' may not access data://: outside its data prefixes (data://.my/team-a/, s3://bucket/team-a/)")
            for (method, body) in [(HTTPMethod.PUT, "x"), (.POST, #"{"name":"d"}"#), (.PATCH, #"{"acl":{"read":[]}}"#), (.DELETE, "")] {
                let denied = try await h.gateway.send(method, "/v1/data/.my/d", headers: simple(Keys.reader) + jsonType, text: body)
                #expect(denied.status == 403, "\(method)")
                #expect(envelope(denied).message == "client 'reader' lacks the 'data:write' scope for \(method.rawValue) data requests")
            }
            let dataNo = try await h.gateway.send(.GET, "/v1/connector/s3/bucket/x", headers: simple(Keys.teamB))
            #expect(dataNo.status == 403)

            // manage
            let manageOK = try await h.gateway.send(.GET, "/v1/algorithms/demo/Hello", headers: simple(Keys.teamA))
            #expect(manageOK.status == 200)
            #expect(manageOK.object["name"] as? String == "Hello")
            let manageNo = try await h.gateway.send(.GET, "/v1/algorithms/demo/Hello", headers: simple(Keys.teamB))
            #expect(manageNo.status == 403)
            #expect(envelope(manageNo).message == "client 'team-b' lacks the 'manage' scope for GET manage requests")

            // admin: any other /v1 path
            let adminNo = try await h.gateway.send(.GET, "/v1/users/someone", headers: simple(Keys.teamA))
            #expect(adminNo.status == 403)
            let adminYes = try await h.gateway.send(.GET, "/v1/users/someone", headers: simple(Keys.admin))
            #expect(adminYes.status == 404)  // forwarded: the simulator has no such endpoint
            #expect(envelope(adminYes).message == "no such endpoint: /v1/users/someone")
            #expect(h.simulator.stats.snapshot.requestsByClass["other"] == 1)
        }
    }

    @Test func aTrailingSlashNamesTheSameAlgorithm() async throws {
        try await GatewayHarness.run { h in
            let plain = try await h.gateway.send(.POST, "/v1/algo/demo/Hello/0.1.0", headers: simple(Keys.teamB) + textType, text: "HAL")
            let slash = try await h.gateway.send(.POST, "/v1/algo/demo/Hello/0.1.0/", headers: simple(Keys.teamB) + textType, text: "HAL")
            #expect(plain.object["result"] as? String == "Hello HAL")
            #expect(slash.object["result"] as? String == "Hello HAL")
            // The same call, so the second is answered from the cache.
            #expect(slash.header("X-Cache") == "HIT")
            #expect(h.simulator.stats.snapshot.algoCalls == ["demo/Hello/0.1.0": 1])
            let bad = try await h.gateway.send(.POST, "/v1/algo/demo", headers: simple(Keys.teamB) + textType, text: "HAL")
            #expect(bad.status == 404)
            let get = try await h.gateway.send(.GET, "/v1/algo/demo/Hello/0.1.0", headers: simple(Keys.teamB))
            #expect(get.status == 405)
            #expect(envelope(get).message == "algorithms are called with POST")
            #expect(get.header("Allow") == "POST")
            // The method is refused before the input is read: the same answer for a client whose
            // inputs are checked against data prefixes (team-a), and nothing reaches the upstream.
            for method in [HTTPMethod.GET, .DELETE, .PUT] {
                let refused = try await h.gateway.send(method, "/v1/algo/demo/Hello/0.1.0", headers: simple(Keys.teamA))
                #expect(refused.status == 405)
                #expect(envelope(refused).message == "algorithms are called with POST")
                #expect(refused.header("Allow") == "POST")
            }
            #expect(h.simulator.stats.snapshot.algoCalls == ["demo/Hello/0.1.0": 1])
        }
    }

    /// The official Node clients put the reference they are given into the path as it is, and
    /// their README's first call is `client.algo("algo://demo/Hello/0.1.1")`; some users write
    /// `"/owner/name"`. Every other official client strips `algo://` or a leading `/` itself. Both
    /// name the algorithm after them: the same call, the same cache entry.
    @Test func theNodeClientsAlgorithmReferencesNameTheAlgorithm() async throws {
        try await GatewayHarness.run { h in
            // The classic client (npm `algorithmia` 0.3): a chunked body, the key as `Simple KEY`.
            let classic = try await RawConnection.connect(port: h.gatewayPort, sending: """
                POST /v1/algo/algo://demo/Hello/0.1.0 HTTP/1.1\r\nHost: 127.0.0.1:\(h.gatewayPort)\r\n\
                User-Agent: algorithmia-nodejs/0.3.10 (NodeJS v20.20.2)\r\nAuthorization: Simple \(Keys.teamB)\r\n\
                Content-Type: text/plain\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n3\r\nHAL\r\n0\r\n\r\n
                """)
            // A wait, not a bound: the answer is a miss (the simulator's call, then the entry
            // stored), and once, in a full run where tests took ten times their time alone, it
            // was not in within 10 s.
            #expect(await classic.waitForClose(within: .seconds(30)))
            let first = try #require(RawResponse.parse(classic.text).first)
            #expect(first.statusLine == "HTTP/1.1 200 OK")
            let answer = try JSONSerialization.jsonObject(with: Data(first.body.utf8)) as? [String: Any]
            #expect(answer?["result"] as? String == "Hello HAL", "\(first.body)")
            #expect(first.headers["cache-status"] == "algogate; fwd=miss; stored")

            // The same call however the reference is spelt: answered from that one entry.
            for path in ["/v1/algo/demo/Hello/0.1.0", "/v1/algo/algo://demo/Hello/0.1.0/", "/v1/algo//demo/Hello/0.1.0"] {
                let reply = try await h.gateway.send(.POST, path, headers: simple(Keys.teamB) + textType, text: "HAL")
                #expect(reply.status == 200, "\(path)")
                #expect(reply.text == first.body, "\(path)")
                #expect(reply.header("X-Cache") == "HIT", "\(path)")
            }
            // The TypeScript client (2.x): a trailing slash and its options; `output=raw` keys an entry of its own.
            let typed = try await h.gateway.send(.POST, "/v1/algo/algo://demo/Hello/0.1.0/?timeout=300&stdout=false&output=raw",
                                                 headers: simple(Keys.teamB) + textType, text: "HAL")
            #expect(typed.status == 200)
            #expect(typed.text == "Hello HAL")
            #expect(typed.header("Cache-Status") == "algogate; fwd=miss; stored")
            // Unpinned, it is not cached, as ever.
            let unpinned = try await h.gateway.send(.POST, "/v1/algo/algo://demo/Hello", headers: simple(Keys.teamB) + textType, text: "HAL")
            #expect(unpinned.status == 200)
            #expect(unpinned.header("Cache-Status") == "algogate; fwd=uri-miss")
            #expect(h.simulator.stats.snapshot.algoCalls == ["demo/Hello/0.1.0": 2, "demo/Hello": 1])

            // One prefix, once: what is left must still be a reference.
            for path in ["/v1/algo/algo:///demo/Hello", "/v1/algo/algo://algo://demo/Hello", "/v1/algo///demo/Hello", "/v1/algo/algo:/demo/Hello",
                         "/v1/algo/ALGO://demo/Hello", "/v1/algo/algo://demo"] {
                let reply = try await h.gateway.send(.POST, path, headers: simple(Keys.teamB) + textType, text: "HAL")
                #expect(reply.status == 404, "\(path)")
                #expect(envelope(reply).message == "no algorithm at \(path): use /v1/algo/{owner}/{name}[/{version}]", "\(path)")
            }
            #expect(h.simulator.stats.snapshot.algoCalls == ["demo/Hello/0.1.0": 2, "demo/Hello": 1])
        }
    }

    /// What reaches the upstream is the algorithm's own path, whatever the client's spelling.
    @Test func theNodeClientsReferencesGoUpstreamAsTheAlgorithmsPath() async throws {
        try await RecordingUpstream.run { recorder, h in
            for path in ["/v1/algo/algo://demo/Hello/0.1.0/?timeout=300&stdout=false&output=raw", "/v1/algo//demo/Hello?stdout=false",
                         "/v1/algo/demo/Hello/0.1.0?", "/v1/algo/demo/Hello"] {
                let reply = try await h.gateway.send(.POST, path, headers: simple(Keys.teamB) + textType, text: "HAL")
                #expect(reply.status == 200, "\(path)")
            }
            // An empty query (a bare `?`) goes as none.
            #expect(recorder.since(0).map(\.target) == ["/v1/algo/demo/Hello/0.1.0?timeout=300&stdout=false&output=raw", "/v1/algo/demo/Hello?stdout=false",
                                                         "/v1/algo/demo/Hello/0.1.0", "/v1/algo/demo/Hello"])
        }
    }

    /// `/v1/web/algo/...` is Algorithmia's endpoint for calls from web pages: its browser client
    /// appends `/v1/web/algo` to the address it is given. An algorithm call, needing `algo` (it
    /// was an `admin` path, so a team's page got 403), answered from the same cache entry and
    /// forwarded as `/v1/algo/...`.
    @Test func theBrowserEndpointIsAnAlgorithmCall() async throws {
        try await GatewayHarness.run { h in
            let web = try await h.gateway.send(.POST, "/v1/web/algo/demo/Hello/0.1.0", headers: simple(Keys.teamB) + jsonType
                                               + [("Accept", "application/json, text/javascript")], text: #""HAL""#)
            #expect(web.status == 200)
            #expect(web.object["result"] as? String == "Hello HAL")
            #expect(web.header("Cache-Status") == "algogate; fwd=miss; stored")
            let plain = try await h.gateway.send(.POST, "/v1/algo/demo/Hello/0.1.0", headers: simple(Keys.teamB) + jsonType, text: #""HAL""#)
            #expect(plain.header("X-Cache") == "HIT")
            #expect(plain.text == web.text)
            let again = try await h.gateway.send(.POST, "/v1/web/algo/demo/Hello/0.1.0", headers: simple(Keys.teamB) + jsonType, text: #""HAL""#)
            #expect(again.header("X-Cache") == "HIT")
            #expect(h.simulator.stats.snapshot.algoCalls == ["demo/Hello/0.1.0": 1])

            let noScope = try await h.gateway.send(.POST, "/v1/web/algo/demo/Hello/0.1.0", headers: simple(Keys.reader) + jsonType, text: #""HAL""#)
            #expect(noScope.status == 403)
            #expect(envelope(noScope).message == "client 'reader' lacks the 'algo' scope for POST algo requests")
            let get = try await h.gateway.send(.GET, "/v1/web/algo/demo/Hello/0.1.0", headers: simple(Keys.teamB))
            #expect(get.status == 405)
            #expect(get.header("Allow") == "POST")
            let bad = try await h.gateway.send(.POST, "/v1/web/algo/demo", headers: simple(Keys.teamB) + jsonType, text: #""HAL""#)
            #expect(bad.status == 404)
            #expect(envelope(bad).message == "no algorithm at /v1/web/algo/demo: use /v1/algo/{owner}/{name}[/{version}]")
            // Other `/v1/web/` paths stay what they were: any other `/v1` path, for the admin key.
            let other = try await h.gateway.send(.GET, "/v1/web/other", headers: simple(Keys.teamB))
            #expect(other.status == 403)
            #expect(envelope(other).message == "client 'team-b' lacks the 'admin' scope for GET admin requests: /v1/web/other is not under /v1/algo/, /v1/data/, /v1/connector/ or /v1/algorithms/, the paths teams' scopes cover; the rest of /v1 is the operator's")
            // A client whose address ends in /v1 sends every path with /v1 twice: told so.
            let doubled = try await h.gateway.send(.POST, "/v1/v1/algo/demo/Hello/0.1.0", headers: simple(Keys.teamB) + jsonType, text: #""HAL""#)
            #expect(doubled.status == 403)
            #expect(envelope(doubled).message == "client 'team-b' lacks the 'admin' scope for POST admin requests: /v1/v1/algo/demo/Hello/0.1.0 is not under /v1/algo/, /v1/data/, /v1/connector/ or /v1/algorithms/, the paths teams' scopes cover; the rest of /v1 is the operator's; the path has /v1 twice: set the client's address (ALGORITHMIA_API) to the gateway's origin alone, without /v1")
            #expect(envelope(doubled).type == "PermissionDenied")
            let doubledAlone = try await h.gateway.send(.GET, "/v1/v1", headers: simple(Keys.teamB))
            #expect(doubledAlone.status == 403)
            #expect(envelope(doubledAlone).message == "client 'team-b' lacks the 'admin' scope for GET admin requests: /v1/v1 is not under /v1/algo/, /v1/data/, /v1/connector/ or /v1/algorithms/, the paths teams' scopes cover; the rest of /v1 is the operator's; the path has /v1 twice: set the client's address (ALGORITHMIA_API) to the gateway's origin alone, without /v1")
            #expect(h.simulator.stats.snapshot.algoCalls == ["demo/Hello/0.1.0": 1])
        }
    }

    @Test func theBrowserEndpointGoesUpstreamAsTheAlgorithmsPath() async throws {
        try await RecordingUpstream.run { recorder, h in
            let reply = try await h.gateway.send(.POST, "/v1/web/algo/demo/Hello/0.1.0?timeout=20", headers: simple(Keys.teamB) + jsonType, text: #""HAL""#)
            #expect(reply.status == 200)
            #expect(recorder.since(0).map(\.target) == ["/v1/algo/demo/Hello/0.1.0?timeout=20"])
        }
    }

    @Test func onlyOwnerNameAndVersionNameAnAlgorithm() async throws {
        try await GatewayHarness.run { h in
            // Two or three names of letters, digits, '-', '_' and '.', not dot segments; at most one
            // trailing slash.
            for path in ["/v1/algo/demo", "/v1/algo/demo/", "/v1/algo/demo/Hello//", "/v1/algo//Hello", "/v1/algo/demo//0.1.0",
                         "/v1/algo/demo/Hello/0.1.0/extra", "/v1/algo/demo/../0.1.0", "/v1/algo/demo/Hello/.", "/v1/algo/demo/He%20llo",
                         "/v1/algo/demo/Hello/0.1.0//"] {
                let reply = try await h.gateway.send(.POST, path, headers: simple(Keys.teamB) + textType, text: "HAL")
                #expect(reply.status == 404, "\(path)")
                #expect(envelope(reply).message == "no algorithm at \(path): use /v1/algo/{owner}/{name}[/{version}]", "\(path)")
                #expect(envelope(reply).type == "EntityNotFoundError", "\(path)")
            }
            #expect(h.simulator.stats.snapshot.algoCalls.isEmpty)
            // Unpinned, pinned, each with its trailing slash, and a name with every allowed character.
            for path in ["/v1/algo/demo/Hello", "/v1/algo/demo/Hello/", "/v1/algo/demo/Hello/0.1.0", "/v1/algo/demo/Hello/0.1.0/"] {
                let reply = try await h.gateway.send(.POST, path, headers: simple(Keys.teamB) + textType, text: "HAL")
                #expect(reply.status == 200, "\(path)")
                #expect(reply.object["result"] as? String == "Hello HAL", "\(path)")
            }
            #expect(h.simulator.stats.snapshot.algoCalls == ["demo/Hello": 2, "demo/Hello/0.1.0": 1])
            let named = try await h.gateway.send(.POST, "/v1/algo/a-B_9.x/No.Such_algo-1/1.2.3", headers: simple(Keys.teamB) + textType, text: "HAL")
            #expect(named.status == 404)
            #expect(h.simulator.stats.snapshot.algoCalls["a-B_9.x/No.Such_algo-1/1.2.3"] == 1)
        }
    }

    /// Management and other `/v1` paths are forwarded as they came, and many servers resolve dot
    /// segments: to them `/v1/algorithms/../data/.my/team-b/f` is a read of team-b's file, which
    /// team-a (manage scope, confined to team-a's data) reached as a management call. Such paths,
    /// however spelt, are refused before they reach the upstream.
    @Test func managementAndOtherPathsMustNotResolveElsewhere() async throws {
        try await GatewayHarness.run { h in
            let paths = ["/v1/algorithms/../data/.my/team-b/f", "/v1/algorithms/demo/../../data/.my/team-b", "/v1/algorithms/%2e%2e/data/.my",
                         "/v1/algorithms/%2E./data", "/v1/algorithms/..%2fdata/.my", "/v1/algorithms/demo%2f..%2f..%2fdata", "/v1/algorithms/./demo/Hello",
                         "/v1/algorithms/..%5Cdata/.my", "/v1/algorithms/demo%5c..%5c..%5cdata", "/v1/algorithms/..;x/data/.my",
                         "/v1/algorithms/%EF%BC%8E%EF%BC%8E/data/.my", "/v1/algorithms/%252e%252e/data", "/v1/algorithms/demo/Hello/%00",
                         "/v1/users/../data/.my/team-b/f", "/v1/./data/.my/team-b/f"]
            for path in paths {
                for key in [Keys.teamA, Keys.admin] {
                    let reply = try await h.gateway.send(.GET, path, headers: simple(key))
                    #expect(reply.status == 400, "\(path)")
                    #expect(reply.header("Content-Type") == "application/json")
                    #expect(envelope(reply).type == "InputError", "\(path)")
                    #expect(envelope(reply).message == "the path \(path) has a segment that some servers resolve as '.' or '..' or read as holding a '/': send it resolved, without dot segments or encoded separators", "\(path)")
                }
            }
            // Fullwidth dots unencoded, as raw UTF-8 in the request line: the HTTP parser refuses
            // the line before any route is read. (Were a path to arrive so, the check refuses it as
            // its percent-encoded spelling: `RouteClass.classify`, below.)
            let raw = try await RawConnection.connect(port: h.gatewayPort, sending: """
                GET /v1/algorithms/\u{FF0E}\u{FF0E}/data/team-b HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Simple \(Keys.teamA)\r\n\
                Connection: close\r\n\r\n
                """)
            #expect(await raw.waitForClose(within: .seconds(30)))
            let rawAnswer = try #require(RawResponse.parse(raw.text).first)
            #expect(rawAnswer.statusLine == "HTTP/1.1 400 Bad Request")
            #expect(rawAnswer.body == #"{"error":{"error_type":"InputError","message":"the request line is not valid HTTP/1.1: it must read METHOD /path HTTP/1.1, with characters such as spaces percent-encoded in the path and query (a space is %20)"}}"#)
            #expect(throws: GatewayError.badRequest("the path /v1/algorithms/\u{FF0E}\u{FF0E}/data/team-b has a segment that some servers resolve as '.' or '..' or read as holding a '/': send it resolved, without dot segments or encoded separators")) {
                // (No ASCII dot in it, so that its fullwidth ones alone must call for the check.)
                try RouteClass.classify(path: "/v1/algorithms/\u{FF0E}\u{FF0E}/data/team-b")
            }
            #expect(h.simulator.stats.snapshot.requestsByClass.isEmpty, "\(h.simulator.stats.snapshot.requestsByClass)")
            // Names with dots, as versions have, pass.
            let version = try await h.gateway.send(.GET, "/v1/algorithms/demo/Hello/versions/0.1.0", headers: simple(Keys.teamA))
            #expect(version.status == 200, "\(version.text)")
            #expect(h.simulator.stats.snapshot.requestsByClass["management"] == 1, "\(h.simulator.stats.snapshot.requestsByClass)")
        }
    }

    /// A scope is granted for the request's own method, so nothing that some servers take for the
    /// method instead may cross: a reader's GET with `X-HTTP-Method-Override: DELETE` would delete.
    @Test func methodOverridesAreRefused() async throws {
        try await GatewayHarness.run { h in
            let stored = try await h.gateway.send(.POST, "/v1/algo/demo/Hello/0.1.0", headers: simple(Keys.teamB) + textType, text: "HAL")
            #expect(stored.header("X-Cache") == "MISS")
            let before = h.simulator.stats.snapshot.requestsByClass
            let refusals: [(HTTPMethod, String, [(String, String)], String, String)] = [
                (.GET, "/v1/data/.my/team-a/x", [("X-HTTP-Method-Override", "DELETE")], Keys.reader, "an X-HTTP-Method-Override field"),
                (.GET, "/v1/data/.my/team-a/x", [("x-http-method", "PUT")], Keys.reader, "an X-HTTP-Method field"),
                (.HEAD, "/v1/data/.my/team-a/x", [("X-Method-Override", "DELETE")], Keys.reader, "an X-Method-Override field"),
                (.GET, "/v1/data/.my/team-a/x?_method=DELETE", [], Keys.reader, "a _method query parameter"),
                (.GET, "/v1/data/.my/team-a/x?a=1&%5Fmethod=delete", [], Keys.reader, "a _method query parameter"),
                (.GET, "/v1/algorithms/demo/Hello?_METHOD=DELETE", [], Keys.teamA, "a _method query parameter"),
                // A fullwidth low line and m, which a server normalising its input (NFKC) reads as `_m`.
                (.GET, "/v1/data/.my/team-a/x?%EF%BC%BF%EF%BD%8Dethod=DELETE", [], Keys.reader, "a _method query parameter"),
                (.POST, "/v1/algo/demo/Hello/0.1.0", [("X-HTTP-Method-Override", "GET")] + textType, Keys.teamB, "an X-HTTP-Method-Override field"),
            ]
            for (method, path, headers, key, what) in refusals {
                let reply = try await h.gateway.send(method, path, headers: simple(key) + headers, text: method == .POST ? "HAL" : "")
                #expect(reply.status == 400, "\(method) \(path)")
                #expect(reply.header("X-Cache") == nil, "\(method) \(path): a stored answer must not answer it")
                if method != .HEAD {
                    #expect(envelope(reply).type == "InputError")
                    #expect(envelope(reply).message == "the request carries \(what), which some servers take for its method: the gateway grants a request by its own method (\(method.rawValue)), so send the method itself")
                }
            }
            // Fields some servers route by instead of the path, likewise.
            for (method, path, field, key) in [(HTTPMethod.GET, "/v1/data/.my/team-a/x", "X-Original-URL", Keys.reader),
                                               (.POST, "/v1/algo/demo/Hello/0.1.0", "x-rewrite-url", Keys.teamB)] {
                let reply = try await h.gateway.send(method, path, headers: simple(key) + textType + [(field, "/v1/data/.my/team-b/x")], text: "HAL")
                #expect(reply.status == 400, "\(field)")
                #expect(reply.header("X-Cache") == nil, "\(field): a stored answer must not answer it")
                let canonical = field == "X-Original-URL" ? "X-Original-URL" : "X-Rewrite-URL"
                #expect(envelope(reply).message == "the request carries an \(canonical) field, which some servers take for its path: the gateway grants a request by its own path, so send the path itself")
            }
            #expect(h.simulator.stats.snapshot.requestsByClass == before, "nothing reached the upstream")
            // Names that only look alike pass.
            let plain = try await h.gateway.send(.GET, "/v1/data/.my?method=x&my_method=y&_methods=z", headers: simple(Keys.reader))
            #expect(plain.status == 200)
        }
    }
}
