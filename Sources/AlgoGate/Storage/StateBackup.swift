import Foundation
import GRDB
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// A consistent copy of the gateway's state file (`cache.path`), taken while it serves
/// (`algogate backup`).
///
/// The copy is SQLite's `VACUUM INTO`, read from one snapshot of the file: what the WAL holds is
/// in it, a transaction half-done is not, and the gateway's writes go on while it is taken (WAL
/// readers never block the writer). The source is only read. (It is opened read-write all the
/// same: a read-only connection to a WAL file whose gateway is stopped creates the `-wal` and
/// `-shm` files and cannot remove them as it closes, and, made by another user, they would keep
/// the gateway from opening its file.)
///
/// The copy is written beside its destination under a temporary name, with the state file's
/// permissions, checked (`PRAGMA integrity_check`), flushed to disk and only then given its name
/// (a hard link, which never replaces a file): a destination that exists is a whole, checked copy. It is a single file (rollback
/// journal, not WAL), ready to be put in place as `cache.path` to restore.
public enum StateBackup {
    /// Why a backup was refused or failed; `message` is whole, for the operator.
    public struct Failure: Error, CustomStringConvertible {
        public let message: String
        public var description: String { message }

        public init(message: String) {
            self.message = message
        }
    }

    /// Stops a backup under way (a signal to `algogate backup`): the copy being written is
    /// interrupted and discarded, and `copy` throws a `Failure` saying so.
    public final class Cancellation: Sendable {
        private let state = Mutex<(cancelled: Bool, source: DatabaseQueue?)>((false, nil))

        public init() {}

        public var isCancelled: Bool { state.withLock { $0.cancelled } }

        /// Interrupts under the lock, so the source cannot be let go (and closed) meanwhile;
        /// `sqlite3_interrupt` is made to be called from any thread.
        public func cancel() {
            state.withLock { state in
                state.cancelled = true
                state.source?.interrupt()
            }
        }

        /// The source to interrupt from now on (at once when cancelled already); nil before it is
        /// closed.
        fileprivate func watch(_ source: DatabaseQueue?) {
            state.withLock { state in
                state.source = source
                if state.cancelled { source?.interrupt() }
            }
        }
    }

    /// Partial copies (`.NAME.partial-PID`, and their `-journal`) in `directory` that backups
    /// killed outright (SIGKILL: an OOM kill, a timer's final kill) left: their process is gone and
    /// they have not changed for `stale` (a copy under way writes continuously; a process of the
    /// same number on another host sharing the directory is so not mistaken for gone). Each is as
    /// large as the part of the cache it had copied. Removes them and returns their names.
    public static func removeAbandonedPartials(in directory: String, stale: TimeInterval = 600, now: Date = Date()) -> [String] {
        guard let names = try? FileManager.default.contentsOfDirectory(atPath: directory) else { return [] }
        var removed: [String] = []
        for name in names.sorted() {
            guard name.hasPrefix("."), let marker = name.range(of: ".partial-", options: .backwards) else { continue }
            var digits = name[marker.upperBound...]
            if digits.hasSuffix("-journal") { digits = digits.dropLast("-journal".count) }
            guard let pid = pid_t(digits), pid > 0, kill(pid, 0) != 0, errno == ESRCH else { continue }
            let path = (directory as NSString).appendingPathComponent(name)
            guard let changed = (try? FileManager.default.attributesOfItem(atPath: path))?[.modificationDate] as? Date,
                  now.timeIntervalSince(changed) >= stale, unlink(path) == 0 else { continue }
            removed.append(name)
        }
        return removed
    }

    /// Room a backup leaves free on the disk of the state file it copies, when it writes there:
    /// the gateway's cache and counters go on growing while the copy lies beside them.
    public static let roomKeptBesideTheState = 64 << 20

    /// Where a backup given `destination` writes: the path itself, or, when it names an existing
    /// directory, `algogate-<UTC time>.sqlite` in it (`algogate-20261206T043000Z.sqlite`: copies
    /// sort by time, and a schedule needs no date of its own in the path).
    public static func target(for destination: String, at now: Date = Date()) -> String {
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: destination, isDirectory: &isDirectory), isDirectory.boolValue else { return destination }
        var seconds = time_t(now.timeIntervalSince1970.rounded(.down))
        var parts = tm()
        gmtime_r(&seconds, &parts)
        let p = Formatting.padded
        let stamp = "\(p(Int(parts.tm_year) + 1900, 4))\(p(Int(parts.tm_mon) + 1, 2))\(p(Int(parts.tm_mday), 2))T"
            + "\(p(Int(parts.tm_hour), 2))\(p(Int(parts.tm_min), 2))\(p(Int(parts.tm_sec), 2))Z"
        return (destination as NSString).appendingPathComponent("algogate-\(stamp).sqlite")
    }

    /// Copies the state file at `statePath` to `destination`, which must not exist, in a directory
    /// that does. Throws a `Failure` saying what to do when the copy cannot be made; leaves no
    /// file at `destination`, nor a temporary one beside it, unless it succeeded.
    /// `withoutCache`: the copy leaves the cached answers out (a refilled cache needs no backup)
    /// and keeps everything else, the usage counters among it: kilobytes rather than the cache's
    /// size, and a state file all the same, its cache empty.
    public static func copy(statePath: String, to destination: String, withoutCache: Bool = false,
                            cancellation: Cancellation = Cancellation()) throws -> Summary {
        try refuseUnsafeDestination(destination, statePath: statePath)
        let source = try openSource(statePath)
        defer { try? source.close() }
        cancellation.watch(source)
        defer { cancellation.watch(nil) }
        try checkRoom(for: source, statePath: statePath, destination: destination, withoutCache: withoutCache)

        let directory = DiskReserve.nearestDirectory(of: destination)
        let temporary = (directory as NSString).appendingPathComponent(
            ".\((destination as NSString).lastPathComponent).partial-\(getpid())")
        var placed = false
        // (SQLite writes the copy with a rollback journal beside it, and removes it as it ends.)
        defer { if !placed { unlink(temporary); unlink(temporary + "-journal") } }
        // The copy holds what the file holds (teams' answers, their usage): it is made with the
        // file's own permissions, never more open (SQLite would make it 0644 less the umask).
        // VACUUM INTO writes into an empty file that exists.
        unlink(temporary)
        let made = open(temporary, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0o600)
        guard made >= 0 else { throw Failure(message: "cannot create a file in \(directory): \(String(cString: strerror(errno)))") }
        let permissions = fchmod(made, permissionBits(of: statePath))
        close(made)
        guard permissions == 0 else { throw Failure(message: "cannot set the copy's permissions in \(directory): \(String(cString: strerror(errno)))") }
        do {
            // Not inside a transaction: SQLite refuses VACUUM in one. The statement reads one snapshot.
            try source.inDatabase { db in
                if withoutCache { try copyLeavingTheCacheOut(db, into: temporary) } else { try db.execute(sql: "VACUUM INTO ?", arguments: [temporary]) }
            }
        } catch let error as DatabaseError {
            if cancellation.isCancelled { throw stopped(directory) }
            if error.resultCode == .SQLITE_FULL {
                throw Failure(message: "the disk holding \(directory) filled while the copy was written; nothing was left there")
            }
            throw Failure(message: "cannot copy \(statePath) to \(directory): \(error.message ?? "\(error)")")
        }
        let summary = try check(copy: temporary)
        if cancellation.isCancelled { throw stopped(directory) }
        guard flushToDisk(temporary) else { throw Failure(message: "cannot flush the copy to disk in \(directory): \(String(cString: strerror(errno)))") }
        // A destination made while the copy was written is not replaced: the copy takes its name
        // by a hard link, which fails when the name is taken (rename would replace it), then
        // leaves its temporary one. A filesystem without hard links gets a rename after a check.
        let createdMeanwhile = Failure(message: "\(destination) was created while the copy was written; it was left as it was, and the copy discarded")
        if link(temporary, destination) == 0 {
            placed = true
            unlink(temporary)
        } else if errno == EEXIST {
            throw createdMeanwhile
        } else {
            guard !FileManager.default.fileExists(atPath: destination) else { throw createdMeanwhile }
            guard rename(temporary, destination) == 0 else {
                throw Failure(message: "cannot move the copy into place as \(destination): \(String(cString: strerror(errno)))")
            }
            placed = true
        }
        _ = flushToDisk(directory)
        return summary
    }

    /// Writes into `path` (an empty file) every table, index and trigger of `db`'s file and every
    /// row but the cached answers, from one snapshot: as `VACUUM INTO` would, less `cache_entry`'s
    /// rows (its totals zeroed to match). The triggers are made last, so copying fires none.
    static func copyLeavingTheCacheOut(_ db: Database, into path: String) throws {
        try db.execute(sql: "ATTACH DATABASE ? AS copy", arguments: [path])
        defer { try? db.execute(sql: "DETACH DATABASE copy") }
        try db.inTransaction(.deferred) {
            let objects = try Row.fetchAll(db, sql: """
                SELECT type, name, sql FROM main.sqlite_master WHERE sql IS NOT NULL AND name NOT LIKE 'sqlite_%'
                ORDER BY CASE type WHEN 'table' THEN 0 WHEN 'index' THEN 1 ELSE 2 END, rowid
                """)
            // Each object's own statement, made in the copy: `CREATE TABLE name` becomes
            // `CREATE TABLE copy.name` (an index's table and a trigger's body are then the copy's own).
            func make(_ row: Row) throws {
                let type: String = row["type"], sql: String = row["sql"]
                let keyword = "CREATE \(type.uppercased()) "
                guard sql.hasPrefix(keyword) else { throw Failure(message: "cannot copy the schema's \(type) \(row["name"] as String): it reads \(sql.prefix(40))") }
                try db.execute(sql: keyword + "copy." + sql.dropFirst(keyword.count))
            }
            for row in objects where row["type"] as String != "trigger" { try make(row) }
            for row in objects where row["type"] as String == "table" {
                let table: String = row["name"]
                guard table != "cache_entry" else { continue }
                try db.execute(sql: "INSERT INTO copy.\(table) SELECT * FROM main.\(table)")
            }
            if try Bool.fetchOne(db, sql: "SELECT EXISTS (SELECT 1 FROM main.sqlite_master WHERE name = 'sqlite_sequence')") == true {
                try db.execute(sql: "INSERT INTO copy.sqlite_sequence SELECT * FROM main.sqlite_sequence")
            }
            try db.execute(sql: "UPDATE copy.cache_totals SET entries = 0, bytes = 0")
            for row in objects where row["type"] as String == "trigger" { try make(row) }
            return .commit
        }
    }

    static func stopped(_ directory: String) -> Failure {
        Failure(message: "stopped before the copy was whole; nothing was left in \(directory)")
    }

    /// The destination must be new, in an existing directory, and none of the files SQLite and
    /// the gateway keep beside the state file (a copy named `<cache.path>-wal` would be read as
    /// the file's WAL at the next start).
    static func refuseUnsafeDestination(_ destination: String, statePath: String) throws {
        guard !destination.isEmpty else { throw Failure(message: "the destination is empty: give the path of a new file") }
        if FileManager.default.fileExists(atPath: destination) {
            throw Failure(message: "\(destination) exists: a backup never replaces a file; give the path of a new one (a date in its name, say)")
        }
        let parent = (destination as NSString).deletingLastPathComponent
        let directory = parent.isEmpty ? "." : parent
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: directory, isDirectory: &isDirectory), isDirectory.boolValue else {
            throw Failure(message: "the directory \(directory) does not exist: create it first, or give another path")
        }
        guard access(directory, W_OK | X_OK) == 0 else {
            throw Failure(message: "the directory \(directory) is not writable by this user: \(String(cString: strerror(errno)))")
        }
        let name = (destination as NSString).lastPathComponent
        let resolvedDestination = ((directory as NSString).resolvingSymlinksInPath as NSString).appendingPathComponent(name)
        let stateDirectory = DiskReserve.nearestDirectory(of: statePath)
        let resolvedState = ((stateDirectory as NSString).resolvingSymlinksInPath as NSString)
            .appendingPathComponent((statePath as NSString).lastPathComponent)
        for suffix in ["", "-wal", "-shm", "-journal", "-reserve"] where resolvedDestination == resolvedState + suffix {
            throw Failure(message: "\(destination) is \(suffix.isEmpty ? "the state file itself" : "where SQLite or the gateway keeps the state file's \(suffix.dropFirst()) file"): give a path of its own")
        }
    }

    /// The state file, after checking it is one.
    static func openSource(_ path: String) throws -> DatabaseQueue {
        if let missing = StateDatabase.missing(path: path) { throw Failure(message: "\(missing): nothing to back up") }
        var isDirectory: ObjCBool = false
        _ = FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory)
        guard !isDirectory.boolValue else { throw Failure(message: "\(path) (cache.path) is a directory, not the gateway's state file") }
        var configuration = Configuration()
        // The gateway's writer may hold the file an instant (a checkpoint): wait, as the gateway does.
        configuration.busyMode = .timeout(5)
        let queue: DatabaseQueue
        do {
            queue = try DatabaseQueue(path: path, configuration: configuration)
            guard try queue.read(isGatewayFile) else {
                try? queue.close()
                throw Failure(message: "\(path) (cache.path) is a SQLite file but not the gateway's: it has no cache_entry or usage_day table")
            }
        } catch let error as DatabaseError {
            let reason = error.resultCode == .SQLITE_NOTADB ? "it is not a SQLite database" : (error.message ?? "\(error)")
            throw Failure(message: "cannot read \(path) (cache.path): \(reason)")
        }
        return queue
    }

    /// Refuses a copy the destination's disk has not the room for. On the state file's own disk,
    /// `roomKeptBesideTheState` must be left over.
    static func checkRoom(for source: DatabaseQueue, statePath: String, destination: String, withoutCache: Bool) throws {
        let needed: Int
        do {
            needed = try source.read { db in
                let pageSize = try Int.fetchOne(db, sql: "PRAGMA page_size") ?? 4096
                let pages = try Int.fetchOne(db, sql: "PRAGMA page_count") ?? 0
                let free = try Int.fetchOne(db, sql: "PRAGMA freelist_count") ?? 0
                // Without the cache: less the entries' bodies (their rows' other bytes are few).
                let cached = withoutCache ? try Int.fetchOne(db, sql: "SELECT bytes FROM cache_totals") ?? 0 : 0
                return max((pages - free) * pageSize - cached, 16 * pageSize)
            }
        } catch let error as DatabaseError {
            throw Failure(message: "cannot read \(statePath) (cache.path): \(error.message ?? "\(error)")")
        }
        let directory = DiskReserve.nearestDirectory(of: destination)
        guard let free = DiskReserve.freeBytes(onDiskOf: destination) else { return }
        let sameDisk = device(of: directory) != nil && device(of: directory) == device(of: DiskReserve.nearestDirectory(of: statePath))
        let kept = sameDisk ? roomKeptBesideTheState : 0
        guard free < needed + kept else { return }
        throw Failure(message: "the copy needs about \(Formatting.size(needed)) and the disk holding \(directory) has \(Formatting.size(free)) free"
            + (sameDisk ? ", of which \(Formatting.size(kept)) is left for the gateway's own file on the same disk" : "")
            + ": give a path on a disk with room" + (withoutCache ? "" : ", or leave the cached answers out (--without-cache)"))
    }

    /// Opens the copy and checks it whole; what it holds.
    static func check(copy path: String) throws -> Summary {
        do {
            let queue = try DatabaseQueue(path: path)
            defer { try? queue.close() }
            let bytes = fileSize(path)
            let (verdict, summary) = try queue.read { db -> ([String], Summary) in (try integrity(db), try Self.summary(db, bytes: bytes)) }
            guard verdict == ["ok"] else {
                throw Failure(message: "the copy failed SQLite's integrity check (\(verdict.prefix(3).joined(separator: "; "))); it was discarded")
            }
            return summary
        } catch let error as DatabaseError {
            throw Failure(message: "cannot read the copy back: \(error.message ?? "\(error)"); it was discarded")
        }
    }

    /// fsync: a backup that a power loss could leave half on disk is no backup.
    static func flushToDisk(_ path: String) -> Bool {
        let descriptor = open(path, O_RDONLY | O_CLOEXEC)
        guard descriptor >= 0 else { return false }
        defer { close(descriptor) }
        return fsync(descriptor) == 0
    }

    /// The file's permission bits (0600 when they cannot be read).
    static func permissionBits(of path: String) -> mode_t {
        var status = stat()
        guard stat(path, &status) == 0 else { return 0o600 }
        return status.st_mode & 0o777
    }

    static func device(of path: String) -> UInt64? {
        var status = stat()
        guard stat(path, &status) == 0 else { return nil }
        return UInt64(status.st_dev)
    }
}
