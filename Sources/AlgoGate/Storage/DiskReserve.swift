import Foundation
import GRDB
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// Room held on the disk of the gateway's SQLite file, so that a full disk stops the cache but
/// not the usage counters.
///
/// Quotas fail closed: while usage cannot be written, every team request is refused with 503. A
/// disk filled by anything (logs on the same volume, a cache whose `max_bytes` is larger than its
/// volume) would so take the whole gateway down, though only the cache needs the room. So the
/// gateway holds `bytes` in a file beside the database (`<cache.path>-reserve`, allocated, not
/// sparse). When a write finds the disk full, that file is deleted: the counters go on being
/// written in the room it gives back, and the cache stores nothing more (its answers are sent as
/// misses not stored) until the disk has room for the file twice over, when it is made anew.
public final class DiskReserve: Sendable {
    /// 16 MiB: a few WAL cycles of usage writes (SQLite checkpoints at about 4 MB of WAL) and the
    /// pages the last cache entries add to the file as they are checkpointed into it.
    public static let defaultBytes = 16 << 20

    public let path: String
    public let bytes: Int
    private let held = Mutex(false)

    /// `bytes: 0` holds nothing: a full disk then stops the counters, and every team request
    /// gets 503 until it has room (tests, to show what the reserve prevents).
    public init(besideDatabase databasePath: String, bytes: Int = DiskReserve.defaultBytes) {
        self.path = databasePath + "-reserve"
        self.bytes = bytes
    }

    /// Whether the room is held: while it is not, the cache stores nothing.
    public var isHeld: Bool { bytes == 0 || held.withLock { $0 } }

    /// Makes the file, or keeps the one a previous run left, with its blocks allocated. Returns
    /// false, leaving no file, when the disk has not the room.
    @discardableResult
    public func take() -> Bool {
        guard bytes > 0 else { return true }
        // Not through a symbolic link: the file is made, grown and truncated where it is named.
        let descriptor = open(path, O_WRONLY | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0o600)
        guard descriptor >= 0 else { return false }
        // posix_fallocate returns the error rather than setting errno. A file of zeros written
        // lazily, or a sparse one (ftruncate), would hold no blocks.
        let allocated = posix_fallocate(descriptor, 0, off_t(bytes)) == 0 && ftruncate(descriptor, off_t(bytes)) == 0
        close(descriptor)
        if !allocated { unlink(path) }
        held.withLock { $0 = allocated }
        return allocated
    }

    /// Gives the room back to the disk. Returns whether it was held until now (the moment is
    /// logged by `StateMaintenance`, which sees `isHeld` change, whoever gave it back).
    @discardableResult
    public func release() -> Bool {
        guard bytes > 0 else { return false }
        return held.withLock { held in
            guard held else { return false }
            unlink(path)
            held = false
            return true
        }
    }

    /// Takes the room again once the disk has it twice over, so that the cache, storing again,
    /// does not fill the disk at once. Returns whether it did.
    public func retakeIfRoom() -> Bool {
        guard !isHeld, let free = freeBytes(), free >= 2 * bytes else { return false }
        return take()
    }

    /// Bytes an unprivileged process may still write on the disk that holds the file.
    func freeBytes() -> Int? { Self.freeBytes(onDiskOf: path) }

    /// A note when the disk holding `cache.path` has less room than the cache may take: its
    /// `max_bytes`, a WAL's worth beside it (SQLite checkpoints at about 4 MiB), and the reserve.
    /// The cache would fill the disk, and then store nothing. The gateway's own files there count
    /// as room. Nil when the room is there, when the cache is off, or when it cannot be told.
    /// The spool of downloads waiting for slow clients (`limits.spool_max_bytes`) is on that disk
    /// too, and counts with them.
    public static func roomNote(_ config: GatewayConfig, reserveBytes: Int = defaultBytes) -> String? {
        let spool = config.limits.spoolMaxBytes
        guard config.cache.enabled || spool > 0 else { return nil }
        let path = config.cache.path
        let own = ["", "-wal", "-reserve"].compactMap { suffix in
            (try? FileManager.default.attributesOfItem(atPath: path + suffix))?[.size] as? Int
        }.reduce(0, +)
        guard let free = freeBytes(onDiskOf: path) else { return nil }
        let room = free + own
        let spoolText = "limits.spool_max_bytes (\(Formatting.size(spool))) of downloads waiting for slow clients"
        guard config.cache.enabled else {
            guard room < spool else { return nil }
            return "\(spoolText) is more than the \(Formatting.size(room)) the disk holding cache.path has for it: once the disk is full, "
                + "downloads wait for their clients holding their upstream slots; lower limits.spool_max_bytes, or give cache.path a larger disk"
        }
        guard room < config.cache.maxBytes + walAllowance + reserveBytes + spool else { return nil }
        return "cache.max_bytes (\(Formatting.size(config.cache.maxBytes))), with its WAL (about \(Formatting.size(walAllowance))) and the "
            + "\(Formatting.size(reserveBytes)) the gateway holds beside it for the usage counters\(spool > 0 ? ", and " + spoolText : ""), "
            + "is more than the \(Formatting.size(room)) the disk holding cache.path has for them: once the disk is full, the cache stores nothing; "
            + "lower cache.max_bytes\(spool > 0 ? " or limits.spool_max_bytes" : ""), or give cache.path a larger disk"
    }

    static let walAllowance = 4 << 20

    /// Bytes an unprivileged process may still write on the disk that holds `path`, or would hold
    /// it (its nearest existing directory).
    static func freeBytes(onDiskOf path: String) -> Int? {
        var stats = statvfs()
        guard statvfs(nearestDirectory(of: path), &stats) == 0 else { return nil }
        return Int(stats.f_bavail) * Int(stats.f_frsize)
    }

    /// The directory that holds `path`, or its nearest existing ancestor while it does not exist
    /// yet (the gateway creates it): the disk the file is, or will be, on.
    static func nearestDirectory(of path: String) -> String {
        var directory = (path as NSString).deletingLastPathComponent
        while !directory.isEmpty, !FileManager.default.fileExists(atPath: directory) {
            let parent = (directory as NSString).deletingLastPathComponent
            if parent == directory { break }
            directory = parent
        }
        return directory.isEmpty ? "." : directory
    }

    /// Whether `error` is SQLite's "database or disk is full".
    public static func isDiskFull(_ error: any Error) -> Bool {
        (error as? DatabaseError)?.resultCode == .SQLITE_FULL
    }
}
