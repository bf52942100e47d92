import Foundation
import GRDB

/// The gateway's one SQLite file (`cache.path`): the response cache and the quota and usage
/// counters, in WAL mode so reads never wait for writes. All migrations run here, in order.
public enum StateDatabase {
    public static func open(path: String) throws -> DatabasePool {
        let directory = URL(fileURLWithPath: path).deletingLastPathComponent()
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        var configuration = Configuration()
        configuration.busyMode = .timeout(5)
        configuration.prepareDatabase { db in
            // NORMAL is durable against application crashes in WAL mode; only a power loss can
            // drop the last commits (a cache entry, or a second of usage counts).
            try db.execute(sql: "PRAGMA synchronous = NORMAL")
        }
        let pool = try DatabasePool(path: path, configuration: configuration)
        var migrator = DatabaseMigrator()
        CacheSchema.register(in: &migrator)
        UsageSchema.register(in: &migrator)
        CacheSchema.registerLater(in: &migrator)
        try migrator.migrate(pool)
        return pool
    }
}
