@testable import AlgoGate
import AlgoTestSupport
import Foundation
import Testing

/// The process's own figures at `/metrics`, under the standard `process_*` names: read from the
/// gateway's `/proc` entries when scraped.
@Suite struct ProcessMetricsTests {
    /// proc(5)'s `stat` line, whose command may hold spaces and parentheses.
    @Test func aStatLineIsReadByItsFieldNumbers() throws {
        let stat = "4242 (algo gate (x)) S 1 4242 4242 0 -1 4194560 1500 0 0 0 250 50 0 0 20 0 12 0 1000 734003200 12800 18446744073709551615 1 1 0 0 0 0 0 4096 17479 0 0 0 17 1 0 0 0 0 0\n"
        let reading = try #require(ProcessMetrics.Reading.parse(stat: stat, bootTime: 1_700_000_000, ticksPerSecond: 100, pageSize: 4096,
                                                               openDescriptors: 7, maxDescriptors: 1024))
        #expect(reading == ProcessMetrics.Reading(cpuSeconds: 3, residentBytes: 12800 * 4096, virtualBytes: 734_003_200,
                                                  startTime: 1_700_000_010, openDescriptors: 7, maxDescriptors: 1024))
        #expect(ProcessMetrics.Reading.parse(stat: "4242 (cut", bootTime: 0, ticksPerSecond: 100, pageSize: 4096, openDescriptors: 0, maxDescriptors: 0) == nil)
        #expect(ProcessMetrics.Reading.parse(stat: "4242 (short) S 1 2", bootTime: 0, ticksPerSecond: 100, pageSize: 4096, openDescriptors: 0, maxDescriptors: 0) == nil)
        #expect(ProcessMetrics.Reading.bootTime("cpu  1 2 3\nintr 5\nbtime 1764979200\nprocesses 9\n") == 1_764_979_200)
    }

    /// A listing of thousands of entries, read to its end across more than one of `readdir`'s buffers
    /// (whose last entries used to be copied whole, past the buffer's end), counts each once.
    @Test func aLargeListingIsCountedEntryByEntry() async throws {
        try await withTemporaryDirectory("listing") { directory in
            // 2,000 entries of 24 bytes fill readdir's 32 KiB buffer once and start another.
            for number in 0..<2_000 {
                #expect(FileManager.default.createFile(atPath: directory.appendingPathComponent(String(number)).path, contents: nil))
            }
            #expect(FileManager.default.createFile(atPath: directory.appendingPathComponent(".hidden").path, contents: nil))
            for _ in 0..<5 { #expect(ProcessMetrics.Reading.entryCount(ofDirectory: directory.path) == 2_000) }
        }
        #expect(ProcessMetrics.Reading.entryCount(ofDirectory: "/nonexistent-\(UUID().uuidString)") == nil)
        // This process's own descriptors, 1,500 of them opened for the count and closed after:
        // all counted, whatever the suite's other tests open and close meanwhile.
        let opened = (0..<1_500).map { _ in open("/dev/null", O_RDONLY | O_CLOEXEC) }
        defer { opened.filter { $0 >= 0 }.forEach { close($0) } }
        try #require(opened.allSatisfy { $0 >= 0 })
        let counted = ProcessMetrics.Reading.openDescriptorCount()
        #expect(counted >= 1_500, "\(counted)")
    }

    static func value(_ exposition: String, _ name: String) -> Double? { metricSample(exposition, name) }

    /// Scraped from a gateway in a process of its own, the figures are that process's: its
    /// resident memory as `/proc/PID/status` has it, its descriptor limit, its start time, one
    /// more open descriptor for each client connection, and CPU time that grows with its work.
    @Test func theFiguresAreTheGatewayProcesss() async throws {
        let h = try await ProcessHarness { ProcessHarness.standardYAML(simPort: $0, gatewayPort: $1, work: $2) }
        defer { h.stop() }
        let started = Date().timeIntervalSince1970
        let metrics = TestHTTP(port: h.gatewayPort)
        let first = try await metrics.send(.GET, "/metrics").text
        for name in ["process_cpu_seconds_total", "process_resident_memory_bytes", "process_virtual_memory_bytes",
                     "process_start_time_seconds", "process_open_fds", "process_max_fds"] {
            #expect(first.contains("# TYPE \(name) "), "\(name)")
        }
        #expect(first.contains("# TYPE process_cpu_seconds_total counter"))

        let status = try String(contentsOfFile: "/proc/\(h.gateway.pid)/status", encoding: .utf8)
        let residentKiB = try #require(status.split(separator: "\n").first { $0.hasPrefix("VmRSS:") }?.split(separator: " ", omittingEmptySubsequences: true).dropFirst().first.flatMap { Double($0) })
        let resident = try #require(Self.value(first, "process_resident_memory_bytes"))
        #expect(abs(resident - residentKiB * 1024) < 0.25 * residentKiB * 1024, "\(resident) against VmRSS \(residentKiB) KiB")
        #expect(try #require(Self.value(first, "process_virtual_memory_bytes")) > resident)

        let limits = try String(contentsOfFile: "/proc/\(h.gateway.pid)/limits", encoding: .utf8)
        let openFiles = try #require(limits.split(separator: "\n").first { $0.hasPrefix("Max open files") })
        let soft = try #require(openFiles.dropFirst("Max open files".count).split(separator: " ").first.flatMap { Double($0) })
        #expect(Self.value(first, "process_max_fds") == soft)

        // Started within the harness's start-up, a minute at most before the first scrape.
        let start = try #require(Self.value(first, "process_start_time_seconds"))
        #expect(start <= started + 1 && start > started - 60, "\(start) against \(started)")

        // Each connection held open is one more descriptor in the gateway (the scrapes' own
        // connection is pooled, so open in both counts).
        let before = try #require(Self.value(first, "process_open_fds"))
        var held: [RawConnection] = []
        for _ in 0..<30 { held.append(try await RawConnection.connect(port: h.gatewayPort, sending: "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")) }
        for connection in held { #expect(await eventually { connection.text.contains("\r\n\r\n") }) }
        let second = try await metrics.send(.GET, "/metrics").text
        #expect(Self.value(second, "process_open_fds") == before + 30)
        for connection in held { await connection.close() }

        // CPU time is counted as it is spent.
        let cpuBefore = try #require(Self.value(second, "process_cpu_seconds_total"))
        for _ in 0..<300 { _ = try await metrics.send(.POST, "/v1/algo/demo/Hello/0.1.0", headers: simple(Keys.teamB) + textType, text: "HAL") }
        let cpuAfter = try #require(Self.value(try await metrics.send(.GET, "/metrics").text, "process_cpu_seconds_total"))
        #expect(cpuAfter > cpuBefore, "\(cpuBefore) then \(cpuAfter)")
    }
}

/// The bounds in force at `/metrics`, beside what they bound: upstream slots, buffered bytes, and
/// the cache's size on disk (as `cache.max_bytes` counts it) and in its hot tier.
@Suite struct BoundMetricsTests {
    @Test func theBoundsAndTheCachesSizeAreServed() async throws {
        try await GatewayHarness.run(upstreamYAML: "max_concurrency: 7", cacheYAML: "max_bytes: 5000000\n  memory_bytes: 3000000",
                                     extraYAML: "limits: {max_buffered_bytes: 40000000, max_buffered_answer_bytes: 50000000}") { h in
            let cache = try #require(h.app.cache)
            for name in ["HAL", "Dave", "Frank"] {
                let stored = try await h.gateway.send(.POST, "/v1/algo/demo/Hello/0.1.0", headers: simple(Keys.teamB) + textType, text: name)
                #expect(stored.header("Cache-Status") == "algogate; fwd=miss; stored")
            }
            try await cache.flush(now: Date().timeIntervalSince1970)
            let (entries, bodies) = try await h.app.storage.pool.read { db in
                (try Int.fetchOne(db, sql: "SELECT count(*) FROM cache_entry") ?? -1, try Int.fetchOne(db, sql: "SELECT sum(size) FROM cache_entry") ?? -1)
            }
            #expect(entries == 3)
            let metrics = try await h.gateway.send(.GET, "/metrics").text
            #expect(metricSample(metrics, "algogate_cache_entries") == 3)
            #expect(metricSample(metrics, "algogate_cache_bytes") == Double(bodies + 3 * ResponseCache.entryOverhead))
            #expect(metricSample(metrics, "algogate_cache_max_bytes") == 5_000_000)
            #expect(metricSample(metrics, "algogate_cache_memory_bytes") == Double(cache.hot.bytes))
            #expect(cache.hot.count == 3 && cache.hot.bytes > 0)
            #expect(metricSample(metrics, "algogate_cache_memory_max_bytes") == 3_000_000)
            #expect(metricSample(metrics, "algogate_upstream_max_concurrency") == 7)
            #expect(metricSample(metrics, "algogate_buffered_input_max_bytes") == 40_000_000)
            #expect(metricSample(metrics, "algogate_buffered_answer_max_bytes") == 50_000_000)
            #expect(metricSample(metrics, #"algogate_build_info{version="\#(AlgoGateVersion.string)"}"#) == 1)

            // A purge empties both, as the next flush reads it.
            #expect(try await h.gateway.send(.DELETE, "/_admin/cache", headers: simple(Keys.admin)).status == 200)
            try await cache.flush(now: Date().timeIntervalSince1970)
            let purged = try await h.gateway.send(.GET, "/metrics").text
            #expect(metricSample(purged, "algogate_cache_entries") == 0)
            #expect(metricSample(purged, "algogate_cache_bytes") == 0)
            #expect(metricSample(purged, "algogate_cache_memory_bytes") == 0)
        }
    }
}
