import CompressNIO
import Crypto
import Foundation
import GRDB
import NIOCore
import NIOFoundationCompat
import Synchronization

/// The version-pinned response cache: SQLite through GRDB (WAL, one file), with an in-memory hot
/// tier in front. All SQL for the cache lives here, in `CacheEviction.swift` (deleting in batches,
/// evicting), in `CacheOperations.swift` (operators' stats and purges) and in `CacheSchema`.
///
/// Writes happen in transactions, so a crash (even `kill -9` mid-write) leaves either the whole
/// entry or none of it. Hits do not write: access times and hit counts are gathered in memory and
/// applied in batches by `flush()` (every second, by `StateMaintenance`).
public final class ResponseCache: Sendable {
    public struct Settings: Sendable {
        public var maxBytes: Int
        public var memoryBytes: Int
        /// Bodies at least this long are stored gzip-compressed, at this zlib level.
        public var compressMinBytes: Int
        public var compressLevel: Int32
        /// How long past expiry an entry is kept, to answer calls whose upstream fails.
        public var staleIfErrorSeconds: Int

        public init(maxBytes: Int, memoryBytes: Int, compressMinBytes: Int, compressLevel: Int32 = 6, staleIfErrorSeconds: Int = 0) {
            self.maxBytes = maxBytes
            self.memoryBytes = memoryBytes
            self.compressMinBytes = compressMinBytes
            self.compressLevel = compressLevel
            self.staleIfErrorSeconds = staleIfErrorSeconds
        }
    }

    private struct Pending {
        var touches: [String: (lastAccess: Double, hits: Int)] = [:]
        var hits = 0
        var misses = 0
    }

    let pool: DatabasePool
    let settings: Mutex<Settings>
    let hot: HotTier
    private let pending = Mutex(Pending())
    /// The entries stored and their size as `cache.max_bytes` counts it, as the last flush left
    /// them (`size`).
    let sizeRead = Mutex<Size?>(nil)
    /// The last purge (`cache_purge`'s id) whose answers are out of the hot tier.
    private let purgesApplied: Mutex<Int64>
    /// The last purge (`cache_purge`'s id) this process knows of: its own as each begins, other
    /// processes' from the flush that reads them (`purgeMark`).
    let purgesKnown: Mutex<Int64>
    /// How long a purge is kept for other processes to see: far longer than the second between
    /// two flushes.
    static let purgeLogSeconds = 3600.0

    /// How much one transaction of a purge, an expiry or an eviction removes at most: 8 MiB of
    /// entries as `max_bytes` counts them (bodies and `entryOverhead` each), or 2,048 entries.
    /// SQLite frees a body page by page (about 15 s a GiB here, measured with 100,000 entries of
    /// 10 kB), and a writer in another process waits for the lock only `StateDatabase`'s busy
    /// timeout (5 s) before it fails: a purge of a full 1 GiB cache in one transaction, run with
    /// `algogate cache purge` beside a serving gateway, failed the gateway's cache stores and its
    /// usage writes (so every team request got 503 until it ended).
    let deleteBatchBytes: Int

    /// Opens (creating when needed) the state file and brings its schema up to date.
    public convenience init(path: String, settings: Settings) throws {
        self.init(pool: try StateDatabase.open(path: path), settings: settings)
    }

    /// The room held on the file's disk (`DiskReserve`): while it is not held, nothing is stored.
    let reserve: DiskReserve?

    /// `deleteBatchBytes`: how much one transaction of a purge, an expiry or an eviction removes at most.
    public init(pool: DatabasePool, settings: Settings, deleteBatchBytes: Int = 8 << 20, reserve: DiskReserve? = nil) {
        self.pool = pool
        self.reserve = reserve
        self.deleteBatchBytes = deleteBatchBytes
        self.settings = Mutex(settings)
        self.hot = HotTier(capacity: settings.memoryBytes)
        // The hot tier starts empty: only purges from now on concern it.
        let lastPurge = (try? pool.read { db in try Int64.fetchOne(db, sql: "SELECT max(id) FROM cache_purge") }) ?? 0
        self.purgesApplied = Mutex(lastPurge)
        self.purgesKnown = Mutex(lastPurge)
    }

    /// Taken when a call goes upstream, and handed to `store` with its answer: an answer to a
    /// call asked before a purge of its algorithm (or of everything) ended is not stored. The
    /// operator purged because answers made before it are wrong (the data an algorithm reads
    /// changed), and a slow call under way would otherwise put one back for a whole TTL.
    public func purgeMark() -> Int64 { purgesKnown.withLock { $0 } }

    /// Told the bytes a hit read from SQLite will hold in memory (its plain body, and its stored
    /// gzip bytes when it has them) before its body is read, and again once it has been decoded.
    /// Nil when not known yet: a compressed entry stored before plain sizes were recorded.
    typealias Holding = (_ bytes: Int?) async throws -> Void

    /// A fresh answer for `key`, from memory or SQLite; nil when absent or expired. An entry read
    /// from SQLite is first sized, and `holding` told, before its body is read. `lifetime`: the
    /// TTL in force now for the call's algorithm (`CachedAnswer.capped(to:)`).
    func lookup(_ key: String, now: Double, holding: Holding? = nil, lifetime: Int? = nil) async throws -> CachedAnswer? {
        if case .answer(let answer) = try await lookup(key, now: now, holding: holding, within: .any, lifetime: lifetime) { return answer }
        return nil
    }

    /// What a look-up found for a request with bounds of its own (`RequestFreshness`).
    enum Found {
        case answer(CachedAnswer)
        /// A fresh entry the request's bounds do not take (too old for its `max-age`, or not fresh
        /// for its `min-fresh`): not a hit, and not counted as one.
        case refused
        case none
    }

    /// As `lookup(_:now:holding:)`, for a request that bounds the answers it takes: one outside
    /// `bounds` is `.refused`, before its body is read.
    func lookup(_ key: String, now: Double, holding: Holding? = nil, within bounds: RequestFreshness, lifetime: Int? = nil) async throws -> Found {
        if let answer = hot.get(key)?.capped(to: lifetime), answer.expiresAt > now {
            guard bounds.accepts(createdAt: answer.createdAt, expiresAt: answer.expiresAt, now: now) else { return .refused }
            recordHit(key, now: now)
            return .answer(answer)
        }
        let found = try await lookupStored(key, expiringAfter: now, holding: holding, within: bounds, lifetime: lifetime, now: now)
        guard case .answer(let answer) = found else { return found }
        hot.put(key, answer)
        recordHit(key, now: now)
        return .answer(answer.capped(to: lifetime))
    }

    /// A fresh answer for `key` from the hot tier alone, without counting a hit: the caller
    /// counts one (`recordHit`) only if it answers with it (`CachedHits`).
    func lookupInMemory(_ key: String, now: Double, lifetime: Int? = nil) -> CachedAnswer? {
        guard let answer = hot.get(key)?.capped(to: lifetime), answer.expiresAt > now else { return nil }
        return answer
    }

    /// An answer for `key` that is fresh or expired less than `staleIfErrorSeconds` ago, and
    /// within the request's `bounds`; nil without one (or when stale answers are off). Only for
    /// calls whose upstream failed.
    func lookupStale(_ key: String, now: Double, holding: Holding? = nil, within bounds: RequestFreshness = .any, lifetime: Int? = nil) async throws -> CachedAnswer? {
        let window = Double(settings.withLock { $0.staleIfErrorSeconds })
        guard window > 0 else { return nil }
        if let answer = hot.get(key)?.capped(to: lifetime), answer.expiresAt > now - window {
            guard bounds.accepts(createdAt: answer.createdAt, expiresAt: answer.expiresAt, now: now) else { return nil }
            recordHit(key, now: now)
            return answer
        }
        guard case .answer(let answer) = try await lookupStored(key, expiringAfter: now - window, holding: holding, within: bounds,
                                                                lifetime: lifetime, now: now) else {
            return nil
        }
        recordHit(key, now: now)
        return answer.capped(to: lifetime)
    }

    /// The entry for `key` expiring after `limit` (its expiry capped by `lifetime`: see
    /// `CachedAnswer.capped(to:)`), read from SQLite and decoded, as stored (uncapped); `.refused`
    /// when it is outside `bounds` at `now`. With `holding`, its sizes are read first and `holding`
    /// told, so that its room is held (or waited for) before its body is read and inflated.
    private func lookupStored(_ key: String, expiringAfter limit: Double, holding: Holding?, within bounds: RequestFreshness,
                              lifetime: Int?, now: Double) async throws -> Found {
        let fresh = { @Sendable in Column("key") == key && Column("expires_at") > limit }
        if let holding {
            let sizes = try await pool.read { db -> (size: Int, plainSize: Int?, gzip: Bool, createdAt: Double, expiresAt: Double)? in
                try Row.fetchOne(db, CacheEntry.select(Column("size"), Column("plain_size"), Column("encoding"), Column("created_at"), Column("expires_at"))
                    .filter(fresh()))
                    .map { ($0["size"], $0["plain_size"], $0["encoding"] == "gzip", $0["created_at"], $0["expires_at"]) }
            }
            guard let sizes else { return .none }
            let expiry = CachedAnswer.expiry(createdAt: sizes.createdAt, expiresAt: sizes.expiresAt, lifetime: lifetime)
            guard expiry > limit else { return .none }
            guard bounds.accepts(createdAt: sizes.createdAt, expiresAt: expiry, now: now) else { return .refused }
            try await holding(sizes.gzip ? sizes.plainSize.map { $0 + sizes.size } : sizes.size)
        }
        let entry = try await pool.read { db in try CacheEntry.filter(fresh()).fetchOne(db) }
        guard let entry else { return .none }
        let expiry = CachedAnswer.expiry(createdAt: entry.createdAt, expiresAt: entry.expiresAt, lifetime: lifetime)
        guard expiry > limit else { return .none }
        // (Checked again: another call may have stored a newer answer meanwhile.)
        guard bounds.accepts(createdAt: entry.createdAt, expiresAt: expiry, now: now) else { return .refused }
        let answer: CachedAnswer
        do {
            answer = try await BodyWork.run(over: entry.size) { try Self.decode(entry) }
        } catch let corrupt as CorruptEntry {
            // A miss: the call goes upstream, and its answer takes the entry's place.
            try? await pool.write { db in
                try db.execute(sql: "DELETE FROM cache_entry WHERE key = ? AND body_sha256 = ?", arguments: [key, entry.bodySHA256])
            }
            discarded.withLock { $0.total += 1; $0.recent.append((entry.algo, corrupt.reason)) }
            return .none
        }
        try await holding?(answer.size)
        return .answer(answer)
    }

    /// An entry whose body does not read back as it was stored: its gzip bytes do not inflate,
    /// or what they inflate to (or its plain bytes) has not the SHA-256 stored beside them. The
    /// disk, or something beside the gateway, changed the file; a transaction never leaves one.
    struct CorruptEntry: Error {
        let reason: String
    }

    /// Entries found corrupt and deleted: how many since start, and those not yet logged.
    private let discarded = Mutex<(total: Int, recent: [(algo: String, reason: String)])>((0, []))

    /// Corrupt entries deleted since start (`algogate_cache_corrupt_entries_total`).
    var corruptEntriesTotal: Int { discarded.withLock { $0.total } }

    /// The corrupt entries deleted since the last call, to be logged (`StateMaintenance`).
    func takeCorruptEntries() -> [(algo: String, reason: String)] {
        discarded.withLock { state in
            defer { state.recent = [] }
            return state.recent
        }
    }

    /// Stores an answer, then evicts least recently used entries while over `max_bytes`. Returns
    /// whether it was stored (one larger than `max_bytes` is not, nor one to a call asked before
    /// a purge that covers it ended, `askedAt`: see `purgeMark`), and the gzip bytes when it was
    /// compressed to be stored.
    @discardableResult
    func store(key: String, algo: String, status: Int, contentType: String, body: ByteBuffer, ttlSeconds: Int,
               now: Double, askedAt mark: Int64? = nil) async throws -> (stored: Bool, gzipBody: ByteBuffer?) {
        if let reserve, !reserve.isHeld { throw DiskFull() }
        let limits = settings.withLock { $0 }
        let (stored, entry) = try await BodyWork.run(over: body.readableBytes) {
            let compress = body.readableBytes >= limits.compressMinBytes
            let stored = compress ? try Deflater.compress(body, coding: .gzip, level: limits.compressLevel) : body
            return (stored, CacheEntry(
                key: key, algo: algo, status: status, contentType: contentType, encoding: compress ? "gzip" : "identity",
                body: Data(stored.readableBytesView), size: stored.readableBytes, plainSize: body.readableBytes,
                bodySHA256: Formatting.hex(SHA256.hash(data: body.readableBytesView)),
                createdAt: now, expiresAt: now + Double(ttlSeconds), lastAccess: now, hits: 0))
        }
        let gzipBody = entry.encoding == "gzip" ? stored : nil
        guard entry.size + Self.entryOverhead <= limits.maxBytes else { return (false, gzipBody) }
        let known = purgesKnown.withLock { $0 }
        let inserted = try await writeGivingRoomBack { db in
            if let mark, try Self.purged(algo, since: mark, db) { return false }
            // Over the bound already (it was lowered: a restart), a store evicts only what it adds,
            // and `flush` evicts the rest in batches, rather than this call (and every write
            // behind it) waiting for all of it in one transaction.
            let before = try Self.countedBytes(db)
            try CacheEntry.deleteOne(db, key: key)
            try entry.insert(db)
            try Self.evict(db, maxBytes: max(limits.maxBytes, before))
            return true
        }
        guard inserted else { return (false, gzipBody) }
        hot.put(key, CachedAnswer(algo: algo, status: status, contentType: contentType, body: body,
                                  gzipBody: gzipBody, createdAt: now, expiresAt: entry.expiresAt))
        // A purge that began after the entry went into SQLite has deleted it there, and may have
        // cleared the hot tier before the line above put it back.
        if purgesKnown.withLock({ $0 }) != known { hot.remove { stored, _ in stored == key } }
        return (true, gzipBody)
    }

    /// A store refused while the file's disk is full (`DiskReserve`), or the one that found it so.
    struct DiskFull: Error, CustomStringConvertible {
        var description: String { "the disk holding cache.path is full: the cache stores nothing until it has room" }
    }

    /// `pool.write`, giving the reserve's room back to the disk when the write finds it full, so
    /// that the usage counters, written next, have it.
    private func writeGivingRoomBack<T: Sendable>(_ updates: @escaping @Sendable (Database) throws -> T) async throws -> T {
        do {
            return try await pool.write(updates)
        } catch where DiskReserve.isDiskFull(error) {
            reserve?.release()
            throw DiskFull()
        }
    }

    /// Whether a purge of `algo` (`owner/name/version`), of its algorithm, or of everything was
    /// recorded after purge `mark`.
    static func purged(_ algo: String, since mark: Int64, _ db: Database) throws -> Bool {
        let algorithm = algo.split(separator: "/", omittingEmptySubsequences: false).prefix(2).joined(separator: "/")
        return try Bool.fetchOne(db, sql: "SELECT EXISTS (SELECT 1 FROM cache_purge WHERE id > ? AND (algo IS NULL OR algo IN (?, ?)))",
                                 arguments: [mark, algo, algorithm]) ?? false
    }

    func recordMiss() { pending.withLock { $0.misses += 1 } }

    /// Counts a hit on `key` and its access time (applied to SQLite by `flush`).
    func recordHit(_ key: String, now: Double) {
        pending.withLock { pending in
            pending.hits += 1
            let hits = (pending.touches[key]?.hits ?? 0) + 1
            pending.touches[key] = (now, hits)
        }
    }

    /// Applies gathered access times and counters, drops expired entries (those that may still
    /// answer a failed call are kept for `staleIfErrorSeconds` more), and takes out of the hot
    /// tier what purges since the last flush deleted: those of other processes on the file
    /// (`algogate cache purge` beside a serving gateway, which cannot reach this memory), and this
    /// process's own a second time, which changes nothing that matters (an answer stored since
    /// is read from SQLite again).
    public func flush(now: Double) async throws {
        let batch = pending.withLock { pending in
            let batch = pending
            pending = Pending()
            return batch
        }
        let touches = batch.touches.map { ($0.key, $0.value.lastAccess, $0.value.hits) }
        let (keepUntil, maxBytes) = settings.withLock { (now - Double($0.staleIfErrorSeconds), $0.maxBytes) }
        let applied = purgesApplied.withLock { $0 }
        let (stored, purges) = try await pool.write { db in
            let update = try db.makeStatement(sql: "UPDATE cache_entry SET last_access = max(last_access, ?), hits = hits + ? WHERE key = ?")
            for (key, lastAccess, hits) in touches { try update.execute(arguments: [lastAccess, hits, key]) }
            try db.execute(sql: "UPDATE cache_totals SET hits = hits + ?, misses = misses + ? WHERE id = 1", arguments: [batch.hits, batch.misses])
            try db.execute(sql: "DELETE FROM cache_purge WHERE at < ?", arguments: [now - Self.purgeLogSeconds])
            let purges = try Row.fetchAll(db, sql: "SELECT id, algo, begins FROM cache_purge WHERE id > ? ORDER BY id", arguments: [applied])
                .map { (id: $0["id"] as Int64, algo: $0["algo"] as String?, begins: $0["begins"] as Bool) }
            return (try Self.countedBytes(db), purges)
        }
        // Known before its answers leave memory: a call that misses once they have gone went
        // upstream after the purge, and stores its answer. A purge still running (its beginning
        // alone) leaves memory as it is: answers leave once its entries are gone from the file.
        if let last = purges.last?.id { purgesKnown.withLock { $0 = max($0, last) } }
        for purge in purges where !purge.begins { removeFromMemory(purge.algo) }
        if let last = purges.last?.id { purgesApplied.withLock { $0 = max($0, last) } }
        // Entries that expired together (a burst stored a TTL ago) go a few batches a second,
        // rather than in one transaction that would hold every other write back.
        _ = try await delete(where: "expires_at <= ?", arguments: [keepUntil], batches: Self.expiryBatchesPerFlush)
        if stored > maxBytes { try await evictOverBound(batches: Self.expiryBatchesPerFlush) }
        hot.remove { _, answer in answer.expiresAt <= now }
        let size = try await pool.read { db in try Self.size(db) }
        sizeRead.withLock { $0 = size }
    }

    /// The entry's answer, its body checked against the SHA-256 stored with it (`CorruptEntry`).
    static func decode(_ entry: CacheEntry) throws -> CachedAnswer {
        let stored = ByteBuffer(data: entry.body)
        var body = stored
        if entry.encoding == "gzip" {
            do {
                body = try body.decompress(with: .gzip())
            } catch {
                throw CorruptEntry(reason: "its gzip bytes do not inflate")
            }
        }
        guard Formatting.hex(SHA256.hash(data: body.readableBytesView)) == entry.bodySHA256 else {
            throw CorruptEntry(reason: "its body has not the SHA-256 stored with it")
        }
        return CachedAnswer(algo: entry.algo, status: entry.status, contentType: entry.contentType, body: body,
                            gzipBody: entry.encoding == "gzip" ? stored : nil, createdAt: entry.createdAt, expiresAt: entry.expiresAt)
    }
}
