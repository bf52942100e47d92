@testable import AlgoGate
import AlgoTestSupport
import Foundation
import Testing

@Suite struct ForwardingTests {
    @Test func theUpstreamSeesOnlyTheServerKeyAndEndToEndHeaders() async throws {
        try await GatewayHarness.run { h in
            let reply = try await h.gateway.send(.POST, "/v1/algo/demo/Hello/0.1.0", headers: simple(Keys.teamA) + textType + [
                ("Connection", "keep-alive, X-Hop-Secret"), ("X-Hop-Secret", "1"), ("Keep-Alive", "timeout=5"),
                ("Cookie", "session=abc"), ("Proxy-Authorization", "Basic eDp5"), ("Proxy-Connection", "keep-alive"),
                ("TE", "trailers"), ("X-Team-Trace", "t-1"),
                ("X-Forwarded-For", "10.20.30.40"), ("X-Forwarded-Host", "algogate.internal"), ("X-Forwarded-Proto", "https"),
                ("X-Forwarded-Port", "443"), ("Forwarded", "for=10.20.30.40;proto=https"), ("X-Real-IP", "10.20.30.40"),
            ], text: "HAL")
            #expect(reply.status == 200)
            let stats = h.simulator.stats.snapshot
            #expect(stats.authorizations == ["Simple \(Keys.upstream)"])
            let names = Set(stats.headerNames)
            for stripped in ["x-hop-secret", "keep-alive", "cookie", "proxy-authorization", "proxy-connection", "te",
                             "x-forwarded-for", "x-forwarded-host", "x-forwarded-proto", "x-forwarded-port", "forwarded", "x-real-ip"] {
                #expect(!names.contains(stripped), "\(stripped) reached the upstream")
            }
            // The client's network stays in the gateway's log.
            #expect(h.logs.all.contains { $0.contains("request") && $0.contains("forwarded_for=10.20.30.40") })
            #expect(names.isSuperset(of: ["x-team-trace", "content-type", "x-request-id", "authorization", "via"]))
        }
    }

    /// A W3C `traceparent` goes upstream as it came, `tracestate` beside it, and its trace id is
    /// in the request's log line (`trace_id`), so the line can be found from the client's trace.
    /// One that is not valid Trace Context (upper-case hex, an all-zero id, an unknown version,
    /// the wrong length, or two of them) names no trace, and still goes upstream untouched.
    @Test func aTraceParentGoesUpstreamAsItCameAndItsTraceIDIsLogged() async throws {
        try await RecordingUpstream.run { recorder, h in
            let valid = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
            let cases: [(id: String, fields: [(String, String)], logged: String?)] = [
                ("trace-valid", [("traceparent", valid), ("tracestate", "congo=t61rcWkgMzE")], "4bf92f3577b34da6a3ce929d0e0e4736"),
                ("trace-upper", [("traceparent", "00-4BF92F3577B34DA6A3CE929D0E0E4736-00F067AA0BA902B7-01")], nil),
                ("trace-zero", [("traceparent", "00-00000000000000000000000000000000-00f067aa0ba902b7-01")], nil),
                ("trace-zero-span", [("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01")], nil),
                ("trace-version", [("traceparent", "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")], nil),
                ("trace-short", [("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01")], nil),
                ("trace-two", [("traceparent", valid), ("traceparent", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")], nil),
            ]
            for (id, fields, logged) in cases {
                let before = recorder.count
                let reply = try await h.gateway.send(.POST, "/v1/algo/demo/Hello", headers: simple(Keys.teamA) + textType + [("X-Request-ID", id)] + fields,
                                                     text: "HAL")
                #expect(reply.status == 200, "\(id)")
                let received = try #require(recorder.since(before).first)
                let sent = fields.map { [$0.0, $0.1] }
                #expect(received.headers.filter { ["traceparent", "tracestate"].contains($0[0].lowercased()) } == sent, "\(id)")
                #expect(await eventually { h.logs.all.contains { $0.contains("request_id=\(id) ") } })
                let line = try #require(h.logs.all.first { $0.contains("request_id=\(id) ") })
                if let logged {
                    #expect(line.contains(" trace_id=\(logged)") || line.hasSuffix("trace_id=\(logged)"), "\(line)")
                } else {
                    #expect(!line.contains("trace_id"), "\(line)")
                }
            }
        }
    }

    /// A method the data API does not take is not the gateway's to judge: it is forwarded (with
    /// the write scope, as every method but GET and HEAD) and the upstream's 405 comes back as
    /// it was sent, `Allow` included. A client without the write scope is refused first.
    @Test func aMethodTheUpstreamDoesNotTakeComesBackAsItAnswered() async throws {
        try await GatewayHarness.run { h in
            let reply = try await h.gateway.send(.OPTIONS, "/v1/data/.my/team-a/x", headers: simple(Keys.teamA))
            #expect(reply.status == 405)
            #expect(reply.header("Allow") == "GET, HEAD, PUT, POST, PATCH, DELETE")
            #expect(canonicalJSON(reply.json) == canonicalJSON(literal: #"{"error":{"error_type":"InputError","message":"method OPTIONS is not supported on data paths"}}"#))
            #expect(h.simulator.stats.snapshot.requestsByClass == ["data": 1])
            let reader = try await h.gateway.send(.OPTIONS, "/v1/data/.my/team-a/x", headers: simple(Keys.reader))
            #expect(reader.status == 403)
            #expect(reader.text == #"{"error":{"error_type":"PermissionDenied","message":"client 'reader' lacks the 'data:write' scope for OPTIONS data requests"}}"#)
            #expect(h.simulator.stats.snapshot.requestsByClass == ["data": 1])
        }
    }

    /// A client whose base address ends with a slash sends `//v1/...`: the leading slashes are
    /// read as one, for the checks and the upstream alike.
    @Test func pathsWithDoubledLeadingSlashesAreReadAsOne() async throws {
        try await GatewayHarness.run { h in
            for path in ["//v1/algo/demo/Hello/0.1.0", "///v1/algo/demo/Hello/0.1.0"] {
                let reply = try await h.gateway.send(.POST, path, headers: simple(Keys.teamB) + textType + [("Cache-Control", "no-store")], text: "HAL")
                #expect(reply.status == 200, "\(path)")
                #expect(reply.object["result"] as? String == "Hello HAL")
            }
            #expect(h.simulator.stats.snapshot.algoCalls == ["demo/Hello/0.1.0": 2])
            // Merged before anything reads the request: a repeat is a hit answered on the event loop.
            for _ in 0..<2 {
                #expect(try await h.gateway.send(.POST, "//v1/algo/demo/Hello/0.1.0", headers: simple(Keys.teamB) + textType, text: "HAL").status == 200)
            }
            #expect(h.simulator.stats.snapshot.algoCalls == ["demo/Hello/0.1.0": 3])
            #expect(try await h.gateway.send(.GET, "/metrics").text.contains("algogate_cache_fast_hits_total 1"))
            // The data prefix check sees the path the upstream would.
            let outside = try await h.gateway.send(.GET, "//v1/data/.my/team-b/x.txt", headers: simple(Keys.teamA))
            #expect(outside.status == 403)
            #expect(envelope(outside).message == "client 'team-a' may not access data://.my/team-b/x.txt: outside its data prefixes (data://.my/team-a/, s3://bucket/team-a/)")
            let inside = try await h.gateway.send(.GET, "//v1/data/.my/team-a/x.txt", headers: simple(Keys.teamA))
            #expect(inside.status == 404)
            #expect(envelope(inside).message == "data://.my/team-a/x.txt does not exist")
            #expect(try await h.gateway.send(.GET, "//healthz").status == 200)
            #expect(await eventually { h.logs.all.filter { $0.contains("path=/v1/algo/demo/Hello/0.1.0 ") }.count == 4 })
        }
    }

    /// The data API's own fields reach the client as the upstream gave them: `X-Data-Type`
    /// (`file` or `directory`: the Rust client refuses a file's answer without it), a file's
    /// length, modification time and type.
    @Test func theDataAPIsFieldsReachTheClient() async throws {
        try await GatewayHarness.run { h in
            #expect(try await h.gateway.send(.POST, "/v1/data/.my", headers: simple(Keys.teamA), json: ["name": "team-a"]).status == 200)
            let content = String(repeating: "a line of the file\n", count: 200)
            #expect(try await h.gateway.send(.PUT, "/v1/data/.my/team-a/f.txt", headers: simple(Keys.teamA), text: content).status == 200)
            let file = try await h.gateway.send(.GET, "/v1/data/.my/team-a/f.txt", headers: simple(Keys.teamA))
            #expect(file.status == 200)
            #expect(file.text == content)
            #expect(file.header("X-Data-Type") == "file")
            #expect(file.header("Content-Length") == String(content.utf8.count))
            let head = try await h.gateway.send(.HEAD, "/v1/connector/data/.my/team-a/f.txt", headers: simple(Keys.teamA))
            #expect(head.status == 200)
            #expect(head.header("X-Data-Type") == "file")
            #expect(head.header("Content-Length") == String(content.utf8.count))
            let direct = try await h.sim.send(.HEAD, "/v1/data/.my/team-a/f.txt", headers: simple(Keys.upstream))
            #expect(head.header("Last-Modified") == direct.header("Last-Modified"))
            #expect(head.header("Last-Modified") != nil)
            #expect(file.header("Content-Type") == "application/octet-stream")
            // Typed as the request's Accept asks, when that is text or JSON alone (the Node.js 0.3
            // client's getString and getJson read their answers by the type).
            let typed = try await h.gateway.send(.GET, "/v1/data/.my/team-a/f.txt", headers: simple(Keys.teamA) + [("Accept", "text/plain")])
            #expect(typed.header("Content-Type") == "text/plain")
            #expect(typed.text == content)
            let directory = try await h.gateway.send(.GET, "/v1/data/.my/team-a", headers: simple(Keys.teamA))
            #expect(directory.status == 200)
            #expect(directory.header("X-Data-Type") == "directory")
            #expect((directory.object["files"] as? [[String: Any]])?.first?["filename"] as? String == "f.txt")
        }
    }

    @Test func requestIDsAreKeptOrMadeAndReachTheUpstream() async throws {
        try await GatewayHarness.run { h in
            let given = try await h.gateway.send(.POST, "/v1/algo/demo/Hello/0.1.0", headers: simple(Keys.teamB) + textType + [("X-Request-ID", "trace-123")], text: "HAL")
            #expect(given.header("X-Request-ID") == "trace-123")
            let made = try await h.gateway.send(.POST, "/v1/algo/demo/Hello/0.1.0", headers: simple(Keys.teamB) + textType, text: "HAL")
            let madeID = try #require(made.header("X-Request-ID"))
            #expect(UUID(uuidString: madeID) != nil && madeID == madeID.lowercased())
            let hostile = try await h.gateway.send(.GET, "/healthz", headers: [("X-Request-ID", "a b\" injected=1")])
            #expect(hostile.header("X-Request-ID") != "a b\" injected=1")
            // Up to 128 characters are kept; a longer id, which would swell every log line, is replaced.
            let longest = String(repeating: "a1-_.", count: 25) + "xyz"
            let kept = try await h.gateway.send(.GET, "/healthz", headers: [("X-Request-ID", longest)])
            #expect(kept.header("X-Request-ID") == longest)
            let tooLong = try await h.gateway.send(.GET, "/healthz", headers: [("X-Request-ID", longest + "z")])
            #expect(tooLong.header("X-Request-ID").map { UUID(uuidString: $0) != nil } == true, "\(tooLong.headers)")
            let denied = try await h.gateway.send(.GET, "/v1/data/.my", headers: simple(Keys.teamB) + [("X-Request-ID", "denied-1")])
            #expect(denied.header("X-Request-ID") == "denied-1")
            #expect(h.logs.all.contains { $0.contains("request_id=trace-123") })
        }
    }

    /// Generated ids are RFC 9562 version 4 UUIDs in lowercase, and never repeat.
    @Test func generatedRequestIDsAreDistinctVersion4UUIDs() {
        let ids = (0..<20_000).map { _ in RequestIDs.next() }
        #expect(Set(ids).count == ids.count)
        for id in ids.prefix(500) {
            let characters = Array(id)
            #expect(UUID(uuidString: id) != nil && id == id.lowercased())
            #expect(characters[14] == "4" && "89ab".contains(characters[19]), "\(id) is not version 4, variant 10")
        }
    }

    @Test func upstreamErrorsPassThroughVerbatim() async throws {
        try await GatewayHarness.run { h in
            let direct = try await h.sim.send(.GET, "/v1/algorithms/nobody/Nothing", headers: simple(Keys.upstream))
            let through = try await h.gateway.send(.GET, "/v1/algorithms/nobody/Nothing", headers: simple(Keys.teamA))
            #expect(through.status == 404)
            // The same envelope but for its per-response id.
            let withoutID: (TestHTTP.Reply) -> String = { reply in
                var error = reply.object["error"] as? [String: Any] ?? [:]
                #expect(error.removeValue(forKey: "id") != nil)
                return canonicalJSON(["error": error])
            }
            #expect(withoutID(through) == withoutID(direct))
            #expect(withoutID(through) == #"{"error":{"code":"404","message":"No such algorithm: nobody/Nothing"}}"#)

            let injected = try await h.gateway.send(.POST, "/v1/algo/demo/Hello/0.1.0", headers: simple(Keys.teamB) + textType + [("X-Sim-Fault", "status=503")], text: "HAL")
            #expect(injected.status == 503)
            #expect(canonicalJSON(injected.json) == canonicalJSON(literal: #"{"error":{"message":"injected fault: status 503","error_type":"SystemError"}}"#))

            let failed = try await h.gateway.send(.POST, "/v1/algo/test/Fail/1.0.0", headers: simple(Keys.teamB) + textType, text: "boom")
            #expect(failed.status == 200)
            #expect(envelope(failed).type == "AlgorithmError")
        }
    }

    @Test func optionsAndBinaryBodiesRoundTrip() async throws {
        try await GatewayHarness.run { h in
            let bytes: [UInt8] = (0..<4096).map { UInt8(truncatingIfNeeded: $0 &* 31) }
            let raw = try await h.gateway.send(.POST, "/v1/algo/util/Echo/1.0.0?output=raw", headers: simple(Keys.teamB) + [("Content-Type", "application/octet-stream")], body: bytes)
            #expect(raw.bytes == bytes)
            #expect(raw.header("Content-Type") == "application/octet-stream")
            let stdout = try await h.gateway.send(.POST, "/v1/algo/demo/Hello/0.1.0?stdout=true&timeout=20", headers: simple(Keys.teamB) + textType, text: "HAL")
            #expect((stdout.object["metadata"] as? [String: Any])?["stdout"] as? String == "Saying hello to HAL\n")
            let void = try await h.gateway.send(.POST, "/v1/algo/demo/Hello?output=void", headers: simple(Keys.teamB) + textType, text: "HAL")
            #expect(void.object["async"] as? String == "void")
        }
    }

    @Test func theClientTimeoutIsClampedToTheConfiguredOne() async throws {
        // What reaches the upstream, as it arrived. (This once waited for the simulator's own
        // "timed out after 1 seconds", and a machine stalled past the gateway's 5 s of grace got
        // the gateway's 504 first: the deadline is FailureTests' concern.)
        try await RecordingUpstream.run(upstreamYAML: "timeout_seconds: 1") { recorder, h in
            let reply = try await h.gateway.send(.POST, "/v1/algo/test/Sleep/1.0.0?timeout=3000&stdout=true", headers: simple(Keys.teamB) + jsonType, text: "1500")
            #expect(reply.status == 200)
            #expect(recorder.since(0).map(\.target) == ["/v1/algo/test/Sleep/1.0.0?timeout=1&stdout=true"])
        }
        #expect(Forwarder.query("timeout=3000&stdout=true", clampingTimeoutTo: 60) == ("timeout=60&stdout=true", 60))
        #expect(Forwarder.query("stdout=true", clampingTimeoutTo: 600) == ("stdout=true", 300))
        #expect(Forwarder.query(nil, clampingTimeoutTo: 30) == ("timeout=30", 30))
        #expect(Forwarder.query("timeout=99999999999999999999999", clampingTimeoutTo: 30) == ("timeout=30", 30))
        #expect(Forwarder.query("timeout=99999999999999999999999", clampingTimeoutTo: 600) == ("timeout=600", 600), "the most asked for, not the default")
        // 0, as the official Java client sends for a timeout set in minutes, is the default.
        #expect(Forwarder.query("timeout=0&stdout=true", clampingTimeoutTo: 600) == ("timeout=300&stdout=true", 300))
        #expect(Forwarder.query("timeout=00", clampingTimeoutTo: 60) == ("timeout=60", 60))
    }

    /// A `timeout` the gateway cannot read is refused before the quota, the cache or the upstream
    /// see the call, hits answered on the event loop included: waiting the default 300 s for a
    /// caller who meant less is worse than saying so. 0 is read, as the default.
    @Test func anUnreadableTimeoutIsRefused() async throws {
        try await GatewayHarness.run { h in
            // A stored answer, so a hit could answer the refused calls below if the check came late.
            let stored = try await h.gateway.send(.POST, "/v1/algo/demo/Hello/0.1.0", headers: simple(Keys.teamB) + textType, text: "HAL")
            #expect(stored.status == 200)
            let calls = h.simulator.stats.snapshot.algoCalls.values.reduce(0, +)
            for timeout in ["=abc", "=", "", "=-5", "=1.5", "=20s", "=%32%30", "=0x10"] {
                let reply = try await h.gateway.send(.POST, "/v1/algo/demo/Hello/0.1.0?stdout=false&timeout\(timeout)",
                                                     headers: simple(Keys.teamB) + textType, text: "HAL")
                #expect(reply.status == 400, "timeout\(timeout)")
                #expect(reply.header("Content-Type") == "application/json")
                #expect(reply.text == #"{"error":{"error_type":"InputError","message":"the timeout option must be a whole number of seconds (larger ones are cut to the gateway's upstream.timeout_seconds; 0 is the default, 300)"}}"#)
                #expect(reply.header("X-Cache") == nil)
            }
            #expect(h.simulator.stats.snapshot.algoCalls.values.reduce(0, +) == calls)
            let hit = try await h.gateway.send(.POST, "/v1/algo/demo/Hello/0.1.0?timeout=007", headers: simple(Keys.teamB) + textType, text: "HAL")
            #expect(hit.status == 200)
            #expect(hit.header("X-Cache") == "HIT")
            // The official Java client's `setTimeout(5, TimeUnit.MINUTES)` sends timeout=0: the
            // default, not a refusal (the call below reaches the upstream, with timeout=300).
            let java = try await h.gateway.send(.POST, "/v1/algo/test/Sleep/1.0.0?timeout=0", headers: simple(Keys.teamB) + jsonType, text: "10")
            #expect(java.status == 200)
            #expect(java.object["error"] == nil, "\(java.text)")
            #expect(h.simulator.stats.snapshot.algoCalls["test/Sleep/1.0.0"] == 1)
        }
    }
}
