import AlgoTestSupport
import Foundation
import GRDB
import Testing
@testable import AlgoGate

/// `algogate restore`: a copy `algogate backup` made, put in place while the gateway is stopped.
@Suite struct RestoreTests {
    static func algoCalls(_ sim: TestHTTP) async throws -> [String: Int] {
        try await sim.send(.GET, "/__sim/stats").object["algoCalls"] as? [String: Int] ?? [:]
    }

    @Test func aCopyRestoredOverAKilledGatewaysFileIsWhatTheGatewayServesNext() async throws {
        let pair = try await ProcessHarness { ProcessHarness.standardYAML(simPort: $0, gatewayPort: $1, work: $2) }
        defer { pair.stop() }
        let statePath = pair.work.appendingPathComponent("cache.sqlite").path
        let copyPath = pair.work.appendingPathComponent("copy.sqlite").path
        let sim = TestHTTP(port: pair.simPort)
        func count(_ table: String) -> Int {
            guard let queue = try? DatabaseQueue(path: statePath) else { return 0 }
            defer { try? queue.close() }
            return (try? queue.read { try Int.fetchOne($0, sql: "SELECT count(*) FROM \(table)") }) ?? 0
        }
        // Entries are stored as answers are sent; usage counters within a second.
        func stored() -> Int { count("usage_day") == 1 ? count("cache_entry") : 0 }

        // One answer stored, then the copy; then a second answer stored, after the copy.
        #expect(try await BackupTests.echo(pair.gatewayPort, "kept").header("X-Cache") == "MISS")
        #expect(await eventually { stored() == 1 })
        let backup = try await ChildProcess.run(arguments: ["backup", "--config", pair.configURL.path, "--to", copyPath])
        #expect(backup.termination == .exited(0), "\(backup.log)")
        #expect(try await BackupTests.echo(pair.gatewayPort, "after the backup").header("X-Cache") == "MISS")
        #expect(await eventually { stored() == 2 })

        // Refused while the gateway serves the file, which is left as it was.
        let restore = ["restore", "--config", pair.configURL.path, "--from", copyPath]
        let whileServing = try await ChildProcess.run(arguments: restore + ["--replace"])
        #expect(whileServing.termination == .exited(1))
        #expect(whileServing.log == "algogate restore: another process has \(statePath) (cache.path) open, a gateway serving it or an algogate command: "
            + "stop the gateway first (systemctl stop algogate; on Kubernetes, scale the Deployment to 0 and run the restore in a pod of its own on the volume), then restore\n")
        #expect(try await BackupTests.echo(pair.gatewayPort, "after the backup").header("X-Cache") == "HIT")

        // Killed: its last writes are left in the -wal file beside the file.
        pair.gateway.signal(SIGKILL)
        await pair.gateway.exited()
        #expect((try FileManager.default.attributesOfItem(atPath: statePath + "-wal")[.size] as? Int ?? 0) > 0)

        // An existing file is replaced only when asked; then the copy is what it holds, and no
        // WAL is left for the next start to replay into it.
        let unasked = try await ChildProcess.run(arguments: restore)
        #expect(unasked.termination == .exited(1))
        #expect(unasked.log == "algogate restore: \(statePath) (cache.path) exists: restoring replaces its cache and usage counters with the copy's; give --replace to do so\n")
        let restored = try await ChildProcess.run(arguments: restore + ["--replace"])
        #expect(restored.termination == .exited(0), "\(restored.log)")
        let lines = restored.log.split(separator: "\n").map(String.init)
        let day = SQLiteUsageStore.dayString(Int(Date().timeIntervalSince1970 / 86_400))
        #expect(lines.count == 2)
        #expect(lines.first?.hasPrefix("restored \(statePath) from \(copyPath): ") == true)
        #expect(lines.first?.hasSuffix(": 1 cached answer; usage of 1 client in 1 client-day (\(day)); integrity check ok") == true, "\(lines)")
        #expect(lines.last?.hasPrefix("the file replaced held ") == true)
        #expect(lines.last?.hasSuffix(": 2 cached answers; usage of 1 client in 1 client-day (\(day))") == true, "\(lines)")
        #expect(!FileManager.default.fileExists(atPath: statePath + "-wal"))
        #expect(stored() == 1)

        // A gateway started on it answers what the copy held, and asks the upstream for what
        // was stored after the copy.
        let callsBefore = try await Self.algoCalls(sim)
        let gateway = try ChildProcess(arguments: ["serve", "--config", pair.configURL.path], environment: [ProcessHarness.keyVariable: Keys.upstream])
        defer { gateway.stop() }
        let port = try await gateway.listeningPort()
        #expect(try await BackupTests.echo(port, "kept").header("X-Cache") == "HIT")
        #expect(try await Self.algoCalls(sim) == callsBefore)
        #expect(try await BackupTests.echo(port, "after the backup").header("X-Cache") == "MISS")
        #expect(try await Self.algoCalls(sim)["util/Echo/1.0.0"] == (callsBefore["util/Echo/1.0.0"] ?? 0) + 1)
    }

    @Test func aRestoreMakesAMissingFileAndRefusesWhatIsNotACopyOrNotAStateFile() async throws {
        try await withTemporaryDirectory("restore") { directory in
            // A copy of a state file with 1 MiB besides its tables, made closed (0600).
            let source = try await BackupTests.stateFile(in: directory, filler: "randomblob", megabytes: 1)
            let copy = directory.path + "/copy.sqlite"
            let made = try await ChildProcess.run(arguments: ["backup", "--config", try BackupTests.config(statePath: source, in: directory), "--to", copy])
            #expect(made.termination == .exited(0), "\(made.log)")
            #expect(chmod(copy, 0o600) == 0)

            // On a new volume: the file, and the directories above it, are made.
            let fresh = directory.path + "/volume/state/algogate.sqlite"
            let freshConfig = try BackupTests.config(statePath: fresh, in: directory)
            let restored = try await ChildProcess.run(arguments: ["restore", "--config", freshConfig, "--from", copy])
            #expect(restored.termination == .exited(0), "\(restored.log)")
            #expect(restored.log == "restored \(fresh) from \(copy): \(Formatting.size(StateBackup.fileSize(copy))): 0 cached answers; no usage recorded; integrity check ok\n")
            #expect(try FileManager.default.attributesOfItem(atPath: fresh)[.posixPermissions] as? Int == 0o600)
            // As `serve` opens it (WAL, migrations): what the copy held.
            let pool = try StateDatabase.open(path: fresh)
            #expect(try await pool.read { try Int.fetchOne($0, sql: "SELECT count(*) FROM filler") } == 1)
            #expect(try await pool.read { try String.fetchOne($0, sql: "PRAGMA journal_mode") } == "wal")
            try pool.close()

            func refused(_ arguments: [String], _ message: String, sourceLocation: SourceLocation = #_sourceLocation) async throws {
                let outcome = try await ChildProcess.run(arguments: ["restore"] + arguments)
                #expect(outcome.termination == .exited(1), sourceLocation: sourceLocation)
                #expect(outcome.log == "algogate restore: \(message)\n", sourceLocation: sourceLocation)
            }
            try await refused(["--config", freshConfig, "--from", directory.path + "/none.sqlite"], "there is no file at \(directory.path)/none.sqlite to restore")
            try await refused(["--config", freshConfig, "--from", directory.path + "/volume/state/../state/algogate.sqlite", "--replace"],
                              "\(directory.path)/volume/state/../state/algogate.sqlite is the state file itself (cache.path): give a copy algogate backup made")
            // A copy that opens but fails SQLite's integrity check (an index that disagrees with
            // its table): refused, and the state file is as it was.
            let damaged = directory.path + "/damaged.sqlite"
            try FileManager.default.copyItem(atPath: copy, toPath: damaged)
            let damage = try DatabaseQueue(path: damaged)
            try await damage.write { db in
                try db.execute(sql: "CREATE TABLE t (a); CREATE INDEX t_a ON t (a); INSERT INTO t VALUES (1), (2), (3)")
            }
            try await damage.writeWithoutTransaction { db in
                try db.execute(sql: "PRAGMA writable_schema = ON; UPDATE sqlite_master SET sql = 'CREATE INDEX t_a ON t (a DESC)' WHERE name = 't_a'")
            }
            try damage.close()
            let refusedDamaged = try await ChildProcess.run(arguments: ["restore", "--config", freshConfig, "--from", damaged, "--replace"])
            #expect(refusedDamaged.termination == .exited(1))
            #expect(refusedDamaged.log.hasPrefix("algogate restore: the copy \(damaged) fails SQLite's integrity check (row 1 missing from index t_a; "),
                    "\(refusedDamaged.log)")
            #expect(refusedDamaged.log.hasSuffix("): restore another\n"), "\(refusedDamaged.log)")
            let kept = try StateDatabase.open(path: fresh)
            #expect(try await kept.read { try Int.fetchOne($0, sql: "SELECT count(*) FROM filler") } == 1)
            #expect(try await kept.read { try Bool.fetchOne($0, sql: "SELECT count(*) > 0 FROM sqlite_master WHERE name = 't'") } == false)
            try kept.close()

            let text = directory.path + "/text.sqlite"
            try "not a database".write(toFile: text, atomically: true, encoding: .utf8)
            try await refused(["--config", freshConfig, "--from", text, "--replace"], "cannot read the copy \(text): it is not a SQLite database")
            let other = directory.path + "/other.sqlite"
            let otherQueue = try DatabaseQueue(path: other)
            try await otherQueue.write { try $0.execute(sql: "CREATE TABLE t (x)") }
            try otherQueue.close()
            try await refused(["--config", freshConfig, "--from", other, "--replace"],
                              "\(other) is a SQLite file but not a copy of the gateway's: it has no cache_entry or usage_day table")
            // A state file that is not a database (the disk's doing, say) is left for the operator
            // to move aside, rather than overwritten.
            try await refused(["--config", try BackupTests.config(statePath: text, in: directory), "--from", copy, "--replace"],
                              "cannot read \(text) (cache.path): file is not a database; move it aside with its -wal and -shm files, and restore again")
            #expect(try String(contentsOfFile: text, encoding: .utf8) == "not a database")
        }
    }
}
