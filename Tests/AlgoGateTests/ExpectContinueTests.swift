import AlgoGate
import AlgoTestSupport
import Foundation
import Testing

/// `Expect: 100-continue`: the client is told to go on when the pipeline first reads the body, and
/// a request refused from its head is answered without the body being sent.
@Suite struct ExpectContinueTests {
    static func head(_ method: String, _ path: String, key: String, length: Int, type: String = "application/octet-stream",
                     expectation: String = "100-continue") -> String {
        "\(method) \(path) HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Simple \(key)\r\nContent-Type: \(type)\r\nContent-Length: \(length)\r\nExpect: \(expectation)\r\n\r\n"
    }

    @Test func anUploadIsToldToContinueAndThenAnswered() async throws {
        try await GatewayHarness.run { h in
            #expect(try await h.gateway.send(.POST, "/v1/data/.my", headers: simple(Keys.teamA), json: ["name": "team-a"]).status == 200)
            let body = String(repeating: "0123456789", count: 1000)
            let client = try await RawConnection.connect(port: h.gatewayPort, sending: Self.head("PUT", "/v1/data/.my/team-a/big.txt", key: Keys.teamA, length: body.utf8.count))
            #expect(await eventually { RawResponse.parse(client.text).count == 1 })
            #expect(client.text == "HTTP/1.1 100 Continue\r\n\r\n", "only the interim answer, before any body byte was sent")
            try await client.send(body)
            #expect(await eventually { RawResponse.parse(client.text).count == 2 })
            let answer = try #require(RawResponse.parse(client.text).last)
            #expect(answer.statusLine == "HTTP/1.1 200 OK")
            #expect(canonicalJSON(literal: answer.body) == #"{"result":"data://.my/team-a/big.txt"}"#)
            let stored = try await h.gateway.send(.GET, "/v1/data/.my/team-a/big.txt", headers: simple(Keys.teamA))
            #expect(stored.text == body)
            #expect(!h.simulator.stats.snapshot.headerNames.contains("expect"), "the expectation is the gateway's to meet, not forwarded")
            await client.close()
        }
    }

    @Test func anAlgorithmCallIsToldToContinue() async throws {
        try await GatewayHarness.run { h in
            // The expectation is read in any case (RFC 9110 §10.1.1).
            let client = try await RawConnection.connect(port: h.gatewayPort, sending: Self.head("POST", "/v1/algo/demo/Hello/0.1.0", key: Keys.teamB, length: 3, type: "text/plain",
                                                                                                  expectation: "100-Continue"))
            #expect(await eventually { client.text == "HTTP/1.1 100 Continue\r\n\r\n" })
            try await client.send("HAL")
            #expect(await eventually { RawResponse.parse(client.text).count == 2 })
            let answer = try #require(RawResponse.parse(client.text).last)
            #expect(answer.statusLine == "HTTP/1.1 200 OK")
            #expect(answer.body.contains(#""result":"Hello HAL""#))
            await client.close()
        }
    }

    @Test(arguments: [
        ("PUT", "/v1/data/.my/team-a/f.txt", "wrong-key", 10, "HTTP/1.1 401 Unauthorized"),
        ("PUT", "/v1/data/.my/team-b/f.txt", "team-a", 10, "HTTP/1.1 403 Forbidden"),
        ("POST", "/v1/algo/demo/Hello/0.1.0", "team-b", 20 * 1024 * 1024, "HTTP/1.1 413 Payload Too Large"),
    ])
    func aRequestRefusedFromItsHeadIsAnsweredWithoutAskingForTheBody(method: String, path: String, key: String, length: Int, status: String) async throws {
        let keys = ["team-a": Keys.teamA, "team-b": Keys.teamB]
        try await GatewayHarness.run { h in
            let client = try await RawConnection.connect(port: h.gatewayPort, sending: Self.head(method, path, key: keys[key] ?? key, length: length))
            #expect(await eventually { !RawResponse.parse(client.text).isEmpty })
            let answers = RawResponse.parse(client.text)
            #expect(answers.map(\.statusLine) == [status], "no 100 Continue first")
            #expect(answers.first?.headers["content-type"] == "application/json")
            #expect(h.simulator.stats.snapshot.totalRequests == 0)
            await client.close()
        }
    }
}
