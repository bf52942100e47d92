@testable import AlgoGate
import AlgoTestSupport
import Foundation
import Testing

/// The gateway's SQLite file on a filesystem shared over the network (NFS, as Amazon EFS is; SMB;
/// a FUSE filesystem) is noted by `check-config` and warned of by `serve`: SQLite's locks do not
/// hold across machines there.
@Suite struct SharedFilesystemTests {
    /// The mount holding a directory, read as proc(5) writes mountinfo.
    @Test func theMountHoldingADirectoryIsTheLongestThatContainsIt() {
        let mountinfo = """
            22 27 0:21 / /proc rw,relatime - proc proc rw
            27 1 254:0 / / rw,relatime - ext4 /dev/vda rw
            40 27 0:50 / /var/lib rw,relatime shared:5 - nfs4 fs-1.efs.example:/ rw,vers=4.1
            41 40 0:51 / /var/lib/local rw,relatime - ext4 /dev/vdb rw
            42 27 0:52 / /mnt/my\\040disk rw,relatime - fuse.sshfs host:/x rw
            43 27 0:53 / /var/lib2 rw,relatime - tmpfs tmpfs rw
            44 27 0:54 / /srv rw,relatime - ext4 /dev/vdc rw
            45 27 0:55 / /srv rw,relatime - cifs //files/share rw
            """
        #expect(SharedFilesystem.mountType(of: "/var/lib/algogate", in: mountinfo) == "nfs4")
        #expect(SharedFilesystem.mountType(of: "/var/lib", in: mountinfo) == "nfs4")
        #expect(SharedFilesystem.mountType(of: "/var/lib/local/algogate", in: mountinfo) == "ext4")
        #expect(SharedFilesystem.mountType(of: "/var/lib2/algogate", in: mountinfo) == "tmpfs")
        #expect(SharedFilesystem.mountType(of: "/mnt/my disk/state", in: mountinfo) == "fuse.sshfs")
        #expect(SharedFilesystem.mountType(of: "/mnt/mydisk", in: mountinfo) == "ext4")
        // Mounted over: the last mount on a mount point is the one seen.
        #expect(SharedFilesystem.mountType(of: "/srv/algogate", in: mountinfo) == "cifs")
        #expect(SharedFilesystem.mountType(of: "/home", in: mountinfo) == "ext4")
    }

    @Test func networkAndFUSEFilesystemsAreNotedAndLocalOnesAreNot() {
        #expect(SharedFilesystem.note(forType: "nfs4") == "cache.path is on NFS (nfs4), a network filesystem: SQLite, which keeps the cache and the usage counters there, needs a disk of this machine's own. Its locks and its WAL's shared memory do not hold across machines, so a second gateway using the file can corrupt it, and every write waits on the network; give cache.path a disk of this machine's own (Kubernetes: a ReadWriteOnce volume), one per gateway")
        for type in ["nfs", "cifs", "smb3", "ceph", "9p", "glusterfs"] {
            #expect(SharedFilesystem.note(forType: type)?.contains("(\(type)), a network filesystem: SQLite") == true, "\(type)")
        }
        #expect(SharedFilesystem.note(forType: "fuse.s3fs")?.hasPrefix("cache.path is on a FUSE filesystem (fuse.s3fs): ") == true)
        for type in ["ext4", "xfs", "btrfs", "tmpfs", "overlay", "zfs", "fuseblk"] {
            #expect(SharedFilesystem.note(forType: type) == nil, "\(type)")
        }
    }

    /// Live, through `algogate check-config` and `algogate serve`: a state file on this machine's
    /// own disk gets no note; one on a FUSE mount (bindfs, from Debian's packages, which the test
    /// command installs) does.
    @Test func checkConfigAndServeSayWhereTheStateFileCannotBeShared() async throws {
        try await withTemporaryDirectory("shared-fs") { directory in
            func config(statePath: String) throws -> URL {
                let file = directory.appendingPathComponent("gateway-\(UUID().uuidString).yaml")
                try """
                server: {host: 127.0.0.1, port: 0}
                upstream: {url: http://127.0.0.1:9, key_env: UP_KEY}
                cache: {path: "\(statePath)"}
                clients: [{name: a, key_sha256: "\(ClientRegistry.hash(of: Keys.teamA))", scopes: [algo]}]
                """.write(to: file, atomically: true, encoding: .utf8)
                return file
            }
            let environment = ["UP_KEY": Keys.upstream]
            let local = try await ChildProcess.run(arguments: ["check-config", "--config", try config(statePath: directory.path + "/state/a.sqlite").path],
                                                   environment: environment)
            #expect(local.termination == .exited(0))
            #expect(!local.log.contains("cache.path is on"), "\(local.log)")

            guard FileManager.default.fileExists(atPath: "/dev/fuse") else {
                print("SharedFilesystemTests: no /dev/fuse on this machine: the FUSE mount is not tried")
                return
            }
            let (source, mount) = (directory.appendingPathComponent("source"), directory.appendingPathComponent("mount"))
            try FileManager.default.createDirectory(at: source, withIntermediateDirectories: true)
            try FileManager.default.createDirectory(at: mount, withIntermediateDirectories: true)
            let mounted = try await ChildProcess.run(executable: URL(fileURLWithPath: "/usr/bin/env"), arguments: ["bindfs", source.path, mount.path])
            guard mounted.termination == .exited(0) else {
                Issue.record("mounting bindfs needs the bindfs package (deploy/install-deps.sh installs it) and root, as CI runs: \(mounted.log)")
                return
            }
            defer { detachMount(at: mount) }
            let onFUSE = try config(statePath: mount.path + "/state/a.sqlite")
            let note = "note: cache.path is on a FUSE filesystem (fuse): SQLite, which keeps the cache and the usage counters there, needs locks and shared memory that FUSE filesystems reaching the network (s3fs, gcsfuse, blobfuse, sshfs) do not give; unless this one is a disk of this machine's own underneath, give cache.path a disk of this machine's own (Kubernetes: a ReadWriteOnce volume), one per gateway"
            let checked = try await ChildProcess.run(arguments: ["check-config", "--config", onFUSE.path], environment: environment)
            #expect(checked.termination == .exited(0))
            #expect(checked.log.split(separator: "\n").contains { $0 == note }, "\(checked.log)")
            // `serve` says the same as a warning as it starts, and serves.
            let served = try ChildProcess(arguments: ["serve", "--config", onFUSE.path], environment: environment)
            _ = try await served.listeningPort()
            #expect(served.log.contains(#""level":"warning","logger":"algogate","msg":"\#(note.dropFirst("note: ".count))""#), "\(served.log)")
            await withCheckedContinuation { done in served.stop { done.resume() } }
        }
    }
}
