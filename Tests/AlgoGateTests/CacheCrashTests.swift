import AlgoTestSupport
import AsyncHTTPClient
import Crypto
import Foundation
import GRDB
import NIOCore
import Testing
@testable import AlgoGate

/// `kill -9` of a gateway that is writing cache entries, then the file is reopened and checked.
@Suite struct CacheCrashTests {
    @Test func aKilledWriterLeavesNoCorruptionAndNoPartialEntry() async throws {
        let pair = try await ProcessHarness { ProcessHarness.standardYAML(simPort: $0, gatewayPort: $1, work: $2) }
        defer { pair.stop() }
        let gateway = pair.gateway
        let gatewayPort = pair.gatewayPort
        let cachePath = pair.work.appendingPathComponent("cache.sqlite").path
        let config = pair.configURL

        // Distinct calls with 64 kB answers, eight at a time, until the gateway is killed. The
        // workers stop sending before the kill: once the gateway has died its port is free, and
        // a gateway another test starts meanwhile may be given it, and it knows team-b too (a run
        // of the whole suite once saw another test's simulator get eight calls more than its
        // own: one a worker).
        let killing = Latch()
        let load = Task {
            try await withThrowingTaskGroup(of: Void.self) { group in
                for worker in 0..<8 {
                    group.addTask {
                        for index in 0..<10_000 where !killing.isOpen {
                            var request = HTTPClientRequest(url: "http://127.0.0.1:\(gatewayPort)/v1/algo/util/Echo/1.0.0")
                            request.method = .POST
                            request.headers.add(name: "Authorization", value: "Simple \(Keys.teamB)")
                            request.headers.add(name: "Content-Type", value: "text/plain")
                            request.body = .bytes(ByteBuffer(string: "\(worker)-\(index)-" + String(repeating: "x\(index % 7)", count: 32_000)))
                            guard let response = try? await HTTPClient.shared.execute(request, timeout: .seconds(5)) else { return }
                            _ = try? await response.body.collect(upTo: 1 << 20)
                        }
                    }
                }
                try await group.waitForAll()
            }
        }
        // Kill once the file holds some entries and the load is still writing more: a fixed sleep
        // depended on how busy the machine was (a loaded CI runner had stored only 8 in 1.5 s).
        var readOnly = Configuration()
        readOnly.readonly = true
        let deadline = ContinuousClock.now + .seconds(60)
        var stored = 0
        while stored < 20, ContinuousClock.now < deadline {
            try await Task.sleep(for: .milliseconds(100))
            guard FileManager.default.fileExists(atPath: cachePath),
                  let pool = try? DatabasePool(path: cachePath, configuration: readOnly) else { continue }
            stored = (try? await pool.read { try Int.fetchOne($0, sql: "SELECT count(*) FROM cache_entry") ?? 0 }) ?? 0
            try? pool.close()
        }
        #expect(stored >= 20, "the gateway stored only \(stored) entries in 60 s")
        killing.open()
        gateway.signal(SIGKILL)
        await gateway.exited()
        load.cancel()
        _ = await load.result

        let cache = try ResponseCache(path: cachePath, settings: .init(maxBytes: 1 << 30, memoryBytes: 0, compressMinBytes: 1024))
        let (integrity, entries, totals) = try cache.pool.read { db in
            (try String.fetchOne(db, sql: "PRAGMA integrity_check"),
             try CacheEntry.fetchAll(db),
             try Row.fetchOne(db, sql: "SELECT entries, bytes FROM cache_totals")!)
        }
        #expect(integrity == "ok")
        print("cache crash test: \(entries.count) entries survived kill -9 mid-write")
        #expect(entries.count >= stored)
        for entry in entries {
            let answer = try ResponseCache.decode(entry)
            let digest = SHA256.hash(data: Data(answer.body.readableBytesView)).map { String(format: "%02x", $0) }.joined()
            #expect(digest == entry.bodySHA256, "entry \(entry.key) is partial")
            #expect(entry.size == entry.body.count)
        }
        #expect(totals["entries"] as Int == entries.count)
        #expect(totals["bytes"] as Int == entries.reduce(0) { $0 + $1.size })

        // The operator CLI reads the same file.
        let stats = try await ChildProcess.run(arguments: ["cache", "stats", "--config", config.path])
        #expect(stats.termination == .exited(0))
        #expect(stats.log.contains("entries: \(entries.count)"))
        #expect(stats.log.contains("util/Echo/1.0.0"))
        // A pattern the HTTP endpoint would refuse is refused here too, before anything is read.
        let typo = try await ChildProcess.run(arguments: ["cache", "purge", "--config", config.path, "--algo", "util-Echo"])
        #expect(typo.termination == .exited(64))
        #expect(typo.log.contains("Error: --algo must be owner/name or owner/name/version, not 'util-Echo'"), "\(typo.log)")
        #expect(try await cache.stats().entries == entries.count)
        let purge = try await ChildProcess.run(arguments: ["cache", "purge", "--config", config.path, "--algo", "util/Echo"])
        #expect(purge.log.contains("purged \(entries.count) entries of util/Echo"))
        #expect(try await cache.stats().entries == 0)
    }
}
