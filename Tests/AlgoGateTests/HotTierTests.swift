@testable import AlgoGate
import AlgoTestSupport
import NIOCore
import Testing

/// The hot tier's bound is on what its entries hold in memory: buffers of their own, counted as
/// allocated, with each entry's fixed costs. Counted by answer lengths, a full tier of small
/// answers, or of answers stored compressed, held four times its bound and more.
@Suite struct HotTierTests {
    /// A slice of a larger buffer (as an answer read from a socket is) is copied into storage of
    /// its own, and the tier counts what the entry holds, never more in all than its bound.
    @Test func entriesHoldBuffersOfTheirOwnAndAreCountedAsHeld() {
        let tier = HotTier(capacity: 1 << 20)
        let readBuffer = ByteBuffer(repeating: UInt8(ascii: "x"), count: 65_536)
        let answer = CachedAnswer(algo: "util/Echo/1.0.0", status: 200, contentType: "application/json",
                                  body: readBuffer.getSlice(at: 100, length: 2_000)!, gzipBody: readBuffer.getSlice(at: 0, length: 90)!,
                                  createdAt: 0, expiresAt: 1e12)
        #expect(answer.body.storageCapacity == 65_536)
        tier.put("k", answer)
        let held = try! #require(tier.get("k"))
        #expect(held.body == answer.body && held.gzipBody == answer.gzipBody)
        #expect(held.body.storageCapacity == 2_048 && held.gzipBody?.storageCapacity == 128)
        let counted = 2_048 + 128 + "k".utf8.count + "util/Echo/1.0.0".utf8.count + "application/json".utf8.count + HotTier.entryOverhead
        #expect(HotTier.residentBytes(key: "k", answer) == counted)
        #expect(tier.bytes == counted)

        // A buffer that is its own already is kept as it is.
        let own = ByteBuffer(repeating: UInt8(ascii: "y"), count: 3_000)
        tier.put("own", CachedAnswer(algo: "a/b/1.0.0", status: 200, contentType: "text/plain", body: own, createdAt: 0, expiresAt: 1e12))
        #expect(tier.get("own")?.body.storageCapacity == 4_096)

        // Many small answers: the count stays within the bound, and with the entries' fixed
        // costs counted, far fewer fit than their lengths alone would let in.
        for index in 0..<20_000 {
            let key = "key-\(index)"
            let body = readBuffer.getSlice(at: 0, length: 80)!
            tier.put(key, CachedAnswer(algo: "util/Echo/1.0.0", status: 200, contentType: "application/json", body: body, createdAt: 0, expiresAt: 1e12))
            #expect(tier.bytes <= 1 << 20)
        }
        #expect(tier.count < (1 << 20) / (128 + HotTier.entryOverhead), "\(tier.count) entries of 80 bytes in 1 MiB")
        #expect(tier.count > (1 << 20) * 3 / 4 / (128 + 40 + HotTier.entryOverhead))
        #expect(HotTier.storage(1) == 1 && HotTier.storage(2_048) == 2_048 && HotTier.storage(2_049) == 4_096 && HotTier.storage(0) == 0)
        // A block of 1 MiB or more is mapped on its own: its written pages count.
        #expect(HotTier.storage(524_288) == 524_288 && HotTier.storage(600_000) == 602_112 && HotTier.storage(12_000_000) == 12_001_280)
    }

    /// Over its bound the tier lets the least recently used entries go, a hit counting as a use,
    /// down to three quarters; a key stored again replaces its entry in the count; an entry over a
    /// quarter of the bound is never held, so one answer cannot empty the tier; and purged entries
    /// give their room back.
    @Test func theLeastRecentlyUsedGoFirstAndNoEntryTakesMoreThanAQuarter() {
        func answer(_ bytes: Int) -> CachedAnswer {
            CachedAnswer(algo: "util/Echo/1.0.0", status: 200, contentType: "text/plain",
                         body: ByteBuffer(repeating: UInt8(ascii: "z"), count: bytes), createdAt: 0, expiresAt: 1e12)
        }
        let entry = HotTier.residentBytes(key: "a", answer(1_000))
        let tier = HotTier(capacity: 4 * entry + 100)
        for key in ["a", "b", "c", "d"] { tier.put(key, answer(1_000)) }
        #expect(tier.count == 4 && tier.bytes == 4 * entry)
        tier.put("d", answer(1_000))
        #expect(tier.count == 4 && tier.bytes == 4 * entry, "stored again: counted once")
        #expect(tier.get("a") != nil)
        tier.put("e", answer(1_000))
        #expect(tier.get("b") == nil && tier.get("c") == nil, "the two least recently used went")
        #expect(tier.get("a") != nil && tier.get("d") != nil && tier.get("e") != nil, "a, used since, stayed")
        #expect(tier.bytes == 3 * entry)

        let large = answer(2_000)
        #expect(HotTier.residentBytes(key: "large", large) > (4 * entry + 100) / 4)
        tier.put("large", large)
        #expect(tier.get("large") == nil)
        #expect(tier.count == 3 && tier.bytes == 3 * entry)

        // A purge gives its entries' room back.
        tier.remove { key, _ in key == "a" }
        #expect(tier.get("a") == nil && tier.count == 2 && tier.bytes == 2 * entry)
        tier.removeAll()
        #expect(tier.count == 0 && tier.bytes == 0)
    }

    /// Through the gateway: the answers a miss puts in the tier (read from the upstream, and the
    /// gzip copy the cache stores) hold storage of their own, sized to them.
    @Test func answersStoredByAMissHoldStorageSizedToThem() async throws {
        try await GatewayHarness.run { h in
            for input in ["small", String(repeating: "compressible ", count: 300)] {
                let miss = try await h.gateway.send(.POST, "/v1/algo/util/Echo/1.0.0", headers: simple(Keys.teamB) + textType, text: input)
                #expect(miss.header("Cache-Status") == "algogate; fwd=miss; stored")
                let hit = try await h.gateway.send(.POST, "/v1/algo/util/Echo/1.0.0", headers: simple(Keys.teamB) + textType, text: input)
                #expect(hit.header("X-Cache") == "HIT" && hit.body == miss.body)
            }
            let tier = try #require(h.app.cache?.hot)
            let answers = tier.heldAnswers
            #expect(answers.count == 2)
            #expect(answers.contains { $0.gzipBody != nil }, "the large answer was stored compressed")
            for answer in answers {
                #expect(answer.body.storageCapacity == HotTier.storage(answer.body.readableBytes))
                if let gzip = answer.gzipBody { #expect(gzip.storageCapacity == HotTier.storage(gzip.readableBytes)) }
            }
        }
    }
}
