import GRDB

/// How the cache gives back room: expired and purged entries deleted in batches, and the least
/// recently used evicted while the file is over `cache.max_bytes`.
extension ResponseCache {
    static let deleteBatchRows = 2048
    /// The pause between two batches: longer than the longest sleep of SQLite's busy handler
    /// (100 ms), so that a writer in another process waiting for the lock polls within it.
    static let deletePause = Duration.milliseconds(110)
    static let expiryBatchesPerFlush = 4

    /// Deletes the entries `condition` selects, `deleteBatchBytes` (and at least one entry) per
    /// transaction (`inBatches`); stops after `batches`. Returns how many went.
    func delete(where condition: String, arguments: StatementArguments, batches: Int = .max) async throws -> Int {
        try await inBatches(batches) { db, limit in
            let rows = try Row.fetchAll(db, sql: "SELECT key, size FROM cache_entry WHERE \(condition) LIMIT \(Self.deleteBatchRows)",
                                        arguments: arguments)
            let (deleted, _) = try Self.delete(rows, upTo: limit, in: db)
            return (deleted, deleted < rows.count || rows.count == Self.deleteBatchRows)
        }
    }

    /// Evicts least recently used entries while the cache is over `max_bytes` (after a restart that
    /// lowered it), `deleteBatchBytes` per transaction (`inBatches`); stops after `batches`.
    func evictOverBound(batches: Int) async throws {
        let maxBytes = settings.withLock { $0.maxBytes }
        _ = try await inBatches(batches) { db, limit in
            let bytes = try Self.countedBytes(db)
            guard bytes > maxBytes else { return (0, false) }
            let rows = try Row.fetchAll(db, sql: "SELECT key, size FROM cache_entry ORDER BY last_access LIMIT \(Self.deleteBatchRows)")
            let (deleted, freed) = try Self.delete(rows, upTo: min(bytes - maxBytes, limit), in: db)
            return (deleted, deleted > 0 && bytes - freed > maxBytes)
        }
    }

    /// Runs `transaction` (given the bytes one may delete; it says how many entries it deleted and
    /// whether more remain) up to `batches` times, each its own transaction, pausing `deletePause`
    /// between them so that other writers, in this process (GRDB's writer serves them in turn) or
    /// another, get the lock. Returns how many entries went.
    private func inBatches(_ batches: Int,
                           _ transaction: @escaping @Sendable (Database, _ limit: Int) throws -> (deleted: Int, more: Bool)) async throws -> Int {
        var removed = 0
        for batch in 0..<batches {
            // Not cut short by cancellation (a shutdown during a flush): the batches go on, unpaused.
            if batch > 0 { try? await Task.sleep(for: Self.deletePause) }
            let limit = deleteBatchBytes
            let (deleted, more) = try await pool.write { db in try transaction(db, limit) }
            removed += deleted
            if !more { break }
        }
        return removed
    }

    /// Deletes `rows` (`key`, `size`) in order, at least one, until `bytes` have gone (as
    /// `max_bytes` counts them: `entryOverhead` each besides); returns how many went and their bytes.
    private static func delete(_ rows: [Row], upTo bytes: Int, in db: Database) throws -> (count: Int, bytes: Int) {
        let statement = try db.makeStatement(sql: "DELETE FROM cache_entry WHERE key = ?")
        var count = 0
        var freed = 0
        for row in rows where count == 0 || freed < bytes {
            try statement.execute(arguments: [row["key"] as String])
            freed += row["size"] as Int + entryOverhead
            count += 1
        }
        return (count, freed)
    }

    /// What an entry takes in the file besides its body, counted against `cache.max_bytes`: its
    /// key, other fields and SHA-256, its entries in the four indexes, and the B-tree pages' slack.
    /// Measured: 382 bytes an entry, the file's pages less its bodies over 38,000 entries of a
    /// 15-character algorithm (a longer name takes twice its extra length). Counted by bodies
    /// alone, a cache of 175-byte answers took a file 3.2 times `max_bytes`.
    public static let entryOverhead = 400

    /// What the cache holds: its entries, and their size as `cache.max_bytes` counts it (the
    /// bodies, and `entryOverhead` an entry).
    public struct Size: Sendable, Equatable {
        public let entries: Int
        public let bytes: Int
    }

    /// The cache's size as the last flush (each second) left it, for the metrics: read with the
    /// flush, so a scrape never waits for the file. Nil before the first flush.
    public var size: Size? { sizeRead.withLock { $0 } }

    static func size(_ db: Database) throws -> Size {
        let row = try Row.fetchOne(db, sql: "SELECT entries, bytes FROM cache_totals WHERE id = 1")
        let entries: Int = row?["entries"] ?? 0, bodies: Int = row?["bytes"] ?? 0
        return Size(entries: entries, bytes: bodies + entries * entryOverhead)
    }

    /// The cache's size as `cache.max_bytes` bounds it: the bodies, and `entryOverhead` an entry.
    static func countedBytes(_ db: Database) throws -> Int {
        try size(db).bytes
    }

    static func evict(_ db: Database, maxBytes: Int) throws {
        while try countedBytes(db) > maxBytes {
            // One at a time, oldest first: an insert overflows by one entry's size, so this runs a
            // handful of indexed deletes at most.
            try db.execute(sql: "DELETE FROM cache_entry WHERE key = (SELECT key FROM cache_entry ORDER BY last_access LIMIT 1)")
            if db.changesCount == 0 { break }
        }
    }
}
