import Foundation
import GRDB

/// What a state file holds, as `algogate backup` and `algogate restore` report it, and the checks
/// both make of a file.
extension StateBackup {
    /// What a state file holds: a backup's copy, or the file a restore replaced.
    public struct Summary: Sendable, Equatable, CustomStringConvertible {
        public var bytes: Int
        public var cacheEntries: Int
        public var usageRows: Int
        public var clients: Int
        /// The first and last day with usage, `YYYY-MM-DD`; nil when none is recorded.
        public var firstDay: String?
        public var lastDay: String?

        /// `12.3 MiB: 1204 cached answers; usage of 3 clients in 120 client-days (2026-10-23 to 2026-12-06)`.
        public var description: String {
            let usage = usageRows == 0 ? "no usage recorded"
                : "usage of \(clients) client\(clients == 1 ? "" : "s") in \(usageRows) client-day\(usageRows == 1 ? "" : "s")"
                    + (firstDay.map { first in lastDay.map { $0 == first ? " (\(first))" : " (\(first) to \($0))" } ?? "" } ?? "")
            return "\(Formatting.size(bytes)): \(cacheEntries) cached answer\(cacheEntries == 1 ? "" : "s"); \(usage)"
        }
    }

    /// `PRAGMA integrity_check`'s lines: `["ok"]`, or what is wrong.
    static func integrity(_ db: Database) throws -> [String] {
        try String.fetchAll(db, sql: "PRAGMA integrity_check")
    }

    /// What a state file holds, read in `db`.
    static func summary(_ db: Database, bytes: Int) throws -> Summary {
        let entries = try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM cache_entry") ?? 0
        let usage = try Row.fetchOne(db, sql: "SELECT COUNT(*) AS rows, COUNT(DISTINCT client) AS clients, MIN(day) AS first, MAX(day) AS last FROM usage_day")
        let first: Int? = usage?["first"], last: Int? = usage?["last"]
        return Summary(bytes: bytes, cacheEntries: entries, usageRows: usage?["rows"] ?? 0, clients: usage?["clients"] ?? 0,
                       firstDay: first.map(SQLiteUsageStore.dayString), lastDay: last.map(SQLiteUsageStore.dayString))
    }

    static func fileSize(_ path: String) -> Int {
        (try? FileManager.default.attributesOfItem(atPath: path))?[.size] as? Int ?? 0
    }

    /// Whether `db` has the gateway's tables.
    static func isGatewayFile(_ db: Database) throws -> Bool {
        try String.fetchSet(db, sql: "SELECT name FROM sqlite_master WHERE type = 'table'").isSuperset(of: ["cache_entry", "usage_day"])
    }
}
