import AlgoTestSupport
import Foundation
import GRDB
import Testing
@testable import AlgoGate

/// The state file as `serve` opens it.
@Suite struct StateDatabaseTests {
    /// A read that holds one snapshot while writes go on (as `algogate backup` does) keeps the WAL
    /// from restarting, so it grows by what is written meanwhile. Once the read has ended, the WAL
    /// restarts and is cut back to `walSizeLimit`: before, SQLite kept reusing the larger file,
    /// and the spike's size stayed on the disk for the process's life.
    @Test func aWALGrownWhileASnapshotWasHeldIsCutBackOnceItRestarts() async throws {
        try await withTemporaryDirectory("wal-limit") { directory in
            let path = directory.appendingPathComponent("state.sqlite").path
            let pool = try StateDatabase.open(path: path)
            defer { try? pool.close() }
            try await pool.write { db in try db.execute(sql: "CREATE TABLE filler (b BLOB)") }
            func walBytes() -> Int { StateBackup.fileSize(path + "-wal") }

            let reading = Latch(), done = Latch()
            let reader = Task {
                try await pool.read { db in
                    _ = try Int.fetchOne(db, sql: "SELECT count(*) FROM filler")
                    reading.open()
                    while !done.isOpen { Thread.sleep(forTimeInterval: 0.01) }
                }
            }
            #expect(await eventually { reading.isOpen })
            for _ in 0..<40 { try await pool.write { db in try db.execute(sql: "INSERT INTO filler VALUES (zeroblob(1048576))") } }
            let grown = walBytes()
            #expect(grown > 40 << 20, "\(grown) bytes of WAL")
            done.open()
            try await reader.value

            // Writes after the read, as the gateway's go on: the first one's commit checkpoints
            // the whole WAL (SQLite's automatic checkpoint, past 1,000 pages; none reads the old
            // frames now), and the next restarts the WAL, cutting it back.
            for _ in 0..<2 { try await pool.write { db in try db.execute(sql: "DELETE FROM filler WHERE rowid IN (SELECT rowid FROM filler LIMIT 1)") } }
            #expect(walBytes() <= StateDatabase.walSizeLimit, "\(walBytes()) bytes of WAL after it restarted (it grew to \(grown))")
            #expect(try await pool.read { try String.fetchOne($0, sql: "PRAGMA journal_size_limit") } == "\(StateDatabase.walSizeLimit)")
        }
    }
}
