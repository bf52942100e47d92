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
                    let body = try await response.body.collect(upTo: 1 << 16)
                    answered?.count.withLock { $0 += 1 }
                    if response.status != .ok {
                        // What a failure of the caller's check then reads in the test's output.
                        print("burst: \(response.status.code) \(response.headers.first(name: "X-Request-ID") ?? "-") \(String(buffer: body))")
                    }
                    return Int(response.status.code)
                }
            }
            var all: [Int] = []
            for try await status in group { all.append(status) }
            return all
        }
        return (statuses, ContinuousClock.now - started)
    }

    /// The calls queue for the ten slots: 1.5 s of upstream time at the least, much longer when
    /// the machine is loaded, so the queue's bound here is 120 s. (In a loaded whole-suite run in
    /// CI, 2 of the 500 never reached the upstream: most likely they waited past the default
    /// 30 s, the one refusal before the upstream that fits.)
    @Test func fiveHundredCallsFromThreeClientsStayWithinEveryCap() async throws {
        try await using(Self.wideClient()) { client in try await GatewayHarness.run(
            serverYAML: "idle_timeout_seconds: 180", upstreamYAML: "max_concurrency: 10\n  queue_timeout_seconds: 120", clientsYAML: Self.threeClients) { h in
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
        // Four upstream slots, held by the upstream until both bursts wait at the gate: the order
        // in which the gate then hands out slots, not the machine's speed, decides who is answered
        // first. (Bursts racing a draining queue made this test fail on a loaded machine.)
        try await HeldUpstream.run { upstream, port in
            try await using(Self.wideClient()) { client in
                try await GatewayHarness.run(serverYAML: "idle_timeout_seconds: 180", upstreamYAML: "max_concurrency: 4\n  queue_timeout_seconds: 120", upstreamURL: { _ in "http://127.0.0.1:\(port)" },
                                             clientsYAML: Self.threeClients.replacingOccurrences(of: ", quota: {max_concurrent: 3}", with: "").replacingOccurrences(of: ", quota: {max_concurrent: 5}", with: "")) { h in
                    let base = h.gateway.base
                    let bigAnswered = Tally()
                    async let big = Self.burst(client, base, key: Keys.teamA, count: 200, sleepMs: 20, answered: bigAnswered)
                    try #require(await eventually(within: .seconds(120)) { h.app.gate.inFlight == 4 && h.app.gate.queued == 196 }, "the big burst never queued")
                    async let small = Self.burst(client, base, key: Keys.teamB, count: 20, sleepMs: 20)
                    try #require(await eventually(within: .seconds(120)) { h.app.gate.queued == 216 }, "the small burst never queued")
                    upstream.release.open()
                    let (smallStatuses, _) = try await small
                    let bigBeforeSmall = bigAnswered.count.withLock { $0 }
                    let (bigStatuses, _) = try await big
                    #expect(smallStatuses == Array(repeating: 200, count: 20))
                    #expect(bigStatuses == Array(repeating: 200, count: 200))
                    print("fairness: the small client's 20 calls, queued behind 196 of a big burst, were all answered while \(bigBeforeSmall) of the 200 were; cap 4")
                    // First come, first served would answer the 196 queued first; round robin gives
                    // the 20 every other free slot, so about 24 of the big burst's calls are
                    // answered meanwhile (the 4 that held the slots, then one for each of the 20).
                    #expect(bigBeforeSmall < 60)
                    #expect(h.app.gate.inFlight == 0 && h.app.gate.queued == 0)
                }
            }
        }
    }

    /// alpha reserves nothing, beta reserves 2 of the account's 4 slots.
    static let reservingClients = """
    admin: {key_sha256: "\(ClientRegistry.hash(of: Keys.admin))"}
    clients:
      - {name: alpha, key_sha256: "\(ClientRegistry.hash(of: Keys.teamA))", scopes: [algo]}
      - {name: beta, key_sha256: "\(ClientRegistry.hash(of: Keys.teamB))", scopes: [algo], quota: {reserved_concurrent: 2}}
    """

    /// Round robin hands a slot over only when a call ends, so without reservations a team whose
    /// calls run for minutes holds every slot and the next team waits as long. A reservation keeps
    /// its slots free for its client: alpha's burst gets the two slots beta has not reserved and
    /// queues, beta's calls go upstream at once beside it, and beta's third call, beyond its
    /// reservation, queues like anyone's. The upstream holds every call until the test lets go.
    @Test func reservedSlotsStayFreeForTheirClientWhileAnotherQueues() async throws {
        try await Self.withReservations { h, upstream, client in
            let gate = h.app.gate
            let unused = { try await metricSample(h.gateway.send(.GET, "/metrics").text, "algogate_upstream_reserved_unused") }
            #expect(try await unused() == 2)
            let me = try await h.gateway.send(.GET, "/_gateway/me", headers: simple(Keys.teamB))
            #expect((me.object["quota"] as? [String: Any])?["reserved_concurrent"] as? Int == 2)

            async let alpha = Self.burst(client, h.gateway.base, key: Keys.teamA, count: 6, sleepMs: 0)
            try #require(await eventually(within: .seconds(120)) { upstream.calls == 2 && gate.inFlight == 2 && gate.queued == 4 },
                         "alpha's burst did not take the two unreserved slots and queue the rest: \(upstream.calls) upstream, \(gate.inFlight) in flight, \(gate.queued) queued")
            async let beta = Self.burst(client, h.gateway.base, key: Keys.teamB, count: 2, sleepMs: 0)
            try #require(await eventually(within: .seconds(120)) { upstream.calls == 4 && gate.inFlight == 4 },
                         "beta's calls did not go upstream beside alpha's: \(upstream.calls) upstream, \(gate.inFlight) in flight")
            #expect(gate.queued == 4)
            #expect(try await unused() == 0)
            async let betaBeyond = Self.burst(client, h.gateway.base, key: Keys.teamB, count: 1, sleepMs: 0)
            try #require(await eventually(within: .seconds(120)) { gate.queued == 5 }, "beta's third call did not queue")
            #expect(upstream.calls == 4)
            // What an operator sees of it.
            let slots = try await h.gateway.send(.GET, "/_admin/concurrency", headers: simple(Keys.admin))
            #expect(slots.status == 200)
            #expect(slots.header("Content-Type") == "application/json")
            #expect(slots.text == #"{"clients":[{"in_flight":2,"name":"alpha","peak":2,"queued":4},{"in_flight":2,"name":"beta","peak":2,"queued":1,"reserved_concurrent":2}],"in_flight":4,"max_concurrency":4,"queued":5,"reserved_unused":0}"#)
            let metrics = try await h.gateway.send(.GET, "/metrics").text
            #expect(metricSample(metrics, #"algogate_upstream_client_in_flight{client="alpha"}"#) == 2)
            #expect(metricSample(metrics, #"algogate_upstream_client_queued{client="alpha"}"#) == 4)
            #expect(metricSample(metrics, #"algogate_upstream_client_in_flight{client="beta"}"#) == 2)
            #expect(metricSample(metrics, #"algogate_upstream_client_queued{client="beta"}"#) == 1)
            let refused = try await h.gateway.send(.GET, "/_admin/concurrency", headers: simple(Keys.teamB))
            #expect(refused.status == 403)
            #expect(refused.text == #"{"error":{"error_type":"PermissionDenied","message":"operator endpoints need the admin key"}}"#)
            let misspelt = try await h.gateway.send(.GET, "/_admin/concurrency?client=beta", headers: simple(Keys.admin))
            #expect(misspelt.status == 400)
            #expect(envelope(misspelt).message == "GET /_admin/concurrency takes no parameters")

            upstream.release.open()
            let results = try await [alpha, beta, betaBeyond]
            #expect(results.map(\.0) == [Array(repeating: 200, count: 6), [200, 200], [200]])
            #expect(upstream.calls == 9)
            // beta's slots, freed as its calls ended, went back to its reservation, so
            // alpha never had more than the two beta did not reserve.
            #expect(gate.peak(for: "alpha") == 2)
            #expect(gate.inFlight == 0 && gate.queued == 0)
            #expect(try await unused() == 2)
            // The calls that waited for a slot say how long in their log lines.
            let lines = { (client: String) in h.logs.all.filter { $0.contains("client=\(client) ") && $0.contains("path=/v1/algo/test/Sleep") } }
            try #require(await eventually { lines("alpha").count == 6 && lines("beta").count == 3 }, "\(h.logs.all)")
            #expect(lines("alpha").filter { $0.contains(" queued_ms=") }.count == 4, "\(lines("alpha"))")
            #expect(lines("beta").filter { $0.contains(" queued_ms=") }.count == 1, "\(lines("beta"))")
            let waited = lines("beta").compactMap { $0.firstMatch(of: #/ queued_ms=([0-9]+\.[0-9]{3}) /#).map { Double($0.output.1)! } }
            #expect(waited.count == 1 && waited[0] > 0, "\(lines("beta"))")
        }
    }

    /// A reload that drops a reservation hands its slots to the clients queued for them at once.
    @Test func aReloadThatDropsAReservationGivesItsSlotsToTheQueue() async throws {
        try await Self.withReservations { h, upstream, client in
            let gate = h.app.gate
            async let alpha = Self.burst(client, h.gateway.base, key: Keys.teamA, count: 4, sleepMs: 0)
            try #require(await eventually(within: .seconds(120)) { upstream.calls == 2 && gate.queued == 2 }, "alpha's burst did not queue behind the reservation")
            var config = h.app.state.snapshot.config
            config.clients[1].quota = nil
            try h.app.state.replace(with: ConfigLoader.Loaded(config: config, upstreamKey: h.app.state.snapshot.upstreamKey))
            try #require(await eventually(within: .seconds(120)) { upstream.calls == 4 }, "the freed slots did not reach alpha's queued calls")
            #expect(gate.inFlight == 4 && gate.queued == 0 && gate.unusedReserved == 0)
            upstream.release.open()
            #expect(try await alpha.0 == Array(repeating: 200, count: 4))
        }
    }

    /// A gateway with `reservingClients` and four upstream slots, in front of a `HeldUpstream`,
    /// and a client that can open many connections; queued calls wait up to 120 s.
    static func withReservations(_ body: (GatewayHarness, HeldUpstream, HTTPClient) async throws -> Void) async throws {
        try await HeldUpstream.run { upstream, port in
            try await using(Self.wideClient()) { client in
                try await GatewayHarness.run(serverYAML: "idle_timeout_seconds: 180", upstreamYAML: "max_concurrency: 4\n  queue_timeout_seconds: 120",
                                             upstreamURL: { _ in "http://127.0.0.1:\(port)" }, clientsYAML: Self.reservingClients) { h in
                    try await body(h, upstream, client)
                }
            }
        }
    }

    /// `upstream.max_concurrency` lowered by a reload applies at once: with three calls held
    /// upstream and the slots cut from 4 to 2, a fourth call waits, where before it would have
    /// gone; the operator's view and the metric say 2. Raised past the 4 the gateway started
    /// with, the slots stay at 4 (the connection pool is sized at start), and the waiting call goes.
    @Test func loweredSlotsApplyOnReloadAndARaiseStopsAtTheStartFigure() async throws {
        try await HeldUpstream.run { upstream, port in
            try await GatewayHarness.run(upstreamYAML: "max_concurrency: 4", upstreamURL: { _ in "http://127.0.0.1:\(port)" }) { h in
                let call = { Task { try await h.gateway.send(.POST, "/v1/algo/test/Sleep", headers: simple(Keys.teamA) + jsonType, text: "0") } }
                let held = (0..<3).map { _ in call() }
                try #require(await eventually { upstream.calls == 3 }, "the first calls never reached the upstream")

                try h.setSlots(2)
                let standing = try await h.gateway.send(.GET, "/_admin/concurrency", headers: simple(Keys.admin))
                #expect(standing.object["max_concurrency"] as? Int == 2 && standing.object["in_flight"] as? Int == 3, "\(standing.text)")
                let metrics = try await h.gateway.send(.GET, "/metrics")
                #expect(metricSample(metrics.text, "algogate_upstream_max_concurrency") == 2)
                let fourth = call()
                #expect(await eventually { h.app.gate.queued == 1 })
                #expect(upstream.calls == 3)

                try h.setSlots(80)
                #expect(await eventually { upstream.calls == 4 })
                #expect(h.app.gate.capacity == 4 && h.app.gate.queued == 0)
                // A key no client entry names (the operator's) waiting for a slot is listed too.
                let operatorCall = Task { try await h.gateway.send(.GET, "/v1/users/someone", headers: simple(Keys.admin)) }
                #expect(await eventually { h.app.gate.queued == 1 })
                let waiting = try await h.gateway.send(.GET, "/_admin/concurrency", headers: simple(Keys.admin))
                let listed = (waiting.object["clients"] as? [[String: Any]] ?? []).first { $0["name"] as? String == "admin" }
                #expect(listed?["queued"] as? Int == 1 && listed?["in_flight"] as? Int == 0, "\(waiting.text)")
                upstream.release.open()
                #expect(try await operatorCall.value.status == 404)
                for task in held + [fourth] {
                    let reply = try await task.value
                    #expect(reply.status == 200)
                    #expect(reply.text == HeldUpstream.answer(sleptMs: 0))
                }
            }
        }
    }

    /// The slot is held upstream until the test lets it go, so the second call surely finds it
    /// taken (a holder that slept a few seconds was once done before a loaded machine sent it).
    @Test func aFullQueueTimesOutWith503() async throws {
        try await HeldUpstream.run { upstream, port in
            try await GatewayHarness.run(upstreamYAML: "max_concurrency: 1\n  queue_timeout_seconds: 1", upstreamURL: { _ in "http://127.0.0.1:\(port)" }) { h in
                let holder = Task { try await h.gateway.send(.POST, "/v1/algo/test/Sleep", headers: simple(Keys.teamA) + jsonType, text: "0") }
                try #require(await eventually { upstream.arrived.isOpen }, "the first call never reached the upstream")
                let waited = try await h.gateway.send(.POST, "/v1/algo/test/Sleep", headers: simple(Keys.teamB) + jsonType, text: "0")
                #expect(waited.status == 503)
                #expect(waited.text == #"{"error":{"error_type":"UpstreamBusy","message":"all upstream slots stayed busy for 1 s (upstream.queue_timeout_seconds); retry shortly"}}"#)
                #expect(waited.header("Retry-After") == "1")
                upstream.release.open()
                let held = try await holder.value
                #expect(held.status == 200)
                #expect(held.text == HeldUpstream.answer(sleptMs: 0))
                #expect(h.app.gate.inFlight == 0 && h.app.gate.queued == 0)
                #expect(upstream.calls == 1)
            }
        }
    }

    /// The seconds each client's calls held upstream slots are counted, so an operator can see
    /// how many slots a team keeps busy on average (the counter's rate) and size its
    /// `max_concurrent` or `reserved_concurrent` by it.
    @Test func theSecondsEachClientHoldsSlotsAreCounted() async throws {
        try await GatewayHarness.run { h in
            for _ in 0..<2 {
                let call = try await h.gateway.send(.POST, "/v1/algo/test/Sleep", headers: simple(Keys.teamB) + jsonType, text: "250")
                #expect(call.status == 200)
            }
            let download = try await h.gateway.send(.GET, "/v1/data/.my/team-a", headers: simple(Keys.teamA))
            #expect(download.status == 404)
            // A streamed answer gives its slot back once its last byte has been handed on.
            let series = { (client: String) in
                try await metricSample(h.gateway.send(.GET, "/metrics").text, #"algogate_upstream_slot_seconds_total{client="\#(client)"}"#)
            }
            try #require(await eventually { (try? await series("team-a")) != nil }, "no slot time counted for the data call")
            let teamB = try #require(try await series("team-b"))
            #expect(teamB >= 0.5 && teamB < 60, "\(teamB)")
            let teamA = try #require(try await series("team-a"))
            #expect(teamA > 0 && teamA < 60, "\(teamA)")   // no bound tighter: a loaded machine may take a second over a 404
            // Every slot taken was given back to the ledger too: none counts as running.
            #expect(h.app.ledger.standing(of: "team-a").runningSlotSeconds == 0)
            #expect(h.app.ledger.standing(of: "team-b").runningSlotSeconds == 0)
        }
    }

    /// A call that finds no slot in time is told what held it back: slots left free only for
    /// other clients' reservations, or its own client's max_concurrent calls under way.
    @Test func aTimedOutWaitSaysWhatHeldItBack() async throws {
        try await HeldUpstream.run { upstream, port in
            let clients = Self.reservingClients + """

                  - {name: gamma, key_sha256: "\(ClientRegistry.hash(of: Keys.reader))", scopes: [algo], quota: {max_concurrent: 1}}
                """
            // Five slots: gamma takes one, alpha two, and the last two are beta's.
            try await GatewayHarness.run(upstreamYAML: "max_concurrency: 5\n  queue_timeout_seconds: 1", upstreamURL: { _ in "http://127.0.0.1:\(port)" },
                                         clientsYAML: clients) { h in
                let call = { (key: String) in Task { try await h.gateway.send(.POST, "/v1/algo/test/Sleep", headers: simple(key) + jsonType, text: "0") } }
                let gammaHeld = call(Keys.reader)
                try #require(await eventually { upstream.calls == 1 }, "gamma's call never reached the upstream")
                let alphaHeld = [call(Keys.teamA), call(Keys.teamA)]
                try #require(await eventually { upstream.calls == 3 }, "alpha's calls never reached the upstream")

                let reserved = try await call(Keys.teamA).value
                #expect(reserved.status == 503)
                #expect(reserved.text == #"{"error":{"error_type":"UpstreamBusy","message":"the upstream slots not in use stayed reserved for other clients (quota.reserved_concurrent: 2 unused) for 1 s (upstream.queue_timeout_seconds); retry shortly"}}"#)
                let capped = try await call(Keys.reader).value
                #expect(capped.status == 503)
                #expect(capped.text == #"{"error":{"error_type":"UpstreamBusy","message":"client 'gamma' kept its max_concurrent (1) calls under way for 1 s (upstream.queue_timeout_seconds); retry shortly"}}"#)
                #expect(capped.header("Retry-After") == "1")

                upstream.release.open()
                for held in alphaHeld + [gammaHeld] { #expect(try await held.value.status == 200) }
                #expect(upstream.calls == 3)
            }
        }
    }

    /// `queue_timeout_seconds: 0` means no waiting: its timer may fire before the wait is even
    /// queued, and the call must still get the 503 the timeout stands for.
    @Test func aZeroQueueTimeoutRefusesAtOnceWith503() async throws {
        try await HeldUpstream.run { upstream, port in
            try await GatewayHarness.run(upstreamYAML: "max_concurrency: 1\n  queue_timeout_seconds: 0", upstreamURL: { _ in "http://127.0.0.1:\(port)" }) { h in
                let holder = Task { try await h.gateway.send(.POST, "/v1/algo/test/Sleep", headers: simple(Keys.teamA) + jsonType, text: "0") }
                try #require(await eventually { upstream.arrived.isOpen }, "the first call never reached the upstream")
                for _ in 0..<5 {
                    let refused = try await h.gateway.send(.POST, "/v1/algo/test/Sleep", headers: simple(Keys.teamB) + jsonType, text: "0")
                    #expect(refused.status == 503)
                    #expect(envelope(refused).type == "UpstreamBusy")
                }
                upstream.release.open()
                #expect(try await holder.value.status == 200)
                #expect(h.app.gate.inFlight == 0 && h.app.gate.queued == 0)
                #expect(upstream.calls == 1)
            }
        }
    }
}


/// A count shared by the tasks of a burst.
final class Tally: Sendable {
    let count = Mutex(0)
}
