@testable import AlgoGate
import AlgoTestSupport
import Foundation
import Logging
import Testing

@Suite struct SecretsAndLogsTests {
    @Test func noKeyAppearsInAnyResponseOrLogLine() async throws {
        try await GatewayHarness.run { h in
            var replies: [TestHTTP.Reply] = []
            replies.append(try await h.gateway.send(.POST, "/v1/algo/demo/Hello/0.1.0", headers: simple(Keys.teamA) + textType, text: "HAL"))
            replies.append(try await h.gateway.send(.POST, "/v1/algo/test/Fail/1.0.0", headers: [("Authorization", Keys.teamB)] + textType, text: Keys.teamB))
            replies.append(try await h.gateway.send(.GET, "/v1/data/.my/team-b/x", headers: simple(Keys.teamA)))
            replies.append(try await h.gateway.send(.GET, "/v1/data/.my", headers: simple(Keys.upstream)))
            replies.append(try await h.gateway.send(.GET, "/v1/users/x", headers: simple(Keys.admin)))
            replies.append(try await h.gateway.send(.POST, "/v1/algo/demo/Hello/0.1.0", headers: simple(Keys.teamA) + simple(Keys.teamB), text: "x"))
            replies.append(try await h.gateway.send(.POST, "/v1/algo/demo/Hello/0.1.0", headers: simple(Keys.teamB) + textType + [("X-Sim-Fault", "status=500")], text: "x"))
            replies.append(try await h.gateway.send(.GET, "/v1/algorithms/demo/Hello", headers: [("Authorization", "Bearer \(Keys.teamA)")]))
            #expect(replies.map(\.status) == [200, 200, 403, 401, 404, 400, 500, 200])

            // The Fail algorithm echoes its input (here team-b's own key) in its message: that is the
            // client's own data coming back, not a leak, so it is the one body allowed to hold it.
            for (index, reply) in replies.enumerated() {
                let headerText = reply.headers.map { "\($0.name): \($0.value)" }.joined(separator: "\n")
                for key in Keys.all where !(index == 1 && key == Keys.teamB) {
                    #expect(!reply.text.contains(key), "reply \(index) body holds a key")
                    #expect(!headerText.contains(key), "reply \(index) headers hold a key")
                }
            }
            // Log lines are written as bodies finish.
            #expect(await eventually { h.logs.all.filter { $0.contains("request ") }.count >= replies.count })
            let lines = h.logs.all
            // One request line each (the level, then the message `request`), beside other lines
            // such as the warning for the account's key presented.
            #expect(lines.filter { $0.split(separator: " ").dropFirst().first == "request" }.count == replies.count, "\(lines)")
            for line in lines {
                for key in Keys.all { #expect(!line.contains(key), "a log line holds a key: \(line.prefix(60))") }
            }
        }
    }

    /// A client presenting the account's own key (in any of the three forms) is refused exactly
    /// as an unknown key is, and the operator is told: a warning naming the request, and a count.
    @Test func theAccountKeyPresentedByAClientIsRefusedAndReported() async throws {
        try await GatewayHarness.run { h in
            let unknown = try await h.gateway.send(.GET, "/v1/data/.my", headers: simple("not-a-key-\(UUID().uuidString)"))
            #expect(unknown.status == 401)
            #expect(!h.logs.all.contains { $0.hasPrefix("warning ") })
            var ids: [String] = []
            for authorization in ["Simple \(Keys.upstream)", Keys.upstream, "Bearer \(Keys.upstream)"] {
                let reply = try await h.gateway.send(.GET, "/v1/data/.my", headers: [("Authorization", authorization)])
                #expect(reply.status == 401)
                #expect(reply.text == unknown.text, "the answer tells the account key from any other")
                #expect(!reply.text.contains(Keys.upstream))
                ids.append(try #require(reply.header("X-Request-ID")))
            }
            #expect(await eventually { h.logs.all.filter { $0.split(separator: " ").dropFirst().first == "request" }.count == 4 })
            let warnings = h.logs.all.filter { $0.hasPrefix("warning ") }
            #expect(warnings.count == 3, "\(warnings)")
            for (warning, id) in zip(warnings, ids) {
                #expect(warning == "warning a request presented the account's upstream key as its own (refused as an unknown key): the key has reached someone who should not have it; rotate it at Algorithmia and in upstream.key_env or upstream.key_file remote=127.0.0.1 request_id=\(id)")
            }
            for line in h.logs.all { #expect(!line.contains(Keys.upstream)) }
            let metrics = try await h.gateway.send(.GET, "/metrics").text
            #expect(metricSample(metrics, "algogate_account_key_presented_total") == 3)
            #expect(h.simulator.stats.snapshot.totalRequests == 0)
        }
    }

    @Test func eachRequestLogsOneStructuredLine() async throws {
        try await GatewayHarness.run { h in
            let reply = try await h.gateway.send(.POST, "/v1/algo/demo/Hello/0.1.0?secret=1", headers: simple(Keys.teamA) + textType + [
                ("X-Request-ID", "log-1"), ("X-Forwarded-For", "203.0.113.7, 10.0.0.1"),
                ("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"), ("tracestate", "vendor=opaque"),
            ], text: "HAL")
            _ = try await h.gateway.send(.GET, "/v1/algorithms/demo/Hello", headers: simple(Keys.teamB) + [("X-Request-ID", "log-2")])
            #expect(await eventually { h.logs.all.contains { $0.contains("request_id=log-2") } })
            let first = h.logs.all.first { $0.contains("request_id=log-1") } ?? ""
            for field in ["info request", "client=team-a", "route=algo", "method=POST", "path=/v1/algo/demo/Hello/0.1.0 ", "status=200", "bytes_in=3", "bytes_out=\(reply.body.readableBytes) ", "duration_ms=",
                          "remote=127.0.0.1 ", "forwarded_for=203.0.113.7, 10.0.0.1 ", " trace_id=4bf92f3577b34da6a3ce929d0e0e4736"] {
                #expect(first.contains(field), "\(field) missing from: \(first)")
            }
            #expect(!first.contains("secret=1"))
            #expect(!first.contains("Hello HAL"))
            let second = h.logs.all.first { $0.contains("request_id=log-2") } ?? ""
            #expect(second.contains("client=team-b") && second.contains("route=manage") && second.contains("status=403"))
            #expect(second.contains("remote=127.0.0.1 ") && !second.contains("forwarded_for") && !second.contains("trace_id"))
            // A client cannot make its own line arbitrarily long.
            _ = try await h.gateway.send(.GET, "/healthz", headers: [("X-Request-ID", "log-3"), ("X-Forwarded-For", String(repeating: "9", count: 5000))])
            #expect(await eventually { h.logs.all.contains { $0.contains("request_id=log-3") } })
            let third = h.logs.all.first { $0.contains("request_id=log-3") } ?? ""
            #expect(third.contains("forwarded_for=\(String(repeating: "9", count: 256)) "))
            // Requests outside /v1 are named by where they went.
            #expect(third.contains(" route=health "), "\(third)")
            _ = try await h.gateway.send(.GET, "/_gateway/me", headers: simple(Keys.teamA) + [("X-Request-ID", "log-4")])
            _ = try await h.gateway.send(.GET, "/_admin/cache", headers: simple(Keys.admin) + [("X-Request-ID", "log-5")])
            _ = try await h.gateway.send(.GET, "/nowhere", headers: simple(Keys.teamA) + [("X-Request-ID", "log-6")])
            #expect(await eventually { h.logs.all.contains { $0.contains("request_id=log-6") } })
            for (id, route, status) in [("log-4", "gateway", 200), ("log-5", "operator", 200), ("log-6", "unknown", 404)] {
                let line = h.logs.all.first { $0.contains("request_id=\(id)") } ?? ""
                #expect(line.contains(" route=\(route) ") && line.contains(" status=\(status)"), "\(line)")
            }
        }
    }

    static let trickyText = "quote \" backslash \\ newline \n tab \t bell \u{07} é 🦉"
    static var trickyEvent: LogEvent {
        LogEvent(level: .info, message: "request \(trickyText)", metadata: [
            "path": .string(trickyText), "status": .stringConvertible(LogNumber(200)), "client": "team-a",
            "duration_ms": .stringConvertible(LogNumber(milliseconds: .microseconds(12_345))), "count": .stringConvertible(7),
            "list": .array([.string("x"), .stringConvertible(1), .stringConvertible(LogNumber(-3))]), "nested": .dictionary(["b": "2", "a": "1"]),
        ], source: nil, file: #fileID, function: #function, line: #line)
    }

    func text(of line: [UInt8]) -> String { String(decoding: line, as: UTF8.self) }

    @Test func jsonLogLinesAreOneEscapedObjectEach() throws {
        let line = LogLineFormat.json.render(Self.trickyEvent, label: "algogate")
        #expect(line.last == UInt8(ascii: "\n"))
        #expect(line.dropLast().allSatisfy { $0 != UInt8(ascii: "\n") }, "one record, one line")
        let object = try #require(try JSONSerialization.jsonObject(with: Data(line)) as? [String: Any])
        #expect(object["level"] as? String == "info")
        #expect(object["logger"] as? String == "algogate")
        #expect(object["msg"] as? String == "request \(Self.trickyText)")
        #expect(object["path"] as? String == Self.trickyText)
        #expect(object["client"] as? String == "team-a")
        // Numbers a pipeline sums or compares are JSON numbers; any other value a string.
        #expect(object["status"] as? Int == 200)
        #expect(object["duration_ms"] as? Double == 12.345)
        #expect(object["count"] as? String == "7")
        #expect(text(of: line).contains(#""duration_ms":12.345,"#) && text(of: line).contains(#""status":200}"#))
        #expect(object["list"] as? [AnyHashable] == ["x", "1", -3])
        #expect(object["nested"] as? [String: String] == ["a": "1", "b": "2"])
        let ts = try #require(object["ts"] as? String)
        #expect(ts.count == 24 && ts.hasSuffix("Z"), "UTC with milliseconds: \(ts)")
        let parsed = try #require(ISO8601DateFormatter.withFractionalSeconds.date(from: ts))
        #expect(abs(parsed.timeIntervalSinceNow) < 5)
        // A fixed order (the record's own fields, then metadata sorted by key), so lines diff and
        // grep the same way every time.
        let text = String(decoding: line, as: UTF8.self)
        let keys = ["ts", "level", "logger", "msg", "client", "count", "duration_ms", "list", "nested", "path", "status"]
        let positions = try keys.map { key in try #require(text.range(of: "\"\(key)\":")).lowerBound }
        #expect(positions == positions.sorted())
    }

    @Test func textLogLinesAreOneLineWithQuotedValuesWhereNeeded() throws {
        let line = String(decoding: LogLineFormat.text.render(Self.trickyEvent, label: "algogate"), as: UTF8.self)
        #expect(line.hasSuffix("\n"))
        #expect(line.dropLast().allSatisfy { $0 != "\n" }, "one record, one line")
        let ts = try #require(line.split(separator: " ").first)
        #expect(ISO8601DateFormatter.withFractionalSeconds.date(from: String(ts)) != nil, "starts with the UTC timestamp: \(line)")
        // The message has a control character, so it is quoted; plain values are bare; a value
        // with spaces or quotes is a JSON string; structured values are JSON.
        let quoted = #""quote \" backslash \\ newline \n tab \t bell \u0007 é 🦉""#
        let expected = #" info algogate: "request "# + quoted.dropFirst() + #" client=team-a count=7 duration_ms=12.345 list=["x","1",-3] nested={"a":"1","b":"2"} path="# + quoted + " status=200\n"
        #expect(line.dropFirst(ts.count) == expected[...])
        let plain = String(decoding: LogLineFormat.text.render(LogEvent(
            level: .notice, message: "listening on 127.0.0.1:8080", metadata: ["key=value": "a b", "empty": ""],
            source: nil, file: #fileID, function: #function, line: #line), label: "algogate"), as: UTF8.self)
        #expect(plain.dropFirst(ts.count) == #" notice algogate: listening on 127.0.0.1:8080 empty="" "key=value"="a b""# + "\n")
    }

    @Test func secretsDescribeThemselvesRedacted() {
        let secret = Secret("hunter2")
        #expect("\(secret)" == "<redacted>")
        #expect(String(reflecting: secret) == "<redacted>")
        #expect(!"\(Mirror(reflecting: secret).children.map { "\($0.value)" })".contains("hunter2"))
        #expect(secret.revealed == "hunter2")
    }
}

extension ISO8601DateFormatter {
    static var withFractionalSeconds: ISO8601DateFormatter {
        let formatter = ISO8601DateFormatter()
        formatter.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
        return formatter
    }
}
