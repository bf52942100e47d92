import AlgoGate
import AlgoTestSupport
import Foundation
import GRDB
import Testing

/// A disk that fills up: the gateway's SQLite file on a tmpfs of a few MiB (the tests run as root,
/// as CI does, to mount it), filled to its last byte by another file.
@Suite struct DiskFullTests {
    static let reserveBytes = 2 << 20

    @Test func aFullDiskStopsTheCacheButNotTheCounters() async throws {
        try await Self.withSmallDisk(bytes: 8 << 20) { disk in
            let path = disk.appendingPathComponent("state.sqlite").path
            try await GatewayHarness.run(cachePath: path, reserveBytes: Self.reserveBytes) { h in
                let reserve = path + "-reserve"
                #expect(Self.size(of: reserve) == Self.reserveBytes)
                let first = try await Self.call(h, "before")
                #expect(first.header("Cache-Status") == "algogate; fwd=miss; stored")

                let filler = try Self.fill(disk)
                var calls = 1
                var statuses: [Int] = []
                // The first write to find the disk full (a cache store, or the counters' write
                // within the second) gives the reserve's room back.
                #expect(await eventually {
                    calls += 1
                    let reply = try? await Self.call(h, "full-\(calls)")
                    statuses.append(reply?.status ?? 0)
                    return !FileManager.default.fileExists(atPath: reserve)
                })
                // Every call was answered, none refused for want of its counters.
                #expect(Set(statuses) == [200], "\(statuses)")
                let unstored = try await Self.call(h, "while-full")
                calls += 1
                #expect(unstored.status == 200, "\(unstored.text) \(h.logs.all.filter { !$0.hasPrefix("info") })")
                #expect(unstored.object["result"] as? String == "Hello while-full")
                #expect(unstored.header("Cache-Status") == "algogate; fwd=miss")
                #expect(unstored.header("X-Cache") == "MISS")
                // (The request's line is written once its answer has gone.)
                #expect(await eventually {
                    h.logs.all.contains {
                        $0.hasPrefix("warning request ") && $0.contains("not_stored=the disk holding cache.path is full: the cache stores nothing until it has room")
                    }
                })
                #expect(await eventually {
                    h.logs.all.contains { $0.hasPrefix("error the disk holding cache.path is full: gave back the 2 MiB held beside it, so usage is still counted; the cache stores nothing until the disk has 4 MiB free reserve=\(reserve)") }
                })
                let metrics = try await h.gateway.send(.GET, "/metrics")
                #expect(metricSample(metrics.text, "algogate_disk_reserve_held") == 0)
                #expect(metricSample(metrics.text, "algogate_usage_store_failing") == 0)
                #expect(try await h.gateway.send(.GET, "/readyz").status == 200)
                // Every call is in the counters, written on the full disk.
                #expect(await h.app.ledger.flush())
                let requests = try await h.app.storage.pool.read { db in
                    try Int.fetchOne(db, sql: "SELECT sum(requests) FROM usage_day WHERE client = 'team-b'")
                }
                #expect(requests == calls)
                #expect(!h.logs.all.contains { $0.hasPrefix("error usage counters could not be written") },
                        "\(h.logs.all.filter { !$0.hasPrefix("info") })")

                // Room again: the reserve is taken anew, and the cache stores again.
                try FileManager.default.removeItem(at: filler)
                #expect(await eventually { Self.size(of: reserve) == Self.reserveBytes })
                #expect(await eventually {
                    h.logs.all.contains { $0.hasPrefix("notice the disk holding cache.path has room again: 2 MiB held beside it anew, and the cache stores again") }
                })
                let stored = try await Self.call(h, "after")
                #expect(stored.header("Cache-Status") == "algogate; fwd=miss; stored")
                let hit = try await Self.call(h, "after")
                #expect(hit.header("X-Cache") == "HIT")
                #expect(hit.bytes == stored.bytes)
                let held = try await h.gateway.send(.GET, "/metrics")
                #expect(metricSample(held.text, "algogate_disk_reserve_held") == 1)
            }
        }
    }

    /// With no cache store to find the disk full first, the counters' own write does, and takes
    /// the room.
    @Test func withTheCacheOffTheCountersTakeTheReserve() async throws {
        try await Self.withSmallDisk(bytes: 8 << 20) { disk in
            let path = disk.appendingPathComponent("state.sqlite").path
            try await GatewayHarness.run(cacheYAML: "enabled: false", cachePath: path, reserveBytes: Self.reserveBytes) { h in
                #expect(try await Self.call(h, "before").status == 200)
                _ = try Self.fill(disk)
                var calls = 1
                var statuses: [Int] = []
                #expect(await eventually {
                    calls += 1
                    statuses.append((try? await Self.call(h, "full-\(calls)"))?.status ?? 0)
                    return !FileManager.default.fileExists(atPath: path + "-reserve")
                })
                // Past a few more of the counters' writes (one a second).
                let end = ContinuousClock.now + .seconds(2.5)
                while ContinuousClock.now < end {
                    calls += 1
                    statuses.append((try? await Self.call(h, "full-\(calls)"))?.status ?? 0)
                    try await Task.sleep(for: .milliseconds(50))
                }
                #expect(Set(statuses) == [200], "\(statuses)")
                #expect(await h.app.ledger.flush())
                let requests = try await h.app.storage.pool.read { db in
                    try Int.fetchOne(db, sql: "SELECT sum(requests) FROM usage_day WHERE client = 'team-b'")
                }
                #expect(requests == calls)
            }
        }
    }

    /// What the reserve prevents: with none, a full disk stops the counters, and quotas fail
    /// closed until it has room.
    @Test func withoutTheReserveAFullDiskRefusesEveryTeamRequest() async throws {
        try await Self.withSmallDisk(bytes: 4 << 20) { disk in
            let path = disk.appendingPathComponent("state.sqlite").path
            try await GatewayHarness.run(cachePath: path, reserveBytes: 0) { h in
                #expect(!FileManager.default.fileExists(atPath: path + "-reserve"))
                #expect(try await Self.call(h, "before").status == 200)
                let filler = try Self.fill(disk)
                var refused: TestHTTP.Reply?
                var calls = 0
                #expect(await eventually {
                    calls += 1
                    refused = try? await Self.call(h, "full-\(calls)")
                    return refused?.status == 503
                })
                #expect(refused?.text == #"{"error":{"error_type":"QuotaStoreUnavailable","message":"usage cannot be recorded right now, so requests are refused; retry shortly"}}"#)
                #expect(try await h.gateway.send(.GET, "/readyz").status == 503)
                let metrics = try await h.gateway.send(.GET, "/metrics")
                #expect(metricSample(metrics.text, "algogate_usage_store_failing") == 1)
                #expect(metricSample(metrics.text, "algogate_disk_reserve_held") == 1)
                // The log says why, in SQLite's words.
                #expect(h.logs.all.contains {
                    $0.hasPrefix("error usage counters could not be written; requests are refused until they can error=SQLite error 13: database or disk is full")
                }, "\(h.logs.all.filter { $0.hasPrefix("error") })")

                try FileManager.default.removeItem(at: filler)
                #expect(await eventually { (try? await Self.call(h, "after"))?.status == 200 })
            }
        }
    }

    /// A cache.max_bytes larger than the disk holding cache.path can give the cache is named
    /// by check-config (and logged by serve), with the room there; one that fits is not.
    @Test func checkConfigNamesACacheLargerThanItsDisk() async throws {
        try await Self.withSmallDisk(bytes: 32 << 20) { disk in
            let config = disk.appendingPathComponent("algogate.yaml")
            func check(maxBytes: Int, spool: Int = 0, cache: Bool = true) async throws -> [String] {
                try """
                upstream: {url: "http://127.0.0.1:9", key_env: UP_KEY}
                cache: {path: "\(disk.path)/state.sqlite", max_bytes: \(maxBytes), enabled: \(cache)}
                limits: {spool_max_bytes: \(spool)}
                clients: [{name: a, key_sha256: "\(String(repeating: "ab", count: 32))", scopes: [algo]}]
                """.write(to: config, atomically: true, encoding: .utf8)
                let checked = try await ChildProcess.run(arguments: ["check-config", "--config", config.path], environment: ["UP_KEY": "upstream-key-0123"])
                #expect(checked.termination == .exited(0), "\(checked.log)")
                return checked.log.split(separator: "\n").filter { $0.hasPrefix("note: ") }.map(String.init)
            }
            // The config file itself takes a page of the 32 MiB.
            let tooLarge = try await check(maxBytes: 1 << 30)
            #expect(tooLarge == [
                "note: cache.max_bytes (1 GiB), with its WAL (about 4 MiB) and the 16 MiB the gateway holds beside it for the usage counters, "
                    + "is more than the 32.0 MiB the disk holding cache.path has for them: once the disk is full, the cache stores nothing; "
                    + "lower cache.max_bytes, or give cache.path a larger disk",
            ])
            let fits = try await check(maxBytes: 8 << 20)
            #expect(fits == [])
            // The spool of downloads waiting for slow clients is on the same disk.
            #expect(try await check(maxBytes: 8 << 20, spool: 1 << 30) == [
                "note: cache.max_bytes (8 MiB), with its WAL (about 4 MiB) and the 16 MiB the gateway holds beside it for the usage counters, "
                    + "and limits.spool_max_bytes (1 GiB) of downloads waiting for slow clients, "
                    + "is more than the 32.0 MiB the disk holding cache.path has for them: once the disk is full, the cache stores nothing; "
                    + "lower cache.max_bytes or limits.spool_max_bytes, or give cache.path a larger disk",
            ])
            #expect(try await check(maxBytes: 8 << 20, spool: 1 << 30, cache: false) == [
                "note: limits.spool_max_bytes (1 GiB) of downloads waiting for slow clients is more than the 32.0 MiB the disk holding cache.path "
                    + "has for it: once the disk is full, downloads wait for their clients holding their upstream slots; lower limits.spool_max_bytes, "
                    + "or give cache.path a larger disk",
            ])
            #expect(try await check(maxBytes: 8 << 20, spool: 4 << 20, cache: false) == [])
        }
    }

    /// The reserve is made where it is named, never through a symbolic link someone left there:
    /// growing and truncating the file it points to would damage it.
    @Test func theReserveIsNeverTakenThroughASymbolicLink() async throws {
        try await withTemporaryDirectory("reserve-link") { directory in
            let target = directory.appendingPathComponent("precious")
            try Data("keep me".utf8).write(to: target)
            let database = directory.appendingPathComponent("state.sqlite").path
            try FileManager.default.createSymbolicLink(atPath: database + "-reserve", withDestinationPath: target.path)
            let reserve = DiskReserve(besideDatabase: database, bytes: 1 << 20)
            #expect(!reserve.take())
            #expect(!reserve.isHeld)
            #expect(try Data(contentsOf: target) == Data("keep me".utf8))

            try FileManager.default.removeItem(atPath: database + "-reserve")
            #expect(reserve.take())
            #expect(Self.size(of: database + "-reserve") == 1 << 20)
            #expect(reserve.release())
            #expect(!FileManager.default.fileExists(atPath: database + "-reserve"))
            #expect(!reserve.release(), "given back once")
        }
    }

    /// Given back, the room is taken again only once the disk has it twice over: taken with less,
    /// the cache storing again would fill the disk at once and give it straight back.
    @Test func theReserveIsTakenAgainOnlyOnceTheDiskHasItTwiceOver() async throws {
        try await Self.withSmallDisk(bytes: 8 << 20) { disk in
            let reserve = DiskReserve(besideDatabase: disk.appendingPathComponent("state.sqlite").path, bytes: Self.reserveBytes)
            #expect(reserve.take())
            #expect(reserve.release())
            let filler = disk.appendingPathComponent("filler").path
            let descriptor = open(filler, O_WRONLY | O_CREAT | O_TRUNC, 0o600)
            try #require(descriptor >= 0)
            defer { close(descriptor) }
            // Sizes the filler so that the disk has `left` bytes free.
            func leave(_ left: Int) throws {
                var stats = statvfs()
                try #require(statvfs(disk.path, &stats) == 0)
                let size = (Self.size(of: filler) ?? 0) + Int(stats.f_bavail) * Int(stats.f_frsize) - left
                try #require(ftruncate(descriptor, 0) == 0 && posix_fallocate(descriptor, 0, off_t(size)) == 0)
            }
            try leave(3 * Self.reserveBytes / 2)
            #expect(!reserve.retakeIfRoom(), "room for the reserve, but not twice over")
            #expect(!reserve.isHeld && Self.size(of: reserve.path) == nil)
            try leave(2 * Self.reserveBytes + (256 << 10))
            #expect(reserve.retakeIfRoom())
            #expect(reserve.isHeld && Self.size(of: reserve.path) == Self.reserveBytes)
        }
    }

    static func call(_ h: GatewayHarness, _ input: String) async throws -> TestHTTP.Reply {
        try await h.gateway.send(.POST, "/v1/algo/demo/Hello/0.1.0", headers: simple(Keys.teamB) + textType, text: input)
    }

    static func size(of path: String) -> Int? {
        (try? FileManager.default.attributesOfItem(atPath: path)[.size]) as? Int
    }

    /// Runs `body` with a tmpfs of `bytes` mounted at a new directory, unmounted after.
    static func withSmallDisk(bytes: Int, _ body: (URL) async throws -> Void) async throws {
        try await withTemporaryDirectory("small-disk") { directory in
            let mounted = try await ChildProcess.run(executable: URL(fileURLWithPath: "/bin/mount"),
                                                     arguments: ["-t", "tmpfs", "-o", "size=\(bytes)", "tmpfs", directory.path])
            guard mounted.termination == .exited(0) else {
                Issue.record("mounting a tmpfs needs root (as CI runs): \(mounted.log)")
                return
            }
            do {
                try await body(directory)
            } catch {
                _ = try? await ChildProcess.run(executable: URL(fileURLWithPath: "/bin/umount"), arguments: ["-l", directory.path])
                throw error
            }
            let unmounted = try await ChildProcess.run(executable: URL(fileURLWithPath: "/bin/umount"), arguments: ["-l", directory.path])
            #expect(unmounted.termination == .exited(0), "\(unmounted.log)")
        }
    }

    /// Fills the disk holding `directory` to its last byte, with a file of its own.
    static func fill(_ directory: URL) throws -> URL {
        let filler = directory.appendingPathComponent("filler")
        let descriptor = open(filler.path, O_WRONLY | O_CREAT | O_TRUNC, 0o600)
        guard descriptor >= 0 else { throw POSIXError(.init(rawValue: errno) ?? .EIO) }
        defer { close(descriptor) }
        let chunk = [UInt8](repeating: 0x5a, count: 4096)
        while chunk.withUnsafeBytes({ write(descriptor, $0.baseAddress, $0.count) }) > 0 {}
        #expect(errno == ENOSPC)
        return filler
    }
}
