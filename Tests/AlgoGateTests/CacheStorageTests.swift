@testable import AlgoGate
import AlgoTestSupport
import Dispatch
import Foundation
import GRDB
import NIOCore
import Synchronization
import Testing

/// The cache shares its SQLite file with other writers: the usage counters, a purge or an expiry,
/// and the `algogate cache` commands in another process. None of them may cost a client its answer.
@Suite struct CacheStorageTests {
    /// An answer the cache cannot store (here: another process holds the file's write lock past
    /// the busy timeout, as a long purge from the command line did) is sent all the same, as a miss
    /// that was not stored, logged as a warning and counted; the next call stores it.
    @Test func anAnswerTheCacheCannotStoreIsSentAllTheSame() async throws {
        try await withTemporaryDirectory("store-failure") { directory in
            let path = directory.appendingPathComponent("cache.sqlite").path
            try await GatewayHarness.run(cacheYAML: "memory_bytes: 0", cachePath: path) { h in
                let other = try DatabaseQueue(path: path)
                let locked = Latch()
                let release = DispatchSemaphore(value: 0)
                let holder = Task {
                    try await other.write { db in
                        // Takes the write lock and keeps it until the test lets go.
                        try db.execute(sql: "UPDATE cache_totals SET hits = hits WHERE id = 1")
                        locked.open()
                        release.wait()
                    }
                }
                await locked.wait()
                let reply = try await CacheTests.call(h, "/v1/algo/demo/Hello/0.1.0")
                release.signal()
                try await holder.value

                #expect(reply.status == 200)
                #expect(reply.object["result"] as? String == "Hello HAL")
                #expect(reply.header("Cache-Status") == "algogate; fwd=miss")
                #expect(reply.header("X-Cache") == "MISS")
                let line = h.logs.all.first { $0.hasPrefix("warning request ") && $0.contains("not_stored=") }
                #expect(line?.contains("database is locked") == true, "\(h.logs.all.filter { $0.contains("not_stored") })")
                #expect(line?.contains("status=200") == true)
                let metrics = try await h.gateway.send(.GET, "/metrics")
                #expect(metricSample(metrics.text, "algogate_cache_store_failures_total") == 1)

                // Once the lock is gone (and the usage counters, which failed closed meanwhile,
                // are written again), the same call is stored, then answered from the cache.
                var stored: TestHTTP.Reply?
                #expect(await eventually {
                    stored = try? await CacheTests.call(h, "/v1/algo/demo/Hello/0.1.0")
                    return stored?.status == 200
                })
                #expect(stored?.header("Cache-Status") == "algogate; fwd=miss; stored")
                let hit = try await CacheTests.call(h, "/v1/algo/demo/Hello/0.1.0")
                #expect(hit.header("X-Cache") == "HIT")
                #expect(hit.bytes == stored?.bytes)
                #expect(h.simulator.stats.snapshot.algoCalls == ["demo/Hello/0.1.0": 2])
            }
        }
    }

    /// Counts the commits of transactions that deleted cache entries.
    final class DeletingCommits: TransactionObserver, Sendable {
        private let state = Mutex((deleted: false, commits: 0))
        var commits: Int { state.withLock { $0.commits } }
        func observes(eventsOfKind eventKind: DatabaseEventKind) -> Bool {
            if case .delete(let table) = eventKind { return table == "cache_entry" }
            return false
        }
        func databaseDidChange(with event: DatabaseEvent) { state.withLock { $0.deleted = true } }
        func databaseDidCommit(_ db: Database) {
            state.withLock { state in
                if state.deleted { state.commits += 1 }
                state.deleted = false
            }
        }
        func databaseDidRollback(_ db: Database) { state.withLock { $0.deleted = false } }
    }

    /// A cache whose file cannot be read (here its table is gone from under it, as a damaged page
    /// or an I/O error would make a read fail) costs no answer: the call goes upstream, logged
    /// with `not_read` and counted once, and the cache serves again once it can be read.
    @Test func aCacheThatCannotBeReadCostsNoAnswer() async throws {
        try await GatewayHarness.run(cacheYAML: "memory_bytes: 0") { h in
            let path = "/v1/algo/demo/Hello/0.1.0"
            #expect(try await CacheTests.call(h, path).header("Cache-Status") == "algogate; fwd=miss; stored")
            try await h.app.storage.pool.write { db in try db.execute(sql: "ALTER TABLE cache_entry RENAME TO cache_entry_elsewhere") }

            let unread = try await CacheTests.call(h, path)
            #expect(unread.status == 200)
            #expect(unread.object["result"] as? String == "Hello HAL")
            #expect(unread.header("Cache-Status") == "algogate; fwd=miss")
            #expect(unread.header("X-Cache") == "MISS")
            #expect(h.simulator.stats.snapshot.algoCalls == ["demo/Hello/0.1.0": 2])
            #expect(await eventually {
                h.logs.all.contains {
                    $0.hasPrefix("warning request ") && $0.contains("not_read=SQLite error 1: no such table: cache_entry")
                        && $0.contains("not_stored=SQLite error 1: no such table: cache_entry") && $0.contains("status=200")
                }
            }, "\(h.logs.all.filter { $0.hasPrefix("warning request") })")
            let metrics = try await h.gateway.send(.GET, "/metrics")
            #expect(metricSample(metrics.text, "algogate_cache_read_failures_total") == 1)
            #expect(try await h.gateway.send(.GET, "/readyz").status == 200)

            try await h.app.storage.pool.write { db in try db.execute(sql: "ALTER TABLE cache_entry_elsewhere RENAME TO cache_entry") }
            let hit = try await CacheTests.call(h, path)
            #expect(hit.header("X-Cache") == "HIT")
            #expect(hit.object["result"] as? String == "Hello HAL")
        }
    }

    /// An entry that does not read back as it was stored (the disk, or something beside the
    /// gateway, changed its bytes) is never served: it is a miss, deleted, logged and counted, and
    /// the call's answer from the upstream takes its place. Here one entry stored gzip-compressed
    /// no longer inflates, and one stored plain has a byte changed, which only its SHA-256 tells.
    @Test func anEntryThatDoesNotReadBackAsStoredIsAMissAndIsReplaced() async throws {
        try await GatewayHarness.run(cacheYAML: "memory_bytes: 0") { h in
            let large = String(repeating: "HAL ", count: 600)
            let path = "/v1/algo/demo/Hello/0.1.0"
            let firstLarge = try await CacheTests.call(h, path, input: large)
            let firstSmall = try await CacheTests.call(h, path, input: "HAL")
            #expect(firstLarge.header("Cache-Status") == "algogate; fwd=miss; stored")
            #expect(firstSmall.header("Cache-Status") == "algogate; fwd=miss; stored")
            let encodings = try await h.app.storage.pool.write { db in
                try db.execute(sql: "UPDATE cache_entry SET body = CAST('not gzip at all' AS BLOB) WHERE encoding = 'gzip'")
                // The same length, one byte changed: "Hello HAL" reads "Hello HAM".
                try db.execute(sql: "UPDATE cache_entry SET body = CAST(replace(CAST(body AS TEXT), 'Hello HAL', 'Hello HAM') AS BLOB) WHERE encoding = 'identity'")
                return try String.fetchAll(db, sql: "SELECT encoding FROM cache_entry ORDER BY encoding")
            }
            #expect(encodings == ["gzip", "identity"])

            for input in [large, "HAL"] {
                // The upstream's answer again (its metadata's duration differs from the first's).
                let again = try await CacheTests.call(h, path, input: input)
                #expect(again.status == 200)
                #expect(again.object["result"] as? String == "Hello " + input)
                #expect(again.header("Cache-Status") == "algogate; fwd=miss; stored")
                #expect(again.header("X-Cache") == "MISS")
                let hit = try await CacheTests.call(h, path, input: input)
                #expect(hit.header("X-Cache") == "HIT")
                #expect(firstDifference(hit.bytes, again.bytes) == nil)
            }
            #expect(h.simulator.stats.snapshot.algoCalls == ["demo/Hello/0.1.0": 4])
            for reason in ["its gzip bytes do not inflate", "its body has not the SHA-256 stored with it"] {
                #expect(await eventually {
                    h.logs.all.contains("warning a cache entry did not read back as stored, and was deleted: the call went upstream algo=demo/Hello/0.1.0 reason=\(reason)")
                }, "\(h.logs.all.filter { $0.hasPrefix("warning a cache entry") })")
            }
            let metrics = try await h.gateway.send(.GET, "/metrics")
            #expect(metricSample(metrics.text, "algogate_cache_corrupt_entries_total") == 2)
        }
    }

    /// A cache in `directory` (in its file `name`): by default of 1 MiB in SQLite and in memory,
    /// storing every answer plain.
    static func smallCache(in directory: URL, name: String = "state.sqlite", maxBytes: Int = 1 << 20, memoryBytes: Int = 1 << 20,
                           compressMinBytes: Int = 1 << 20) throws -> ResponseCache {
        ResponseCache(pool: try StateDatabase.open(path: directory.appendingPathComponent(name).path),
                      settings: ResponseCache.Settings(maxBytes: maxBytes, memoryBytes: memoryBytes, compressMinBytes: compressMinBytes))
    }

    static let smallAnswer = ByteBuffer(string: #"{"result":"x"}"#)

    /// A body of `compression.min_bytes` or more is stored gzip-compressed, a shorter one as it
    /// came; and `max_bytes` bounds an entry with the overhead it takes besides its body
    /// (`entryOverhead`): a body that fits the bound alone, but not with it, is not stored.
    @Test func theCompressionThresholdAndTheBoundCountAsDocumented() async throws {
        try await withTemporaryDirectory("thresholds") { directory in
            let now = Date().timeIntervalSince1970
            func store(_ key: String, bytes: Int, in cache: ResponseCache) async throws -> Bool {
                try await cache.store(key: key, algo: "o/n/1.0.0", status: 200, contentType: "text/plain",
                                      body: ByteBuffer(repeating: UInt8(ascii: "a"), count: bytes), ttlSeconds: 60, now: now).stored
            }
            let compressing = try Self.smallCache(in: directory, name: "compressing.sqlite", maxBytes: 8192, memoryBytes: 0, compressMinBytes: 100)
            #expect(try await store("at", bytes: 100, in: compressing))
            #expect(try await store("under", bytes: 99, in: compressing))
            #expect(try await compressing.pool.read { db in try String.fetchAll(db, sql: "SELECT key || '=' || encoding FROM cache_entry ORDER BY key") }
                    == ["at=gzip", "under=identity"])
            try compressing.pool.close()

            let plain = try Self.smallCache(in: directory, name: "plain.sqlite", maxBytes: 8192, memoryBytes: 0)
            #expect(try await store("fits", bytes: 8192 - ResponseCache.entryOverhead, in: plain))
            #expect(try await store("over", bytes: 8192 - ResponseCache.entryOverhead + 1, in: plain) == false)
            #expect(try await plain.pool.read { db in try String.fetchAll(db, sql: "SELECT key FROM cache_entry") } == ["fits"])
            try plain.pool.close()
        }
    }

    /// A purge under way in another process (its beginning logged, not yet its end) keeps out
    /// of the cache the answers of calls asked before it, and leaves this process's memory as it
    /// is: its answers leave memory at its end, once its entries are gone from the file.
    @Test func aPurgeUnderWayElsewhereKeepsEarlierAnswersOutAndMemoryAsItIs() async throws {
        try await withTemporaryDirectory("purge-under-way") { directory in
            let now = Date().timeIntervalSince1970
            let cache = try Self.smallCache(in: directory)
            let answer = Self.smallAnswer
            func store(_ key: String, _ algo: String, askedAt mark: Int64) async throws -> Bool {
                try await cache.store(key: key, algo: algo, status: 200, contentType: "application/json", body: answer, ttlSeconds: 60,
                                      now: now, askedAt: mark).stored
            }
            #expect(try await store("old", "demo/Hello/0.1.0", askedAt: cache.purgeMark()))
            let before = cache.purgeMark()
            func log(begins: Bool) async throws {
                try await cache.pool.write { db in
                    try db.execute(sql: "INSERT INTO cache_purge (algo, at, begins) VALUES ('demo/Hello', ?, ?)", arguments: [now, begins])
                }
            }
            try await log(begins: true)
            try await cache.flush(now: now)
            #expect(cache.lookupInMemory("old", now: now) != nil, "memory is left as it is until the purge ends")
            #expect(try await store("hello-2", "demo/Hello/0.2.0", askedAt: before) == false, "asked before the purge began")
            #expect(try await store("echo", "util/Echo/1.0.0", askedAt: before), "an algorithm the purge does not name")
            let during = cache.purgeMark()
            #expect(during > before)
            try await log(begins: false)
            try await cache.flush(now: now)
            #expect(cache.lookupInMemory("old", now: now) == nil, "out of memory once the purge has ended")
            #expect(cache.lookupInMemory("echo", now: now) != nil)
            #expect(try await store("hello-2", "demo/Hello/0.2.0", askedAt: during) == false, "asked while the purge ran")
            #expect(try await store("hello-2", "demo/Hello/0.2.0", askedAt: cache.purgeMark()), "asked after it")
            try cache.pool.close()
        }
    }

    /// A purge of `owner/name` takes that algorithm's answers, every version, and nothing of an
    /// algorithm whose name merely begins alike (`owner/nameX`); a `_` in a name is a character
    /// of it, not SQL's one-character wildcard; and the hot tier is purged by the same rule as the
    /// file. Stats list the algorithms most hit first, then those with most entries, then by name.
    @Test func aPurgeTakesTheAlgorithmItNamesAndNoOtherThatBeginsAlike() async throws {
        try await withTemporaryDirectory("purge-names") { directory in
            let now = Date().timeIntervalSince1970
            let cache = try Self.smallCache(in: directory)
            let answer = Self.smallAnswer
            let entries = [("n1", "o/n/1.0.0"), ("n2", "o/n/2.0.0"), ("nx", "o/nx/1.0.0"), ("n_x", "o/n_x/1.0.0"), ("nZx", "o/nZx/1.0.0"), ("nZxb", "o/nZx/1.0.0"), ("nZx2", "o/nZx/2.0.0")]
            for (key, algo) in entries {
                try await cache.store(key: key, algo: algo, status: 200, contentType: "application/json", body: answer, ttlSeconds: 60, now: now)
            }
            func stored() async throws -> [String] {
                try await cache.pool.read { db in try String.fetchAll(db, sql: "SELECT key FROM cache_entry ORDER BY key") }
            }
            func inMemory() -> [String] { entries.map(\.0).filter { cache.lookupInMemory($0, now: now) != nil }.sorted() }
            #expect(try await stored() == ["n1", "n2", "nZx", "nZx2", "nZxb", "n_x", "nx"])
            #expect(inMemory() == ["n1", "n2", "nZx", "nZx2", "nZxb", "n_x", "nx"])

            // Hits: o/nx/1.0.0 twice, o/n_x/1.0.0 once, the rest none; o/nZx/1.0.0 has two entries.
            for key in ["nx", "nx", "n_x"] { #expect(try await cache.lookup(key, now: now) != nil) }
            let top = try await cache.stats(top: 4).topAlgorithms.map { "\($0.algo) \($0.hits) \($0.entries)" }
            #expect(top == ["o/nx/1.0.0 2 1", "o/n_x/1.0.0 1 1", "o/nZx/1.0.0 0 2", "o/n/1.0.0 0 1"])

            #expect(try await cache.purge(algo: "o/n") == 2)
            #expect(try await stored() == ["nZx", "nZx2", "nZxb", "n_x", "nx"])
            #expect(inMemory() == ["nZx", "nZx2", "nZxb", "n_x", "nx"])
            #expect(try await cache.purge(algo: "o/n_x") == 1)
            #expect(try await stored() == ["nZx", "nZx2", "nZxb", "nx"])
            #expect(inMemory() == ["nZx", "nZx2", "nZxb", "nx"])
            #expect(try await cache.purge(algo: "o/nZx/1.0.0") == 2)
            #expect(try await stored() == ["nZx2", "nx"])
            #expect(inMemory() == ["nZx2", "nx"])
            try cache.pool.close()
        }
    }

    /// A purge, and expired entries, are deleted a few MiB per transaction, so that other writers
    /// get the lock between them; expired entries go at most `expiryBatchesPerFlush` batches a flush.
    @Test func purgesAndExpiriesDeleteInBatches() async throws {
        try await withTemporaryDirectory("batched-deletes") { directory in
            let pool = try StateDatabase.open(path: directory.appendingPathComponent("cache.sqlite").path)
            // Batches of 2 MiB: two entries of 1 MiB each.
            let cache = ResponseCache(pool: pool, settings: .init(maxBytes: 1 << 30, memoryBytes: 0, compressMinBytes: .max),
                                      deleteBatchBytes: 2 << 20)
            let commits = DeletingCommits()
            try await pool.write { db in db.add(transactionObserver: commits, extent: .databaseLifetime) }
            let body = ByteBuffer(repeating: UInt8(ascii: "x"), count: 1 << 20)
            // `stats()` flushes, with the clock's time: entries are stored now.
            let now = Date().timeIntervalSince1970
            func store(_ algo: String, _ count: Int, ttl: Int = 3600) async throws {
                for index in 0..<count {
                    try await cache.store(key: "\(algo)#\(index)", algo: algo, status: 200, contentType: "application/json",
                                          body: body, ttlSeconds: ttl, now: now)
                }
            }
            try await store("a/x/1.0.0", 10)
            try await store("b/y/1.0.0", 1)
            #expect(try await cache.purge(algo: "a/x") == 10)
            #expect(commits.commits == 5)
            #expect(try await cache.stats().entries == 1)

            // 10 entries expire together: 4 batches of 2 in the first flush, the rest in the next.
            try await store("c/z/1.0.0", 10, ttl: 10)
            let before = commits.commits
            try await cache.flush(now: now + 20)
            #expect(commits.commits - before == ResponseCache.expiryBatchesPerFlush)
            #expect(try await pool.read { db in try Int.fetchOne(db, sql: "SELECT count(*) FROM cache_entry WHERE algo = 'c/z/1.0.0'") } == 2)
            try await cache.flush(now: now + 20)
            #expect(try await pool.read { db in try Int.fetchOne(db, sql: "SELECT count(*) FROM cache_entry") } == 1)

            // Small entries: at most `deleteBatchRows` a transaction.
            let small = ByteBuffer(string: "{}")
            for index in 0..<(ResponseCache.deleteBatchRows + 1) {
                try await cache.store(key: "s#\(index)", algo: "s/s/1.0.0", status: 200, contentType: "application/json",
                                      body: small, ttlSeconds: 3600, now: now)
            }
            let beforeAll = commits.commits
            #expect(try await cache.purge(algo: nil) == ResponseCache.deleteBatchRows + 2)
            #expect(commits.commits - beforeAll == 2)
            try pool.close()
        }
    }

    /// A restart that lowers `max_bytes` does not make the first store evict the difference in
    /// one transaction: a store over the bound evicts only what it adds, and each flush evicts
    /// `expiryBatchesPerFlush` batches of the rest, least recently used first.
    @Test func aLoweredBoundIsReachedInBatches() async throws {
        try await withTemporaryDirectory("lowered-bound") { directory in
            let pool = try StateDatabase.open(path: directory.appendingPathComponent("cache.sqlite").path)
            let settings = ResponseCache.Settings(maxBytes: 1 << 30, memoryBytes: 0, compressMinBytes: .max)
            let body = ByteBuffer(repeating: UInt8(ascii: "x"), count: 1 << 20)
            let now = Date().timeIntervalSince1970
            let before = ResponseCache(pool: pool, settings: settings, deleteBatchBytes: 2 << 20)
            for index in 0..<12 {
                try await before.store(key: "k\(index)", algo: "a/x/1.0.0", status: 200, contentType: "application/json",
                                       body: body, ttlSeconds: 3600, now: now + Double(index))
            }
            // Restarted with a bound of three entries: 3 MiB, and what each is counted besides.
            var lowered = settings
            lowered.maxBytes = 3 << 20 + 3 * ResponseCache.entryOverhead
            let cache = ResponseCache(pool: pool, settings: lowered, deleteBatchBytes: 2 << 20)
            let commits = DeletingCommits()
            try await pool.write { db in db.add(transactionObserver: commits, extent: .databaseLifetime) }
            func keys() async throws -> [String] {
                try await pool.read { db in try String.fetchAll(db, sql: "SELECT key FROM cache_entry ORDER BY last_access") }
            }
            try await cache.store(key: "new", algo: "a/x/1.0.0", status: 200, contentType: "application/json",
                                  body: body, ttlSeconds: 3600, now: now + 100)
            #expect(try await keys() == (1..<12).map { "k\($0)" } + ["new"])
            #expect(commits.commits == 1)
            // 9 MiB over: 4 batches of 2 MiB, then the last one.
            try await cache.flush(now: now + 200)
            #expect(try await keys() == ["k9", "k10", "k11", "new"])
            #expect(commits.commits == 5)
            try await cache.flush(now: now + 200)
            #expect(try await keys() == ["k10", "k11", "new"])
            #expect(commits.commits == 6)
            try await cache.flush(now: now + 200)
            #expect(commits.commits == 6)
            try pool.close()
        }
    }
}
