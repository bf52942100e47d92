import AlgoTestSupport
import Crypto
import Foundation
import GRDB
import NIOCore
import Testing
@testable import AlgoGate

/// The state file's schema moves forward with the code: a file written by an earlier release
/// opens, and keeps what it holds.
@Suite struct SchemaTests {
    /// The SHA-256 every release stored beside an entry's plain body.
    static func sha256(of body: ByteBuffer) -> String { Formatting.hex(SHA256.hash(data: body.readableBytesView)) }

    /// A state file as a release before this one left it: the first `releasedSteps` of
    /// `StateDatabase`'s migration steps.
    static func stateFile(at path: String, releasedSteps: Int) throws -> DatabasePool {
        let pool = try DatabasePool(path: path)
        var migrator = DatabaseMigrator()
        for step in StateDatabase.schemaSteps.prefix(releasedSteps) { step(&migrator) }
        try migrator.migrate(pool)
        return pool
    }

    /// Leaves a state file at `path` as the first `releasedSteps` migration steps made it, holding
    /// what `sql` writes.
    static func writeStateFile(at path: String, releasedSteps: Int, _ sql: String, arguments: StatementArguments = []) async throws {
        let old = try stateFile(at: path, releasedSteps: releasedSteps)
        try await old.write { db in try db.execute(sql: sql, arguments: arguments) }
        try old.close()
    }

    /// A day whose compute an `output=raw` answer made infinite (before only the envelope's
    /// metadata was read) opens reset to 0, its other counts kept, and is reported again.
    @Test func anInfiniteComputeFigureIsResetAsTheFileOpens() async throws {
        try await withTemporaryDirectory("schema-compute") { directory in
            let path = directory.appendingPathComponent("state.sqlite").path
            // As the six steps before v7 left it.
            try await Self.writeStateFile(at: path, releasedSteps: 6, """
                INSERT INTO usage_day (client, day, requests, upstream_calls, compute_seconds)
                VALUES ('team-b', 20000, 3, 3, ?), ('team-a', 20000, 2, 2, 1.5)
                """, arguments: [Double.infinity])
            let pool = try StateDatabase.open(path: path)
            let rows = try await SQLiteUsageStore(pool: pool).report(days: 20000...30000, client: nil)
            #expect(rows.map(\.client).sorted() == ["team-a", "team-b"])
            #expect(rows.first { $0.client == "team-b" }.map { ($0.usage.requests, $0.usage.computeSeconds) }! == (3, 0))
            #expect(rows.first { $0.client == "team-a" }?.usage.computeSeconds == 1.5)
            try pool.close()
        }
    }

    /// A file a later release has migrated further opens with this release: a rollback after an
    /// upgrade keeps the cache and the day's counters. This release ignores a migration it does
    /// not know, and every one it knows adds (a table, a column with a default) without changing
    /// what earlier releases read and write.
    @Test func aFileFromALaterReleaseOpensAndServes() async throws {
        try await withTemporaryDirectory("schema-later") { directory in
            let path = directory.appendingPathComponent("state.sqlite").path
            do {
                let later = try DatabasePool(path: path)
                var migrator = DatabaseMigrator()
                for step in StateDatabase.schemaSteps { step(&migrator) }
                migrator.registerMigration("v99: a later release's") { db in
                    try db.execute(sql: "ALTER TABLE usage_day ADD COLUMN later_figure REAL NOT NULL DEFAULT 0")
                    try db.execute(sql: "ALTER TABLE cache_entry ADD COLUMN later_field TEXT")
                    try db.execute(sql: "CREATE TABLE later_table (id INTEGER PRIMARY KEY)")
                }
                try migrator.migrate(later)
                try later.close()
            }
            let pool = try StateDatabase.open(path: path)
            let store = SQLiteUsageStore(pool: pool)
            var used = Usage()
            used.requests = 2
            used.slotSeconds = 0.5
            try await store.add([UsageKey(client: "team-a", day: 20000): used], minutes: [MinuteKey(client: "team-a", minute: 28_800_000): 2])
            #expect(try await store.report(days: 20000...30000, client: nil) == [UsageRow(client: "team-a", day: "2024-10-04", usage: used)])
            let cache = ResponseCache(pool: pool, settings: .init(maxBytes: 1 << 20, memoryBytes: 0, compressMinBytes: .max))
            let now = Date().timeIntervalSince1970
            let answer = ByteBuffer(string: #"{"result":"kept"}"#)
            #expect(try await cache.store(key: "k", algo: "demo/Hello/0.1.0", status: 200, contentType: "application/json", body: answer,
                                          ttlSeconds: 60, now: now).stored)
            #expect(try await cache.lookup("k", now: now)?.body == answer)
            try pool.close()
        }
    }

    /// A file from before usage counted slot seconds (v8) opens with its days kept, their slot
    /// seconds 0, and counts them from then on, for those days too.
    @Test func aDayFromBeforeSlotSecondsKeepsItsCountsAndGainsThem() async throws {
        try await withTemporaryDirectory("schema-slots") { directory in
            let path = directory.appendingPathComponent("state.sqlite").path
            try await Self.writeStateFile(at: path, releasedSteps: 7, """
                INSERT INTO usage_day (client, day, requests, cache_hits, upstream_calls, errors, bytes_in, bytes_out, compute_seconds)
                VALUES ('team-a', 20000, 5, 1, 4, 1, 300, 4000, 2.5)
                """)
            let pool = try StateDatabase.open(path: path)
            let store = SQLiteUsageStore(pool: pool)
            var before = Usage()
            (before.requests, before.cacheHits, before.upstreamCalls, before.errors) = (5, 1, 4, 1)
            (before.bytesIn, before.bytesOut, before.computeSeconds) = (300, 4000, 2.5)
            #expect(try await store.report(days: 20000...30000, client: nil) == [UsageRow(client: "team-a", day: "2024-10-04", usage: before)])
            var delta = Usage()
            delta.requests = 1
            delta.upstreamCalls = 1
            delta.slotSeconds = 0.75
            try await store.add([UsageKey(client: "team-a", day: 20000): delta], minutes: [:])
            before.add(delta)
            #expect(try await store.report(days: 20000...30000, client: nil) == [UsageRow(client: "team-a", day: "2024-10-04", usage: before)])
            try pool.close()
        }
    }

    /// A file from before entries recorded their plain size opens with every entry kept: a plain
    /// entry's plain size is its stored size, and a compressed entry is read as before (its room
    /// is held at the most it could be until it has been inflated).
    @Test func aStateFileFromBeforePlainSizesKeepsItsEntries() async throws {
        try await withTemporaryDirectory("schema") { directory in
            let path = directory.appendingPathComponent("state.sqlite").path
            let answer = ByteBuffer(string: #"{"result":""# + String(repeating: "y", count: 5000) + #""}"#)
            let gzip = try Deflater.compress(answer, coding: .gzip, level: 6)
            do {
                // The schema as the release before this one left it.
                let old = try Self.stateFile(at: path, releasedSteps: 2)
                try await old.write { db in
                    for (key, encoding, body) in [("plain", "identity", answer), ("packed", "gzip", gzip)] {
                        try db.execute(sql: """
                            INSERT INTO cache_entry (key, algo, status, content_type, encoding, body, size, body_sha256,
                                                     created_at, expires_at, last_access, hits)
                            VALUES (?, 'demo/Hello/0.1.0', 200, 'application/json', ?, ?, ?, ?, 0, 4e9, 0, 0)
                            """, arguments: [key, encoding, Data(body.readableBytesView), body.readableBytes, Self.sha256(of: answer)])
                    }
                }
                try old.close()
            }

            let pool = try StateDatabase.open(path: path)
            let sizes = try await pool.read { db in
                try Row.fetchAll(db, sql: "SELECT key, size, plain_size FROM cache_entry ORDER BY key")
                    .map { row -> [String: Int?] in [row["key"]: row["plain_size"]] }
            }
            #expect(sizes == [["packed": nil], ["plain": answer.readableBytes]])
            let cache = ResponseCache(pool: pool, settings: .init(maxBytes: 1 << 20, memoryBytes: 0, compressMinBytes: 1024))
            var told: [Int?] = []
            let packed = try await cache.lookup("packed", now: 1, holding: { told.append($0) })
            #expect(packed?.body == answer)
            #expect(packed?.gzipBody == gzip)
            #expect(told == [nil, answer.readableBytes + gzip.readableBytes])
            told = []
            let plain = try await cache.lookup("plain", now: 1, holding: { told.append($0) })
            #expect(plain?.body == answer)
            #expect(told == [answer.readableBytes, answer.readableBytes])
            try pool.close()
        }
    }

    /// A file from before purges were logged opens with its entries kept, and from then on a purge
    /// through one pool on it (another process: `algogate cache purge`) leaves the hot tier of a
    /// cache on another pool (the serving gateway) at that cache's next flush, and only the
    /// answers it named.
    @Test func aStateFileFromBeforePurgeLogsKeepsItsEntriesAndLogsPurges() async throws {
        try await withTemporaryDirectory("schema-purges") { directory in
            let path = directory.appendingPathComponent("state.sqlite").path
            let answer = ByteBuffer(string: #"{"result":"kept"}"#)
            try await Self.writeStateFile(at: path, releasedSteps: 4, """
                INSERT INTO cache_entry (key, algo, status, content_type, encoding, body, size, plain_size, body_sha256,
                                         created_at, expires_at, last_access, hits)
                VALUES ('old', 'demo/Hello/0.1.0', 200, 'application/json', 'identity', ?, ?, ?, ?, 0, 4e9, 0, 0)
                """, arguments: [Data(answer.readableBytesView), answer.readableBytes, answer.readableBytes, Self.sha256(of: answer)])
            let now = Date().timeIntervalSince1970
            let settings = ResponseCache.Settings(maxBytes: 1 << 20, memoryBytes: 1 << 20, compressMinBytes: 1024)
            let serving = ResponseCache(pool: try StateDatabase.open(path: path), settings: settings)
            #expect(try await serving.lookup("old", now: now)?.body == answer)
            for (key, algo) in [("echo", "util/Echo/1.0.0"), ("hello-2", "demo/Hello/0.2.0")] {
                try await serving.store(key: key, algo: algo, status: 200, contentType: "application/json", body: answer, ttlSeconds: 60, now: now)
            }
            #expect(serving.lookupInMemory("old", now: now) != nil && serving.lookupInMemory("hello-2", now: now) != nil)

            let beside = ResponseCache(pool: try StateDatabase.open(path: path), settings: settings)
            #expect(try await beside.purge(algo: "demo/Hello") == 2)
            #expect(serving.lookupInMemory("old", now: now) != nil, "another pool's purge reaches this memory only at its flush")
            try await serving.flush(now: now)
            #expect(serving.lookupInMemory("old", now: now) == nil && serving.lookupInMemory("hello-2", now: now) == nil)
            #expect(serving.lookupInMemory("echo", now: now)?.body == answer, "an answer the purge did not name stays")
            // Applied once: an answer stored after the purge stays in memory at the next flush.
            try await serving.store(key: "old", algo: "demo/Hello/0.1.0", status: 200, contentType: "application/json", body: answer,
                                    ttlSeconds: 60, now: now)
            try await serving.flush(now: now)
            #expect(serving.lookupInMemory("old", now: now) != nil)

            #expect(try await beside.purge(algo: nil) == 2)
            try await serving.flush(now: now)
            #expect(serving.hot.bytes == 0)
            // A purge is kept an hour for the processes that look every second, then forgotten.
            try await serving.flush(now: Date().timeIntervalSince1970 + ResponseCache.purgeLogSeconds + 1)
            #expect(try await serving.pool.read { try Int.fetchOne($0, sql: "SELECT count(*) FROM cache_purge") } == 0)
            try serving.pool.close()
            try beside.pool.close()
        }
    }

    /// A file from before minute counts were kept opens with the day's usage kept and an empty
    /// minute table, so the first minute after the upgrade starts fresh, as it did before.
    @Test func aStateFileFromBeforeMinuteCountsKeepsItsUsage() async throws {
        try await withTemporaryDirectory("schema-minutes") { directory in
            let path = directory.appendingPathComponent("state.sqlite").path
            try await Self.writeStateFile(at: path, releasedSteps: 3, "INSERT INTO usage_day (client, day, requests, bytes_in) VALUES ('team-b', 20833, 7, 21)")
            let pool = try StateDatabase.open(path: path)
            let store = SQLiteUsageStore(pool: pool)
            var expected = Usage()
            expected.requests = 7
            expected.bytesIn = 21
            #expect(try await store.load(day: 20833, minute: 30_000_000) == StoredUsage(days: ["team-b": expected]))
            try await store.add([UsageKey(client: "team-b", day: 20833): expected], minutes: [MinuteKey(client: "team-b", minute: 30_000_000): 7])
            expected.requests = 14
            expected.bytesIn = 42
            #expect(try await store.load(day: 20833, minute: 30_000_000) == StoredUsage(days: ["team-b": expected], minuteRequests: ["team-b": 7]))
            try pool.close()
        }
    }
}
