import Foundation
import GRDB

/// One stored algorithm answer, a row of `cache_entry`. `body` is stored gzip-compressed when
/// `encoding` is `gzip` (bodies of at least `compression.min_bytes`), else as sent.
struct CacheEntry: Codable, Sendable, FetchableRecord, PersistableRecord {
    static let databaseTableName = "cache_entry"

    var key: String
    /// `owner/name/version`, for stats and purges.
    var algo: String
    var status: Int
    var contentType: String
    var encoding: String
    var body: Data
    /// Bytes of `body` as stored: what `cache.max_bytes` bounds.
    var size: Int
    /// Bytes of the answer as sent (`size` inflated), so a hit read from SQLite knows the memory
    /// it will hold before reading its body. Nil in entries stored before it was recorded.
    var plainSize: Int?
    /// SHA-256 of the answer as sent, so a reader can prove an entry whole.
    var bodySHA256: String
    var createdAt: Double
    var expiresAt: Double
    var lastAccess: Double
    var hits: Int

    enum CodingKeys: String, CodingKey {
        case key, algo, status, contentType = "content_type", encoding, body, size, plainSize = "plain_size"
        case bodySHA256 = "body_sha256", createdAt = "created_at", expiresAt = "expires_at"
        case lastAccess = "last_access", hits
    }
}

/// The cache's tables, as named, append-only migrations.
enum CacheSchema {
    /// Migrations after the usage table's (`StateDatabase.schemaSteps` registers them in that order).
    static func registerLater(in migrator: inout DatabaseMigrator) {
        migrator.registerMigration("v3: cache entries' plain size") { db in
            try db.execute(sql: """
                ALTER TABLE cache_entry ADD COLUMN plain_size INTEGER;
                UPDATE cache_entry SET plain_size = size WHERE encoding = 'identity';
                """)
        }
    }

    /// After the usage table's later migrations (`StateDatabase.schemaSteps` registers them in that order).
    static func registerPurgeLog(in migrator: inout DatabaseMigrator) {
        // Each purge, so that other processes on the file (a serving gateway, when the purge is
        // `algogate cache purge`) drop what it deleted from their hot tiers (`ResponseCache.flush`).
        migrator.registerMigration("v5: purges, for other processes' hot tiers") { db in
            try db.execute(sql: """
                CREATE TABLE cache_purge (
                    id INTEGER PRIMARY KEY AUTOINCREMENT,
                    algo TEXT,
                    at REAL NOT NULL
                )
                """)
        }
    }

    /// After the purge log's (`StateDatabase.schemaSteps` registers them in that order).
    static func registerPurgeBeginnings(in migrator: inout DatabaseMigrator) {
        // A purge is logged as it begins too (`begins = 1`), so that no answer to a call asked
        // before it is stored (`ResponseCache.purgeMark`); other processes take answers out of
        // memory at its end alone (`begins = 0`), once its entries are gone from the file.
        migrator.registerMigration("v6: purges logged as they begin") { db in
            try db.execute(sql: "ALTER TABLE cache_purge ADD COLUMN begins INTEGER NOT NULL DEFAULT 0")
        }
    }

    static func register(in migrator: inout DatabaseMigrator) {
        migrator.registerMigration("v1: cache entries and totals") { db in
            try db.execute(sql: """
                CREATE TABLE cache_entry (
                    key TEXT PRIMARY KEY NOT NULL,
                    algo TEXT NOT NULL,
                    status INTEGER NOT NULL,
                    content_type TEXT NOT NULL,
                    encoding TEXT NOT NULL,
                    body BLOB NOT NULL,
                    size INTEGER NOT NULL,
                    body_sha256 TEXT NOT NULL,
                    created_at REAL NOT NULL,
                    expires_at REAL NOT NULL,
                    last_access REAL NOT NULL,
                    hits INTEGER NOT NULL DEFAULT 0
                );
                CREATE INDEX cache_entry_lru ON cache_entry(last_access);
                CREATE INDEX cache_entry_algo ON cache_entry(algo);
                CREATE INDEX cache_entry_expiry ON cache_entry(expires_at);
                -- Totals kept by triggers, in the same transaction as the rows they count, so they
                -- stay right across crashes and across processes (the CLI purges too).
                CREATE TABLE cache_totals (
                    id INTEGER PRIMARY KEY CHECK (id = 1),
                    entries INTEGER NOT NULL, bytes INTEGER NOT NULL,
                    hits INTEGER NOT NULL, misses INTEGER NOT NULL
                );
                INSERT INTO cache_totals VALUES (1, 0, 0, 0, 0);
                CREATE TRIGGER cache_entry_added AFTER INSERT ON cache_entry BEGIN
                    UPDATE cache_totals SET entries = entries + 1, bytes = bytes + NEW.size WHERE id = 1;
                END;
                CREATE TRIGGER cache_entry_removed AFTER DELETE ON cache_entry BEGIN
                    UPDATE cache_totals SET entries = entries - 1, bytes = bytes - OLD.size WHERE id = 1;
                END;
                """)
        }
    }
}
