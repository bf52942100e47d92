@testable import AlgoGate
import AlgoSim
import AlgoTestSupport
import Foundation
import Testing

@Suite struct CacheTests {
    static func call(_ h: GatewayHarness, _ path: String, key: String = Keys.teamB, input: String = "HAL",
                     headers: [(String, String)] = textType) async throws -> TestHTTP.Reply {
        try await h.gateway.send(.POST, path, headers: simple(key) + headers, text: input)
    }

    @Test func pinnedCallsAreStoredAndThenAnsweredFromTheCache() async throws {
        let clock = TestClock()
        try await GatewayHarness.run(now: { clock.now }) { h in
            let first = try await Self.call(h, "/v1/algo/demo/Hello/0.1.0")
            #expect(first.header("Cache-Status") == "algogate; fwd=miss; stored")
            #expect(first.header("X-Cache") == "MISS")
            clock.advance(by: 10)
            let second = try await Self.call(h, "/v1/algo/demo/Hello/0.1.0?timeout=20")  // timeout is not part of the key
            #expect(second.status == 200)
            #expect(second.header("Cache-Status") == "algogate; hit; ttl=604790")
            #expect(second.header("X-Cache") == "HIT")
            #expect(second.header("Age") == "10")
            #expect(second.header("Content-Type") == first.header("Content-Type"))
            #expect(second.bytes == first.bytes)
            #expect(h.simulator.stats.snapshot.algoCalls == ["demo/Hello/0.1.0": 1])
        }
    }

    /// Entries are the upstream's that answered them: with `upstream.url` pointing at another
    /// upstream (a reload, or a cache file kept across a restart), the same call is a miss that
    /// goes there, and the first upstream's entry answers again once it is back. Fast hits and the
    /// pipeline alike.
    @Test(arguments: [true, false])
    func anotherUpstreamDoesNotGetTheFirstOnesEntries(fastHits: Bool) async throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("second-sim-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: directory) }
        let second = try Simulator(configuration: SimConfiguration(apiKey: Keys.upstream, dataDirectory: directory))
        try await LiveServer.run({ second.application(onServerRunning: $0) }) { secondPort in
            try await GatewayHarness.run(cacheYAML: "fast_hits: \(fastHits)") { h in
                let firstURL = h.app.state.snapshot.config.upstream.url
                #expect(try await Self.call(h, "/v1/algo/demo/Hello/0.1.0").header("Cache-Status") == "algogate; fwd=miss; stored")
                #expect(try await Self.call(h, "/v1/algo/demo/Hello/0.1.0").header("X-Cache") == "HIT")

                try h.pointUpstream(at: "http://127.0.0.1:\(secondPort)")
                let there = try await Self.call(h, "/v1/algo/demo/Hello/0.1.0")
                #expect(there.status == 200)
                #expect(there.header("Cache-Status") == "algogate; fwd=miss; stored")
                #expect(try await Self.call(h, "/v1/algo/demo/Hello/0.1.0").header("X-Cache") == "HIT")
                #expect(second.stats.snapshot.algoCalls == ["demo/Hello/0.1.0": 1])

                try h.pointUpstream(at: firstURL + "/")  // the same upstream, however written
                let back = try await Self.call(h, "/v1/algo/demo/Hello/0.1.0")
                #expect(back.header("X-Cache") == "HIT")
                #expect(h.simulator.stats.snapshot.algoCalls == ["demo/Hello/0.1.0": 1])
                #expect(second.stats.snapshot.algoCalls == ["demo/Hello/0.1.0": 1])
            }
        }
    }

    /// A call keyed for one upstream and sent to another, because a reload pointed
    /// `upstream.url` elsewhere while it waited for an upstream slot: its answer is sent, and not
    /// stored under the first upstream's key. Upstream A (held) answers `demo/Hello/0.1.0` with
    /// "Hello B", the simulator (B) with "Hello HAL".
    @Test func anAnswerFromAnUpstreamChangedBeforeItsCallIsNotStoredForTheFirst() async throws {
        try await HeldUpstream.run { upstream, heldPort in
            let heldURL = "http://127.0.0.1:\(heldPort)"
            try await GatewayHarness.run(serverYAML: "idle_timeout_seconds: 180", upstreamYAML: "max_concurrency: 1\n  queue_timeout_seconds: 120", upstreamURL: { _ in heldURL }) { h in
                let holder = Task { try await Self.call(h, "/v1/algo/test/Sleep", input: "0", headers: jsonType) }
                try #require(await eventually { upstream.calls == 1 }, "the first call never reached the held upstream")
                let waiting = Task { try await Self.call(h, "/v1/algo/demo/Hello/0.1.0") }
                try #require(await eventually(within: .seconds(60)) { h.app.gate.queued == 1 }, "the pinned call never queued for the slot")
                try h.pointUpstream(at: "http://127.0.0.1:\(h.sim.port)")
                upstream.release.open()
                #expect(try await holder.value.status == 200)
                let answered = try await waiting.value
                #expect(answered.status == 200)
                #expect(answered.object["result"] as? String == "Hello HAL")
                #expect(answered.header("Cache-Status") == "algogate; fwd=miss")
                #expect(await eventually { h.logs.all.contains { $0.contains("not_stored=upstream.url changed while the call was under way") } },
                        "\(h.logs.all.suffix(3))")
                // Back at the first upstream, the call is its own: nothing of the second's was stored for it.
                try h.pointUpstream(at: heldURL)
                let again = try await Self.call(h, "/v1/algo/demo/Hello/0.1.0")
                #expect(again.object["result"] as? String == "Hello B")
                #expect(again.header("Cache-Status") == "algogate; fwd=miss; stored")
            }
        }
    }

    @Test func unpinnedAndUncacheableCallsAreNeverCached() async throws {
        try await GatewayHarness.run { h in
            let paths = ["/v1/algo/demo/Hello", "/v1/algo/demo/Hello/latest", "/v1/algo/demo/Hello/latestPrivate",
                         "/v1/algo/demo/Hello/0.1", "/v1/algo/demo/Hello/0.1.*", "/v1/algo/demo/Hello/0.1.0?output=void",
                         "/v1/algo/demo/Hello/0.1.0?sudo=true"]
            for path in paths {
                for _ in 0..<2 {
                    let reply = try await Self.call(h, path)
                    #expect(reply.status == 200, "\(path)")
                    #expect(reply.header("Cache-Status") == "algogate; fwd=uri-miss", "\(path)")
                    #expect(reply.header("X-Cache") == "BYPASS", "\(path)")
                }
            }
            // (The void calls are counted too: the simulator counts every call it accepts.)
            let calls = h.simulator.stats.snapshot.algoCalls
            #expect(calls["demo/Hello"] == 2 && calls["demo/Hello/latest"] == 2 && calls["demo/Hello/0.1"] == 2 && calls["demo/Hello/0.1.0"] == 4)
        }
    }

    @Test func errorsAreNeverStored() async throws {
        try await GatewayHarness.run { h in
            for _ in 0..<2 {
                let failed = try await Self.call(h, "/v1/algo/test/Fail/1.0.0")
                #expect(envelope(failed).type == "AlgorithmError")
                #expect(failed.header("Cache-Status") == "algogate; fwd=miss")
                let faulted = try await Self.call(h, "/v1/algo/demo/Hello/0.1.1", headers: textType + [("X-Sim-Fault", "status=503")])
                #expect(faulted.status == 503)
            }
            #expect(h.simulator.stats.snapshot.algoCalls == ["test/Fail/1.0.0": 2])
            let ok = try await Self.call(h, "/v1/algo/demo/Hello/0.1.1")
            #expect(ok.header("Cache-Status") == "algogate; fwd=miss; stored")
        }
    }

    /// An option the gateway and the upstream could read differently is refused before the cache
    /// or the upstream sees the call (`AlgoOptions`). Stored, such a call's answer would answer
    /// other calls, another team's too, that asked for something else: the simulator reads the
    /// first of two `output`s, and the gateway once keyed the last, so team A's
    /// `?output=raw&output=default` stored a raw answer where team B's plain call found it.
    @Test func anAmbiguousOptionIsRefusedAndNeverStored() async throws {
        try await GatewayHarness.run { h in
            let ambiguous = ["output=raw&output=default", "output=default&output=raw", "stdout=true&stdout=false",
                             "timeout=5&timeout=3000", "sudo=false&sudo=true", "Output=raw", "OUTPUT=raw", "%6Futput=raw",
                             "%6f%75%74%70%75%74=raw", "TimeOut=3000", "%74imeout=3000", "output=%72aw", "output=raw%00",
                             "output=", "output", "stdout=tr%75e", "stdout=true+",
                             // Read as options by Java's equalsIgnoreCase (a long s, a dotless i)
                             // or after NFKC (fullwidth letters, the st ligature).
                             "%C5%BFtdout=true", "t%C4%B1meout=3000", "%EF%AC%86dout=true", "%EF%BD%93udo=true"]
            let refuse = { @Sendable (round: String) async throws in
                for query in ambiguous {
                    let reply = try await Self.call(h, "/v1/algo/demo/Hello/0.1.0?other=1&\(query)", key: Keys.teamA)
                    #expect(reply.status == 400, "\(round): \(query)")
                    #expect(envelope(reply).type == "InputError", "\(round): \(query)")
                    #expect(reply.header("X-Cache") == nil, "\(round): \(query)")
                }
            }
            try await refuse("before any answer is stored")
            #expect(h.simulator.stats.snapshot.algoCalls.isEmpty)

            let plain = try await Self.call(h, "/v1/algo/demo/Hello/0.1.0")
            #expect(plain.status == 200)
            #expect(plain.header("X-Cache") == "MISS")
            #expect(plain.header("Content-Type") == "application/json")
            #expect(plain.object["result"] as? String == "Hello HAL")
            // Stored now: a hit on the event loop must not answer them either.
            try await refuse("with the plain answer stored")
            #expect(h.simulator.stats.snapshot.algoCalls == ["demo/Hello/0.1.0": 1])

            var messages: [String?] = []
            for query in ["output=raw&output=default", "Output=raw", "%74imeout=3000", "%C5%BFudo=true", "output=%72aw", "timeout=5&timeout=5"] {
                messages.append(envelope(try await Self.call(h, "/v1/algo/demo/Hello/0.1.0?\(query)")).message)
            }
            #expect(messages == [
                "the query gives the output option more than once: give each of an algorithm call's options once",
                "the query spells the output option 'Output': write it output, in lowercase and not percent-encoded, so that the gateway and the upstream read it alike",
                "the query spells the timeout option '%74imeout': write it timeout, in lowercase and not percent-encoded, so that the gateway and the upstream read it alike",
                "the query spells the sudo option '%C5%BFudo': write it sudo, in lowercase and not percent-encoded, so that the gateway and the upstream read it alike",
                "the output option must be a plain word (raw, void or default), not empty nor percent-encoded",
                "the query gives the timeout option more than once: give each of an algorithm call's options once",
            ])
            // Parameters that are not options pass as they came, in any spelling.
            let other = try await Self.call(h, "/v1/algo/demo/Hello/0.1.0?Other=%41&output=raw&x&x")
            #expect(other.status == 200)
            #expect(other.text == "Hello HAL")
            #expect(other.header("X-Cache") == "MISS")
        }
    }

    @Test func everythingThatChangesTheAnswerIsInTheKey() async throws {
        try await GatewayHarness.run { h in
            let variants: [(String, String, [(String, String)])] = [
                ("/v1/algo/util/Echo/1.0.0", "a", textType),
                ("/v1/algo/util/Echo/1.0.0", "b", textType),
                ("/v1/algo/util/Echo/1.0.0", #""a""#, jsonType),
                ("/v1/algo/util/Echo/1.0.0?output=raw", "a", textType),
                ("/v1/algo/util/Echo/1.0.0?stdout=true", "a", textType),
            ]
            for (path, input, headers) in variants {
                let reply = try await Self.call(h, path, input: input, headers: headers)
                #expect(reply.header("X-Cache") == "MISS", "\(path) \(input)")
            }
            for (path, input, headers) in variants {
                let reply = try await Self.call(h, path, input: input, headers: headers)
                #expect(reply.header("X-Cache") == "HIT", "\(path) \(input)")
            }
            #expect(h.simulator.stats.snapshot.algoCalls["util/Echo/1.0.0"] == 5)
        }
    }

    @Test func hitsAreByteIdenticalForBinaryAnswers() async throws {
        try await GatewayHarness.run { h in
            let bytes: [UInt8] = (0..<50_000).map { UInt8(truncatingIfNeeded: $0 &* 131 &+ 7) }
            let headers = simple(Keys.teamB) + [("Content-Type", "application/octet-stream")]
            let first = try await h.gateway.send(.POST, "/v1/algo/util/Echo/1.0.0?output=raw", headers: headers, body: bytes)
            let second = try await h.gateway.send(.POST, "/v1/algo/util/Echo/1.0.0?output=raw", headers: headers, body: bytes)
            #expect(second.header("X-Cache") == "HIT")
            #expect(first.bytes == bytes && second.bytes == bytes)
            #expect(second.header("Content-Type") == "application/octet-stream")
            let wrapped = try await h.gateway.send(.POST, "/v1/algo/util/Echo/1.0.0", headers: headers, body: bytes)
            let wrappedHit = try await h.gateway.send(.POST, "/v1/algo/util/Echo/1.0.0", headers: headers, body: bytes)
            #expect(wrappedHit.header("X-Cache") == "HIT")
            #expect(wrappedHit.bytes == wrapped.bytes)
        }
    }

    @Test func cacheControlFromTheClientIsHonoured() async throws {
        try await GatewayHarness.run { h in
            let path = "/v1/algo/demo/Hello/0.1.0"
            let miss = try await Self.call(h, path, headers: textType + [("Cache-Control", "only-if-cached")])
            #expect(miss.status == 504)
            #expect(miss.text == #"{"error":{"error_type":"NotCached","message":"no cached answer for this call, and Cache-Control: only-if-cached forbids calling the algorithm"}}"#)
            #expect(miss.header("Cache-Status") == "algogate; fwd=miss")
            #expect(h.simulator.stats.snapshot.algoCalls.isEmpty)

            let noStore = try await Self.call(h, path, headers: textType + [("Cache-Control", "no-store")])
            #expect(noStore.header("Cache-Status") == "algogate; fwd=request")
            #expect(noStore.header("X-Cache") == "BYPASS")
            let afterNoStore = try await Self.call(h, path)
            #expect(afterNoStore.header("Cache-Status") == "algogate; fwd=miss; stored")

            let noCache = try await Self.call(h, path, headers: textType + [("Cache-Control", "no-cache")])
            #expect(noCache.header("Cache-Status") == "algogate; fwd=request; stored")
            #expect(noCache.header("X-Cache") == "BYPASS")
            let onlyIfCached = try await Self.call(h, path, headers: textType + [("Cache-Control", "only-if-cached, max-age=5")])
            #expect(onlyIfCached.header("X-Cache") == "HIT")
            #expect(h.simulator.stats.snapshot.algoCalls == ["demo/Hello/0.1.0": 3])
        }
    }

    @Test func rulesDisableOrRetimePerAlgorithm() async throws {
        // `owner/name` is every version of it, a version only that one, `*` every algorithm; the
        // first rule that matches wins.
        let rules = """
        rules:
            - {algo: "demo/Hello", enabled: false}
            - {algo: "util/Echo/1.0.0", ttl_seconds: 5}
            - {algo: "*", ttl_seconds: 60}
        """
        let clock = TestClock()
        try await GatewayHarness.run(cacheYAML: rules, now: { clock.now }) { h in
            for version in ["0.1.0", "0.1.1"] {
                for _ in 0..<2 {
                    let hello = try await Self.call(h, "/v1/algo/demo/Hello/\(version)")
                    #expect(hello.header("Cache-Status") == "algogate; fwd=uri-miss")
                }
            }
            _ = try await Self.call(h, "/v1/algo/util/Echo/1.0.0")
            #expect(try await Self.call(h, "/v1/algo/util/Echo/1.0.0").header("Cache-Status") == "algogate; hit; ttl=5")
            _ = try await Self.call(h, "/v1/algo/test/Big/1.0.0", input: "10", headers: jsonType)
            let hit = try await Self.call(h, "/v1/algo/test/Big/1.0.0", input: "10", headers: jsonType)
            #expect(hit.header("Cache-Status") == "algogate; hit; ttl=60")
            clock.advance(by: 61)
            let expired = try await Self.call(h, "/v1/algo/test/Big/1.0.0", input: "10", headers: jsonType)
            #expect(expired.header("Cache-Status") == "algogate; fwd=miss; stored")
            #expect(h.simulator.stats.snapshot.algoCalls == ["demo/Hello/0.1.0": 2, "demo/Hello/0.1.1": 2, "util/Echo/1.0.0": 1, "test/Big/1.0.0": 2])
        }
    }

    /// A TTL lowered by a reload applies to the answers already stored, from the next request, on
    /// the event loop's hit path as in the pipeline (and from SQLite once out of memory), and the
    /// `ttl=` says so; raised again, it lengthens only what is stored from then on.
    @Test(arguments: [true, false]) func aLoweredTTLAppliesToStoredAnswers(fastHits: Bool) async throws {
        let clock = TestClock()
        try await GatewayHarness.run(cacheYAML: "fast_hits: \(fastHits)\n  stale_if_error_seconds: 600", now: { clock.now }) { h in
            func ttl(_ seconds: Int?) throws {
                var config = h.app.state.snapshot.config
                config.cache.rules = seconds.map { [GatewayConfig.CacheRule(algo: "demo/Hello", ttlSeconds: $0)] } ?? []
                try h.app.state.replace(with: ConfigLoader.Loaded(config: config, upstreamKey: h.app.state.snapshot.upstreamKey))
            }
            let old = "/v1/algo/demo/Hello/0.1.0", young = "/v1/algo/demo/Hello/0.1.1"
            #expect(try await Self.call(h, old).header("Cache-Status") == "algogate; fwd=miss; stored")
            clock.advance(by: 100)
            #expect(try await Self.call(h, young).header("Cache-Status") == "algogate; fwd=miss; stored")
            clock.advance(by: 30)
            #expect(try await Self.call(h, old).header("Cache-Status") == "algogate; hit; ttl=604670")

            try ttl(60)
            // 30 s old: fresh for 30 s more under the new TTL, and says so.
            let capped = try await Self.call(h, young)
            #expect(capped.header("Cache-Status") == "algogate; hit; ttl=30")
            #expect(capped.header("Age") == "30")
            // 130 s old: past it, so the call goes upstream and its answer is stored for 60 s.
            #expect(try await Self.call(h, old).header("Cache-Status") == "algogate; fwd=miss; stored")
            #expect(try await Self.call(h, old).header("Cache-Status") == "algogate; hit; ttl=60")
            // From SQLite too, with the memory tier emptied.
            h.app.storage.cache!.hot.remove { _, _ in true }
            #expect(try await Self.call(h, young).header("Cache-Status") == "algogate; hit; ttl=30")
            // An upstream failure is answered from an entry within stale_if_error_seconds of its
            // capped expiry, with how far past it the entry is.
            clock.advance(by: 45)
            let stale = try await Self.call(h, young, headers: textType + [("X-Sim-Fault", "status=503")])
            #expect(stale.header("Cache-Status") == "algogate; hit; ttl=-15; detail=stale-if-error")

            // Raised back: the answer stored under 60 s keeps its 60 s.
            try ttl(nil)
            #expect(try await Self.call(h, old).header("Cache-Status") == "algogate; hit; ttl=15")
            clock.advance(by: 16)
            #expect(try await Self.call(h, old).header("Cache-Status") == "algogate; fwd=miss; stored")
            #expect(try await Self.call(h, old).header("Cache-Status") == "algogate; hit; ttl=604800")
            // (The failed call ran nothing: the simulator refused it before the algorithm.)
            #expect(h.simulator.stats.snapshot.algoCalls == ["demo/Hello/0.1.0": 3, "demo/Hello/0.1.1": 1])
        }
    }

    @Test func entriesAreSharedUnlessScopedPerClient() async throws {
        try await GatewayHarness.run { h in
            _ = try await Self.call(h, "/v1/algo/demo/Hello/0.1.0", key: Keys.teamA)
            let other = try await Self.call(h, "/v1/algo/demo/Hello/0.1.0", key: Keys.teamB)
            #expect(other.header("X-Cache") == "HIT")
            // The cache is reached only after the checks: a client without the algo scope is refused.
            let reader = try await Self.call(h, "/v1/algo/demo/Hello/0.1.0", key: Keys.reader)
            #expect(reader.status == 403)
            let prefixed = try await Self.call(h, "/v1/algo/util/Echo/1.0.0", key: Keys.teamA, input: "data://.my/team-b/x")
            #expect(prefixed.status == 403)
        }
        try await GatewayHarness.run(cacheYAML: "scope: client") { h in
            _ = try await Self.call(h, "/v1/algo/demo/Hello/0.1.0", key: Keys.teamA)
            let other = try await Self.call(h, "/v1/algo/demo/Hello/0.1.0", key: Keys.teamB)
            #expect(other.header("X-Cache") == "MISS")
            let same = try await Self.call(h, "/v1/algo/demo/Hello/0.1.0", key: Keys.teamA)
            #expect(same.header("X-Cache") == "HIT")
        }
        // A rule's scope applies to its algorithms alone; the others stay shared.
        try await GatewayHarness.run(cacheYAML: "rules: [{algo: \"demo/Hello\", scope: client}]") { h in
            _ = try await Self.call(h, "/v1/algo/demo/Hello/0.1.0", key: Keys.teamA)
            #expect(try await Self.call(h, "/v1/algo/demo/Hello/0.1.0", key: Keys.teamB).header("X-Cache") == "MISS")
            #expect(try await Self.call(h, "/v1/algo/demo/Hello/0.1.0", key: Keys.teamA).header("X-Cache") == "HIT")
            _ = try await Self.call(h, "/v1/algo/util/Echo/1.0.0", key: Keys.teamA)
            #expect(try await Self.call(h, "/v1/algo/util/Echo/1.0.0", key: Keys.teamB).header("X-Cache") == "HIT")
        }
    }

    @Test func buildHashVersionsAreCacheable() async throws {
        try await GatewayHarness.run { h in
            let versions = try await h.gateway.send(.GET, "/v1/algorithms/demo/Hello/versions", headers: simple(Keys.teamA))
            let hash = ((versions.object["results"] as? [[String: Any]])?.first?["version_info"] as? [String: Any])?["git_hash"] as? String ?? ""
            #expect(hash.count == 40)
            _ = try await Self.call(h, "/v1/algo/demo/Hello/\(hash)")
            let hit = try await Self.call(h, "/v1/algo/demo/Hello/\(hash)")
            #expect(hit.header("X-Cache") == "HIT")
            #expect(hit.object["result"] as? String == "Hello HAL")
        }
    }

    @Test func concurrentIdenticalMissesMakeOneUpstreamCall() async throws {
        try await GatewayHarness.run { h in
            let statuses = try await withThrowingTaskGroup(of: String.self) { group in
                for _ in 0..<50 {
                    group.addTask {
                        // 5 s, so that the 50 overlap even when a loaded machine is slow to send them
                        // (the full suite has been seen to leave a test's tasks waiting for seconds).
                        let reply = try await h.gateway.send(.POST, "/v1/algo/test/Sleep/1.0.0", headers: simple(Keys.teamB) + jsonType, text: "5000")
                        #expect(reply.status == 200)
                        #expect(canonicalJSON(reply.object["result"]) == #"{"slept_ms":5000}"#)
                        return reply.header("Cache-Status") ?? ""
                    }
                }
                var all: [String] = []
                for try await status in group { all.append(status) }
                return all
            }
            #expect(h.simulator.stats.snapshot.algoCalls == ["test/Sleep/1.0.0": 1])
            #expect(statuses.filter { $0 == "algogate; fwd=miss; stored" }.count == 1)
            #expect(statuses.filter { $0 == "algogate; fwd=miss; collapsed" || $0.hasPrefix("algogate; hit") }.count == 49)
            #expect(statuses.contains("algogate; fwd=miss; collapsed"))
        }
    }

    /// A leader that fails without an answer is relayed by one of its waiters, the rest waiting
    /// for that one; when it fails too on the upstream's side, the rest share its 502. Two
    /// upstream calls, one at a time, for ten identical calls: not ten at once, each sending the
    /// input again and holding one of the account's slots (as the gateway did before).
    @Test func waitersOfAFailedLeaderRelayItAndShareASecondFailure() async throws {
        // The circuit breaker would refuse calls once some have failed: it is not under test.
        try await GatewayHarness.run(upstreamYAML: "circuit_breaker: {failures: 0}") { h in
            let replies = try await withThrowingTaskGroup(of: TestHTTP.Reply.self) { group in
                for _ in 0..<10 {
                    group.addTask { try await Self.call(h, "/v1/algo/demo/Hello/0.1.0", headers: textType + [("X-Sim-Fault", "delay=2000,drop")]) }
                }
                return try await group.reduce(into: []) { $0.append($1) }
            }
            #expect(replies.map(\.status) == Array(repeating: 502, count: 10))
            // The same answer for all: what the upstream's closed connection is told as.
            #expect(Set(replies.map(\.text)).count == 1, "\(Set(replies.map(\.text)))")
            #expect(envelope(replies[0]).type == "UpstreamError")
            let seen = h.simulator.stats.snapshot
            #expect(seen.requestsByClass["algo"] == 2)
            #expect(seen.peakConcurrency == 1)
            let shared = "the identical call under way failed, as the one before it had: "
            #expect(await eventually { h.logs.all.filter { $0.contains("status=502") }.count == 10 }, "\(h.logs.all.suffix(10))")
            #expect(h.logs.all.filter { $0.contains("status=502") && $0.contains(shared) }.count == 8, "\(h.logs.all.suffix(10))")
        }
    }

    /// A leader lost to a failure that a second call escapes (here the simulator drops the first
    /// attempt of a request ID and answers the next) is relayed by one waiter, whose answer the
    /// others share: one call fails, nine are answered, by two upstream calls.
    @Test func aWaiterRelaysAFailedLeaderAndTheOthersShareItsAnswer() async throws {
        try await GatewayHarness.run { h in
            let replies = try await withThrowingTaskGroup(of: TestHTTP.Reply.self) { group in
                for _ in 0..<10 {
                    group.addTask {
                        try await Self.call(h, "/v1/algo/demo/Hello/0.1.0",
                                            headers: textType + [("X-Sim-Fault", "delay=2000,drop-first"), ("X-Request-ID", "relay-test-1")])
                    }
                }
                return try await group.reduce(into: []) { $0.append($1) }
            }
            #expect(replies.filter { $0.status == 502 }.count == 1, "\(replies.map(\.status))")
            let answered = replies.filter { $0.status == 200 }
            #expect(answered.count == 9)
            #expect(answered.allSatisfy { $0.object["result"] as? String == "Hello HAL" })
            #expect(answered.filter { $0.header("Cache-Status") == "algogate; fwd=miss; stored" }.count == 1)
            #expect(answered.filter { $0.header("Cache-Status") == "algogate; fwd=miss; collapsed" }.count == 8)
            #expect(h.simulator.stats.snapshot.requestsByClass["algo"] == 2)
            #expect(h.simulator.stats.snapshot.peakConcurrency == 1)
        }
    }

    /// A leader that fails for its own client's sake (no upstream slot in time under its
    /// client's `max_concurrent`) shares nothing: the waiter, another team's call, goes upstream
    /// itself and is answered.
    @Test func aLeadersOwnClientsFailureIsNotSharedWithItsWaiters() async throws {
        try await GatewayHarness.run(upstreamYAML: "queue_timeout_seconds: 2", extraYAML: "quota: {max_concurrent: 1}") { h in
            // team-b's one slot, held for 6 s.
            let holding = Task { try await Self.call(h, "/v1/algo/test/Sleep/1.0.0", input: "6000", headers: jsonType) }
            try #require(await eventually { h.app.gate.inFlight == 1 })
            let leader = Task { try await Self.call(h, "/v1/algo/demo/Hello/0.1.0") }
            try #require(await eventually { h.app.gate.queued == 1 }, "team-b's second call never queued")
            let waiter = Task { try await Self.call(h, "/v1/algo/demo/Hello/0.1.0", key: Keys.teamA) }
            try #require(await eventually { h.app.flights.waiting == 1 }, "team-a's call never waited for team-b's")
            let refused = try await leader.value
            #expect(refused.status == 503)
            #expect(envelope(refused).type == "UpstreamBusy")
            let answered = try await waiter.value
            #expect(answered.status == 200, "\(answered.text)")
            #expect(answered.object["result"] as? String == "Hello HAL")
            #expect(answered.header("Cache-Status") == "algogate; fwd=miss; stored")
            #expect(h.simulator.stats.snapshot.algoCalls["demo/Hello/0.1.0"] == 1)
            #expect(try await holding.value.status == 200)
        }
    }

    /// With `stale_if_error_seconds`, the waiters that take a relay's 502 are answered by the
    /// expired entry instead, as the two calls that failed are.
    @Test func waitersSharingARelaysFailureGetTheStaleEntry() async throws {
        let clock = TestClock()
        try await GatewayHarness.run(upstreamYAML: "circuit_breaker: {failures: 0}", cacheYAML: "ttl_seconds: 60\n  stale_if_error_seconds: 600",
                                     now: { clock.now }) { h in
            let path = "/v1/algo/demo/Hello/0.1.0"
            let first = try await Self.call(h, path)
            #expect(first.header("X-Cache") == "MISS")
            clock.advance(by: 90)
            let replies = try await withThrowingTaskGroup(of: TestHTTP.Reply.self) { group in
                for _ in 0..<5 {
                    group.addTask { try await Self.call(h, path, headers: textType + [("X-Sim-Fault", "delay=1500,drop")]) }
                }
                return try await group.reduce(into: []) { $0.append($1) }
            }
            #expect(replies.map(\.status) == Array(repeating: 200, count: 5))
            #expect(replies.allSatisfy { $0.bytes == first.bytes && $0.header("X-Cache") == "STALE" })
            // The first call that stored the entry, then the failed leader and its relay.
            #expect(h.simulator.stats.snapshot.requestsByClass["algo"] == 3)
            let shared = "the identical call under way failed, as the one before it had: "
            #expect(await eventually { h.logs.all.filter { $0.contains("status=200") && $0.contains(shared) }.count == 3 }, "\(h.logs.all.suffix(6))")
        }
    }

    /// A leader whose answer came and was refused for what it is (too large, or holding the
    /// upstream key) shares the refusal: an identical call would get the same answer, so its
    /// waiters are not sent upstream to be refused again, each paying for the run.
    @Test func waitersOfALeaderWhoseAnswerWasRefusedShareTheRefusal() async throws {
        try await GatewayHarness.run(extraYAML: "limits: {max_response_bytes: 1000}") { h in
            let cases = [
                (String(repeating: "x", count: 2000),
                 #"{"error":{"error_type":"UpstreamError","message":"the algorithm's response exceeds the gateway's 1000-byte limit (limits.max_response_bytes)"}}"#),
                ("echo \(Keys.upstream)",
                 #"{"error":{"error_type":"UpstreamError","message":"the upstream's answer contained the gateway's upstream key, so it was withheld"}}"#),
            ]
            for (input, refusal) in cases {
                let before = h.simulator.stats.snapshot.algoCalls["util/Echo/1.0.0"] ?? 0
                // The simulator holds each answer 5 s, so that the ten overlap even on a loaded
                // machine (see `concurrentIdenticalMissesMakeOneUpstreamCall`).
                let replies = try await withThrowingTaskGroup(of: TestHTTP.Reply.self) { group in
                    for _ in 0..<10 {
                        group.addTask {
                            try await Self.call(h, "/v1/algo/util/Echo/1.0.0", input: input, headers: textType + [("X-Sim-Fault", "delay=5000")])
                        }
                    }
                    return try await group.reduce(into: []) { $0.append($1) }
                }
                #expect(replies.map(\.status) == Array(repeating: 502, count: 10))
                #expect(replies.allSatisfy { $0.text == refusal && $0.header("Cache-Status") == nil })
                #expect(h.simulator.stats.snapshot.algoCalls["util/Echo/1.0.0"] == before + 1)
                // The waiters' lines say whose answer it was; the leader's, what it was.
                let causes = await withTaskGroup(of: String?.self) { group in
                    for reply in replies {
                        group.addTask { FailureLogTests.field(await FailureLogTests.line(h, reply.header("X-Request-ID") ?? ""), "cause") }
                    }
                    return await group.reduce(into: []) { $0.append($1) }
                }
                #expect(causes.filter { $0?.hasPrefix("the answer of an identical call under way, refused: ") == true }.count == 9, "\(causes)")
            }
            // Nothing was stored: the next call goes upstream again.
            _ = try await Self.call(h, "/v1/algo/util/Echo/1.0.0", input: String(repeating: "x", count: 2000))
            #expect(h.simulator.stats.snapshot.algoCalls["util/Echo/1.0.0"] == 3)
        }
    }

    /// With `stale_if_error_seconds`, the waiters of a leader whose answer was refused are
    /// answered by the expired entry, as the leader is.
    @Test func waitersOfALeaderWhoseAnswerWasRefusedGetTheStaleEntryToo() async throws {
        let clock = TestClock()
        try await GatewayHarness.run(cacheYAML: "ttl_seconds: 60\n  stale_if_error_seconds: 600", now: { clock.now }) { h in
            let input = String(repeating: "x", count: 2000)
            let first = try await Self.call(h, "/v1/algo/util/Echo/1.0.0", input: input)
            #expect(first.status == 200 && first.header("X-Cache") == "MISS")
            clock.advance(by: 90)
            // The same answer is now over the limit.
            var config = h.app.state.snapshot.config
            config.limits.maxResponseBytes = 1000
            try h.app.state.replace(with: ConfigLoader.Loaded(config: config, upstreamKey: h.app.state.snapshot.upstreamKey))
            let replies = try await withThrowingTaskGroup(of: TestHTTP.Reply.self) { group in
                for _ in 0..<10 {
                    group.addTask {
                        try await Self.call(h, "/v1/algo/util/Echo/1.0.0", input: input, headers: textType + [("X-Sim-Fault", "delay=5000")])
                    }
                }
                return try await group.reduce(into: []) { $0.append($1) }
            }
            #expect(replies.allSatisfy { $0.status == 200 && $0.bytes == first.bytes && $0.header("X-Cache") == "STALE" }, "\(replies.map(\.status))")
            #expect(h.simulator.stats.snapshot.algoCalls["util/Echo/1.0.0"] == 2)
        }
    }

    /// A waiter waits for the identical call under way no longer than its own call would have
    /// taken: its own timeout and the grace (504, as its own upstream call would have been given
    /// up), whatever the call it waits for allows; and it leaves the flight when its client goes.
    /// The call it waited for is still held upstream all the while, so neither waited for it.
    @Test func aWaiterLeavesTheFlightAtItsOwnTimeoutOrWhenItsClientGoes() async throws {
        try await HeldUpstream.run { upstream, port in
            try await GatewayHarness.run(upstreamURL: { _ in "http://127.0.0.1:\(port)" }) { h in
                let path = "/v1/algo/test/Hold/1.0.0"
                let leader = Task { try await h.gateway.send(.POST, path, headers: simple(Keys.teamA) + jsonType, text: "7") }
                try #require(await eventually { upstream.holds == 1 }, "the call never reached the upstream")

                let waiter = try await h.gateway.send(.POST, path + "?timeout=1", headers: simple(Keys.teamB) + jsonType, text: "7")
                #expect(waiter.status == 504)
                #expect(waiter.text == #"{"error":{"error_type":"UpstreamTimeout","message":"the upstream did not answer within 1 second"}}"#)
                #expect(waiter.header("X-Cache") == nil)
                #expect(FailureLogTests.field(await FailureLogTests.line(h, waiter.header("X-Request-ID") ?? ""), "cause")
                    == "the identical call under way, whose answer this call waited for, had not answered within this call's timeout and the grace")
                #expect(h.app.flights.waiting == 0)

                // A waiter whose client goes leaves the flight at once.
                let leaving = try await RawConnection.connect(port: h.gatewayPort, sending: ClientDepartureTests.call(path, key: Keys.teamB, input: "7"))
                try #require(await eventually { h.app.flights.waiting == 1 }, "the call never waited for the first")
                await leaving.close()
                #expect(await eventually { h.app.flights.waiting == 0 })
                #expect(await eventually { h.logs.all.contains { $0.contains("client=team-b") && $0.contains("status=499") } })
                #expect(upstream.holds == 1 && !upstream.release.isOpen)

                upstream.release.open()
                let first = try await leader.value
                #expect(first.status == 200)
                #expect(first.text == #"{"result":7,"metadata":{"content_type":"json","duration":0.001}}"#)
                #expect(first.header("Cache-Status") == "algogate; fwd=miss; stored")
                let hit = try await h.gateway.send(.POST, path + "?timeout=1", headers: simple(Keys.teamB) + jsonType, text: "7")
                #expect(hit.status == 200 && hit.bytes == first.bytes && hit.header("X-Cache") == "HIT")
                #expect(upstream.holds == 1)
            }
        }
    }

    /// A leader the upstream did not answer in time (a hung algorithm, say) shares its 504 with
    /// the waiters that allow no longer than it did: their own calls would most likely wait as
    /// long again, each holding one of the account's slots. A waiter that allows longer goes
    /// upstream itself.
    @Test func waitersOfALeaderThatTimedOutShareItsTimeoutUnlessTheyAllowLonger() async throws {
        try await HeldUpstream.run { upstream, port in
            try await GatewayHarness.run(upstreamYAML: "circuit_breaker: {failures: 0}", upstreamURL: { _ in "http://127.0.0.1:\(port)" }) { h in
                let path = "/v1/algo/test/Hold/1.0.0"
                func call(_ timeout: Int) -> Task<TestHTTP.Reply, any Error> {
                    Task { try await h.gateway.send(.POST, path + "?timeout=\(timeout)", headers: simple(Keys.teamB) + jsonType, text: "9") }
                }
                // 5 s and the grace: the two below have 8 s to join the first, which a loaded
                // whole-suite run once took over 5 s to let them do (2 s).
                let leader = call(5)
                try #require(await eventually { upstream.holds == 1 }, "the call never reached the upstream")
                // Both join 2 s after the first, so the first's deadline comes well before theirs
                // even when a loaded machine runs timers late.
                try await Task.sleep(for: .seconds(2))
                let same = call(5), longer = call(6)
                try #require(await eventually { h.app.flights.waiting == 2 }, "the calls never waited for the first")

                let first = try await leader.value, second = try await same.value
                let timedOut = #"{"error":{"error_type":"UpstreamTimeout","message":"the upstream did not answer within 5 seconds"}}"#
                #expect(first.status == 504 && first.text == timedOut)
                #expect(second.status == 504 && second.text == timedOut)
                #expect(FailureLogTests.field(await FailureLogTests.line(h, second.header("X-Request-ID") ?? ""), "cause")
                    == "the identical call under way, which allowed as long as this one, had no answer in time: the call's deadline (its timeout and the grace) passed before all of its answer had come")
                // The one that allows longer relayed it: its own call, leading anew.
                #expect(await eventually { upstream.holds == 2 })
                upstream.release.open()
                let third = try await longer.value
                #expect(third.status == 200)
                #expect(third.text == #"{"result":9,"metadata":{"content_type":"json","duration":0.001}}"#)
                #expect(third.header("Cache-Status") == "algogate; fwd=miss; stored")
                #expect(upstream.holds == 2)
            }
        }
    }

    /// With `stale_if_error_seconds`, a waiter whose own timeout passes is answered by the expired
    /// entry, as its own failed call would be.
    @Test func aWaiterWhoseTimeoutPassesGetsTheStaleEntry() async throws {
        let clock = TestClock()
        try await GatewayHarness.run(cacheYAML: "ttl_seconds: 60\n  stale_if_error_seconds: 600", now: { clock.now }) { h in
            let path = "/v1/algo/test/Sleep/1.0.0"
            let first = try await h.gateway.send(.POST, path, headers: simple(Keys.teamB) + jsonType, text: "1")
            #expect(first.status == 200 && first.header("X-Cache") == "MISS")
            clock.advance(by: 90)
            // Held 15 s upstream: well past the waiter's 1 s and the 5 s grace.
            let leader = Task { try await h.gateway.send(.POST, path, headers: simple(Keys.teamB) + jsonType + [("X-Sim-Fault", "delay=15000")], text: "1") }
            try #require(await eventually { h.simulator.stats.snapshot.inFlight == 1 }, "the call never reached the upstream")
            let waiter = try await h.gateway.send(.POST, path + "?timeout=1", headers: simple(Keys.teamB) + jsonType, text: "1")
            #expect(waiter.status == 200 && waiter.bytes == first.bytes && waiter.header("X-Cache") == "STALE")
            #expect(h.simulator.stats.snapshot.inFlight == 1)
            let fresh = try await leader.value
            #expect(fresh.status == 200 && fresh.header("Cache-Status") == "algogate; fwd=miss; stored")
            #expect(h.simulator.stats.snapshot.algoCalls["test/Sleep/1.0.0"] == 2)
        }
    }

    /// A call's timeout is not in its key, so an identical call under way may allow less time: its
    /// error (the algorithm's timeout running out) is not the answer of a waiter that allows
    /// longer, which goes upstream itself; a waiter that allows no longer takes it.
    @Test func aWaiterThatAllowsLongerDoesNotTakeTheErrorOfACallThatAllowedLess() async throws {
        // The upstream answers once the test has seen the others join, whatever the machine's load:
        // a simulator's timeout racing the gateway's grace was late by more than 5 s beside CPU hogs.
        try await HeldUpstream.run { upstream, port in
            try await GatewayHarness.run(upstreamURL: { _ in "http://127.0.0.1:\(port)" }) { h in
                let path = "/v1/algo/test/Timed/1.0.0"
                func call(_ query: String) -> Task<TestHTTP.Reply, any Error> {
                    Task { try await h.gateway.send(.POST, path + query, headers: simple(Keys.teamB) + jsonType, text: "6000") }
                }
                let leader = call("?timeout=5")
                try #require(await eventually { upstream.holds == 1 }, "the call never reached the upstream")
                let patient = call(""), hasty = call("?timeout=5")
                try #require(await eventually { h.app.flights.waiting == 2 }, "the calls never waited for the first")
                upstream.release.open()

                let first = try await leader.value, short = try await hasty.value, long = try await patient.value
                #expect(first.status == 200 && first.text == HeldUpstream.timedOut(seconds: 5))
                #expect(first.header("Cache-Status") == "algogate; fwd=miss")
                #expect(short.status == 200 && short.bytes == first.bytes)
                #expect(short.header("Cache-Status") == "algogate; fwd=miss; collapsed")
                #expect(long.status == 200 && long.text == HeldUpstream.answer(sleptMs: 6000))
                #expect(long.header("Cache-Status") == "algogate; fwd=miss; stored")
                #expect(upstream.holds == 2)
            }
        }
    }

    @Test func expiredEntriesAnswerFailedCallsForStaleIfErrorSeconds() async throws {
        let clock = TestClock()
        try await GatewayHarness.run(cacheYAML: "ttl_seconds: 60\n  stale_if_error_seconds: 600", now: { clock.now }) { h in
            let path = "/v1/algo/demo/Hello/0.1.0"
            let first = try await Self.call(h, path)
            #expect(first.header("X-Cache") == "MISS")
            clock.advance(by: 90)

            // The upstream answers 503: the entry, 30 s past its freshness, answers instead.
            let failing = try await Self.call(h, path, headers: textType + [("X-Sim-Fault", "status=503")])
            #expect(failing.status == 200)
            #expect(failing.bytes == first.bytes)
            #expect(failing.header("Content-Type") == first.header("Content-Type"))
            #expect(failing.header("Cache-Status") == "algogate; hit; ttl=-30; detail=stale-if-error")
            #expect(failing.header("X-Cache") == "STALE")
            #expect(failing.header("Age") == "90")
            // The client got its answer; the log says the upstream failed behind it.
            let failingLine = await FailureLogTests.line(h, failing.header("X-Request-ID") ?? "")
            #expect(failingLine.hasPrefix("warning request "), "\(failingLine)")
            #expect(FailureLogTests.field(failingLine, "status") == "200")
            #expect(FailureLogTests.field(failingLine, "stale") == "the upstream answered 503")

            // The maintenance flush keeps it (only the memory tier lets it go); a dropped
            // connection (the gateway's own 502) is answered from SQLite the same way.
            try await h.app.storage.cache!.flush(now: clock.now)
            let dropped = try await Self.call(h, path, headers: textType + [("X-Sim-Fault", "drop")])
            #expect(dropped.status == 200)
            #expect(dropped.bytes == first.bytes)
            #expect(dropped.header("X-Cache") == "STALE")
            let droppedLine = await FailureLogTests.line(h, dropped.header("X-Request-ID") ?? "")
            #expect(droppedLine.hasPrefix("warning request "), "\(droppedLine)")
            // The simulator's close reaches the gateway as an end of stream, or, when the request's
            // bytes were still unread on its side (a loaded whole-suite run), as a reset: told alike.
            let stale = FailureLogTests.field(droppedLine, "stale") ?? ""
            #expect(stale.hasPrefix("the upstream closed the connection before answering ("), "\(stale)")
            #expect(FailureLogTests.field(droppedLine, "error") == nil)

            // A status outside RFC 5861's four is the upstream's answer, not its failure: it passes
            // to the client, the stale entry unused.
            for status in [404, 429] {
                let answered = try await Self.call(h, path, headers: textType + [("X-Sim-Fault", "status=\(status)")])
                #expect(answered.status == status)
                #expect(answered.header("Cache-Status") == "algogate; fwd=miss")
                #expect(envelope(answered).message == "injected fault: status \(status)")
            }

            // A client that asks for no-cache gets the failure, as it asked.
            let noCache = try await Self.call(h, path, headers: textType + [("X-Sim-Fault", "status=503"), ("Cache-Control", "no-cache")])
            #expect(noCache.status == 503)

            // A healthy upstream refreshes the entry.
            let fresh = try await Self.call(h, path)
            #expect(fresh.header("Cache-Status") == "algogate; fwd=miss; stored")

            // Past ttl + stale_if_error_seconds it is gone, and the failure passes through.
            clock.advance(by: 60 + 600 + 1)
            try await h.app.storage.cache!.flush(now: clock.now)
            let gone = try await Self.call(h, path, headers: textType + [("X-Sim-Fault", "status=503")])
            #expect(gone.status == 503)
            #expect(gone.header("Cache-Status") == "algogate; fwd=miss")
            #expect(envelope(gone).message == "injected fault: status 503")

            #expect(h.simulator.stats.snapshot.algoCalls == ["demo/Hello/0.1.0": 2])
            #expect(try await eventually {
                try await h.gateway.send(.GET, "/metrics").text.contains(#"algogate_cache_requests_total{result="stale"} 2"#)
            })
        }
    }

    /// A request's own bounds on the stored answers it takes (RFC 9111 §5.2.1): with `max-age`,
    /// none older; with `min-fresh`, none that goes stale sooner. A stored answer outside them is
    /// not a hit: the call goes upstream (`fwd=request`, RFC 9211) and its answer replaces it.
    /// Fast hits and the pipeline alike.
    @Test(arguments: [true, false])
    func aRequestsMaxAgeAndMinFreshBoundTheAnswersItTakes(fastHits: Bool) async throws {
        let clock = TestClock()
        try await GatewayHarness.run(cacheYAML: "ttl_seconds: 600\n  fast_hits: \(fastHits)", now: { clock.now }) { h in
            let path = "/v1/algo/demo/Hello/0.1.0"
            func call(_ cacheControl: String...) async throws -> TestHTTP.Reply {
                try await Self.call(h, path, headers: textType + cacheControl.map { ("Cache-Control", $0) })
            }
            var upstreamCalls: Int { h.simulator.stats.snapshot.algoCalls["demo/Hello/0.1.0"] ?? 0 }
            let first = try await call()
            #expect(first.header("Cache-Status") == "algogate; fwd=miss; stored")
            clock.advance(by: 100)

            let young = try await call("max-age=100")
            #expect(young.header("Cache-Status") == "algogate; hit; ttl=500")
            #expect(young.header("Age") == "100")
            let tooOld = try await call("max-age=99")
            #expect(tooOld.status == 200)
            #expect(tooOld.header("Cache-Status") == "algogate; fwd=request; stored")
            #expect(tooOld.header("X-Cache") == "BYPASS")
            #expect(tooOld.header("Age") == nil)
            #expect(tooOld.object["result"] as? String == "Hello HAL")
            #expect(upstreamCalls == 2)
            let replaced = try await call()
            #expect(replaced.header("Cache-Status") == "algogate; hit; ttl=600")
            #expect(replaced.header("Age") == "0")

            clock.advance(by: 100)
            #expect(try await call("min-fresh=500").header("Cache-Status") == "algogate; hit; ttl=500")
            let goesStaleSooner = try await call("MIN-FRESH=501")
            #expect(goesStaleSooner.header("Cache-Status") == "algogate; fwd=request; stored")
            #expect(upstreamCalls == 3)

            // Only what is stored, and it is too old: 504, as for no stored answer.
            clock.advance(by: 10)
            let onlyIfCached = try await call("only-if-cached, max-age=5")
            #expect(onlyIfCached.status == 504)
            #expect(onlyIfCached.text == #"{"error":{"error_type":"NotCached","message":"no cached answer for this call, and Cache-Control: only-if-cached forbids calling the algorithm"}}"#)
            #expect(upstreamCalls == 3)

            // A value that is not a number of seconds counts as 0; of two, the stricter counts; a
            // quoted one is read; one too large for any clock saturates.
            #expect(try await call("max-age=soon").header("Cache-Status") == "algogate; fwd=request; stored")
            clock.advance(by: 10)
            #expect(try await call("max-age=600", "no-transform, max-age=5").header("Cache-Status") == "algogate; fwd=request; stored")
            #expect(upstreamCalls == 5)
            clock.advance(by: 15)
            #expect(try await call(#"max-age="20""#).header("Cache-Status") == "algogate; hit; ttl=585")
            #expect(try await call("max-age=99999999999999999999999, min-fresh=585").header("Cache-Status") == "algogate; hit; ttl=585")
            #expect(try await call("max-stale=30").header("Cache-Status") == "algogate; hit; ttl=585")
            #expect(upstreamCalls == 5)

            // HTTP/1.0's `Pragma: no-cache` counts only where no `Cache-Control` says otherwise.
            let pragma = try await Self.call(h, path, headers: textType + [("Pragma", "no-cache")])
            #expect(pragma.header("Cache-Status") == "algogate; fwd=request; stored")
            let both = try await Self.call(h, path, headers: textType + [("Pragma", "no-cache"), ("Cache-Control", "max-age=600")])
            #expect(both.header("Cache-Status") == "algogate; hit; ttl=600")
            #expect(upstreamCalls == 6)
        }
    }

    /// An expired entry answers a failed call only within the request's bounds: never for a
    /// `min-fresh` (no expired entry is fresh), and for a `max-age` only when it is young enough.
    @Test func staleAnswersKeepToTheRequestsBounds() async throws {
        let clock = TestClock()
        try await GatewayHarness.run(cacheYAML: "ttl_seconds: 60\n  stale_if_error_seconds: 600", now: { clock.now }) { h in
            let path = "/v1/algo/demo/Hello/0.1.0"
            let failing = textType + [("X-Sim-Fault", "status=503")]
            #expect(try await Self.call(h, path).header("X-Cache") == "MISS")
            clock.advance(by: 90)
            let tooOld = try await Self.call(h, path, headers: failing + [("Cache-Control", "max-age=89")])
            #expect(tooOld.status == 503)
            #expect(envelope(tooOld).message == "injected fault: status 503")
            let notFresh = try await Self.call(h, path, headers: failing + [("Cache-Control", "min-fresh=0")])
            #expect(notFresh.status == 503)
            let youngEnough = try await Self.call(h, path, headers: failing + [("Cache-Control", "max-age=90")])
            #expect(youngEnough.status == 200)
            #expect(youngEnough.header("X-Cache") == "STALE")
            #expect(youngEnough.header("Age") == "90")
        }
    }

    @Test func staleAnswersAreOffByDefault() async throws {
        let clock = TestClock()
        try await GatewayHarness.run(cacheYAML: "ttl_seconds: 60", now: { clock.now }) { h in
            _ = try await Self.call(h, "/v1/algo/demo/Hello/0.1.0")
            clock.advance(by: 61)
            let failing = try await Self.call(h, "/v1/algo/demo/Hello/0.1.0", headers: textType + [("X-Sim-Fault", "status=503")])
            #expect(failing.status == 503)
            #expect(failing.header("X-Cache") == "MISS")
        }
    }

    /// Both gateways in front of one upstream (entries are kept apart per upstream URL, and each
    /// harness's own simulator has a port of its own).
    @Test func entriesSurviveARestart() async throws {
        try await withTemporaryDirectory("cache-restart") { directory in
            let path = directory.appendingPathComponent("cache.sqlite").path
            let upstream = try Simulator(configuration: SimConfiguration(apiKey: Keys.upstream, dataDirectory: directory.appendingPathComponent("sim")))
            try await LiveServer.run({ upstream.application(onServerRunning: $0) }) { port in
                let url: (Int) -> String = { _ in "http://127.0.0.1:\(port)" }
                let first = try await GatewayHarness.run(upstreamURL: url, cachePath: path) { h in
                    try await Self.call(h, "/v1/algo/nlp/LDA/1.0.0", input: #"{"docsList":["a cat sat","a dog sat"]}"#, headers: jsonType)
                }
                #expect(first.header("X-Cache") == "MISS")
                #expect(upstream.stats.snapshot.algoCalls == ["nlp/LDA/1.0.0": 1])
                try await GatewayHarness.run(upstreamURL: url, cachePath: path) { h in
                    let again = try await Self.call(h, "/v1/algo/nlp/LDA/1.0.0", input: #"{"docsList":["a cat sat","a dog sat"]}"#, headers: jsonType)
                    #expect(again.header("X-Cache") == "HIT")
                    #expect(again.bytes == first.bytes)
                    #expect(upstream.stats.snapshot.algoCalls == ["nlp/LDA/1.0.0": 1])
                }
            }
        }
    }

    @Test func leastRecentlyUsedEntriesAreEvictedUnderMaxBytes() async throws {
        // ~1.1 kB answers, stored uncompressed, each counted with `entryOverhead` (400 bytes)
        // besides, in a 4.6 kB cache: three fit.
        try await GatewayHarness.run(cacheYAML: "max_bytes: 4600\n  memory_bytes: 0", extraYAML: "compression: {min_bytes: 100000}") { h in
            for index in 0..<6 {
                let reply = try await Self.call(h, "/v1/algo/test/Big/1.0.0", input: String(1000 + index), headers: jsonType)
                #expect(reply.header("Cache-Status") == "algogate; fwd=miss; stored")
            }
            let stats = try await h.gateway.send(.GET, "/_admin/cache", headers: simple(Keys.admin))
            #expect(stats.object["entries"] as? Int == 3)
            #expect((stats.object["bytes"] as? Int ?? .max) + 3 * ResponseCache.entryOverhead <= 4600)
            // Used, the oldest of the three left becomes the most recently used: the next answer
            // stored evicts the one after it. (`/_admin/cache` writes the hits' times to the file,
            // as the once-a-second flush does.)
            #expect(try await Self.call(h, "/v1/algo/test/Big/1.0.0", input: "1003", headers: jsonType).header("X-Cache") == "HIT")
            _ = try await h.gateway.send(.GET, "/_admin/cache", headers: simple(Keys.admin))
            #expect(try await Self.call(h, "/v1/algo/test/Big/1.0.0", input: "1006", headers: jsonType).header("X-Cache") == "MISS")
            for (input, cached) in [("1003", "HIT"), ("1005", "HIT"), ("1004", "MISS"), ("1000", "MISS")] {
                #expect(try await Self.call(h, "/v1/algo/test/Big/1.0.0", input: input, headers: jsonType).header("X-Cache") == cached, "\(input)")
            }
        }
    }

    /// A purge wins over the calls under way: the answer to a call asked before a purge of its
    /// version, its algorithm or everything began is sent but not stored, so a slow call does not
    /// put back for a whole TTL what the operator purged (say, because the data the algorithm
    /// reads changed). A call of another algorithm under way is stored, as is one asked after.
    @Test func aPurgeKeepsTheAnswersOfCallsUnderWayOut() async throws {
        // Each call is held upstream until its purge has been answered: a simulator call of 1.5 s
        // once ended before a loaded CI machine had the purge through, and was stored.
        for (index, (purge, covered)) in [("?algo=test/Hold", true), ("?algo=test/Hold/1.0.0", true), ("", true),
                                          ("?algo=test/Hold/2.0.0", false), ("?algo=test/Fail", false)].enumerated() {
            try await HeldUpstream.run { upstream, port in
                try await GatewayHarness.run(upstreamURL: { _ in "http://127.0.0.1:\(port)" }) { h in
                    let input = #"{"call":\#(index)}"#
                    func call() async throws -> TestHTTP.Reply {
                        try await h.gateway.send(.POST, "/v1/algo/test/Hold/1.0.0", headers: simple(Keys.teamB) + jsonType, text: input)
                    }
                    let underWay = Task { try await call() }
                    try #require(await eventually { upstream.holds == 1 }, "\(purge): the call never reached the upstream")
                    let purged = try await h.gateway.send(.DELETE, "/_admin/cache\(purge)", headers: simple(Keys.admin))
                    #expect(purged.status == 200)
                    upstream.release.open()
                    let answer = try await underWay.value
                    #expect(answer.status == 200)
                    #expect(canonicalJSON(answer.object["result"]) == input)
                    #expect(answer.header("Cache-Status") == (covered ? "algogate; fwd=miss" : "algogate; fwd=miss; stored"), "\(purge)")
                    // Asked after the purge: stored (when the first was not), then answered from the cache.
                    let again = try await call()
                    #expect(covered ? again.header("Cache-Status") == "algogate; fwd=miss; stored" : again.header("X-Cache") == "HIT", "\(purge)")
                    #expect(try await call().header("X-Cache") == "HIT")
                    #expect(upstream.holds == (covered ? 2 : 1), "\(purge)")
                }
            }
        }
    }

    /// A call that joins an identical call under way once a purge has begun does not take that
    /// call's answer (asked before the purge, and not stored): it goes upstream on its own, and
    /// its answer is stored. The room the shared answer held for it is given back.
    @Test func aCallJoiningAfterAPurgeGoesUpstreamOnItsOwn() async throws {
        try await HeldUpstream.run { upstream, port in
            try await GatewayHarness.run(upstreamURL: { _ in "http://127.0.0.1:\(port)" }) { h in
                // A 200 kB answer, which holds room under limits.max_buffered_answer_bytes.
                let path = "/v1/algo/test/Large/1.0.0"
                func call() async throws -> TestHTTP.Reply {
                    try await h.gateway.send(.POST, path, headers: simple(Keys.teamB) + jsonType, text: "200000")
                }
                let leader = Task { try await call() }
                try #require(await eventually { upstream.holds == 1 }, "the call never reached the upstream")
                #expect(try await h.gateway.send(.DELETE, "/_admin/cache?algo=test/Large", headers: simple(Keys.admin)).status == 200)
                let joiner = Task { try await call() }
                let collapsed = { metricSample(try await h.gateway.send(.GET, "/metrics").text, "algogate_cache_collapsed_waiting") }
                try #require(await eventually { try await collapsed() == 1 }, "the second call never waited for the first")
                upstream.release.open()
                let (led, joined) = (try await leader.value, try await joiner.value)
                #expect(led.status == 200 && led.header("Cache-Status") == "algogate; fwd=miss")
                #expect(joined.status == 200 && joined.header("Cache-Status") == "algogate; fwd=miss; stored")
                #expect(String(buffer: joined.body) == HeldUpstream.large(200_000))
                #expect(upstream.holds == 2)
                #expect(try await call().header("X-Cache") == "HIT")
                // The room the leader's answer held for the joiner is given back.
                #expect(await eventually { h.app.answerBudget.held == 0 }, "\(h.app.answerBudget.held) bytes still held")
            }
        }
    }

    @Test func operatorsSeeStatsAndPurge() async throws {
        try await GatewayHarness.run { h in
            _ = try await Self.call(h, "/v1/algo/demo/Hello/0.1.0")
            _ = try await Self.call(h, "/v1/algo/demo/Hello/0.1.0")
            _ = try await Self.call(h, "/v1/algo/demo/Hello/0.1.1")
            _ = try await Self.call(h, "/v1/algo/util/Echo/1.0.0")
            let denied = try await h.gateway.send(.GET, "/_admin/cache", headers: simple(Keys.teamA))
            #expect(denied.status == 403)
            #expect(envelope(denied).message == "operator endpoints need the admin key")
            let stats = try await h.gateway.send(.GET, "/_admin/cache", headers: simple(Keys.admin))
            #expect(stats.object["entries"] as? Int == 3)
            #expect(stats.object["hits"] as? Int == 1)
            #expect(stats.object["misses"] as? Int == 3)
            #expect(stats.object["hit_ratio"] as? Double == 0.25)
            let purgeVersion = try await h.gateway.send(.DELETE, "/_admin/cache?algo=demo/Hello/0.1.0", headers: simple(Keys.admin))
            #expect(purgeVersion.text == #"{"purged":1}"#)
            // Logged with what it purged, under the request's id (the request line has no query).
            let purgeLine = h.logs.all.filter { $0.contains("cache purged by an operator") }
            #expect(purgeLine == ["notice cache purged by an operator algo=demo/Hello/0.1.0 purged=1 request_id=\(try #require(purgeVersion.header("X-Request-ID")))"])
            let purgeAlgo = try await h.gateway.send(.DELETE, "/_admin/cache?algo=demo/Hello", headers: simple(Keys.admin))
            #expect(purgeAlgo.text == #"{"purged":1}"#)
            let gone = try await Self.call(h, "/v1/algo/demo/Hello/0.1.0")
            #expect(gone.header("X-Cache") == "MISS")
            let bad = try await h.gateway.send(.DELETE, "/_admin/cache?algo=x", headers: simple(Keys.admin))
            #expect(bad.status == 400)
            // Nor a '%' (decoded from %25): such names are no algorithm's.
            let percent = try await h.gateway.send(.DELETE, "/_admin/cache?algo=demo/%25", headers: simple(Keys.admin))
            #expect(percent.status == 400)
            #expect(envelope(percent).message == "algo must be owner/name or owner/name/version")
            // A misspelt or second `algo` would have purged everything, or less than was meant.
            for (query, message) in [("Algo=util/Echo", "DELETE /_admin/cache takes no parameter 'Algo'; it takes algo"),
                                     ("algorithm=util/Echo", "DELETE /_admin/cache takes no parameter 'algorithm'; it takes algo"),
                                     ("algo=util/Echo&algo=demo/Hello", "DELETE /_admin/cache takes 'algo' once")] {
                let refused = try await h.gateway.send(.DELETE, "/_admin/cache?\(query)", headers: simple(Keys.admin))
                #expect(refused.status == 400, "\(query)")
                #expect(envelope(refused).message == message)
            }
            let filtered = try await h.gateway.send(.GET, "/_admin/cache?algo=demo/Hello", headers: simple(Keys.admin))
            #expect(filtered.status == 400)
            #expect(envelope(filtered).message == "GET /_admin/cache takes no parameters")
            let usage = try await h.gateway.send(.GET, "/_admin/usage?day=1", headers: simple(Keys.admin))
            #expect(usage.status == 400)
            #expect(envelope(usage).message == "GET /_admin/usage takes no parameter 'day'; it takes days, month and client")
            let all = try await h.gateway.send(.DELETE, "/_admin/cache", headers: simple(Keys.admin))
            #expect(all.text == #"{"purged":2}"#)
            #expect(h.logs.all.filter { $0.contains("cache purged by an operator") }.last?.hasPrefix("notice cache purged by an operator algo=* purged=2 ") == true)
        }
    }
}
