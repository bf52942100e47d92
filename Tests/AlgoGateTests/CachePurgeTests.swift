import AlgoTestSupport
import Foundation
import Testing

/// `algogate cache purge` beside a serving gateway: two processes on one SQLite file. The purge
/// deletes from the file; the gateway's answers held in memory must go too, or it keeps answering
/// what the operator purged until it restarts.
@Suite struct CachePurgeTests {
    /// An algorithm deleted through the gateway (`DELETE /v1/algorithms/{owner}/{name}`, answered
    /// 2xx upstream) takes its cached answers with it: its pinned versions are not answered from
    /// the cache after the upstream stopped answering for them. A refused delete purges nothing,
    /// and other algorithms' answers stay.
    @Test func anAlgorithmDeletedThroughTheGatewayTakesItsCachedAnswersWithIt() async throws {
        try await GatewayHarness.run { h in
            func manage(_ method: HTTPMethod, _ path: String, _ json: Any? = nil) async throws -> TestHTTP.Reply {
                if let json { return try await h.gateway.send(method, path, headers: simple(Keys.teamA), json: json) }
                return try await h.gateway.send(method, path, headers: simple(Keys.teamA))
            }
            func call(_ algo: String) async throws -> TestHTTP.Reply {
                try await h.gateway.send(.POST, "/v1/algo/\(algo)", headers: simple(Keys.teamB) + [("Content-Type", "text/plain")], text: "hi")
            }
            #expect(try await manage(.POST, "/v1/algorithms/sim", ["name": "Doomed", "details": ["label": "Doomed"], "settings": ["language": "python3"]]).status == 200)
            #expect(try await manage(.POST, "/v1/algorithms/sim/Doomed/compile").status == 200)
            #expect(try await manage(.POST, "/v1/algorithms/sim/Doomed/versions", ["version_info": ["version_type": "minor"]]).status == 200)
            for algo in ["sim/Doomed/0.1.0", "demo/Hello/0.1.0"] {
                #expect(try await call(algo).header("X-Cache") == "MISS")
                #expect(try await call(algo).header("X-Cache") == "HIT")
            }
            // Refused upstream (no such algorithm): nothing is purged.
            #expect(try await manage(.DELETE, "/v1/algorithms/sim/Nope").status == 404)
            #expect(try await call("sim/Doomed/0.1.0").header("X-Cache") == "HIT")

            let deleted = try await manage(.DELETE, "/v1/algorithms/sim/Doomed")
            #expect(deleted.status == 204)
            let gone = try await call("sim/Doomed/0.1.0")
            #expect(gone.status == 404)
            #expect(gone.header("X-Cache") == "MISS")
            #expect(gone.header("Cache-Status") == "algogate; fwd=miss")
            #expect(h.simulator.stats.snapshot.algoCalls["sim/Doomed/0.1.0"] == 2)
            #expect(try await call("demo/Hello/0.1.0").header("X-Cache") == "HIT")
            #expect(await eventually { h.logs.all.contains { $0.contains("algorithm deleted upstream: its cached answers purged") && $0.contains("sim/Doomed") } })
            // The line names the request by the X-Request-ID its client got, as its request line does.
            let purged = try #require(h.logs.all.first { $0.contains("its cached answers purged") })
            #expect(purged.hasSuffix("algo=sim/Doomed purged=1 request_id=\(try #require(deleted.header("X-Request-ID")))"), "\(purged)")
            #expect(!purged.contains("hb.request.id"))
        }
    }

    @Test func aPurgeFromTheCommandLineReachesTheServingGatewaysMemory() async throws {
        let pair = try await ProcessHarness { ProcessHarness.standardYAML(simPort: $0, gatewayPort: $1, work: $2) }
        defer { pair.stop() }
        let gateway = TestHTTP(port: pair.gatewayPort)
        let sim = TestHTTP(port: pair.simPort)
        func call(_ algo: String) async throws -> TestHTTP.Reply {
            try await gateway.send(.POST, "/v1/algo/\(algo)", headers: [("Authorization", "Simple \(Keys.teamB)"), ("Content-Type", "text/plain")], text: "purge me")
        }
        func upstreamCalls() async throws -> [String: Int] {
            try await sim.send(.GET, "/__sim/stats").object["algoCalls"] as? [String: Int] ?? [:]
        }
        func purge(_ arguments: [String]) async throws -> ChildProcess.Outcome {
            try await ChildProcess.run(arguments: ["cache", "purge", "--config", pair.configURL.path] + arguments)
        }
        /// Calls until one is a miss (the purge has reached the gateway's memory), a tenth of a
        /// second apart; every call before it is a hit.
        func callUntilMissed(_ algo: String) async throws -> (missed: Bool, hitsMeanwhile: Int) {
            var hits = 0
            let missed = try await eventually(within: .seconds(20)) {
                let reply = try await call(algo)
                guard reply.header("X-Cache") == "HIT" else {
                    #expect(reply.status == 200 && reply.header("Cache-Status") == "algogate; fwd=miss; stored", "\(reply.headers)")
                    return true
                }
                hits += 1
                try await Task.sleep(for: .milliseconds(100))
                return false
            }
            return (missed, hits)
        }

        for algo in ["demo/Hello/0.1.0", "util/Echo/1.0.0"] {
            #expect(try await call(algo).header("X-Cache") == "MISS")
            let hit = try await call(algo)
            #expect(hit.status == 200 && hit.header("X-Cache") == "HIT")
            #expect(hit.header("Cache-Status")?.hasPrefix("algogate; hit; ttl=") == true)
        }
        #expect(try await upstreamCalls() == ["demo/Hello/0.1.0": 1, "util/Echo/1.0.0": 1])

        // One algorithm: its answer leaves the gateway's memory, the other's stays.
        let one = try await purge(["--algo", "demo/Hello"])
        #expect(one.termination == .exited(0))
        #expect(one.log == "purged 1 entry of demo/Hello\na gateway serving from this file stops answering them from its memory within a second\n",
                "\(one.log)")
        let helloAfter = try await callUntilMissed("demo/Hello/0.1.0")
        #expect(helloAfter.missed, "the gateway still answers the purged entry from memory (\(helloAfter.hitsMeanwhile) hits since)")
        #expect(try await call("util/Echo/1.0.0").header("X-Cache") == "HIT", "an entry the purge did not name stays")
        #expect(try await upstreamCalls() == ["demo/Hello/0.1.0": 2, "util/Echo/1.0.0": 1])

        // Everything.
        let all = try await purge([])
        #expect(all.termination == .exited(0))
        #expect(all.log.hasPrefix("purged 2 entries\n"), "\(all.log)")
        for algo in ["demo/Hello/0.1.0", "util/Echo/1.0.0"] {
            #expect(try await callUntilMissed(algo).missed, "\(algo) is still answered from memory")
        }
        #expect(try await upstreamCalls() == ["demo/Hello/0.1.0": 3, "util/Echo/1.0.0": 2])
        #expect(try await call("demo/Hello/0.1.0").header("X-Cache") == "HIT", "answers stored after the purge are hits again")

        // A call under way as the purge runs is answered, and its answer not stored: the purge is
        // recorded in the file as it begins, and the gateway reads that as it stores.
        func sleep(_ milliseconds: Int) async throws -> TestHTTP.Reply {
            try await gateway.send(.POST, "/v1/algo/test/Sleep/1.0.0", headers: [("Authorization", "Simple \(Keys.teamB)"), ("Content-Type", "application/json")],
                                   text: String(milliseconds))
        }
        // The call runs for 15 s: the command must have started, purged and ended within it, which
        // a loaded machine's process start took more than 1.5 s to do once (the call then ended
        // before the purge began, and was rightly stored), and more than 6 s in a whole-suite run
        // beside four busy loops.
        async let underWay = sleep(15000)
        #expect(await eventually { (try? await sim.send(.GET, "/__sim/stats").object["inFlight"] as? Int) == 1 })
        #expect(try await purge(["--algo", "test/Sleep"]).termination == .exited(0))
        #expect(try await sim.send(.GET, "/__sim/stats").object["inFlight"] as? Int == 1, "the purge ended after the call it was to overlap")
        let answered = try await underWay
        #expect(answered.status == 200 && answered.header("Cache-Status") == "algogate; fwd=miss", "\(answered.headers)")
        // Once the gateway has read of the purge's end (its next flush), calls are stored again.
        #expect(await eventually { (try? await sleep(1))?.header("Cache-Status") == "algogate; fwd=miss; stored" })
        #expect(try await sleep(1).header("X-Cache") == "HIT")
    }
}
