import Foundation
import GRDB

/// The gateway's one SQLite file (`cache.path`): the response cache and the quota and usage
/// counters, in WAL mode so reads never wait for writes. All migrations run here, in the order they
/// were first released.
public enum StateDatabase {
    /// Opens (creating it and its directory when missing) and migrates the file at `path`. A file
    /// that cannot be had fails with a `ConfigError` naming `cache.path`, the path and why.
    public static func open(path: String) throws -> DatabasePool {
        let directory = URL(fileURLWithPath: path).deletingLastPathComponent()
        do {
            try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        } catch {
            throw ConfigError(field: "cache.path", message: "cannot create the directory \(directory.path): \(reason(error))")
        }
        do {
            return try openPool(path: path)
        } catch let error as DatabaseError {
            throw ConfigError(field: "cache.path", message: "cannot open \(path) as the gateway's SQLite file: \(error.message ?? "\(error)")"
                + (error.resultCode == .SQLITE_CANTOPEN ? " (the file and its directory must be readable and writable by this user)" : ""))
        }
    }

    private static func openPool(path: String) throws -> DatabasePool {
        var configuration = Configuration()
        configuration.busyMode = .timeout(5)
        configuration.prepareDatabase { db in
            // NORMAL is durable against application crashes in WAL mode; only a power loss can
            // drop the last commits (a cache entry, or a second of usage counts).
            try db.execute(sql: "PRAGMA synchronous = NORMAL")
            // A WAL grows past its usual few MiB while a long read holds a snapshot (a backup,
            // a large purge's batches, a slow `usage` report) and writes go on; SQLite reuses
            // the file rather than shrink it, so the spike's size stayed on disk for the
            // process's life. With a limit, it is cut back to that as the WAL restarts.
            try db.execute(sql: "PRAGMA journal_size_limit = \(walSizeLimit)")
        }
        let pool = try DatabasePool(path: path, configuration: configuration)
        var migrator = DatabaseMigrator()
        for step in schemaSteps { step(&migrator) }
        try migrator.migrate(pool)
        return pool
    }

    /// The size a WAL left larger is cut back to once it restarts: 16 MiB, above its usual
    /// cycle (SQLite checkpoints at about 4 MiB, and one transaction may add a large entry).
    public static let walSizeLimit = 16 << 20

    /// The schema's migrations, registered in the order they were first released (the tests make
    /// files as earlier releases left them from the first few).
    static let schemaSteps: [@Sendable (inout DatabaseMigrator) -> Void] = [
        CacheSchema.register, UsageSchema.register, CacheSchema.registerLater, UsageSchema.registerLater, CacheSchema.registerPurgeLog,
        CacheSchema.registerPurgeBeginnings, UsageSchema.registerFiniteCompute, UsageSchema.registerSlotSeconds,
    ]

    /// Why the file at `path` could not serve as the gateway's state file, found without creating
    /// or changing anything (`check-config`); nil when it could. An existing file must be a SQLite
    /// database (or empty) that this user can read and write, in a directory it can write (WAL
    /// keeps two files beside it); a missing one needs the nearest existing directory above it to
    /// be writable, so that `serve` can create what is missing.
    public static func problem(path: String) -> String? {
        let manager = FileManager.default
        var isDirectory: ObjCBool = false
        if manager.fileExists(atPath: path, isDirectory: &isDirectory) {
            if isDirectory.boolValue { return "\(path) is a directory, not a file" }
            guard access(path, R_OK | W_OK) == 0 else { return "\(path) is not readable and writable by this user: \(String(cString: strerror(errno)))" }
            if let handle = FileHandle(forReadingAtPath: path) {
                defer { try? handle.close() }
                let head = (try? handle.read(upToCount: 16)) ?? Data()
                if !head.isEmpty && head != Data("SQLite format 3\0".utf8) { return "\(path) is not a SQLite database" }
            }
            let parent = (path as NSString).deletingLastPathComponent
            let directory = parent.isEmpty ? "." : parent
            guard access(directory, W_OK | X_OK) == 0 else {
                return "its directory \(directory) is not writable by this user (SQLite keeps its -wal and -shm files there): \(String(cString: strerror(errno)))"
            }
            return nil
        }
        var ancestor = (path as NSString).deletingLastPathComponent
        while !ancestor.isEmpty, !manager.fileExists(atPath: ancestor, isDirectory: &isDirectory) {
            let parent = (ancestor as NSString).deletingLastPathComponent
            if parent == ancestor { break }
            ancestor = parent
        }
        if ancestor.isEmpty { ancestor = "." }
        guard manager.fileExists(atPath: ancestor, isDirectory: &isDirectory), isDirectory.boolValue else {
            return "cannot create \(path): \(ancestor) is not a directory"
        }
        guard access(ancestor, W_OK | X_OK) == 0 else {
            return "cannot create \(path): \(ancestor) is not writable by this user: \(String(cString: strerror(errno)))"
        }
        return nil
    }

    /// For the operator's commands that read the file a gateway has made (`usage`, `cache`,
    /// `backup`), which must not create one: why there is none at `path`, naming the directory a
    /// relative path was taken from (a command run from another directory than the gateway's);
    /// nil when there is a file.
    public static func missing(path: String) -> String? {
        guard !FileManager.default.fileExists(atPath: path) else { return nil }
        let relative = path.hasPrefix("/") ? "" : ", relative to this directory: \(FileManager.default.currentDirectoryPath)"
        return "there is no state file at \(path) (cache.path\(relative))"
    }

    /// What an error from creating a directory says, without Foundation's wrapping.
    static func reason(_ error: any Error) -> String {
        let error = error as NSError
        if let underlying = error.userInfo[NSUnderlyingErrorKey] as? NSError, underlying.domain == NSPOSIXErrorDomain {
            return String(cString: strerror(Int32(underlying.code)))
        }
        let text = error.localizedDescription
        let wrapper = "The operation could not be completed. "
        return text.hasPrefix(wrapper) ? String(text.dropFirst(wrapper.count)) : text
    }
}
