import Foundation
import GRDB

/// What one client used on one UTC day.
public struct Usage: Sendable, Codable, Equatable {
    public var requests = 0
    public var cacheHits = 0
    public var upstreamCalls = 0
    public var errors = 0
    public var bytesIn = 0
    public var bytesOut = 0
    /// Upstream compute, from the answers' `metadata.duration`.
    public var computeSeconds = 0.0
    /// The seconds the client's calls held the account's upstream slots: an algorithm call's
    /// until its answer was in, a data transfer's until its body was sent. Every call counts,
    /// raw-mode and data calls included, whatever its answer says.
    public var slotSeconds = 0.0

    public init() {}

    enum CodingKeys: String, CodingKey {
        case requests, cacheHits = "cache_hits", upstreamCalls = "upstream_calls", errors
        case bytesIn = "bytes_in", bytesOut = "bytes_out", computeSeconds = "compute_seconds", slotSeconds = "slot_seconds"
    }

    public mutating func add(_ other: Usage) {
        requests += other.requests
        cacheHits += other.cacheHits
        upstreamCalls += other.upstreamCalls
        errors += other.errors
        bytesIn += other.bytesIn
        bytesOut += other.bytesOut
        computeSeconds += other.computeSeconds
        slotSeconds += other.slotSeconds
    }
}

/// One row of a usage report.
public struct UsageRow: Sendable, Codable, Equatable {
    public var client: String
    /// `YYYY-MM-DD` (UTC).
    public var day: String
    public var usage: Usage

    enum CodingKeys: String, CodingKey { case client, day, usage }
}

/// Where usage counters persist: the day's counters and the minute's requests survive a restart.
public protocol UsageStore: Sendable {
    /// Every client's counters for `day` (days since 1970-01-01, UTC), and its requests in
    /// `minute` (minutes since 1970-01-01).
    func load(day: Int, minute: Int64) async throws -> StoredUsage
    /// Adds deltas to the stored counters, in one transaction; minute counts older than the
    /// oldest minute given are dropped.
    func add(_ deltas: [UsageKey: Usage], minutes: [MinuteKey: Int]) async throws
    /// The rows of `days` (days since 1970-01-01), newest first; one client or all.
    func report(days: ClosedRange<Int>, client: String?) async throws -> [UsageRow]
}

public struct UsageKey: Sendable, Hashable {
    public var client: String
    public var day: Int
}

public struct MinuteKey: Sendable, Hashable {
    public var client: String
    /// Minutes since 1970-01-01.
    public var minute: Int64
}

/// What a store holds for the current day and minute, read back at start-up.
public struct StoredUsage: Sendable, Equatable {
    public var days: [String: Usage] = [:]
    /// Requests admitted in the current minute, per client.
    public var minuteRequests: [String: Int] = [:]

    public init(days: [String: Usage] = [:], minuteRequests: [String: Int] = [:]) {
        self.days = days
        self.minuteRequests = minuteRequests
    }
}

/// The `usage_day` table, next to the cache in the gateway's SQLite file.
enum UsageSchema {
    static func register(in migrator: inout DatabaseMigrator) {
        migrator.registerMigration("v2: usage per client per day") { db in
            try db.execute(sql: """
                CREATE TABLE usage_day (
                    client TEXT NOT NULL,
                    day INTEGER NOT NULL,
                    requests INTEGER NOT NULL DEFAULT 0,
                    cache_hits INTEGER NOT NULL DEFAULT 0,
                    upstream_calls INTEGER NOT NULL DEFAULT 0,
                    errors INTEGER NOT NULL DEFAULT 0,
                    bytes_in INTEGER NOT NULL DEFAULT 0,
                    bytes_out INTEGER NOT NULL DEFAULT 0,
                    compute_seconds REAL NOT NULL DEFAULT 0,
                    PRIMARY KEY (client, day)
                )
                """)
        }
    }

    /// After the cache's later migrations: the order they were first released in.
    static func registerLater(in migrator: inout DatabaseMigrator) {
        // The requests of the current minute, so a restart does not start a fresh minute window.
        migrator.registerMigration("v4: requests per client per minute") { db in
            try db.execute(sql: """
                CREATE TABLE usage_minute (
                    client TEXT NOT NULL,
                    minute INTEGER NOT NULL,
                    requests INTEGER NOT NULL DEFAULT 0,
                    PRIMARY KEY (client, minute)
                )
                """)
        }
    }
}

extension UsageSchema {
    /// Before this, an `output=raw` answer whose own text ended in `"duration":1e999` was counted
    /// as that much compute (`ForwardMiddleware.computeSeconds`), and a day holding an infinite
    /// figure made every usage report that included it fail. No real figure is that large.
    static func registerFiniteCompute(in migrator: inout DatabaseMigrator) {
        migrator.registerMigration("v7: compute figures no call could have made reset") { db in
            try db.execute(sql: "UPDATE usage_day SET compute_seconds = 0 WHERE compute_seconds > 1e15 OR compute_seconds < 0")
        }
    }

    /// The seconds each client's calls held upstream slots, per day: compute counts only answers
    /// in Algorithmia's envelope, so without this a team's raw-mode calls and data transfers used
    /// the account's concurrency unseen in its usage. Days before this count none.
    static func registerSlotSeconds(in migrator: inout DatabaseMigrator) {
        migrator.registerMigration("v8: upstream slot seconds per client per day") { db in
            try db.execute(sql: "ALTER TABLE usage_day ADD COLUMN slot_seconds REAL NOT NULL DEFAULT 0")
        }
    }
}

/// `UsageStore` on the gateway's SQLite file. All SQL for `usage_day` and `usage_minute` is here.
public struct SQLiteUsageStore: UsageStore {
    let pool: DatabasePool

    public init(pool: DatabasePool) { self.pool = pool }

    public func load(day: Int, minute: Int64) async throws -> StoredUsage {
        try await pool.read { db in
            var result = StoredUsage()
            for row in try Row.fetchAll(db, sql: "SELECT * FROM usage_day WHERE day = ?", arguments: [day]) {
                result.days[row["client"]] = Self.usage(row)
            }
            for row in try Row.fetchAll(db, sql: "SELECT client, requests FROM usage_minute WHERE minute = ?", arguments: [minute]) {
                result.minuteRequests[row["client"]] = row["requests"]
            }
            return result
        }
    }

    public func add(_ deltas: [UsageKey: Usage], minutes: [MinuteKey: Int]) async throws {
        guard !deltas.isEmpty || !minutes.isEmpty else { return }
        try await pool.write { db in
            if let oldest = minutes.keys.map(\.minute).min() {
                try db.execute(sql: "DELETE FROM usage_minute WHERE minute < ?", arguments: [oldest])
                let statement = try db.makeStatement(sql: """
                    INSERT INTO usage_minute (client, minute, requests) VALUES (?, ?, ?)
                    ON CONFLICT (client, minute) DO UPDATE SET requests = requests + excluded.requests
                    """)
                for (key, requests) in minutes {
                    try statement.execute(arguments: [key.client, key.minute, requests])
                }
            }
            let statement = try db.makeStatement(sql: """
                INSERT INTO usage_day (client, day, requests, cache_hits, upstream_calls, errors, bytes_in, bytes_out, compute_seconds, slot_seconds)
                VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
                ON CONFLICT (client, day) DO UPDATE SET
                    requests = requests + excluded.requests, cache_hits = cache_hits + excluded.cache_hits,
                    upstream_calls = upstream_calls + excluded.upstream_calls, errors = errors + excluded.errors,
                    bytes_in = bytes_in + excluded.bytes_in, bytes_out = bytes_out + excluded.bytes_out,
                    compute_seconds = compute_seconds + excluded.compute_seconds, slot_seconds = slot_seconds + excluded.slot_seconds
                """)
            for (key, usage) in deltas {
                try statement.execute(arguments: [key.client, key.day, usage.requests, usage.cacheHits, usage.upstreamCalls,
                                                  usage.errors, usage.bytesIn, usage.bytesOut, usage.computeSeconds, usage.slotSeconds])
            }
        }
    }

    public func report(days: ClosedRange<Int>, client: String?) async throws -> [UsageRow] {
        try await pool.read { db in
            let rows = try Row.fetchAll(db, sql: """
                SELECT * FROM usage_day WHERE day BETWEEN ? AND ? AND (? IS NULL OR client = ?) ORDER BY day DESC, client
                """, arguments: [days.lowerBound, days.upperBound, client, client])
            return rows.map { UsageRow(client: $0["client"], day: Self.dayString($0["day"]), usage: Self.usage($0)) }
        }
    }

    static func usage(_ row: Row) -> Usage {
        var usage = Usage()
        usage.requests = row["requests"]
        usage.cacheHits = row["cache_hits"]
        usage.upstreamCalls = row["upstream_calls"]
        usage.errors = row["errors"]
        usage.bytesIn = row["bytes_in"]
        usage.bytesOut = row["bytes_out"]
        usage.computeSeconds = row["compute_seconds"]
        usage.slotSeconds = row["slot_seconds"]
        return usage
    }

    /// `YYYY-MM-DD` for a day number (days since 1970-01-01, UTC).
    public static func dayString(_ day: Int) -> String {
        var seconds = time_t(day * 86_400)
        var parts = tm()
        gmtime_r(&seconds, &parts)
        let p = Formatting.padded
        return "\(p(Int(parts.tm_year) + 1900, 4))-\(p(Int(parts.tm_mon) + 1, 2))-\(p(Int(parts.tm_mday), 2))"
    }
}
