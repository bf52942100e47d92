import AlgoTestSupport
import Foundation
import GRDB
import NIOCore
import Testing
@testable import AlgoGate

/// The state file's schema moves forward with the code: a file written by an earlier release
/// opens, and keeps what it holds.
@Suite struct SchemaTests {
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
                let old = try DatabasePool(path: path)
                var migrator = DatabaseMigrator()
                CacheSchema.register(in: &migrator)
                UsageSchema.register(in: &migrator)
                try migrator.migrate(old)
                try await old.write { db in
                    for (key, encoding, body) in [("plain", "identity", answer), ("packed", "gzip", gzip)] {
                        try db.execute(sql: """
                            INSERT INTO cache_entry (key, algo, status, content_type, encoding, body, size, body_sha256,
                                                     created_at, expires_at, last_access, hits)
                            VALUES (?, 'demo/Hello/0.1.0', 200, 'application/json', ?, ?, ?, '', 0, 4e9, 0, 0)
                            """, arguments: [key, encoding, Data(body.readableBytesView), body.readableBytes])
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

    /// A file from before minute counts were kept opens with the day's usage kept and an empty
    /// minute table, so the first minute after the upgrade starts fresh, as it did before.
    @Test func aStateFileFromBeforeMinuteCountsKeepsItsUsage() async throws {
        try await withTemporaryDirectory("schema-minutes") { directory in
            let path = directory.appendingPathComponent("state.sqlite").path
            do {
                let old = try DatabasePool(path: path)
                var migrator = DatabaseMigrator()
                CacheSchema.register(in: &migrator)
                UsageSchema.register(in: &migrator)
                CacheSchema.registerLater(in: &migrator)
                try migrator.migrate(old)
                try await old.write { db in
                    try db.execute(sql: "INSERT INTO usage_day (client, day, requests, bytes_in) VALUES ('team-b', 20833, 7, 21)")
                }
                try old.close()
            }
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
