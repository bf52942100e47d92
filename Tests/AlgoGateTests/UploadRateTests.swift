import AlgoGate
import AlgoTestSupport
import AsyncHTTPClient
import Foundation
import NIOCore
import Testing

/// `limits.upload_min_bytes_per_second`: a streamed upload holds an upstream slot while it
/// arrives, and a byte now and then keeps the idle timeout away, so an upload must keep a least
/// rate over the time the gateway waits for it (`UploadRelay`). The window it is judged over is
/// 20 s in service; these tests make it 1 or 2 s.
@Suite struct UploadRateTests {
    static let minimum = "limits: {upload_min_bytes_per_second: 1024}"

    static func putHead(_ path: String, length: Int) -> String {
        "PUT \(path) HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Simple \(Keys.teamA)\r\nContent-Length: \(length)\r\n\r\n"
    }

    static func makeTeamDirectory(_ h: GatewayHarness) async throws {
        let made = try await h.sim.send(.POST, "/v1/data/.my", headers: simple(Keys.upstream), json: ["name": "team-a"])
        #expect(made.status == 200)
    }

    /// An upload of 30 bytes sent a byte every 100 ms, over 3 s: answered 200, and stored whole.
    static func trickleIsStored(_ h: GatewayHarness, _ path: String) async throws {
        let client = try await RawConnection.connect(port: h.gatewayPort, sending: putHead(path, length: 30))
        for _ in 0..<30 {
            try await Task.sleep(for: .milliseconds(100))
            try await client.send("t")
        }
        #expect(await eventually { RawResponse.parse(client.text).count == 1 })
        let answer = try #require(RawResponse.parse(client.text).first)
        #expect(answer.statusLine == "HTTP/1.1 200 OK", "\(answer.body)")
        await client.close()
        let stored = try await h.sim.send(.GET, path, headers: simple(Keys.upstream))
        #expect(stored.text == String(repeating: "t", count: 30))
    }

    /// A byte every 100 ms (10 bytes a second) to an upload of 100,000 declared bytes: 408 once a
    /// window has gone by, its connection closed, its slot given back, and nothing stored upstream.
    @Test func anUploadTrickledBelowTheMinimumRateIs408() async throws {
        try await GatewayHarness.run(extraYAML: Self.minimum, uploadRateWindow: .seconds(1)) { h in
            try await Self.makeTeamDirectory(h)
            let slow = try await RawConnection.connect(port: h.gatewayPort, sending: Self.putHead("/v1/data/.my/team-a/slow.bin", length: 100_000) + "x")
            let sent = try await InputBudgetTests.trickle(slow)
            // One window at least; long before the 30 s the trickle would go on for, or the idle
            // timeout (75 s).
            // "the upload came too slowly: 10 bytes in the 1 s the gateway waited for them, under
            // limits.upload_min_bytes_per_second (1024); 11 of its 100000 bytes had arrived"
            let text = try await InputBudgetTests.answeredInputTimeout(on: slow, after: .seconds(1))
            let pattern = #/the upload came too slowly: (\d+) bytes in the (\d+) s the gateway waited for them, under limits\.upload_min_bytes_per_second \(1024\); (\d+) of its 100000 bytes had arrived/#
            let parts = try #require(text.wholeMatch(of: pattern), "\(text)")
            let (inWindow, seconds, received) = (Int(parts.1)!, Int(parts.2)!, Int(parts.3)!)
            // One window's waiting, or more when a loaded machine runs the judging timer late.
            #expect(seconds >= 1 && seconds <= 10, "\(text)")
            #expect(inWindow < 1024 * seconds, "\(text)")
            #expect(received >= inWindow && received <= sent + 1, "\(text), \(sent + 1) sent")
            // The slot is back, and the upstream kept no part of the file.
            #expect(try await eventually { metricSample(try await h.gateway.send(.GET, "/metrics").text, "algogate_upstream_in_flight") == 0 })
            let metrics = try await h.gateway.send(.GET, "/metrics").text
            #expect(metricSample(metrics, #"algogate_requests_total{client="team-a",route="data",status="408"}"#) == 1)
            let stored = try await h.sim.send(.GET, "/v1/data/.my/team-a/slow.bin", headers: simple(Keys.upstream))
            #expect(stored.status == 404, "\(stored.text)")
            #expect(await eventually { h.logs.all.contains { $0.contains("method=PUT") && $0.contains("status=408") && $0.contains("error_type=InputTimeout") && $0.contains("client=team-a") } })
        }
    }

    /// An upload that keeps above the minimum (4 KiB every 250 ms, 16 KiB a second) over several
    /// windows is stored whole. (2 s windows: a loaded machine may wake the sending test late.)
    @Test func anUploadKeepingTheMinimumRateIsStoredWhole() async throws {
        try await GatewayHarness.run(extraYAML: Self.minimum, uploadRateWindow: .seconds(2)) { h in
            try await Self.makeTeamDirectory(h)
            let chunks = (0..<20).map { String(repeating: Character(UnicodeScalar(UInt8(97 + $0))), count: 4096) }
            let client = try await RawConnection.connect(port: h.gatewayPort, sending: Self.putHead("/v1/data/.my/team-a/steady.txt", length: 4096 * chunks.count))
            for chunk in chunks {
                try await Task.sleep(for: .milliseconds(250))
                try await client.send(chunk)
            }
            #expect(await eventually { RawResponse.parse(client.text).count == 1 })
            let answer = try #require(RawResponse.parse(client.text).first)
            #expect(answer.statusLine == "HTTP/1.1 200 OK", "\(answer.body)")
            await client.close()
            let stored = try await h.sim.send(.GET, "/v1/data/.my/team-a/steady.txt", headers: simple(Keys.upstream))
            #expect(stored.status == 200)
            #expect(stored.text == chunks.joined())
        }
    }

    /// Only the time the gateway waits for the client counts. The simulator here waits 5 s before
    /// reading a 32 MiB upload sent as fast as the client can: once the buffers between are
    /// full, the gateway asks the client for nothing, and nothing arrives in the second window
    /// (2 s to 4 s). Judged by the clock alone, that upload would be cut (tried).
    @Test func anUploadTheUpstreamIsSlowToReadIsNotCut() async throws {
        try await GatewayHarness.run(extraYAML: Self.minimum, uploadRateWindow: .seconds(2)) { h in
            try await Self.makeTeamDirectory(h)
            let size = 32 << 20
            var put = HTTPClientRequest(url: "http://127.0.0.1:\(h.gatewayPort)/v1/data/.my/team-a/big.bin")
            put.method = .PUT
            put.headers.add(name: "Authorization", value: "Simple \(Keys.teamA)")
            put.headers.add(name: "X-Sim-Fault", value: "delay=5000")
            put.body = .stream(RepeatedChunks(chunk: ByteBuffer(repeating: 0x5a, count: 1 << 20), count: size >> 20), length: .known(Int64(size)))
            let response = try await TestHTTP.plainClient.execute(put, timeout: .seconds(60))
            let body = try await response.body.collect(upTo: 1 << 20)
            #expect(response.status.code == 200, "\(String(buffer: body))")
            let stored = try await h.sim.send(.HEAD, "/v1/data/.my/team-a/big.bin", headers: simple(Keys.upstream))
            #expect(stored.status == 200)
            #expect(stored.headers.first(name: "content-length") == String(size))
        }
    }

    /// 0 turns the minimum off: the same trickle is stored, however long it takes. A reload that
    /// sets a minimum applies to the next upload.
    @Test func noMinimumAtZeroAndOneFromTheNextUploadOnReload() async throws {
        try await GatewayHarness.run(extraYAML: "limits: {upload_min_bytes_per_second: 0}", uploadRateWindow: .seconds(1)) { h in
            try await Self.makeTeamDirectory(h)
            try await Self.trickleIsStored(h, "/v1/data/.my/team-a/trickled.txt")

            var config = h.app.state.snapshot.config
            config.limits.uploadMinBytesPerSecond = 1024
            try h.app.state.replace(with: ConfigLoader.Loaded(config: config, upstreamKey: h.app.state.snapshot.upstreamKey))
            let slow = try await RawConnection.connect(port: h.gatewayPort, sending: Self.putHead("/v1/data/.my/team-a/cut.txt", length: 300))
            _ = try await InputBudgetTests.trickle(slow)
            let text = try await InputBudgetTests.answeredInputTimeout(on: slow, after: .seconds(1))
            #expect(text.hasPrefix("the upload came too slowly: ") && text.hasSuffix(" of its 300 bytes had arrived"), "\(text)")
        }
    }

    /// A client's own `upload_min_bytes_per_second` stands over the global one, both ways: 0 lets
    /// a team that streams a slow source trickle while the others keep the minimum, and a rate of
    /// its own applies where the global is 0, named in the message. `/_gateway/me` shows the one
    /// in force.
    @Test func aClientsOwnMinimumStandsOverTheGlobalOne() async throws {
        try await GatewayHarness.run(extraYAML: Self.minimum, uploadRateWindow: .seconds(1)) { h in
            try await Self.makeTeamDirectory(h)
            func minimum(_ key: String) async throws -> Int? {
                try await h.gateway.send(.GET, "/_gateway/me", headers: simple(key)).object["upload_min_bytes_per_second"] as? Int
            }
            func reload(global: Int, teamA: Int?) throws {
                var config = h.app.state.snapshot.config
                config.limits.uploadMinBytesPerSecond = global
                config.clients[0].uploadMinBytesPerSecond = teamA
                try h.app.state.replace(with: ConfigLoader.Loaded(config: config, upstreamKey: h.app.state.snapshot.upstreamKey))
            }
            #expect(try await minimum(Keys.teamA) == 1024)

            try reload(global: 1024, teamA: 0)
            #expect(try await minimum(Keys.teamA) == 0)
            #expect(try await minimum(Keys.teamB) == 1024)
            try await Self.trickleIsStored(h, "/v1/data/.my/team-a/tail.log")

            try reload(global: 0, teamA: 4096)
            #expect(try await minimum(Keys.teamA) == 4096)
            #expect(try await minimum(Keys.teamB) == 0)
            let slow = try await RawConnection.connect(port: h.gatewayPort, sending: Self.putHead("/v1/data/.my/team-a/cut.txt", length: 300))
            _ = try await InputBudgetTests.trickle(slow)
            let text = try await InputBudgetTests.answeredInputTimeout(on: slow, after: .seconds(1))
            #expect(text.contains(" under client team-a's upload_min_bytes_per_second (4096); "), "\(text)")
            #expect(text.hasPrefix("the upload came too slowly: ") && text.hasSuffix(" of its 300 bytes had arrived"), "\(text)")
        }
    }
}
