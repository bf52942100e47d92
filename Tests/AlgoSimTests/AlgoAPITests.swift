import AlgoSim
import AlgoTestSupport
import Foundation
import Testing

@Suite struct AlgoAPITests {
    @Test func acceptsTheThreeAuthorizationForms() async throws {
        try await withSimulator { http, sim in
            for value in ["Simple \(simKey)", simKey, "Bearer \(simKey)"] {
                let reply = try await http.send(.POST, "/v1/algo/demo/Hello/0.1.0", headers: [("Authorization", value)] + textType, text: "HAL")
                #expect(reply.status == 200)
                #expect(reply.object["result"] as? String == "Hello HAL")
            }
            #expect(sim.stats.snapshot.authorizations == ["Bearer \(simKey)", "Simple \(simKey)", simKey].sorted())
        }
    }

    @Test func rejectsMissingAndWrongKeysWithTheErrorEnvelope() async throws {
        try await withSimulator { http, _ in
            let missing = try await http.send(.POST, "/v1/algo/demo/Hello", headers: textType, text: "HAL")
            #expect(missing.status == 401)
            #expect(missing.header("Content-Type") == "application/json")
            #expect(canonicalJSON(missing.json) == canonicalJSON(literal: #"{"error":{"message":"authorization required","error_type":"AuthorizationError"}}"#))
            let wrong = try await http.send(.POST, "/v1/algo/demo/Hello", headers: [("Authorization", "Simple nope")] + textType, text: "HAL")
            #expect(wrong.status == 401)
            #expect(canonicalJSON(wrong.json) == canonicalJSON(literal: #"{"error":{"message":"authorization failed: invalid api key","error_type":"AuthorizationError"}}"#))
        }
    }

    @Test func resolvesVersionsAndAnswersUnknownOnesWith404() async throws {
        try await withSimulator { http, sim in
            for path in ["/v1/algo/demo/Hello", "/v1/algo/demo/Hello/", "/v1/algo/demo/Hello/latest", "/v1/algo/demo/Hello/0.1.1", "/v1/algo/demo/Hello/0.1.*"] {
                let reply = try await http.send(.POST, path, headers: auth + jsonType, text: #""HAL""#)
                #expect(reply.status == 200, "\(path)")
                #expect(reply.object["result"] as? String == "Hello HAL")
                let metadata = reply.object["metadata"] as? [String: Any]
                #expect(metadata?["content_type"] as? String == "text")
                #expect(metadata?["duration"] is Double)
            }
            let unknown = try await http.send(.POST, "/v1/algo/demo/Hello/9.9.9", headers: auth + textType, text: "x")
            #expect(unknown.status == 404)
            #expect(canonicalJSON(unknown.json) == canonicalJSON(literal: #"{"error":{"message":"algorithm algo://demo/Hello/9.9.9 not found","error_type":"EntityNotFoundError"}}"#))
            let missing = try await http.send(.POST, "/v1/algo/nobody/Nothing", headers: auth + textType, text: "x")
            #expect(missing.status == 404)
            #expect((missing.object["error"] as? [String: Any])?["message"] as? String == "algorithm algo://nobody/Nothing not found")
            #expect(sim.stats.snapshot.algoCalls["demo/Hello"] == 2)
            #expect(sim.stats.snapshot.algoCalls["demo/Hello/0.1.1"] == 1)
        }
    }

    /// Algorithmia's "invoke an algorithm by UUID": `/v1/algo/{id}[/{version}]`, the id being the
    /// one the management API gives.
    @Test func callsAnAlgorithmByItsID() async throws {
        try await withSimulator { http, sim in
            let id = try #require(try await http.send(.GET, "/v1/algorithms/demo/Hello", headers: auth).object["id"] as? String)
            #expect(id.wholeMatch(of: /[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}/) != nil)
            let latest = try await http.send(.POST, "/v1/algo/\(id)", headers: auth + textType, text: "HAL")
            #expect(latest.object["result"] as? String == "Hello HAL")
            let pinned = try await http.send(.POST, "/v1/algo/\(id)/0.1.0", headers: auth + textType, text: "HAL")
            #expect(pinned.object["result"] as? String == "Hello HAL")
            #expect(sim.stats.snapshot.algoCalls == [id: 1, "\(id)/0.1.0": 1])
            let unknown = try await http.send(.POST, "/v1/algo/00000000-0000-4000-8000-000000000000", headers: auth + textType, text: "x")
            #expect(unknown.status == 404)
            let badVersion = try await http.send(.POST, "/v1/algo/\(id)/9.9.9", headers: auth + textType, text: "x")
            #expect((badVersion.object["error"] as? [String: Any])?["message"] as? String == "algorithm algo://demo/Hello/9.9.9 not found")
        }
    }

    /// The official Node clients send the reference as given: `algo://demo/Hello/0.1.1` in their
    /// README, `/owner/name` as some users write it. The simulator reads both as the algorithm,
    /// and `/v1/web/algo/...`, the browser client's endpoint, as `/v1/algo/...`.
    @Test func readsTheReferenceAsTheNodeClientsSpellIt() async throws {
        try await withSimulator { http, sim in
            for path in ["/v1/algo/algo://demo/Hello/0.1.1", "/v1/algo/algo://demo/Hello/0.1.1/", "/v1/algo//demo/Hello/0.1.1"] {
                let reply = try await http.send(.POST, path, headers: auth + textType, text: "HAL")
                #expect(reply.status == 200, "\(path)")
                #expect(reply.object["result"] as? String == "Hello HAL", "\(path)")
            }
            #expect(sim.stats.snapshot.algoCalls == ["demo/Hello/0.1.1": 3])
            // Algorithmia's browser endpoint, as its browser client calls it.
            let web = try await http.send(.POST, "/v1/web/algo/demo/Hello/0.1.1", headers: auth + jsonType, text: #""web""#)
            #expect(web.object["result"] as? String == "Hello web")
            #expect(sim.stats.snapshot.algoCalls == ["demo/Hello/0.1.1": 4])
            let twice = try await http.send(.POST, "/v1/algo/algo://algo://demo/Hello", headers: auth + textType, text: "HAL")
            #expect(twice.status == 404)
            #expect((twice.object["error"] as? [String: Any])?["message"] as? String == "algorithm algo://algo://demo/Hello not found")
        }
    }

    @Test func honoursStdoutRawAndVoidOptions() async throws {
        try await withSimulator { http, _ in
            let stdout = try await http.send(.POST, "/v1/algo/demo/Hello/0.1.0?stdout=true", headers: auth + textType, text: "HAL")
            #expect((stdout.object["metadata"] as? [String: Any])?["stdout"] as? String == "Saying hello to HAL\n")
            let plain = try await http.send(.POST, "/v1/algo/demo/Hello/0.1.0", headers: auth + textType, text: "HAL")
            #expect((plain.object["metadata"] as? [String: Any])?["stdout"] == nil)

            let raw = try await http.send(.POST, "/v1/algo/demo/Hello/0.1.0?output=raw", headers: auth + textType, text: "HAL")
            #expect(raw.status == 200)
            #expect(raw.text == "Hello HAL")
            #expect(raw.header("Content-Type") == "text/plain")

            let void = try await http.send(.POST, "/v1/algo/demo/Hello/0.1.0?output=void", headers: auth + textType, text: "HAL")
            #expect(void.status == 200)
            #expect(void.object["async"] as? String == "void")
            #expect((void.object["request_id"] as? String)?.hasPrefix("req-") == true)

            let bad = try await http.send(.POST, "/v1/algo/demo/Hello?output=loud", headers: auth + textType, text: "HAL")
            #expect(bad.status == 400)
            #expect(canonicalJSON(bad.json) == canonicalJSON(literal: #"{"error":{"message":"output must be raw or void","error_type":"InputError"}}"#))
        }
    }

    @Test func echoesJSONTextAndBinaryWithTheirContentTypes() async throws {
        try await withSimulator { http, _ in
            let json = try await http.send(.POST, "/v1/algo/util/Echo/1.0.0", headers: auth, json: ["a": [1, 2, 3], "b": "x"])
            #expect(canonicalJSON(json.object["result"]) == #"{"a":[1,2,3],"b":"x"}"#)
            #expect((json.object["metadata"] as? [String: Any])?["content_type"] as? String == "json")

            let bytes: [UInt8] = (0..<1024).map { UInt8(truncatingIfNeeded: $0 &* 7) }
            let binary = try await http.send(.POST, "/v1/algo/util/Echo/1.0.0", headers: auth + binaryType, body: bytes)
            #expect((binary.object["metadata"] as? [String: Any])?["content_type"] as? String == "binary")
            #expect(Data(base64Encoded: binary.object["result"] as? String ?? "") == Data(bytes))

            let raw = try await http.send(.POST, "/v1/algo/util/Echo/1.0.0?output=raw", headers: auth + binaryType, body: bytes)
            #expect(raw.bytes == bytes)
            #expect(raw.header("Content-Type") == "application/octet-stream")

            let unsupported = try await http.send(.POST, "/v1/algo/util/Echo/1.0.0", headers: auth + [("Content-Type", "image/png")], body: [1])
            #expect(unsupported.status == 415)
        }
    }

    /// Strings come back exactly, whatever they hold: quotes, backslashes, every control
    /// character, non-ASCII text, and a 5 MB string (written by the simulator's own writer, not
    /// Foundation's, which took 0.3 s of the event loop for it).
    @Test func echoesStringsExactlyWhateverTheyHold() async throws {
        try await withSimulator { http, _ in
            let awkward = "q\"b\\s/" + String((0..<0x20).map { Character(Unicode.Scalar(UInt8($0))) }) + "é😀\u{7f}end"
            let json = try await http.send(.POST, "/v1/algo/util/Echo/1.0.0", headers: auth, json: ["k\"\n": [awkward, true, 0, 1.5, NSNull()]])
            #expect(json.status == 200)
            let result = try #require(json.object["result"] as? [String: Any])
            #expect(Array(result.keys) == ["k\"\n"])
            let values = try #require(result["k\"\n"] as? [Any])
            #expect(values.first as? String == awkward)
            #expect(canonicalJSON(Array(values.dropFirst())) == "[true,0,1.5,null]")
            let text = try await http.send(.POST, "/v1/algo/util/Echo/1.0.0", headers: auth + textType, text: awkward)
            #expect(text.object["result"] as? String == awkward)

            let large = String(repeating: "large \"text\"\n", count: 5_000_000 / 14)
            let echoed = try await http.send(.POST, "/v1/algo/util/Echo/1.0.0", headers: auth + textType, text: large)
            #expect(echoed.status == 200)
            #expect(echoed.object["result"] as? String == large)
        }
    }

    /// A client that sends `Expect: 100-continue` is told to go on as soon as its head arrives,
    /// before it has sent any of its body (curl otherwise waits a second before each input over
    /// 1 MiB).
    @Test func aClientThatExpectsContinueIsToldToGoOnAtOnce() async throws {
        try await withSimulator { http, _ in
            let connection = try await RawConnection.connect(port: http.port, sending: "POST /v1/algo/demo/Hello/0.1.0 HTTP/1.1\r\n"
                + "Host: sim\r\nAuthorization: Simple \(simKey)\r\nContent-Type: text/plain\r\nContent-Length: 3\r\nExpect: 100-continue\r\n\r\n")
            #expect(await eventually { connection.text.hasPrefix("HTTP/1.1 100 Continue\r\n\r\n") })
            try await connection.send("HAL")
            #expect(await eventually { RawResponse.parse(connection.text).count == 2 })
            let responses = RawResponse.parse(connection.text)
            #expect(responses.map(\.statusLine) == ["HTTP/1.1 100 Continue", "HTTP/1.1 200 OK"])
            #expect((try? JSONSerialization.jsonObject(with: Data((responses.last?.body ?? "").utf8)) as? [String: Any])?["result"] as? String == "Hello HAL")
            await connection.close()
        }
    }

    @Test func reportsAlgorithmErrorsAndTimeoutsInTheEnvelope() async throws {
        try await withSimulator { http, _ in
            let fail = try await http.send(.POST, "/v1/algo/test/Fail/1.0.0", headers: auth + textType, text: "boom")
            #expect(fail.status == 200)
            let error = fail.object["error"] as? [String: Any]
            #expect(error?["message"] as? String == "test/Fail always fails: boom")
            #expect(error?["error_type"] as? String == "AlgorithmError")
            #expect((error?["stack_trace"] as? String)?.contains("Traceback") == true)

            let rawFail = try await http.send(.POST, "/v1/algo/test/Fail/1.0.0?output=raw", headers: auth + textType, text: "boom")
            #expect(rawFail.status == 400)

            let slow = try await http.send(.POST, "/v1/algo/test/Sleep/1.0.0?timeout=1", headers: auth + jsonType, text: "1500")
            #expect(((slow.object["error"] as? [String: Any])?["error_type"] as? String) == "AlgorithmTimeoutError")

            let badTimeout = try await http.send(.POST, "/v1/algo/test/Sleep/1.0.0?timeout=4000", headers: auth + jsonType, text: "1")
            #expect(badTimeout.status == 400)
        }
    }

    @Test func bigAndLDAProduceDeterministicResults() async throws {
        try await withSimulator { http, _ in
            let big = try await http.send(.POST, "/v1/algo/test/Big/1.0.0", headers: auth + jsonType, text: "100000")
            #expect((big.object["result"] as? String)?.utf8.count == 100_000)

            let lda = try await http.send(.POST, "/v1/algo/nlp/LDA/1.0.0", headers: auth, json: [
                "docsList": ["apple banana apple", "banana cherry apple", "the cherry of dates"], "numTopics": 2,
            ])
            #expect(canonicalJSON(lda.object["result"]) == #"[{"apple":3,"cherry":2},{"banana":2,"dates":1}]"#)
            #expect((lda.object["metadata"] as? [String: Any])?["content_type"] as? String == "json")
        }
    }

    @Test func statsTrackPeakConcurrencyAndHeaderNames() async throws {
        try await withSimulator { http, sim in
            try await withThrowingTaskGroup(of: Int.self) { group in
                for _ in 0..<6 {
                    group.addTask {
                        // Long enough that all six overlap even on a loaded machine (1.5 s was not, under 4 CPU hogs).
                        try await http.send(.POST, "/v1/algo/test/Sleep/1.0.0", headers: auth + jsonType + [("X-Custom", "1")], text: "3000").status
                    }
                }
                for try await status in group { #expect(status == 200) }
            }
            let stats = try await http.send(.GET, "/__sim/stats")
            #expect(stats.object["peakConcurrency"] as? Int == 6)
            #expect((stats.object["algoCalls"] as? [String: Int])?["test/Sleep/1.0.0"] == 6)
            #expect((stats.object["headerNames"] as? [String])?.contains("x-custom") == true)
            #expect(sim.stats.snapshot.inFlight == 0)
            let reset = try await http.send(.POST, "/__sim/reset")
            #expect(reset.status == 204)
            #expect(sim.stats.snapshot.algoCalls.isEmpty)
            #expect(sim.stats.snapshot.peakConcurrency == 0)
        }
    }
}
