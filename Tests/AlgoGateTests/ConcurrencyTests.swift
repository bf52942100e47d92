import AlgoGate
import AlgoTestSupport
import AsyncHTTPClient
import Foundation
import NIOCore
import Synchronization
import Testing

@Suite struct ConcurrencyTests {
    /// Enough connections for hundreds of concurrent calls from one test, and time to open them
    /// all on a loaded machine (a request waits for its connection up to the connect timeout).
    static func wideClient() -> HTTPClient {
        HTTPClient(eventLoopGroupProvider: .singleton, configuration: .init(
            timeout: .init(connect: .seconds(60)),
            connectionPool: .init(idleTimeout: .seconds(60), concurrentHTTP1ConnectionsPerHostSoftLimit: 600),
            decompression: .disabled))
    }

    static let threeClients = """
    clients:
      - {name: alpha, key_sha256: "\(ClientRegistry.hash(of: Keys.teamA))", scopes: [algo], quota: {max_concurrent: 3}}
      - {name: beta, key_sha256: "\(ClientRegistry.hash(of: Keys.teamB))", scopes: [algo], quota: {max_concurrent: 5}}
      - {name: gamma, key_sha256: "\(ClientRegistry.hash(of: Keys.reader))", scopes: [algo]}
    """

    /// Sends `count` unpinned (never cached) test/Sleep calls at once; returns the statuses and the
    /// wall time until the last answer.
    static func burst(_ client: HTTPClient, _ base: String, key: String, count: Int, sleepMs: Int, answered: Tally? = nil) async throws -> ([Int], Duration) {
        let started = ContinuousClock.now
        let statuses = try await withThrowingTaskGroup(of: Int.self) { group in
            for _ in 0..<count {
                group.addTask {
                    var request = HTTPClientRequest(url: base + "/v1/algo/test/Sleep")
                    request.method = .POST
                    request.headers.add(name: "Authorization", value: "Simple \(key)")
                    request.headers.add(name: "Content-Type", value: "application/json")
                    request.body = .bytes(ByteBuffer(string: String(sleepMs)))
                    let response = try await client.execute(request, timeout: .seconds(120))
                    _ = try await response.body.collect(upTo: 1 << 16)
                    answered?.count.withLock { $0 += 1 }
                    return Int(response.status.code)
                }
            }
            var all: [Int] = []
            for try await status in group { all.append(status) }
            return all
        }
        return (statuses, ContinuousClock.now - started)
    }

    @Test func fiveHundredCallsFromThreeClientsStayWithinEveryCap() async throws {
        try await using(Self.wideClient()) { client in try await GatewayHarness.run(upstreamYAML: "max_concurrency: 10", clientsYAML: Self.threeClients) { h in
            let base = h.gateway.base
            async let alpha = Self.burst(client, base, key: Keys.teamA, count: 150, sleepMs: 30)
            async let beta = Self.burst(client, base, key: Keys.teamB, count: 150, sleepMs: 30)
            async let gamma = Self.burst(client, base, key: Keys.reader, count: 200, sleepMs: 30)
            let results = try await [alpha, beta, gamma]
            #expect(results.allSatisfy { $0.0.count == $0.0.filter { $0 == 200 }.count })
            let stats = h.simulator.stats.snapshot
            print("concurrency: 500 calls, simulator peak \(stats.peakConcurrency) (cap 10); per client peaks alpha \(h.app.gate.peak(for: "alpha")) (max 3), beta \(h.app.gate.peak(for: "beta")) (max 5), gamma \(h.app.gate.peak(for: "gamma"))")
            #expect(stats.algoCalls["test/Sleep"] == 500)
            #expect(stats.peakConcurrency <= 10)
            #expect(h.app.gate.peak <= 10)
            #expect(h.app.gate.peak(for: "alpha") <= 3 && h.app.gate.peak(for: "alpha") >= 1)
            #expect(h.app.gate.peak(for: "beta") <= 5 && h.app.gate.peak(for: "beta") >= 1)
            #expect(h.app.gate.inFlight == 0 && h.app.gate.queued == 0)
        } }
    }

    @Test func aSmallClientIsNotStarvedByABigBurst() async throws {
        // A cap of 4 makes the upstream slots, not the test machine's CPU, the bottleneck.
        try await using(Self.wideClient()) { client in try await GatewayHarness.run(upstreamYAML: "max_concurrency: 4", clientsYAML: Self.threeClients.replacingOccurrences(of: ", quota: {max_concurrent: 3}", with: "").replacingOccurrences(of: ", quota: {max_concurrent: 5}", with: "")) { h in
            let base = h.gateway.base
            let (_, solo) = try await Self.burst(client, base, key: Keys.teamB, count: 20, sleepMs: 100)
            let bigAnswered = Tally()
            // 400 ms each: the 200 drain slowly enough (10 a second) to be seen queued together
            // even when a loaded machine opens their connections slowly (inside the full suite, the
            // 20 calls above take ten times as long as alone).
            async let big = Self.burst(client, base, key: Keys.teamA, count: 200, sleepMs: 400, answered: bigAnswered)
            // The big burst is queued first.
            try #require(await eventually(within: .seconds(90)) { h.app.gate.queued >= 150 }, "the big burst never queued")
            let (smallStatuses, loaded) = try await Self.burst(client, base, key: Keys.teamB, count: 20, sleepMs: 100)
            let bigBeforeSmall = bigAnswered.count.withLock { $0 }
            let (bigStatuses, bigTime) = try await big
            #expect(smallStatuses.allSatisfy { $0 == 200 } && bigStatuses.allSatisfy { $0 == 200 })
            print("fairness: 20 calls alone took \(solo); beside 200 queued from another client \(loaded), while \(bigBeforeSmall) of the 200 were answered (the 200 took \(bigTime)); cap 4, 100 ms and 400 ms each")
            // First come, first served would put the 20 behind the 150+ already queued; round robin
            // gives them every other free slot, so about 20 of the big burst's calls are answered
            // meanwhile. Counted in answers, not seconds: a loaded machine changes the timings, not
            // the order.
            #expect(bigBeforeSmall < 100)
        } }
    }

    @Test func aFullQueueTimesOutWith503() async throws {
        try await GatewayHarness.run(upstreamYAML: "max_concurrency: 1\n  queue_timeout_seconds: 1") { h in
            let holder = Task { try await h.gateway.send(.POST, "/v1/algo/test/Sleep", headers: simple(Keys.teamA) + jsonType, text: "3000") }
            while h.app.gate.inFlight == 0 { try await Task.sleep(for: .milliseconds(10)) }  // the holder has the slot
            let waited = try await h.gateway.send(.POST, "/v1/algo/test/Sleep", headers: simple(Keys.teamB) + jsonType, text: "10")
            #expect(waited.status == 503)
            #expect(waited.text == #"{"error":{"error_type":"UpstreamBusy","message":"all upstream slots stayed busy for 1 s (upstream.queue_timeout_seconds); retry shortly"}}"#)
            #expect(waited.header("Retry-After") == "1")
            #expect(try await holder.value.status == 200)
            #expect(h.app.gate.inFlight == 0 && h.app.gate.queued == 0)
            #expect(h.simulator.stats.snapshot.algoCalls == ["test/Sleep": 1])
        }
    }

    /// `queue_timeout_seconds: 0` means no waiting: its timer may fire before the wait is even
    /// queued, and the call must still get the 503 the timeout stands for.
    @Test func aZeroQueueTimeoutRefusesAtOnceWith503() async throws {
        try await GatewayHarness.run(upstreamYAML: "max_concurrency: 1\n  queue_timeout_seconds: 0") { h in
            // Held long enough that the calls below are all made while it runs, on a loaded machine too.
            let holder = Task { try await h.gateway.send(.POST, "/v1/algo/test/Sleep", headers: simple(Keys.teamA) + jsonType, text: "6000") }
            while h.app.gate.inFlight == 0 { try await Task.sleep(for: .milliseconds(10)) }
            for _ in 0..<5 {
                let refused = try await h.gateway.send(.POST, "/v1/algo/test/Sleep", headers: simple(Keys.teamB) + jsonType, text: "10")
                #expect(refused.status == 503)
                #expect(envelope(refused).type == "UpstreamBusy")
            }
            #expect(try await holder.value.status == 200)
            #expect(h.app.gate.inFlight == 0 && h.app.gate.queued == 0)
        }
    }
}


/// A count shared by the tasks of a burst.
final class Tally: Sendable {
    let count = Mutex(0)
}
