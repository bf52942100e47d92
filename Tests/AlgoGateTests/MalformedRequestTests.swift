import AlgoGate
import AlgoTestSupport
import AsyncHTTPClient
import Foundation
import Testing

/// Requests that are not valid HTTP/1.1. Those NIO's parser refuses in their head never reach the
/// pipeline; they get the error envelope from `MalformedRequestHandler` (Hummingbird alone would
/// send an empty 400), a log line and a count. A body that turns out malformed midway is the
/// client's error (400), not the gateway's (500) or the upstream's (502).
@Suite struct MalformedRequestTests {
    /// Sends `request` on a fresh connection and returns the first answer, once the server has closed.
    static func exchange(_ h: GatewayHarness, _ request: String) async throws -> (RawResponse, closed: Bool) {
        let client = try await RawConnection.connect(port: h.gatewayPort, sending: request)
        let closed = await client.waitForClose(within: .seconds(30))
        return (try #require(RawResponse.parse(client.text).first), closed)
    }

    /// Sends `refused` and then `hit` (a call whose answer is stored) on one connection, and checks
    /// that the first is refused with `statusLine` and `message`, not from the cache, and that the
    /// connection goes on to answer the second from the cache. Returns both answers.
    @discardableResult
    static func expectRefusedThenHit(_ h: GatewayHarness, _ refused: String, then hit: String, statusLine: String, message: String,
                                     _ label: String) async throws -> [RawResponse] {
        let connection = try await RawConnection.connect(port: h.gatewayPort, sending: refused + hit)
        #expect(await connection.waitForClose(within: .seconds(30)))
        let answers = RawResponse.parse(connection.text)
        #expect(answers.map(\.statusLine) == [statusLine, "HTTP/1.1 200 OK"], "\(label)")
        #expect(answers.first?.body == #"{"error":{"error_type":"InputError","message":"\#(message)"}}"#)
        #expect(answers.first?.headers["x-cache"] == nil)
        #expect(answers.last?.headers["x-cache"] == "HIT")
        return answers
    }

    static let requestLine = "the request line is not valid HTTP/1.1: it must read METHOD /path HTTP/1.1, with characters such as spaces percent-encoded in the path and query (a space is %20)"

    @Test func aSpaceInThePathGetsAnEnvelopeSayingToPercentEncodeIt() async throws {
        try await GatewayHarness.run { h in
            let (answer, closed) = try await Self.exchange(h, "GET /v1/data/.my/team-a/my file.txt HTTP/1.1\r\nHost: x\r\nAuthorization: Simple \(Keys.teamA)\r\n\r\n")
            #expect(answer.statusLine == "HTTP/1.1 400 Bad Request")
            #expect(answer.body == #"{"error":{"error_type":"InputError","message":"\#(Self.requestLine)"}}"#)
            #expect(answer.headers["content-type"] == "application/json")
            #expect(answer.headers["content-length"] == String(answer.body.utf8.count))
            #expect(answer.headers["connection"] == "close")
            #expect(answer.headers["server"]?.hasPrefix("algogate/") == true)
            // As on every other answer (RFC 9110 §6.6.1).
            #expect(answer.headers["date"]?.hasSuffix(" GMT") == true)
            let requestID = try #require(answer.headers["x-request-id"])
            #expect(closed)
            #expect(h.simulator.stats.snapshot.totalRequests == 0)

            // Logged and counted like any request, with the parser's reason.
            let line = try #require(h.logs.all.first { $0.contains("route=malformed") })
            #expect(line.contains("request_id=\(requestID)"))
            #expect(line.contains("status=400") && line.contains("client=-") && line.contains("remote=127.0.0.1"))
            #expect(line.contains("error=invalid constant string"), "NIO's own words for it")
            #expect(!line.contains(Keys.teamA))
            let metrics = try await h.gateway.send(.GET, "/metrics").text
            #expect(metricSample(metrics, #"algogate_requests_total{client="-",route="malformed",status="400"}"#) == 1)
        }
    }

    @Test func anOversizedHeaderSectionIs431() async throws {
        try await GatewayHarness.run { h in
            let big = String(repeating: "a", count: 90 * 1024)
            let (answer, closed) = try await Self.exchange(h, "GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: \(big)\r\n\r\n")
            #expect(answer.statusLine == "HTTP/1.1 431 Request Header Fields Too Large")
            #expect(answer.body == #"{"error":{"error_type":"RequestTooLarge","message":"the request's header section is too large: at most 80 KiB and 1000 fields"}}"#)
            #expect(closed)
        }
    }

    @Test func aMalformedHeaderLineIsNamed() async throws {
        try await GatewayHarness.run { h in
            let (answer, _) = try await Self.exchange(h, "GET /healthz HTTP/1.1\r\nHost: x\r\nBad Header: 1\r\n\r\n")
            #expect(answer.statusLine == "HTTP/1.1 400 Bad Request")
            #expect(answer.body == #"{"error":{"error_type":"InputError","message":"a header line is not valid HTTP/1.1: a field name is a token followed by ':', and every line ends in CRLF"}}"#)
        }
    }

    @Test func aMethodHTTPDoesNotDefineIsNamed() async throws {
        try await GatewayHarness.run { h in
            let (answer, closed) = try await Self.exchange(h, "FOO /v1/data/.my/team-a/x HTTP/1.1\r\nHost: x\r\nAuthorization: Simple \(Keys.teamA)\r\n\r\n")
            #expect(answer.statusLine == "HTTP/1.1 400 Bad Request")
            #expect(answer.body == #"{"error":{"error_type":"InputError","message":"the request's method is not one HTTP defines: the API takes GET, HEAD, POST, PUT, PATCH, DELETE and OPTIONS"}}"#)
            #expect(closed)
            #expect(h.simulator.stats.snapshot.totalRequests == 0)
        }
    }

    /// A client that starts HTTP/2 without asking (its connection preface) is told the gateway
    /// speaks HTTP/1.1.
    @Test func anHTTP2ConnectionPrefaceIsToldToUseHTTP11() async throws {
        try await GatewayHarness.run { h in
            let (answer, closed) = try await Self.exchange(h, "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
            #expect(answer.statusLine == "HTTP/1.1 400 Bad Request")
            #expect(answer.body == #"{"error":{"error_type":"InputError","message":"HTTP/2 is not served: the gateway speaks HTTP/1.1, over TLS too; send the request as HTTP/1.1 (curl: without --http2-prior-knowledge)"}}"#)
            #expect(closed)
        }
    }

    /// A client whose address says https:// where the gateway serves plain HTTP: its TLS
    /// handshake is refused as ever (the client reads the answer as a wrong TLS version), and the
    /// answer and the log line say what happened, not that the method is invalid.
    @Test func aTLSHandshakeOnThePlainPortIsNamed() async throws {
        try await GatewayHarness.run { h in
            // A real TLS client: it fails, and its attempts (it tries again until the timeout) are
            // logged as what they were.
            let attempt = try? await HTTPClient.shared.execute(HTTPClientRequest(url: "https://127.0.0.1:\(h.gatewayPort)/healthz"), timeout: .seconds(2))
            #expect(attempt == nil)
            let line = try #require(await ClientDepartureTests.firstLine(in: h) { $0.contains("route=malformed") })
            #expect(line.contains(" error=a TLS handshake on the plain-HTTP port ") && line.contains(" status=400") && line.contains(" remote=127.0.0.1 "), "\(line)")

            // The answer, as a client that reads it sees it (a handshake record's first bytes).
            let (answer, closed) = try await Self.exchange(h, "\u{16}\u{03}\u{01}\u{00}\u{05}\u{01}\u{00}\u{00}\u{01}\u{03}")
            #expect(answer.statusLine == "HTTP/1.1 400 Bad Request")
            #expect(answer.body == #"{"error":{"error_type":"InputError","message":"this port serves plain HTTP: the client began a TLS handshake; use http:// in the client's address (ALGORITHMIA_API), or serve HTTPS with server.tls"}}"#)
            #expect(closed)
            // Other bytes the parser refuses are named as before.
            let (other, _) = try await Self.exchange(h, "\u{16}GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            #expect(other.body == #"{"error":{"error_type":"InputError","message":"the request's method is not one HTTP defines: the API takes GET, HEAD, POST, PUT, PATCH, DELETE and OPTIONS"}}"#)
            let metrics = try await h.gateway.send(.GET, "/metrics").text
            let lines = h.logs.all.filter { $0.contains("route=malformed") }
            #expect(lines.filter { $0.contains(" error=a TLS handshake on the plain-HTTP port ") }.count == lines.count - 1, "\(lines)")
            // Counted as malformed, each (a late attempt of the client's may land between the two readings).
            #expect((metricSample(metrics, #"algogate_requests_total{client="-",route="malformed",status="400"}"#) ?? 0) >= 3)
            #expect(h.simulator.stats.snapshot.totalRequests == 0)
        }
    }

    /// Framed by a Content-Length and by chunks, or by codings that do not end in chunked (RFC 9112
    /// §6.3: the length cannot be told): NIO's parser refuses both, and tells them apart from neither.
    @Test func aBodyFramedTwoWaysIsRefused() async throws {
        try await GatewayHarness.run { h in
            for framing in ["Content-Length: 3\r\nTransfer-Encoding: chunked", "Transfer-Encoding: chunked, gzip"] {
                let (answer, closed) = try await Self.exchange(h, "POST /v1/algo/demo/Hello/0.1.0 HTTP/1.1\r\nHost: x\r\nAuthorization: Simple \(Keys.teamB)\r\n\(framing)\r\n\r\n0\r\n\r\n")
                #expect(answer.statusLine == "HTTP/1.1 400 Bad Request", "\(framing)")
                #expect(answer.body == #"{"error":{"error_type":"InputError","message":"the request is not valid HTTP/1.1: check its request line, header lines and body framing (a Content-Length beside a Transfer-Encoding is refused, and so is a Transfer-Encoding whose last coding is not chunked)"}}"#, "\(framing)")
                #expect(closed, "\(framing)")
            }
            #expect(h.simulator.stats.snapshot.algoCalls.isEmpty)
        }
    }

    /// NIO's parser reads `gzip, chunked` as chunked and leaves the gzip undone: the coded bytes
    /// would be taken for the input (and, here, answered from the cache as "HAL"'s). Any transfer
    /// coding but `chunked` alone is refused with 501 (RFC 9112 §6.1), before the key is checked,
    /// on the event loop's hit path as in the pipeline; the body is read past by its chunks, so the
    /// connection goes on with the next request.
    @Test(arguments: [true, false]) func aTransferCodingOtherThanChunkedIs501(fastHits: Bool) async throws {
        try await GatewayHarness.run(cacheYAML: "fast_hits: \(fastHits)") { h in
            #expect(try await h.gateway.send(.POST, "/v1/algo/demo/Hello/0.1.0", headers: simple(Keys.teamB) + textType, text: "HAL").status == 200)
            func call(_ codings: [String], key: String = Keys.teamB, close: Bool = false) -> String {
                "POST /v1/algo/demo/Hello/0.1.0 HTTP/1.1\r\nHost: x\r\nAuthorization: Simple \(key)\r\nContent-Type: text/plain\r\n"
                    + codings.map { "Transfer-Encoding: \($0)\r\n" }.joined() + (close ? "Connection: close\r\n" : "")
                    + "\r\n3\r\nHAL\r\n0\r\n\r\n"
            }
            let refused: [([String], String)] = [
                (["gzip, chunked"], "gzip, chunked"), (["identity, chunked"], "identity, chunked"),
                (["gzip", "chunked"], "gzip, chunked"),
            ]
            for (codings, named) in refused {
                // An unknown key too: the coding is refused before the key is asked for.
                for key in [Keys.teamB, "not-a-key"] {
                    let answers = try await Self.expectRefusedThenHit(
                        h, call(codings, key: key), then: call(["Chunked"], close: true), statusLine: "HTTP/1.1 501 Not Implemented",
                        message: "Transfer-Encoding '\(named)' is not supported: send the body with chunked alone, or with a Content-Length; a compressed body is sent with Content-Encoding: gzip",
                        "\(codings)")
                    #expect(answers.last?.body.contains(#""result":"Hello HAL""#) == true)
                }
            }
            // A data upload too: nothing reaches the upstream.
            let upload = "PUT /v1/data/.my/team-a/f.txt HTTP/1.1\r\nHost: x\r\nAuthorization: Simple \(Keys.teamA)\r\nTransfer-Encoding: gzip, chunked\r\nConnection: close\r\n\r\n3\r\nabc\r\n0\r\n\r\n"
            let (answer, _) = try await Self.exchange(h, upload)
            #expect(answer.statusLine == "HTTP/1.1 501 Not Implemented")
            #expect(h.simulator.stats.snapshot.algoCalls == ["demo/Hello/0.1.0": 1])
            #expect(h.simulator.stats.snapshot.totalRequests == 1)
            // The client's doing, not the gateway's: logged at info, as a refusal is.
            let line = try #require(h.logs.all.first { $0.contains("status=501") && $0.contains("path=/v1/data/.my/team-a/f.txt") })
            #expect(line.hasPrefix("info request ") && line.contains("error_type=InputError"), "\(line)")
        }
    }

    /// RFC 9112 §3.2: an HTTP/1.1 request without `Host`, with two, or with one that is not a
    /// host and port is answered 400, before the key is checked, on the event loop's hit path as in
    /// the pipeline, and the connection goes on. HTTP/1.0 may leave `Host` out.
    @Test(arguments: [true, false]) func aMissingRepeatedOrMalformedHostIs400(fastHits: Bool) async throws {
        try await GatewayHarness.run(cacheYAML: "fast_hits: \(fastHits)") { h in
            #expect(try await h.gateway.send(.POST, "/v1/algo/demo/Hello/0.1.0", headers: simple(Keys.teamB) + textType, text: "HAL").status == 200)
            func call(_ hosts: [String], key: String = Keys.teamB, version: String = "1.1", close: Bool = false) -> String {
                "POST /v1/algo/demo/Hello/0.1.0 HTTP/\(version)\r\n" + hosts.map { "Host: \($0)\r\n" }.joined()
                    + "Authorization: Simple \(key)\r\nContent-Type: text/plain\r\nContent-Length: 3\r\n"
                    + (close ? "Connection: close\r\n" : "") + "\r\nHAL"
            }
            let malformed = { (shown: String) in
                "the Host header \(shown) is not a host name or address with an optional port (RFC 9112 §3.2)"
            }
            let refused: [([String], String)] = [
                ([], "the request has no Host header: an HTTP/1.1 request names the host it is sent to (RFC 9112 §3.2)"),
                (["a.example", "b.example"], "the request has more than one Host header: send one (RFC 9112 §3.2)"),
                (["a.example", "a.example"], "the request has more than one Host header: send one (RFC 9112 §3.2)"),
                (["a.example/x"], malformed("'a.example/x'")), (["user@a.example"], malformed("'user@a.example'")),
                (["a.example:80a"], malformed("'a.example:80a'")), (["[::1"], malformed("'[::1'")), (["[::1/x]"], malformed("'[::1/x]'")),
                (["a%zz"], malformed("'a%zz'")), ([#"evil"x"#], malformed(#"'evil\"x'"#)),
                ([String(repeating: "a", count: 300) + "/"], malformed("of 301 bytes")),
            ]
            for (hosts, message) in refused {
                // An unknown key too: the Host is refused before the key is asked for.
                for key in [Keys.teamB, "not-a-key"] {
                    try await Self.expectRefusedThenHit(h, call(hosts, key: key), then: call(["x"], close: true), statusLine: "HTTP/1.1 400 Bad Request",
                                                        message: message, "\(hosts)")
                }
            }
            // Sound ones, HTTP/1.0 without any, and the empty value (a target naming no authority).
            let sound: [([String], String)] = [
                (["127.0.0.1:8080"], "1.1"), (["[::1]:8080"], "1.1"), (["algogate.internal"], "1.1"), (["my_host.example:"], "1.1"),
                ([""], "1.1"), ([], "1.0"), (["algogate"], "1.0"),
            ]
            for (hosts, version) in sound {
                let connection = try await RawConnection.connect(port: h.gatewayPort, sending: call(hosts, version: version, close: true))
                #expect(await connection.waitForClose(within: .seconds(30)))
                let answers = RawResponse.parse(connection.text)
                #expect(answers.map(\.statusLine) == ["HTTP/1.1 200 OK"], "\(hosts) HTTP/\(version)")
                #expect(answers.first?.headers["x-cache"] == "HIT")
            }
            // Health probes are answered whatever their Host.
            for probe in ["/healthz", "/readyz"] {
                let connection = try await RawConnection.connect(port: h.gatewayPort, sending: "GET \(probe) HTTP/1.1\r\nConnection: close\r\n\r\n")
                #expect(await connection.waitForClose(within: .seconds(30)))
                #expect(RawResponse.parse(connection.text).map(\.statusLine) == ["HTTP/1.1 200 OK"], "\(probe)")
            }
            let metrics = try await RawConnection.connect(port: h.gatewayPort, sending: "GET /metrics HTTP/1.1\r\nConnection: close\r\n\r\n")
            #expect(await metrics.waitForClose(within: .seconds(30)))
            #expect(RawResponse.parse(metrics.text).map(\.statusLine) == ["HTTP/1.1 400 Bad Request"])
            // Nothing refused reached the upstream; the refusal is logged at info with its reason.
            #expect(h.simulator.stats.snapshot.totalRequests == 1)
            let line = try #require(h.logs.all.first { $0.contains("status=400") })
            #expect(line.hasPrefix("info request ") && line.contains("error_type=InputError"), "\(line)")
        }
    }

    @Test func aRequestAfterAGoodOneOnTheSameConnectionIsAnsweredInOrder() async throws {
        try await GatewayHarness.run { h in
            let client = try await RawConnection.connect(port: h.gatewayPort, sending: "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\nGET /a b HTTP/1.1\r\nHost: x\r\n\r\n")
            #expect(await client.waitForClose(within: .seconds(30)))
            let answers = RawResponse.parse(client.text)
            #expect(answers.map(\.statusLine) == ["HTTP/1.1 200 OK", "HTTP/1.1 400 Bad Request"])
            #expect(answers.last?.body == #"{"error":{"error_type":"InputError","message":"\#(Self.requestLine)"}}"#)
        }
    }

    @Test func aMalformedChunkedAlgorithmInputIsTheClientsError() async throws {
        try await GatewayHarness.run { h in
            let (answer, _) = try await Self.exchange(h, """
                POST /v1/algo/demo/Hello/0.1.0 HTTP/1.1\r
                Host: x\r
                Authorization: Simple \(Keys.teamB)\r
                Content-Type: application/json\r
                Transfer-Encoding: chunked\r
                \r
                5\r
                "HAL"\r
                zz\r

                """)
            #expect(answer.statusLine == "HTTP/1.1 400 Bad Request")
            #expect(answer.body == #"{"error":{"error_type":"InputError","message":"the chunked request body is malformed: every chunk starts with its size in hexadecimal and CRLF"}}"#)
            #expect(h.simulator.stats.snapshot.algoCalls.isEmpty)
            #expect(h.logs.all.contains { $0.contains("route=algo") && $0.contains("status=400") })
        }
    }

    @Test func aStreamedUploadWithAMalformedChunkIsTheClientsErrorNotTheUpstreams() async throws {
        try await GatewayHarness.run { h in
            let made = try await h.gateway.send(.POST, "/v1/data/.my", headers: simple(Keys.teamA), json: ["name": "team-a"])
            #expect(made.status == 200)
            let (answer, _) = try await Self.exchange(h, """
                PUT /v1/data/.my/team-a/f.txt HTTP/1.1\r
                Host: x\r
                Authorization: Simple \(Keys.teamA)\r
                Transfer-Encoding: chunked\r
                \r
                3\r
                abc\r
                zz\r

                """)
            #expect(answer.statusLine == "HTTP/1.1 400 Bad Request")
            #expect(answer.body == #"{"error":{"error_type":"InputError","message":"the chunked request body is malformed: every chunk starts with its size in hexadecimal and CRLF"}}"#)
            let read = try await h.gateway.send(.GET, "/v1/data/.my/team-a/f.txt", headers: simple(Keys.teamA))
            #expect(read.status == 404, "nothing half-written was kept")
        }
    }
}
