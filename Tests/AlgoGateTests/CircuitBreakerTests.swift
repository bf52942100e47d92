@testable import AlgoGate
import AlgoSim
import AlgoTestSupport
import Foundation
import Logging
import Testing

/// `upstream.circuit_breaker`: requests that never got an answer open the circuit; while it is
/// open every route is refused at once with 503 and Retry-After; then one request tests the upstream.
@Suite struct CircuitBreakerTests {
    static let threeFailures = "circuit_breaker: {failures: 3, open_seconds: 10}"

    static func call(_ h: GatewayHarness, fault: String? = nil) async throws -> TestHTTP.Reply {
        try await h.gateway.send(.POST, "/v1/algo/demo/Hello", headers: simple(Keys.teamB) + textType + (fault.map { [("X-Sim-Fault", $0)] } ?? []), text: "HAL")
    }

    /// Three lost connections in a row, the last a second after the first.
    static func openTheCircuit(_ h: GatewayHarness, _ clock: TestClock) async throws {
        for _ in 0..<2 { let reply = try await Self.call(h, fault: "drop"); #expect(reply.status == 502) }
        clock.advance(by: 1)
        #expect(try await Self.call(h, fault: "drop").status == 502)
        #expect(h.app.breaker.isOpen)
    }

    /// A breaker driven directly, that opens after three failures.
    static func breaker(_ clock: TestClock, logger: Logger = LogCapture().logger) -> CircuitBreaker {
        let settings = { var settings = GatewayConfig.CircuitBreaker(); settings.failures = 3; return settings }()
        return CircuitBreaker(settings: { settings }, now: { clock.now }, logger: logger)
    }

    /// Three requests that could not reach the upstream, the last a second after the first.
    static func openDirectly(_ breaker: CircuitBreaker, _ clock: TestClock) throws {
        for index in 0..<3 {
            let admission = try breaker.admit()
            if index == 2 { clock.advance(by: 1) }
            breaker.record(.unreachable, admission)
        }
        #expect(breaker.isOpen)
    }

    /// A flaky upstream under load fails a few requests in a row now and then while it answers
    /// the rest: failures that end within a second of the first, with answers after them, never
    /// open the circuit, however many times it happens.
    @Test func aBurstOfFailuresAmongAnswersDoesNotOpenIt() async throws {
        let clock = TestClock()
        try await GatewayHarness.run(upstreamYAML: Self.threeFailures, now: { clock.now }) { h in
            for _ in 0..<3 {
                for _ in 0..<5 { let reply = try await Self.call(h, fault: "drop"); #expect(reply.status == 502) }
                clock.advance(by: 0.9)
                #expect(try await Self.call(h, fault: "drop").status == 502)
                #expect(!h.app.breaker.isOpen)
                #expect(try await Self.call(h).status == 200)
                clock.advance(by: 5)
            }
            #expect(h.logs.all.filter { $0.contains("upstream circuit opened") }.isEmpty)
        }
    }

    @Test func unreachableInARowOpensTheCircuitAndOneRequestTestsTheUpstream() async throws {
        let clock = TestClock()
        try await GatewayHarness.run(upstreamYAML: Self.threeFailures, now: { clock.now }) { h in
            // Answers of any status say the upstream is there: they never count.
            for _ in 0..<4 { let reply = try await Self.call(h, fault: "status=503"); #expect(reply.status == 503) }
            // Two lost connections, then an answer: the count starts again.
            for _ in 0..<2 { let reply = try await Self.call(h, fault: "drop"); #expect(reply.status == 502) }
            #expect(try await Self.call(h).status == 200)
            for _ in 0..<2 { let reply = try await Self.call(h, fault: "drop"); #expect(reply.status == 502) }
            #expect(!h.app.breaker.isOpen)
            #expect(try await Self.call(h, fault: "drop").status == 502)  // the third in a row
            #expect(!h.app.breaker.isOpen, "three in the same moment: a burst, not yet an outage")
            clock.advance(by: 1)
            #expect(try await Self.call(h, fault: "drop").status == 502)  // the fourth, a second after the first
            #expect(h.app.breaker.isOpen)

            let upstreamBefore = h.simulator.stats.snapshot.totalRequests
            let refused = try await Self.call(h)
            #expect(refused.status == 503)
            #expect(refused.text == #"{"error":{"error_type":"UpstreamUnavailable","message":"the upstream could not be reached 4 times in a row; requests are refused for 10 s, then one is let through to test it"}}"#)
            #expect(refused.header("Retry-After") == "10")
            clock.advance(by: 4)
            let data = try await h.gateway.send(.GET, "/v1/data/.my", headers: simple(Keys.reader))
            #expect(data.status == 503)
            #expect(data.header("Retry-After") == "6")
            #expect(h.simulator.stats.snapshot.totalRequests == upstreamBefore, "nothing reached the upstream while open")
            let open = try await h.gateway.send(.GET, "/metrics").text
            #expect(metricSample(open, "algogate_upstream_circuit_open") == 1)
            #expect(metricSample(open, "algogate_upstream_circuit_refused_total") == 2)

            // After the open period one request tests the upstream: a failure opens it again at
            // once, for twice as long.
            clock.advance(by: 6)
            #expect(try await Self.call(h, fault: "drop").status == 502)
            #expect(try await Self.call(h).header("Retry-After") == "20")
            // An answer closes it.
            clock.advance(by: 20)
            #expect(try await Self.call(h).status == 200)
            #expect(!h.app.breaker.isOpen)
            #expect(try await Self.call(h).status == 200)
            let closed = try await h.gateway.send(.GET, "/metrics").text
            #expect(metricSample(closed, "algogate_upstream_circuit_open") == 0)
            #expect(metricSample(closed, "algogate_upstream_circuit_refused_total") == 3)
            #expect(h.logs.all.filter { $0.contains("upstream circuit opened") }.count == 2)
            #expect(h.logs.all.filter { $0.contains("upstream circuit closed") }.count == 1)
        }
    }

    /// Each failed test doubles the open period up to `max_open_seconds`, so a long outage, or a
    /// proxy refusing the gateway's credentials (each test a failed login), is tested ever less
    /// often; an answer closes the circuit and the next opening starts again at `open_seconds`.
    @Test func eachFailedTestDoublesTheOpenPeriodUpToTheMaximum() async throws {
        let clock = TestClock()
        try await GatewayHarness.run(upstreamYAML: "circuit_breaker: {failures: 3, open_seconds: 10, max_open_seconds: 35}", now: { clock.now }) { h in
            try await Self.openTheCircuit(h, clock)
            for (waited, next) in [(10, 20), (20, 35), (35, 35)] {
                clock.advance(by: Double(waited) - 0.5)
                let early = try await Self.call(h)
                #expect(early.status == 503 && early.header("Retry-After") == "1", "still open half a second before the \(waited) s are over")
                clock.advance(by: 0.5)
                let upstreamBefore = h.simulator.stats.snapshot.totalRequests
                #expect(try await Self.call(h, fault: "drop").status == 502, "the test after \(waited) s fails")
                #expect(h.simulator.stats.snapshot.totalRequests == upstreamBefore + 1)
                let refused = try await Self.call(h)
                #expect(refused.status == 503)
                #expect(refused.header("Retry-After") == String(next))
                #expect(refused.text.contains("requests are refused for \(next) s"))
            }
            let periods = h.logs.all.filter { $0.contains("upstream circuit opened") }.compactMap { line in
                line.firstRange(of: /open_seconds[=":]+(\d+)/).map { String(line[$0]).filter(\.isNumber) }
            }
            #expect(periods == ["10", "20", "35", "35"])

            clock.advance(by: 35)
            #expect(try await Self.call(h).status == 200)
            #expect(!h.app.breaker.isOpen)
            clock.advance(by: 5)
            try await Self.openTheCircuit(h, clock)
            #expect(try await Self.call(h).header("Retry-After") == "10", "an answer started the doubling again")
        }
    }

    /// A request let through before the circuit opened that fails while the test request runs
    /// is not the test: it neither opens the circuit again nor lets a second test through. The
    /// order of the outcomes is the point here, so the breaker is driven directly: live, a
    /// straggler timed to fail while the test runs missed its moment on a loaded machine.
    @Test func aStragglersFailureDoesNotEndTheTest() throws {
        let clock = TestClock()
        let logs = LogCapture()
        let breaker = Self.breaker(clock, logger: logs.logger)
        let straggler = try breaker.admit()
        try Self.openDirectly(breaker, clock)
        clock.advance(by: 10)
        let test = try breaker.admit()
        #expect(test.isTest && !straggler.isTest)
        breaker.record(.unreachable, straggler)
        #expect(throws: GatewayError(status: .serviceUnavailable, errorType: "UpstreamUnavailable",
                                     message: "the upstream could not be reached and a request is testing it now; retry shortly",
                                     headers: [.retryAfter: "1"])) { try breaker.admit() }
        breaker.record(.unknown, straggler)
        #expect(throws: GatewayError.self) { try breaker.admit() }
        breaker.record(.answered, test)
        #expect(!breaker.isOpen)
        #expect(try !breaker.admit().isTest)
        #expect(logs.all.filter { $0.contains("upstream circuit opened") }.count == 1)
    }

    /// A test request whose outcome says nothing of reachability (it timed out with 504, or its
    /// client went away) ends the test: the next request after it tests the upstream in its turn,
    /// rather than every request being refused for ever as if a test were still running.
    @Test func aTestThatEndsWithoutAVerdictLetsTheNextRequestTest() throws {
        let clock = TestClock()
        let breaker = Self.breaker(clock)
        try Self.openDirectly(breaker, clock)
        clock.advance(by: 10)
        let first = try breaker.admit()
        #expect(first.isTest)
        breaker.record(.unknown, first)
        #expect(breaker.isOpen, "no verdict: still open")
        let second = try breaker.admit()
        #expect(second.isTest, "the next request tests the upstream")
        breaker.record(.answered, second)
        #expect(!breaker.isOpen)
    }

    /// Failing over: with the circuit open on a dead upstream, a reload pointing `upstream.url`
    /// at another one lets the next request through at once, rather than refusing it for the rest
    /// of the open period (up to `max_open_seconds`).
    @Test func anotherUpstreamIsJudgedAfresh() async throws {
        let clock = TestClock()
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("failover-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: directory) }
        let second = try Simulator(configuration: SimConfiguration(apiKey: Keys.upstream, dataDirectory: directory))
        try await LiveServer.run({ second.application(onServerRunning: $0) }) { secondPort in
            try await GatewayHarness.run(upstreamYAML: Self.threeFailures, now: { clock.now }) { h in
                try await Self.openTheCircuit(h, clock)
                #expect(try await Self.call(h).status == 503)
                let firstURL = h.app.state.snapshot.config.upstream.url
                try h.pointUpstream(at: "http://127.0.0.1:\(secondPort)")
                let failedOver = try await Self.call(h)
                #expect(failedOver.status == 200)
                #expect(failedOver.object["result"] as? String == "Hello HAL")
                #expect(!h.app.breaker.isOpen)
                #expect(second.stats.snapshot.algoCalls == ["demo/Hello": 1])
                #expect(h.logs.all.contains { $0.contains("upstream circuit closed: upstream.url names another upstream, judged afresh") })
                // Back at the first (restarted, say), it is judged afresh too: one call goes.
                try h.pointUpstream(at: firstURL)
                #expect(try await Self.call(h).status == 200)
            }
        }
    }

    /// A call to the upstream configured before a reload, still in flight, says nothing of the
    /// one configured now: its failure does not count toward opening the circuit.
    @Test func aFailureFromTheUpstreamBeforeAReloadDoesNotCount() throws {
        let clock = TestClock()
        let settings = { var settings = GatewayConfig.CircuitBreaker(); settings.failures = 2; return settings }()
        let breaker = CircuitBreaker(settings: { settings }, now: { clock.now }, logger: LogCapture().logger)
        let old = try breaker.admit(upstream: "http://old")
        let new = try breaker.admit(upstream: "http://new")
        breaker.record(.unreachable, new)
        clock.advance(by: 1)
        breaker.record(.unreachable, old)
        #expect(!breaker.isOpen)
        breaker.record(.unreachable, try breaker.admit(upstream: "http://new"))
        #expect(breaker.isOpen)
    }

    @Test func whileOneRequestTestsTheUpstreamOthersAreRefused() async throws {
        let clock = TestClock()
        try await GatewayHarness.run(upstreamYAML: Self.threeFailures, now: { clock.now }) { h in
            try await Self.openTheCircuit(h, clock)
            clock.advance(by: 10)
            // 10 s, so that the call below is made while it runs even on a loaded machine (in a
            // full run this test takes 28 s where it takes 5 alone: the window is what it has).
            let probe = Task { try await Self.call(h, fault: "delay=10000") }
            #expect(await eventually { h.simulator.stats.snapshot.inFlight == 1 }, "the test request reached the upstream")
            let meanwhile = try await Self.call(h)
            #expect(meanwhile.status == 503)
            #expect(meanwhile.text == #"{"error":{"error_type":"UpstreamUnavailable","message":"the upstream could not be reached and a request is testing it now; retry shortly"}}"#)
            #expect(meanwhile.header("Retry-After") == "1")
            #expect(try await probe.value.status == 200)
            #expect(try await Self.call(h).status == 200)
        }
    }

    @Test func withStaleIfErrorTheCacheAnswersWhileTheCircuitIsOpen() async throws {
        let clock = TestClock()
        try await GatewayHarness.run(upstreamYAML: Self.threeFailures, cacheYAML: "ttl_seconds: 60\n  stale_if_error_seconds: 600", now: { clock.now }) { h in
            let pinned = "/v1/algo/demo/Hello/0.1.0"
            let fresh = try await h.gateway.send(.POST, pinned, headers: simple(Keys.teamB) + textType, text: "HAL")
            #expect(fresh.status == 200 && fresh.header("X-Cache") == "MISS")
            clock.advance(by: 61)
            try await Self.openTheCircuit(h, clock)
            let stale = try await h.gateway.send(.POST, pinned, headers: simple(Keys.teamB) + textType, text: "HAL")
            #expect(stale.status == 200)
            #expect(stale.header("X-Cache") == "STALE")
            #expect(stale.body == fresh.body)
            #expect(h.simulator.stats.snapshot.algoCalls["demo/Hello/0.1.0"] == 1)
        }
    }

    @Test func zeroFailuresTurnsItOff() async throws {
        try await GatewayHarness.run(upstreamYAML: "circuit_breaker: {failures: 0}") { h in
            for _ in 0..<6 { let reply = try await Self.call(h, fault: "drop"); #expect(reply.status == 502) }
            #expect(!h.app.breaker.isOpen)
            #expect(try await Self.call(h).status == 200)
        }
    }

    @Test func settingsAreValidated() throws {
        let base = """
            clients: [{name: a, key_sha256: "\(ClientRegistry.hash(of: Keys.teamA))", scopes: [algo]}]
            upstream: {url: "http://127.0.0.1:1", key_env: K, circuit_breaker:
            """
        #expect(try ConfigLoader.load(yaml: base + " {}}", environment: ["K": "upstream-key-0123"]).config.upstream.circuitBreaker == GatewayConfig.CircuitBreaker())
        #expect(GatewayConfig.CircuitBreaker().failures == 5 && GatewayConfig.CircuitBreaker().openSeconds == 10 && GatewayConfig.CircuitBreaker().maxOpenSeconds == 60)
        // Raising open_seconds alone raises the maximum with it.
        #expect(try ConfigLoader.load(yaml: base + " {open_seconds: 120}}", environment: ["K": "upstream-key-0123"]).config.upstream.circuitBreaker.maxOpenSeconds == 120)
        for (yaml, field, message) in [(" {failures: -1}}", "upstream.circuit_breaker.failures", "must be from 0 (off) to 1000"),
                                       (" {open_seconds: 0}}", "upstream.circuit_breaker.open_seconds", "must be from 1 to 3600"),
                                       (" {open_seconds: 30, max_open_seconds: 20}}", "upstream.circuit_breaker.max_open_seconds", "must be from open_seconds (30) to 86400"),
                                       (" {max_open_seconds: 86401}}", "upstream.circuit_breaker.max_open_seconds", "must be from open_seconds (10) to 86400")] {
            #expect(throws: ConfigError(field: field, message: message)) {
                try ConfigLoader.load(yaml: base + yaml, environment: ["K": "upstream-key-0123"])
            }
        }
        #expect(throws: ConfigError.self) { try ConfigLoader.load(yaml: base + " {fails: 2}}", environment: ["K": "upstream-key-0123"]) }
    }
}
