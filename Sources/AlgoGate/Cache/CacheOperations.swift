import Foundation
import GRDB

// What operators ask of the cache (`algogate cache stats|purge`, `/_admin/cache`).
extension ResponseCache {
    public struct Stats: Sendable, Codable, Equatable {
        public var entries: Int
        public var bytes: Int
        public var hits: Int
        public var misses: Int
        public var hitRatio: Double
        public var topAlgorithms: [AlgoUsage]

        public struct AlgoUsage: Sendable, Codable, Equatable {
            public var algo: String
            public var entries: Int
            public var hits: Int
            public var bytes: Int
        }

        enum CodingKeys: String, CodingKey {
            case entries, bytes, hits, misses, hitRatio = "hit_ratio", topAlgorithms = "top_algorithms"
        }
    }

    /// Totals as of now: gathered counters are flushed first, so nothing is counted twice or
    /// missed between memory and the database.
    public func stats(top: Int = 10) async throws -> Stats {
        try await flush(now: Date().timeIntervalSince1970)
        return try await pool.read { db in
            let totals = try Row.fetchOne(db, sql: "SELECT entries, bytes, hits, misses FROM cache_totals WHERE id = 1")!
            let hits: Int = totals["hits"]
            let misses: Int = totals["misses"]
            let rows = try Row.fetchAll(db, sql: """
                SELECT algo, count(*) AS entries, sum(hits) AS hits, sum(size) AS bytes
                FROM cache_entry GROUP BY algo ORDER BY sum(hits) DESC, count(*) DESC, algo LIMIT ?
                """, arguments: [top])
            return Stats(
                entries: totals["entries"], bytes: totals["bytes"], hits: hits, misses: misses,
                hitRatio: hits + misses == 0 ? 0 : Double(hits) / Double(hits + misses),
                topAlgorithms: rows.map { .init(algo: $0["algo"], entries: $0["entries"], hits: $0["hits"], bytes: $0["bytes"]) })
        }
    }

    /// Deletes entries of one algorithm (`owner/name`) or one version (`owner/name/version`), or
    /// everything when `algo` is nil; returns how many went.
    /// Deleted in batches (see `delete`), so that a serving gateway's writes go on meanwhile.
    public func purge(algo: String?) async throws -> Int {
        // Recorded as it begins too: from here until it has ended, no answer to a call asked
        // before is stored (`purgeMark`), in this process or another on the file. (A call asked
        // while it runs is not stored either: its entry might have gone with a later batch.)
        let begun = try await pool.write { db in
            try db.execute(sql: "INSERT INTO cache_purge (algo, at, begins) VALUES (?, ?, 1)", arguments: [algo, Date().timeIntervalSince1970])
            return db.lastInsertedRowID
        }
        purgesKnown.withLock { $0 = max($0, begun) }
        let removed = if let algo {
            try await delete(where: "algo = ? OR algo LIKE ? ESCAPE '\\'", arguments: [algo, Self.likeEscaped(algo) + "/%"])
        } else {
            try await delete(where: "1", arguments: [])
        }
        // Logged once its entries are gone from SQLite: a process that applies it then cannot
        // read any of them back into memory.
        let ended = try await pool.write { db in
            try db.execute(sql: "INSERT INTO cache_purge (algo, at) VALUES (?, ?)", arguments: [algo, Date().timeIntervalSince1970])
            return db.lastInsertedRowID
        }
        // Calls that go upstream from now on store their answers again (other processes: from
        // their next flush).
        purgesKnown.withLock { $0 = max($0, ended) }
        removeFromMemory(algo)
        return removed
    }

    /// Takes the answers of `algo` (`owner/name` or `owner/name/version`), or all, out of the hot tier.
    func removeFromMemory(_ algo: String?) {
        guard let algo else { return hot.removeAll() }
        hot.remove { _, answer in answer.algo == algo || answer.algo.hasPrefix(algo + "/") }
    }

    /// `text` for a LIKE pattern with `ESCAPE '\'`, escaped scalar by scalar (a `%` joined to a
    /// combining mark is one `Character`, which a `Character` search would pass by).
    static func likeEscaped(_ text: String) -> String {
        var escaped = String.UnicodeScalarView()
        for scalar in text.unicodeScalars {
            if scalar == "\\" || scalar == "%" || scalar == "_" { escaped.append("\\") }
            escaped.append(scalar)
        }
        return String(escaped)
    }
}
