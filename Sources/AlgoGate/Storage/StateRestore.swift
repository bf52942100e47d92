import Foundation
import GRDB

#if canImport(Glibc)
import Glibc
#endif

/// Puts a copy `algogate backup` made (or any copy of a state file) in place as the gateway's
/// state file (`algogate restore`), while no gateway has it open.
///
/// The copy is written into the state file through SQLite (its online backup API, one
/// transaction), not over it as a file: a gateway killed mid-write leaves a `-wal` file beside its
/// file, and a file copied over the old one would have that WAL replayed into it at the next
/// start, corrupting it. Through SQLite, the old WAL is read into the old file first, and then
/// every page is replaced. While it works, the file is held in SQLite's exclusive locking mode,
/// which also proves no other process has it open: a gateway serving it (which keeps its own
/// memory of the file: hot tier, counters) is refused, with what to do.
public enum StateRestore {
    /// What was restored, and what the state file held before (nil when there was none).
    public struct Outcome: Sendable, Equatable {
        public var restored: StateBackup.Summary
        public var replaced: StateBackup.Summary?
    }

    /// Restores `copy` as the state file at `statePath`. An existing state file is replaced only
    /// when `replacing` (its cache and usage counters are lost to the copy's). Throws a
    /// `StateBackup.Failure` saying what to do when it cannot; the state file is then as it was.
    public static func restore(from copy: String, to statePath: String, replacing: Bool) throws -> Outcome {
        if resolved(copy) == resolved(statePath) {
            throw StateBackup.Failure(message: "\(copy) is the state file itself (cache.path): give a copy algogate backup made")
        }
        let source = try openCopy(copy)
        defer { try? source.close() }
        let restored: StateBackup.Summary
        do {
            let bytes = StateBackup.fileSize(copy)
            let (verdict, summary) = try source.read { db -> ([String], StateBackup.Summary) in
                (try StateBackup.integrity(db), try StateBackup.summary(db, bytes: bytes))
            }
            guard verdict == ["ok"] else {
                throw StateBackup.Failure(message: "the copy \(copy) fails SQLite's integrity check (\(verdict.prefix(3).joined(separator: "; "))): restore another")
            }
            restored = summary
        } catch let error as DatabaseError {
            throw StateBackup.Failure(message: "cannot read the copy \(copy): \(error.message ?? "\(error)")")
        }

        let existed = FileManager.default.fileExists(atPath: statePath)
        if existed, !replacing {
            throw StateBackup.Failure(message: "\(statePath) (cache.path) exists: restoring replaces its cache and usage counters with the copy's; give --replace to do so")
        }
        let directory = (statePath as NSString).deletingLastPathComponent
        if !existed, !directory.isEmpty {
            do {
                try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
            } catch {
                throw StateBackup.Failure(message: "cannot create the directory \(directory): \(StateDatabase.reason(error))")
            }
        }
        let destination = try openExclusively(statePath)
        defer { try? destination.close() }
        // For the record of what was lost; a file that is not the gateway's has none.
        // (What its WAL holds is part of it: a killed gateway's file may be mostly there.)
        let oldBytes = StateBackup.fileSize(statePath) + StateBackup.fileSize(statePath + "-wal")
        let replaced: StateBackup.Summary? = existed ? (try? destination.read { db -> StateBackup.Summary? in
            try StateBackup.isGatewayFile(db) ? StateBackup.summary(db, bytes: oldBytes) : nil
        }) ?? nil : nil
        do {
            try source.backup(to: destination)
            let verdict = try destination.read(StateBackup.integrity)
            guard verdict == ["ok"] else {
                throw StateBackup.Failure(message: "\(statePath) fails SQLite's integrity check after the restore (\(verdict.prefix(3).joined(separator: "; "))): stop, and restore again")
            }
        } catch let error as DatabaseError {
            throw StateBackup.Failure(message: "cannot write \(statePath): \(error.message ?? "\(error)")"
                + (error.resultCode == .SQLITE_FULL ? " (the disk is full; the file is as it was)" : ""))
        }
        if !existed { matchOwnerAndPermissions(of: statePath, directory: directory.isEmpty ? "." : directory, copy: copy) }
        return Outcome(restored: restored, replaced: replaced)
    }

    /// The copy, after checking it is a gateway's state file.
    static func openCopy(_ path: String) throws -> DatabaseQueue {
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory), !isDirectory.boolValue else {
            throw StateBackup.Failure(message: "there is no file at \(path) to restore")
        }
        do {
            let queue = try DatabaseQueue(path: path)
            guard try queue.read(StateBackup.isGatewayFile) else {
                try? queue.close()
                throw StateBackup.Failure(message: "\(path) is a SQLite file but not a copy of the gateway's: it has no cache_entry or usage_day table")
            }
            return queue
        } catch let error as DatabaseError {
            let reason = error.resultCode == .SQLITE_NOTADB ? "it is not a SQLite database" : (error.message ?? "\(error)")
            throw StateBackup.Failure(message: "cannot read the copy \(path): \(reason)")
        }
    }

    /// The state file, held in exclusive locking mode: SQLite takes that mode on a WAL file only
    /// when no other connection has it open, and keeps every other out until it is closed.
    static func openExclusively(_ path: String) throws -> DatabaseQueue {
        var configuration = Configuration()
        configuration.prepareDatabase { db in try db.execute(sql: "PRAGMA locking_mode = EXCLUSIVE") }
        do {
            let queue = try DatabaseQueue(path: path, configuration: configuration)
            // The lock is taken by the first transaction, and kept after it.
            try queue.inDatabase { db in try db.execute(sql: "BEGIN EXCLUSIVE; COMMIT") }
            return queue
        } catch let error as DatabaseError {
            switch error.resultCode {
            case .SQLITE_BUSY, .SQLITE_LOCKED:
                throw StateBackup.Failure(message: "another process has \(path) (cache.path) open, a gateway serving it or an algogate command: "
                    + "stop the gateway first (systemctl stop algogate; on Kubernetes, scale the Deployment to 0 and run the restore in a pod of its own on the volume), then restore")
            case .SQLITE_NOTADB, .SQLITE_CORRUPT:
                throw StateBackup.Failure(message: "cannot read \(path) (cache.path): \(error.message ?? "\(error)"); move it aside with its -wal and -shm files, and restore again")
            default:
                throw StateBackup.Failure(message: "cannot open \(path) (cache.path): \(error.message ?? "\(error)")")
            }
        }
    }

    /// `path` with its directory's symbolic links resolved (the file itself may not exist yet).
    static func resolved(_ path: String) -> String {
        let directory = (path as NSString).deletingLastPathComponent
        return ((directory.isEmpty ? "." : directory) as NSString).resolvingSymlinksInPath + "/" + (path as NSString).lastPathComponent
    }

    /// A state file the restore made (there was none) takes the copy's permissions, and, made by
    /// root, the owner of its directory: the gateway's user, who must open it.
    static func matchOwnerAndPermissions(of path: String, directory: String, copy: String) {
        chmod(path, StateBackup.permissionBits(of: copy))
        guard geteuid() == 0 else { return }
        var owner = stat()
        guard stat(directory, &owner) == 0 else { return }
        _ = chown(path, owner.st_uid, owner.st_gid)
    }
}
