@testable import AlgoGate
import AlgoTestSupport
import Foundation
import GRDB
import NIOCore
import Testing

/// Algorithm answers held in memory at once are bounded (`limits.max_buffered_answer_bytes`): an
/// answer that does not fit beside those being sent waits, unread upstream, for them to go.
@Suite struct AnswerBudgetTests {
    /// Three answers of 600,000 bytes arrive together under a 1,000,000-byte bound: they are held
    /// one at a time, and each reaches its client whole. Small answers hold no room.
    @Test func largeAnswersAreHeldOneAtATimeUnderTheBound() async throws {
        try await HeldUpstream.run { upstream, port in
            try await GatewayHarness.run(extraYAML: "limits: {max_response_bytes: 600000, max_buffered_answer_bytes: 1000000}",
                                         upstreamURL: { _ in "http://127.0.0.1:\(port)" }) { h in
                let small = try await h.gateway.send(.POST, "/v1/algo/demo/Hello/0.1.0", headers: simple(Keys.teamB) + jsonType, text: #""B""#)
                #expect(small.status == 200)
                #expect(h.app.answerBudget.peak == 0)

                let calls = (0..<3).map { _ in
                    Task { try await h.gateway.send(.POST, "/v1/algo/test/Large", headers: simple(Keys.teamB) + jsonType, text: "600000") }
                }
                try #require(await eventually { upstream.holds == 3 }, "the calls never reached the upstream")
                upstream.release.open()
                for call in calls {
                    let answer = try await call.value
                    #expect(answer.status == 200)
                    #expect(answer.bytes.count == 600_000)
                    #expect(answer.text == HeldUpstream.large(600_000))
                }
                #expect(h.app.answerBudget.peak == 600_000)
                #expect(await eventually { h.app.answerBudget.held == 0 && h.app.answerBudget.waiting == 0 })
                let metrics = try await h.gateway.send(.GET, "/metrics")
                #expect(metricSample(metrics.text, "algogate_buffered_answer_bytes") == 0)
                #expect(metricSample(metrics.text, "algogate_buffered_answer_waiting") == 0)
            }
        }
    }

    /// A compressed answer holds room for its plain bytes before it is inflated, beside its
    /// compressed bytes, so answers waiting for room wait compressed: the size its gzip trailer
    /// states, or for deflate (which states none) the most its bytes could inflate to.
    @Test(arguments: ["gzip", "deflate"])
    func compressedAnswersHoldRoomForTheirPlainBytesBeforeTheyAreInflated(coding: String) async throws {
        try await HeldUpstream.run { upstream, port in
            try await GatewayHarness.run(extraYAML: "limits: {max_response_bytes: 700000, max_buffered_answer_bytes: 1000000}",
                                         upstreamURL: { _ in "http://127.0.0.1:\(port)" }) { h in
                let plain = Array(HeldUpstream.large(600_000).utf8)
                let compressed = try CompressionTests.gzip(plain, coding == "gzip" ? .gzip() : .zlib()).count
                let path = coding == "gzip" ? "/v1/algo/test/LargeGzip" : "/v1/algo/test/LargeDeflate"
                let calls = (0..<3).map { _ in
                    Task { try await h.gateway.send(.POST, path, headers: simple(Keys.teamB) + jsonType, text: "600000") }
                }
                try #require(await eventually { upstream.holds == 3 }, "the calls never reached the upstream")
                upstream.release.open()
                for call in calls {
                    let answer = try await call.value
                    #expect(answer.status == 200)
                    #expect(answer.header("Content-Encoding") == nil)
                    #expect(answer.text == HeldUpstream.large(600_000))
                }
                // One at a time, each holding its compressed and plain bytes while inflated: gzip
                // the 600,000 its trailer states, deflate 1,032 times its bytes (not the 700,000
                // it could be).
                let expected = compressed + (coding == "gzip" ? 600_000 : min(compressed * 1032, 700_000))
                #expect(expected < 700_000 + compressed)
                #expect(h.app.answerBudget.peak == expected)
                #expect(await eventually { h.app.answerBudget.held == 0 && h.app.answerBudget.waiting == 0 })
            }
        }
    }

    /// An answer sent chunked states no length: one that ends within `AnswerRoom.from` holds no
    /// room, so it is answered even while the bound is full; a longer one holds room for as much
    /// as the limit allows before the rest is read, then for what it turned out to be.
    @Test func aChunkedAnswerHoldsRoomOnlyOnceItOutgrowsASmallOnesSize() async throws {
        try await HeldUpstream.run { upstream, port in
            upstream.release.open()
            try await GatewayHarness.run(upstreamYAML: "timeout_seconds: 30",
                                         extraYAML: "limits: {max_response_bytes: 600000, max_buffered_answer_bytes: 1000000}",
                                         upstreamURL: { _ in "http://127.0.0.1:\(port)" }) { h in
                let call = { @Sendable (size: Int) in
                    try await h.gateway.send(.POST, "/v1/algo/test/Chunked", headers: simple(Keys.teamB) + jsonType, text: String(size))
                }
                let busy = GatewayError(status: .serviceUnavailable, errorType: "GatewayBusy", message: "test")
                _ = try await h.app.answerBudget.reserve(1_000_000, capacity: 1_000_000, timeout: .seconds(60), busy: busy)
                // 40,000 bytes in three parts, while the bound is full.
                let small = try await call(40_000)
                #expect(small.status == 200)
                #expect(small.text == HeldUpstream.large(40_000))
                #expect(h.app.answerBudget.peak == 1_000_000 && h.app.answerBudget.held == 1_000_000)

                // 300,000 bytes: they wait for room for 600,000, the limit, past their first 64 KiB.
                let large = Task { try await call(300_000) }
                try #require(await eventually { h.app.answerBudget.waiting == 1 }, "the large answer never waited for room")
                h.app.answerBudget.release(1_000_000)
                let answer = try await large.value
                #expect(answer.status == 200)
                let whole = answer.text == HeldUpstream.large(300_000)
                #expect(whole)
                #expect(await eventually { h.app.answerBudget.held == 0 && h.app.answerBudget.waiting == 0 })
                #expect(h.app.answerBudget.peak == 1_000_000)

                // Past the limit: refused once the limit is passed, its room given back.
                let tooLarge = try await call(700_000)
                #expect(tooLarge.status == 502)
                #expect(tooLarge.text == #"{"error":{"error_type":"UpstreamError","message":"the algorithm's response exceeds the gateway's 600000-byte limit (limits.max_response_bytes)"}}"#)
                #expect(await eventually { h.app.answerBudget.held == 0 })
                #expect(upstream.holds == 3)
            }
        }
    }

    /// Compressed answers whose compressed bytes already hold room never wait for more room
    /// while holding it: two such answers arriving together, each needing its plain bytes beside
    /// its compressed ones, would otherwise each hold their compressed bytes and wait for the
    /// other's, until both timed out. Each reserves what it will need at once, before it is read.
    @Test func compressedAnswersArrivingTogetherDoNotHoldEachOtherUp() async throws {
        try await HeldUpstream.run { upstream, port in
            try await GatewayHarness.run(upstreamYAML: "timeout_seconds: 30",
                                         extraYAML: "limits: {max_response_bytes: 600000, max_buffered_answer_bytes: 1000000}",
                                         upstreamURL: { _ in "http://127.0.0.1:\(port)" }) { h in
                let calls = (0..<2).map { _ in
                    Task { try await h.gateway.send(.POST, "/v1/algo/test/NoisyGzip", headers: simple(Keys.teamB) + jsonType, text: "600000") }
                }
                try #require(await eventually { upstream.holds == 2 }, "the calls never reached the upstream")
                // Both heads arrive; their bodies follow once both have been seen.
                upstream.release.open()
                try #require(await eventually { h.app.answerBudget.held + h.app.answerBudget.waiting > 0 && h.app.answerBudget.held >= 600_000 },
                             "the answers never held room")
                try await Task.sleep(for: .milliseconds(200))
                upstream.bodies.open()
                for call in calls {
                    let answer = try await call.value
                    #expect(answer.status == 200, "\(answer.text.prefix(300))")
                    let whole = answer.text == HeldUpstream.noisy(600_000)
                    #expect(whole)
                }
                #expect(h.app.answerBudget.peak <= 1_000_000)
                #expect(await eventually { h.app.answerBudget.held == 0 && h.app.answerBudget.waiting == 0 })
            }
        }
    }

    /// A compressed answer as large as the bound allows needs more than the bound while it is
    /// inflated (its compressed bytes beside its plain ones): it holds the whole bound, no more,
    /// rather than wait for room it could never have.
    @Test func aCompressedAnswerThatNeedsMoreThanTheWholeBoundHoldsTheWholeBound() async throws {
        try await HeldUpstream.run { upstream, port in
            upstream.release.open()
            upstream.bodies.open()
            try await GatewayHarness.run(upstreamYAML: "timeout_seconds: 30",
                                         extraYAML: "limits: {max_response_bytes: 600000, max_buffered_answer_bytes: 600000}",
                                         upstreamURL: { _ in "http://127.0.0.1:\(port)" }) { h in
                let compressed = try CompressionTests.gzip(Array(HeldUpstream.noisy(600_000).utf8), .gzip()).count
                #expect(compressed > 300_000)
                let answer = try await h.gateway.send(.POST, "/v1/algo/test/NoisyGzip", headers: simple(Keys.teamB) + jsonType, text: "600000")
                #expect(answer.status == 200, "\(answer.text.prefix(300))")
                let whole = answer.text == HeldUpstream.noisy(600_000)
                #expect(whole)
                #expect(h.app.answerBudget.peak == 600_000)
                #expect(await eventually { h.app.answerBudget.held == 0 && h.app.answerBudget.waiting == 0 })
            }
        }
    }

    /// A plain answer that declares more than `max_response_bytes` is refused (502) before any of
    /// it is read, so it never holds room.
    @Test func anAnswerDeclaredTooLargeIsRefusedWithoutHoldingRoom() async throws {
        try await HeldUpstream.run { upstream, port in
            upstream.release.open()
            try await GatewayHarness.run(extraYAML: "limits: {max_response_bytes: 100000, max_buffered_answer_bytes: 100000}",
                                         upstreamURL: { _ in "http://127.0.0.1:\(port)" }) { h in
                let refused = try await h.gateway.send(.POST, "/v1/algo/test/Large", headers: simple(Keys.teamB) + jsonType, text: "100001")
                #expect(refused.status == 502)
                #expect(refused.text == #"{"error":{"error_type":"UpstreamError","message":"the algorithm's response exceeds the gateway's 100000-byte limit (limits.max_response_bytes)"}}"#)
                #expect(h.app.answerBudget.peak == 0)
                let fits = try await h.gateway.send(.POST, "/v1/algo/test/Large", headers: simple(Keys.teamB) + jsonType, text: "100000")
                #expect(fits.status == 200)
                #expect(fits.text == HeldUpstream.large(100_000))
                #expect(h.app.answerBudget.peak == 100_000)
                #expect(await eventually { h.app.answerBudget.held == 0 })
            }
        }
    }

    /// A cache hit read from SQLite holds room for its answer (the plain body and the stored gzip
    /// bytes) from before its body is read until it has been sent: it waits for room when there
    /// is none, and gets 503 after `upstream.queue_timeout_seconds`. An entry stored before plain
    /// sizes were recorded holds at most twice `max_response_bytes` until it has been read.
    /// (A queue timeout of 5 s: with 1, a whole-suite run beside four busy loops once saw the
    /// hit's whole wait come and go between two looks.)
    @Test func hitsReadFromTheStoreHoldRoomForTheirAnswersUntilSent() async throws {
        try await Self.withHitsFromTheStore(queueTimeout: 5) { upstream, h in
            let budget = h.app.answerBudget
            let gateway = h.gateway
            let call = { @Sendable in try await gateway.send(.POST, "/v1/algo/test/Large/1.0.0", headers: simple(Keys.teamB) + jsonType, text: "600000") }
            let miss = try await call()
            #expect(miss.header("Cache-Status") == "algogate; fwd=miss; stored")
            #expect(await eventually { budget.held == 0 })
            // Its plain bytes and the gzip copy made of them, within the bound.
            #expect(budget.peak == 1_000_000)
            budget.resetPeak()
            let stored = try await h.app.storage.pool.read { try Int.fetchOne($0, sql: "SELECT size FROM cache_entry") }
            let gzipBytes = try #require(stored)
            #expect(gzipBytes < 10_000)
            let busy = GatewayError(status: .serviceUnavailable, errorType: "GatewayBusy", message: "test")

            // Other answers being sent hold 500,000 of the 1,000,000: the hit waits for them.
            _ = try await budget.reserve(500_000, capacity: 1_000_000, timeout: .seconds(60), busy: busy)
            let waiting = Task { try await call() }
            try #require(await eventually { budget.waiting == 1 }, "the hit never waited for room")
            budget.release(500_000)
            let hit = try await waiting.value
            #expect(hit.status == 200)
            #expect(hit.header("X-Cache") == "HIT")
            #expect(hit.text == HeldUpstream.large(600_000))
            #expect(budget.peak == 600_000 + gzipBytes)
            #expect(await eventually { budget.held == 0 })

            // No room within upstream.queue_timeout_seconds: 503.
            _ = try await budget.reserve(500_000, capacity: 1_000_000, timeout: .seconds(60), busy: busy)
            let refused = try await call()
            budget.release(500_000)
            #expect(refused.status == 503)
            #expect(refused.text == #"{"error":{"error_type":"GatewayBusy","message":"the algorithm answers the gateway holds in memory stayed at their limit (limits.max_buffered_answer_bytes) for upstream.queue_timeout_seconds"}}"#)

            // An entry without its plain size holds what it could be (here the whole bound)
            // until read, then what it is.
            try await h.app.storage.pool.write { try $0.execute(sql: "UPDATE cache_entry SET plain_size = NULL") }
            let legacy = try await call()
            #expect(legacy.status == 200)
            #expect(legacy.text == HeldUpstream.large(600_000))
            #expect(budget.peak == 1_000_000)
            #expect(await eventually { budget.held == 0 && budget.waiting == 0 })
            #expect(upstream.holds == 1)
        }
    }

    /// A hit read from SQLite that waits for room leaves the queue when its client goes, at once
    /// (the queue's timeout here is a minute): logged 499, holding nothing, and the answers that
    /// come after it are not held up behind it.
    @Test func aHitWaitingForRoomLeavesWhenItsClientGoes() async throws {
        try await Self.withHitsFromTheStore(queueTimeout: 60) { upstream, h in
            let budget = h.app.answerBudget
            let path = "/v1/algo/test/Large/1.0.0"
            let miss = try await h.gateway.send(.POST, path, headers: simple(Keys.teamB) + jsonType, text: "600000")
            #expect(miss.header("Cache-Status") == "algogate; fwd=miss; stored")
            #expect(await eventually { budget.held == 0 })

            // Other answers being sent hold 500,000 of the 1,000,000: the hit waits, then its client goes.
            let busy = GatewayError(status: .serviceUnavailable, errorType: "GatewayBusy", message: "test")
            _ = try await budget.reserve(500_000, capacity: 1_000_000, timeout: .seconds(60), busy: busy)
            let leaving = try await RawConnection.connect(port: h.gatewayPort, sending: ClientDepartureTests.call(path, key: Keys.teamA, input: "600000"))
            try #require(await eventually { budget.waiting == 1 }, "the hit never waited for room")
            await leaving.close()
            #expect(await eventually { budget.waiting == 0 })
            let line = await eventually { h.logs.all.contains { $0.contains("client=team-a") && $0.contains("status=499") } }
            #expect(line)
            let logged = try #require(h.logs.all.first { $0.contains("client=team-a") && $0.contains("path=\(path)") })
            #expect(logged.contains("error_type=ClientClosedRequest"))
            #expect(budget.held == 500_000)

            // The room it would have waited for goes to the next hit.
            budget.release(500_000)
            let hit = try await h.gateway.send(.POST, path, headers: simple(Keys.teamB) + jsonType, text: "600000")
            #expect(hit.status == 200)
            #expect(hit.header("X-Cache") == "HIT")
            #expect(hit.text == HeldUpstream.large(600_000))
            #expect(await eventually { budget.held == 0 && budget.waiting == 0 })
            #expect(upstream.holds == 1)
        }
    }

    /// A gateway with no hot tier, so hits are read from SQLite, bounding answers held in memory to
    /// 1,000,000 bytes (answers up to 600,000), in front of an upstream that answers at once.
    static func withHitsFromTheStore(queueTimeout: Int, _ body: (HeldUpstream, GatewayHarness) async throws -> Void) async throws {
        try await HeldUpstream.run { upstream, port in
            upstream.release.open()
            try await GatewayHarness.run(upstreamYAML: "queue_timeout_seconds: \(queueTimeout)", cacheYAML: "memory_bytes: 0",
                                         extraYAML: "limits: {max_response_bytes: 600000, max_buffered_answer_bytes: 1000000}",
                                         upstreamURL: { _ in "http://127.0.0.1:\(port)" }) { h in
                try await body(upstream, h)
            }
        }
    }

    /// A hit from the hot tier holds no room: it sends the bytes the tier holds already, so it is
    /// answered even while answers being sent fill the whole bound.
    /// A copy of a large answer is made beside its plain bytes and may live beside them until
    /// the answer has been sent, so it holds room too, for as many bytes as the answer while it
    /// is made, then for its own size: the gzip copy a miss stores (kept for collapsed calls and
    /// clients that prefer gzip), and the copy compressed for a client. Before, only the plain
    /// bytes were counted.
    @Test func copiesOfALargeAnswerHoldRoomBesideItUntilSent() async throws {
        try await HeldUpstream.run { upstream, port in
            upstream.release.open()
            try await GatewayHarness.run(cacheYAML: "memory_bytes: 0",
                                         extraYAML: "limits: {max_response_bytes: 600000, max_buffered_answer_bytes: 2000000}",
                                         upstreamURL: { _ in "http://127.0.0.1:\(port)" }) { h in
                let budget = h.app.answerBudget
                let miss = try await h.gateway.send(.POST, "/v1/algo/test/Large/1.0.0", headers: simple(Keys.teamB) + jsonType, text: "600000")
                #expect(miss.header("Cache-Status") == "algogate; fwd=miss; stored")
                #expect(miss.text == HeldUpstream.large(600_000))
                #expect(budget.peak == 1_200_000)
                #expect(await eventually { budget.held == 0 })

                let compressed = try await h.gateway.send(.POST, "/v1/algo/test/Large", headers: simple(Keys.teamB) + jsonType + [("Accept-Encoding", "gzip")],
                                                          text: "600000")
                #expect(compressed.header("Content-Encoding") == "gzip")
                #expect(try CompressionTests.gunzip(compressed.bytes) == Array(HeldUpstream.large(600_000).utf8))
                #expect(budget.peak == 1_200_000)
                #expect(await eventually { budget.held == 0 && budget.waiting == 0 })
            }
        }
    }

    @Test func hitsFromMemoryHoldNoRoom() async throws {
        try await HeldUpstream.run { upstream, port in
            upstream.release.open()
            try await GatewayHarness.run(cacheYAML: "fast_hits: false",
                                         extraYAML: "limits: {max_response_bytes: 600000, max_buffered_answer_bytes: 1000000}",
                                         upstreamURL: { _ in "http://127.0.0.1:\(port)" }) { h in
                let call = { try await h.gateway.send(.POST, "/v1/algo/test/Large/1.0.0", headers: simple(Keys.teamB) + jsonType, text: "600000") }
                #expect(try await call().header("Cache-Status") == "algogate; fwd=miss; stored")
                #expect(await eventually { h.app.answerBudget.held == 0 })
                _ = try await h.app.answerBudget.reserve(1_000_000, capacity: 1_000_000, timeout: .seconds(60),
                                                         busy: GatewayError(status: .serviceUnavailable, errorType: "GatewayBusy", message: "test"))
                let hit = try await call()
                #expect(hit.status == 200)
                #expect(hit.header("X-Cache") == "HIT")
                #expect(hit.text == HeldUpstream.large(600_000))
                #expect(h.app.answerBudget.held == 1_000_000)
                h.app.answerBudget.release(1_000_000)
            }
        }
    }

    /// A hit from memory shares the hot tier's bytes and holds no room; but when its entry leaves
    /// the tier while the hit is still being sent (here, purged), the bytes stay in memory until
    /// sent: they are counted under the bound until then. Both ways hits are answered.
    @Test(arguments: [true, false]) func aHotEntryThatLeavesTheTierWhileItIsSentIsCountedUntilSent(fastHits: Bool) async throws {
        try await HeldUpstream.run { upstream, port in
            upstream.release.open()
            try await GatewayHarness.run(cacheYAML: "fast_hits: \(fastHits)",
                                         extraYAML: "limits: {max_response_bytes: 12000000, max_buffered_answer_bytes: 24000000}",
                                         upstreamURL: { _ in "http://127.0.0.1:\(port)" }) { h in
                let path = "/v1/algo/test/Large/1.0.0"
                let first = try await h.gateway.send(.POST, path, headers: simple(Keys.teamB) + jsonType, text: "12000000")
                #expect(first.header("Cache-Status") == "algogate; fwd=miss; stored")
                #expect(await eventually { h.app.answerBudget.held == 0 })
                let cache = try #require(h.app.cache)
                let entryBytes = cache.hot.bytes
                #expect(entryBytes > 12_000_000)
                // A hit for a client that reads nothing yet: more than a socket's buffers hold.
                let reader = try await RawConnection.connect(
                    port: h.gatewayPort, sending: "POST \(path) HTTP/1.1\r\nHost: algogate\r\nAuthorization: Simple \(Keys.teamB)\r\n"
                        + "Content-Type: application/json\r\nContent-Length: 8\r\n\r\n12000000", reading: false)
                try #require(await eventually { cache.hot.leases == 1 }, "the hit never took the entry")
                #expect(h.app.answerBudget.held == 0)

                let purged = try await h.gateway.send(.DELETE, "/_admin/cache", headers: simple(Keys.admin))
                #expect(purged.status == 200)
                #expect(cache.hot.bytes == 0)
                #expect(h.app.answerBudget.held == entryBytes)

                try await reader.startReading()
                #expect(await eventually { RawResponse.parse(reader.text).count == 1 })
                let hit = RawResponse.parse(reader.text).first
                #expect(hit?.statusLine == "HTTP/1.1 200 OK")
                #expect(hit?.headers["x-cache"] == "HIT")
                #expect(hit?.body == HeldUpstream.large(12_000_000))
                #expect(await eventually { h.app.answerBudget.held == 0 })
                #expect(upstream.holds == 1)
                let metrics = try await h.gateway.send(.GET, "/metrics").text
                #expect(metricSample(metrics, "algogate_cache_fast_hits_total") == (fastHits ? 1 : 0))
                await reader.close()
            }
        }
    }

    /// A reload can lower the budget under a waiter that asked for more than the new budget
    /// holds: it goes in once nothing is held, and those behind it follow, rather than all wait
    /// for their timeouts.
    @Test func aWaiterLargerThanABudgetLoweredByAReloadStillGoesIn() async throws {
        let budget = MemoryBudget()
        let busy = GatewayError(status: .serviceUnavailable, errorType: "GatewayBusy", message: "test")
        let first = try await budget.reserve(60, capacity: 100, timeout: .seconds(60), busy: busy)
        let large = Task { try await budget.reserve(90, capacity: 100, timeout: .seconds(60), busy: busy) }
        try #require(await eventually { budget.waiting == 1 })
        // The reload: the next call sees a budget of 50.
        let small = Task { try await budget.reserve(10, capacity: 50, timeout: .seconds(60), busy: busy) }
        try #require(await eventually { budget.waiting == 2 })
        budget.release(first)
        #expect(try await large.value == 90)
        #expect(budget.held == 90 && budget.waiting == 1)
        budget.release(90)
        #expect(try await small.value == 10)
        #expect(budget.held == 10 && budget.waiting == 0)
        budget.release(10)
    }

    /// Room held for an answer goes back when the last reference to it goes, whatever path its
    /// request took: a request dropped before its answer was sent does not keep it for good.
    @Test func roomHeldByAnAnswerDroppedUnsentIsGivenBack() async throws {
        let budget = MemoryBudget()
        let busy = GatewayError(status: .serviceUnavailable, errorType: "GatewayBusy", message: "test")
        var room: HeldBytes? = HeldBytes(in: budget)
        try await room?.reserve(70_000, capacity: 100_000, timeout: .seconds(60), busy: busy)
        #expect(budget.held == 70_000 && room?.held == 70_000)
        room = nil
        #expect(budget.held == 0)

        // Released, it is given back once, not again as it goes.
        do {
            let released = HeldBytes(in: budget)
            try await released.reserve(30_000, capacity: 100_000, timeout: .seconds(60), busy: busy)
            released.release()
            #expect(budget.held == 0)
        }
        #expect(budget.held == 0, "gone after its release: nothing given back twice")
        #expect(try await budget.reserve(100_000, capacity: 100_000, timeout: .seconds(1), busy: busy) == 100_000)
        budget.release(100_000)
    }

    /// A waiter held back by its own client's share does not hold up another client's, and is let
    /// in once its client gives room back; one held back by the bound itself keeps its place, so a
    /// smaller one behind it waits too (first come, first served).
    @Test func waitersHeldBackByTheirClientsShareDoNotHoldUpOthers() async throws {
        let budget = MemoryBudget()
        let busy = GatewayError(status: .serviceUnavailable, errorType: "GatewayBusy", message: "test")
        let reserve = { (bytes: Int, client: String) in
            Task { try await budget.reserve(bytes, capacity: 100, client: client, share: 60, timeout: .seconds(60), busy: busy) }
        }
        #expect(try await reserve(50, "a").value == 50)
        let aOver = reserve(20, "a")                     // 70 would be over a's share of 60
        try #require(await eventually { budget.waiting == 1 })
        #expect(try await reserve(30, "b").value == 30)  // passes a's waiter: 80 held
        let bLarge = reserve(30, "b")                     // 110 would be over the bound: waits
        try #require(await eventually { budget.waiting == 2 })
        let cSmall = reserve(10, "c")                     // fits, but b's waiter is ahead of it
        try #require(await eventually { budget.waiting == 3 })
        #expect(budget.held == 80 && budget.held(by: "a") == 50 && budget.held(by: "b") == 30)
        budget.release(50, client: "a")                   // 30 held: a's 20 (50) and b's 30 (80) go in, then c's 10 (90)
        #expect(try await aOver.value == 20)
        #expect(try await bLarge.value == 30)
        #expect(try await cSmall.value == 10)
        #expect(budget.held == 90 && budget.waiting == 0)
        #expect(budget.held(by: "a") == 20 && budget.held(by: "b") == 60 && budget.held(by: "c") == 10)
        budget.release(20, client: "a")
        budget.release(60, client: "b")
        budget.release(10, client: "c")
        #expect(budget.held == 0 && budget.held(by: "b") == 0)
    }

    /// Every way a large entry leaves the tier (evicted as the least recently used, replaced,
    /// removed, all removed) counts its bytes while a hit holds its lease, and gives them back
    /// when the last lease goes; entries under `AnswerRoom.from` take no lease.
    @Test func everyWayALargeEntryLeavesTheTierCountsItWhileLeased() {
        let budget = MemoryBudget()
        let tier = HotTier(capacity: 600_000)
        tier.countSendsOfLeavingEntries(in: budget)
        let answer = { (size: Int) in
            CachedAnswer(algo: "o/n/1.0.0", status: 200, contentType: "application/json",
                         body: ByteBuffer(repeating: UInt8(ascii: "x"), count: size), createdAt: 0, expiresAt: 1e12)
        }
        // A power of two: an entry's storage is its length; `counted` is what the tier counts of it.
        let size = 131_072
        let counted = HotTier.residentBytes(key: "a", answer(size))
        #expect(counted == size + "a".utf8.count + "o/n/1.0.0".utf8.count + "application/json".utf8.count + HotTier.entryOverhead)
        tier.put("a", answer(size))
        // Hits being sent, each holding its answer and so its lease; a hit is done when it goes.
        var sending: [String: CachedAnswer] = [:]
        // Two hits on "a"; then five more entries push the tier over, and "a", least recently
        // used, goes first.
        sending["a1"] = tier.get("a")
        sending["a2"] = tier.get("a")
        #expect(tier.leases == 2)
        for key in ["b", "c", "d", "e", "f"] { tier.put(key, answer(size)) }
        #expect(tier.get("a") == nil)
        #expect(budget.held == counted)
        sending["a1"] = nil
        #expect(budget.held == counted)
        sending["a2"] = nil
        #expect(budget.held == 0)

        sending["f"] = tier.get("f")
        tier.put("f", answer(size))
        #expect(budget.held == counted)
        sending["f"] = nil
        #expect(budget.held == 0)

        sending["e"] = tier.get("e")
        tier.remove { key, _ in key == "e" }
        #expect(budget.held == counted)
        sending["f"] = tier.get("f")
        tier.removeAll()
        #expect(budget.held == 2 * counted)
        sending["e"] = nil
        #expect(budget.held == counted)
        sending["f"] = nil
        #expect(budget.held == 0)
        // Left while nobody sent it: nothing to count.
        tier.put("g", answer(size))
        tier.removeAll()
        #expect(budget.held == 0 && budget.peak == 2 * counted)

        tier.put("small", answer(AnswerRoom.from - 1))
        #expect(tier.get("small")?.lease == nil)
        #expect(tier.get("small")?.body.readableBytes == AnswerRoom.from - 1)
    }

    /// Calls collapsed onto one upstream call send the same answer: its room is held until the
    /// last of them has sent it, not only the call that fetched it.
    @Test func collapsedCallsHoldTheSharedAnswersRoomUntilTheLastHasSentIt() async throws {
        try await HeldUpstream.run { upstream, port in
            try await GatewayHarness.run(extraYAML: "limits: {max_response_bytes: 12000000, max_buffered_answer_bytes: 24000000}",
                                         upstreamURL: { _ in "http://127.0.0.1:\(port)" }) { h in
                let path = "/v1/algo/test/Large/1.0.0"
                let leader = Task { try await h.gateway.send(.POST, path, headers: simple(Keys.teamB) + jsonType, text: "12000000") }
                try #require(await eventually { upstream.holds == 1 }, "the call never reached the upstream")
                // The same call from a client that does not read its answer yet: more than a
                // socket's send buffer holds (Linux: 4 MiB at most by default), so it cannot
                // have been sent.
                let waiter = try await RawConnection.connect(
                    port: h.gatewayPort, sending: "POST \(path) HTTP/1.1\r\nHost: algogate\r\nAuthorization: Simple \(Keys.teamB)\r\n"
                        + "Content-Type: application/json\r\nContent-Length: 8\r\n\r\n12000000", reading: false)
                let collapsed = { metricSample(try await h.gateway.send(.GET, "/metrics").text, "algogate_cache_collapsed_waiting") }
                try #require(await eventually { try await collapsed() == 1 }, "the second call never waited for the first")
                upstream.release.open()
                let first = try await leader.value
                #expect(first.status == 200)
                #expect(first.header("Cache-Status") == "algogate; fwd=miss; stored")
                // Once the first call's answer has been sent (its line is logged then), the
                // second still holds the room: for the plain bytes and the stored gzip copy.
                let lines = { h.logs.all.filter { $0.contains("path=\(path)") } }
                try #require(await eventually { lines().count == 1 }, "the first call was never logged")
                let stored = try await h.app.storage.pool.read { try Int.fetchOne($0, sql: "SELECT size FROM cache_entry") }
                #expect(h.app.answerBudget.held == 12_000_000 + (try #require(stored)))
                #expect(try await collapsed() == 0)

                try await waiter.startReading()
                #expect(await eventually { RawResponse.parse(waiter.text).count == 1 })
                let second = RawResponse.parse(waiter.text).first
                #expect(second?.statusLine == "HTTP/1.1 200 OK")
                #expect(second?.headers["cache-status"] == "algogate; fwd=miss; collapsed")
                #expect(second?.body == HeldUpstream.large(12_000_000))
                #expect(await eventually { h.app.answerBudget.held == 0 })
                #expect(await eventually { lines().count == 2 })
                #expect(upstream.holds == 1)
                await waiter.close()
            }
        }
    }
}
