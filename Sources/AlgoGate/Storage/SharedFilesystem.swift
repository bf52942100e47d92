import Foundation

/// The gateway's SQLite file (`cache.path`: the cache and the usage counters) needs a disk of its
/// machine's own. On a network filesystem (NFS, which Amazon EFS is, SMB, CephFS, ...) SQLite's
/// locks and its WAL's shared memory do not hold across machines: a second gateway using the same
/// file, as two replicas on one ReadWriteMany volume would, can corrupt it, and every write waits
/// on the network. Said as a note by `check-config` and a warning by `serve`, not refused: one
/// gateway alone on such a volume works, slowly.
public enum SharedFilesystem {
    /// Network filesystems by the type `/proc/self/mountinfo` names them with.
    static let networkKinds: [String: String] = [
        "nfs": "NFS", "nfs4": "NFS", "cifs": "SMB", "smb3": "SMB", "smbfs": "SMB", "ceph": "CephFS", "lustre": "Lustre",
        "9p": "9p", "afs": "AFS", "gpfs": "GPFS", "gfs2": "GFS2", "ocfs2": "OCFS2", "glusterfs": "GlusterFS", "beegfs": "BeeGFS",
    ]

    /// The note for the disk that holds (or would hold) `cache.path`, if it is not a local one.
    public static func note(_ config: GatewayConfig) -> String? {
        guard config.cache.enabled, let mountinfo = try? String(contentsOfFile: "/proc/self/mountinfo", encoding: .utf8) else { return nil }
        let directory = URL(fileURLWithPath: DiskReserve.nearestDirectory(of: config.cache.path)).resolvingSymlinksInPath().path
        return mountType(of: directory, in: mountinfo).flatMap(note(forType:))
    }

    static func note(forType type: String) -> String? {
        let remedy = "give cache.path a disk of this machine's own (Kubernetes: a ReadWriteOnce volume), one per gateway"
        if let kind = networkKinds[type] {
            return "cache.path is on \(kind) (\(type)), a network filesystem: SQLite, which keeps the cache and the usage counters there, "
                + "needs a disk of this machine's own. Its locks and its WAL's shared memory do not hold across machines, so a second "
                + "gateway using the file can corrupt it, and every write waits on the network; \(remedy)"
        }
        if type == "fuse" || type.hasPrefix("fuse.") {
            return "cache.path is on a FUSE filesystem (\(type)): SQLite, which keeps the cache and the usage counters there, needs "
                + "locks and shared memory that FUSE filesystems reaching the network (s3fs, gcsfuse, blobfuse, sshfs) do not give; "
                + "unless this one is a disk of this machine's own underneath, \(remedy)"
        }
        return nil
    }

    /// The filesystem type of the mount that holds `directory` (absolute, symbolic links resolved),
    /// read from `mountinfo` (proc(5): `ID PARENT MAJOR:MINOR ROOT MOUNTPOINT OPTIONS [FIELDS] -
    /// TYPE SOURCE SUPEROPTIONS`, a space in a path written `\040`): the last-mounted of those
    /// with the longest mount point that contains it.
    static func mountType(of directory: String, in mountinfo: String) -> String? {
        var best: (length: Int, type: String)?
        for line in mountinfo.split(separator: "\n") {
            let fields = line.split(separator: " ", omittingEmptySubsequences: true)
            guard fields.count > 4, let dash = fields.firstIndex(of: "-"), dash + 1 < fields.count else { continue }
            let mountPoint = fields[4].replacingOccurrences(of: "\\040", with: " ").replacingOccurrences(of: "\\011", with: "\t")
                .replacingOccurrences(of: "\\012", with: "\n").replacingOccurrences(of: "\\134", with: "\\")
            let contains = mountPoint == "/" || directory == mountPoint || directory.hasPrefix(mountPoint + "/")
            if contains, mountPoint.count >= (best?.length ?? 0) { best = (mountPoint.count, String(fields[dash + 1])) }
        }
        return best?.type
    }
}
