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
            // Two Authorization fields are refused, even when both hold the key.
            let twice = try await http.send(.POST, "/v1/algo/demo/Hello", headers: auth + auth + textType, text: "HAL")
            #expect(twice.status == 401)
            #expect(canonicalJSON(twice.json) == canonicalJSON(literal: #"{"error":{"message":"authorization failed: invalid api key","error_type":"AuthorizationError"}}"#))
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
            // A partial version that admits none of the algorithm's versions names none.
            for partial in ["0.2", "0.2.*", "1"] {
                let reply = try await http.send(.POST, "/v1/algo/demo/Hello/\(partial)", headers: auth + textType, text: "x")
                #expect(reply.status == 404, "\(partial)")
                #expect((reply.object["error"] as? [String: Any])?["message"] as? String == "algorithm algo://demo/Hello/\(partial) not found")
            }
            // More than owner/name/version, or an empty part, is no reference at all: nothing is
            // run, and no call counted.
            for path in ["demo/Hello/0.1.0/extra", "demo//Hello", "demo/Hello//"] {
                let reply = try await http.send(.POST, "/v1/algo/\(path)", headers: auth + textType, text: "x")
                #expect(reply.status == 404, "\(path)")
                #expect((reply.object["error"] as? [String: Any])?["message"] as? String == "algorithm algo://\(path) not found")
            }
            #expect(sim.stats.snapshot.algoCalls == ["demo/Hello": 2, "demo/Hello/latest": 1, "demo/Hello/0.1.1": 1, "demo/Hello/0.1.*": 1,
                                                     "demo/Hello/9.9.9": 1, "nobody/Nothing": 1, "demo/Hello/0.2": 1, "demo/Hello/0.2.*": 1, "demo/Hello/1": 1])
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

            // `output=default` is the envelope, as no output option is.
            let named = try await http.send(.POST, "/v1/algo/demo/Hello/0.1.0?output=default", headers: auth + textType, text: "HAL")
            #expect(named.status == 200)
            #expect(named.object["result"] as? String == "Hello HAL")
            #expect((named.object["metadata"] as? [String: Any])?["content_type"] as? String == "text")

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
        // The expectation is read in any case (RFC 9110 §10.1.1).
        for expectation in ["100-continue", "100-Continue"] { try await withSimulator { http, _ in
            let connection = try await RawConnection.connect(port: http.port, sending: "POST /v1/algo/demo/Hello/0.1.0 HTTP/1.1\r\n"
                + "Host: sim\r\nAuthorization: Simple \(simKey)\r\nContent-Type: text/plain\r\nContent-Length: 3\r\nExpect: \(expectation)\r\n\r\n")
            #expect(await eventually { connection.text.hasPrefix("HTTP/1.1 100 Continue\r\n\r\n") })
            try await connection.send("HAL")
            #expect(await eventually { RawResponse.parse(connection.text).count == 2 })
            let responses = RawResponse.parse(connection.text)
            #expect(responses.map(\.statusLine) == ["HTTP/1.1 100 Continue", "HTTP/1.1 200 OK"])
            #expect((try? JSONSerialization.jsonObject(with: Data((responses.last?.body ?? "").utf8)) as? [String: Any])?["result"] as? String == "Hello HAL")
            await connection.close()
        } }
    }

    @Test func reportsAlgorithmErrorsAndTimeoutsInTheEnvelope() async throws {
        try await withSimulator { http, _ in
            let fail = try await http.send(.POST, "/v1/algo/test/Fail/1.0.0", headers: auth + textType, text: "boom")
            #expect(fail.status == 200)
            let error = fail.object["error"] as? [String: Any]
            #expect(error?["message"] as? String == "test/Fail always fails: boom")
            #expect(error?["error_type"] as? String == "AlgorithmError")
            #expect((error?["stack_trace"] as? String)?.contains("Traceback") == true)
            // The run's time comes with its error, as with any answer: it is billed all the same.
            #expect(Set(fail.object.keys) == ["error", "metadata"])
            #expect((fail.object["metadata"] as? [String: Any])?["duration"] is Double)

            let rawFail = try await http.send(.POST, "/v1/algo/test/Fail/1.0.0?output=raw", headers: auth + textType, text: "boom")
            #expect(rawFail.status == 400)

            let slow = try await http.send(.POST, "/v1/algo/test/Sleep/1.0.0?timeout=1", headers: auth + jsonType, text: "1500")
            #expect(((slow.object["error"] as? [String: Any])?["error_type"] as? String) == "AlgorithmTimeoutError")

            let badTimeout = try await http.send(.POST, "/v1/algo/test/Sleep/1.0.0?timeout=4000", headers: auth + jsonType, text: "1")
            #expect(badTimeout.status == 400)
            #expect(canonicalJSON(badTimeout.json) == canonicalJSON(literal: #"{"error":{"message":"timeout must be a whole number of seconds from 0 to 3000 (0 is the default, 300)","error_type":"InputError"}}"#))
            #expect(try await http.send(.POST, "/v1/algo/test/Sleep/1.0.0?timeout=-1", headers: auth + jsonType, text: "1").status == 400)
            // 0 is the default, 300 s, as the gateway reads it: what the Java client sends for a
            // timeout set in minutes.
            let zero = try await http.send(.POST, "/v1/algo/test/Sleep/1.0.0?timeout=0", headers: auth + jsonType, text: "1")
            #expect(zero.status == 200)
            #expect(canonicalJSON(zero.object["result"]) == #"{"slept_ms":1}"#)
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

    /// Algorithmia caps an algorithm's input at 10 MB (10 MiB here, as the gateway's default
    /// `limits.max_request_bytes`): one byte more is a 413, and the input is never run.
    @Test func anInputOverTenMegabytesIs413() async throws {
        try await withSimulator { http, _ in
            let limit = 10 << 20
            let fits = try await http.send(.POST, "/v1/algo/util/Echo/1.0.0?output=raw", headers: auth + binaryType, body: [UInt8](repeating: 7, count: limit))
            #expect(fits.status == 200)
            #expect(fits.bytes.count == limit)
            let over = try await http.send(.POST, "/v1/algo/util/Echo/1.0.0?output=raw", headers: auth + binaryType, body: [UInt8](repeating: 7, count: limit + 1))
            #expect(over.status == 413)
            #expect(canonicalJSON(over.json) == canonicalJSON(literal: #"{"error":{"message":"algorithm input exceeds the 10 MB limit","error_type":"InputError"}}"#))
        }
    }

    /// The built-ins check their inputs as an algorithm does, and answer what they could not use
    /// with an `InputError` in the envelope.
    @Test func theBuiltInsCheckTheirInputs() async throws {
        try await withSimulator { http, _ in
            func error(_ path: String, json: String) async throws -> [String: Any]? {
                let reply = try await http.send(.POST, "/v1/algo/\(path)", headers: auth + jsonType, text: json)
                #expect(reply.status == 200)
                return reply.object["error"] as? [String: Any]
            }
            let hello = try await error("demo/Hello/0.1.0", json: #"{"name":"HAL"}"#)
            #expect(hello?["error_type"] as? String == "InputError")
            #expect((hello?["message"] as? String)?.hasPrefix("Expected STRING but was ") == true)
            let sleep = try await error("test/Sleep/1.0.0", json: "3000001")
            #expect(sleep?["message"] as? String == "Expected a number of milliseconds between 0 and 3000000")
            #expect(sleep?["error_type"] as? String == "InputError")
            // A fraction of a millisecond is cut, not refused.
            let fraction = try await http.send(.POST, "/v1/algo/test/Sleep/1.0.0", headers: auth + jsonType, text: "1.5")
            #expect(canonicalJSON(fraction.object["result"]) == #"{"slept_ms":1}"#)
            // LDA: two topics unless asked, and words of one letter are not words.
            let lda = try await http.send(.POST, "/v1/algo/nlp/LDA/1.0.0", headers: auth, json: ["docsList": ["apple banana apple x", "banana cherry apple y"]])
            #expect(canonicalJSON(lda.object["result"]) == #"[{"apple":3,"cherry":1},{"banana":2}]"#)
        }
    }

    /// A 40-hex build hash pins its version, in capitals too.
    @Test func aBuildHashPinsItsVersionInEitherCase() async throws {
        try await withSimulator { http, sim in
            let versions = try await http.send(.GET, "/v1/algorithms/demo/Hello/versions", headers: auth)
            let hashes = (versions.object["results"] as? [[String: Any]] ?? []).compactMap { ($0["version_info"] as? [String: Any])?["git_hash"] as? String }
            #expect(hashes.count == 2)
            let hash = try #require(hashes.first)
            for reference in [hash, hash.uppercased()] {
                let reply = try await http.send(.POST, "/v1/algo/demo/Hello/\(reference)", headers: auth + textType, text: "HAL")
                #expect(reply.status == 200, "\(reference)")
                #expect(reply.object["result"] as? String == "Hello HAL")
            }
            #expect(sim.stats.snapshot.algoCalls == ["demo/Hello/\(hash)": 1, "demo/Hello/\(hash.uppercased())": 1])
            let unknown = String(repeating: "0", count: 40)
            #expect(try await http.send(.POST, "/v1/algo/demo/Hello/\(unknown)", headers: auth + textType, text: "HAL").status == 404)
        }
    }

    /// An answer of 1 KiB or more is compressed for a client that asks, as Algorithmia's are; a
    /// smaller one is not.
    @Test func largerAnswersAreCompressedForAClientThatAsks() async throws {
        try await withSimulator { http, sim in
            let gzip = [("Accept-Encoding", "gzip")]
            let small = try await http.send(.POST, "/v1/algo/test/Big/1.0.0?output=raw", headers: auth + jsonType + gzip, text: "1023")
            #expect(small.status == 200)
            #expect(small.header("Content-Encoding") == nil)
            #expect(small.bytes.count == 1023)
            let large = try await http.send(.POST, "/v1/algo/test/Big/1.0.0?output=raw", headers: auth + jsonType + gzip, text: "1024")
            #expect(large.status == 200)
            #expect(large.header("Content-Encoding") == "gzip")
            #expect(Array(large.bytes.prefix(2)) == [0x1f, 0x8b])
            #expect(sim.stats.snapshot.gzipResponses == 1)
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
            // The peak is the most at once, not the last count: one call alone after them leaves it.
            #expect(try await http.send(.POST, "/v1/algo/demo/Hello/0.1.0", headers: auth + textType, text: "HAL").status == 200)
            #expect(sim.stats.snapshot.peakConcurrency == 6)
            #expect(sim.stats.snapshot.inFlight == 0)
            let reset = try await http.send(.POST, "/__sim/reset")
            #expect(reset.status == 204)
            #expect(sim.stats.snapshot.algoCalls.isEmpty)
            #expect(sim.stats.snapshot.peakConcurrency == 0)
        }
    }
}
