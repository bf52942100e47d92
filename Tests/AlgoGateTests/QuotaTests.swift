@testable import AlgoGate
import AlgoTestSupport
import Foundation
import GRDB
import Synchronization
import Testing

@Suite struct QuotaTests {
    static func call(_ h: GatewayHarness, key: String = Keys.teamB, path: String = "/v1/algo/demo/Hello/0.1.0") async throws -> TestHTTP.Reply {
        try await h.gateway.send(.POST, path, headers: simple(key) + textType, text: "HAL")
    }

    static let quotaYAML = "quota: {requests_per_minute: 3, requests_per_day: 100, max_concurrent: 2}"

    @Test func minuteWindowsAdmitCountAndRefuseWithExactHeaders() async throws {
        let clock = TestClock()  // 1_800_000_000: a minute boundary, 57_600 s before a UTC midnight
        try await GatewayHarness.run(extraYAML: Self.quotaYAML, now: { clock.now }) { h in
            for remaining in [2, 1, 0] {
                let reply = try await Self.call(h)
                #expect(reply.status == 200)
                #expect(reply.header("RateLimit-Policy") == #""minute";q=3;w=60, "day";q=100;w=86400, "parallel";q=2;qu="concurrent-requests""#)
                #expect(reply.header("RateLimit") == #""minute";r=\#(remaining);t=60, "day";r=\#(97 + remaining);t=57600"#)
            }
            clock.advance(by: 18)
            let refused = try await Self.call(h)
            #expect(refused.status == 429)
            #expect(refused.text == #"{"error":{"error_type":"QuotaExceeded","message":"client 'team-b' is over its requests_per_minute quota (3); retry in 42 s"}}"#)
            #expect(refused.header("Retry-After") == "42")
            #expect(refused.header("RateLimit") == #""minute";r=0;t=42, "day";r=97;t=57582"#)
            // Each client has its own windows.
            let other = try await Self.call(h, key: Keys.teamA)
            #expect(other.status == 200)
            clock.advance(by: 42)
            let again = try await Self.call(h)
            #expect(again.status == 200)
            #expect(again.header("RateLimit") == #""minute";r=2;t=60, "day";r=96;t=57540"#)
            // Three of team-b's four admitted calls were cache hits: they count all the same.
            #expect(h.simulator.stats.snapshot.algoCalls == ["demo/Hello/0.1.0": 1])
            // The operator learns which quota refused the request: its log line and a counter say.
            let id = try #require(refused.header("X-Request-ID"))
            let line = try #require(h.logs.all.first { $0.contains("request_id=\(id)") })
            #expect(line.contains(" error_type=QuotaExceeded ") && line.contains(" quota=requests_per_minute "), "\(line)")
            let metrics = try await h.gateway.send(.GET, "/metrics").text
            #expect(metricSample(metrics, #"algogate_quota_refusals_total{client="team-b",quota="requests_per_minute"}"#) == 1)
        }
    }

    @Test func dayAndByteQuotasRefuseUntilMidnight() async throws {
        let clock = TestClock()
        let yaml = """
        admin: {key_sha256: "\(ClientRegistry.hash(of: Keys.admin))"}
        clients:
          - {name: daily, key_sha256: "\(ClientRegistry.hash(of: Keys.teamA))", scopes: [algo], quota: {requests_per_day: 2}}
          - {name: bytes, key_sha256: "\(ClientRegistry.hash(of: Keys.teamB))", scopes: [algo], quota: {bytes_per_day: 300}}
        """
        try await GatewayHarness.run(upstreamYAML: "", extraYAML: "", now: { clock.now }, clientsYAML: yaml) { h in
            #expect(try await Self.call(h, key: Keys.teamA).status == 200)
            #expect(try await Self.call(h, key: Keys.teamA).status == 200)
            let day = try await Self.call(h, key: Keys.teamA)
            #expect(day.status == 429)
            #expect(envelope(day).message == "client 'daily' is over its requests_per_day quota (2); retry in 57600 s")
            #expect(day.header("Retry-After") == "57600")

            // ~80 bytes out and 3 in per call: the fourth call finds 300 bytes used.
            for _ in 0..<4 { _ = try await Self.call(h, key: Keys.teamB) }
            // Bytes count when the body has been sent, just after the client has it.
            #expect(await eventually { h.app.ledger.standing(of: "bytes").today.bytesIn == 4 * 3 })
            let bytes = try await Self.call(h, key: Keys.teamB)
            #expect(bytes.status == 429)
            #expect(envelope(bytes).type == "QuotaExceeded")
            // What is left counts the bytes sent too: none.
            #expect(bytes.header("RateLimit") == #""bytes";r=0;t=57600"#)
            let me = try await h.gateway.send(.GET, "/_gateway/me", headers: simple(Keys.teamB))
            let used = try #require(me.object["used_today"] as? [String: Any])
            #expect((used["bytes_in"] as? Int ?? 0) + (used["bytes_out"] as? Int ?? 0) > 300, "\(me.text)")
            #expect((me.object["remaining"] as? [String: Any])?["bytes_today"] as? Int == 0, "\(me.text)")
            // The admin key is no client: it has no quota to describe.
            let operatorMe = try await h.gateway.send(.GET, "/_gateway/me", headers: simple(Keys.admin))
            #expect(operatorMe.status == 403)
            #expect(operatorMe.text == #"{"error":{"error_type":"PermissionDenied","message":"/_gateway/me describes a client key; the admin key has no quota"}}"#)
            clock.advance(by: 57_600)
            #expect(try await Self.call(h, key: Keys.teamA).status == 200)
            #expect(try await Self.call(h, key: Keys.teamB).status == 200)
        }
    }

    @Test func theUsageCommandPrintsTheDaysTable() async throws {
        try await withTemporaryDirectory("usage-cli") { directory in
            let path = directory.appendingPathComponent("state.sqlite").path
            try await GatewayHarness.run(cachePath: path) { h in
                for _ in 0..<2 { _ = try await Self.call(h) }
            }
            let config = directory.appendingPathComponent("gateway.yaml")
            try """
            upstream: {url: "http://127.0.0.1:1", key_env: NOT_NEEDED_HERE}
            cache: {path: "\(path)"}
            \(GatewayHarness.clientsYAML())
            """.write(to: config, atomically: true, encoding: .utf8)
            let usage = try await ChildProcess.run(arguments: ["usage", "--config", config.path, "--client", "team-b", "--days", "1"])
            #expect(usage.termination == .exited(0))
            let lines = usage.log.split(separator: "\n")
            #expect(lines.first?.hasPrefix("day") == true && lines.first?.contains("cache hits") == true)
            let row = lines.dropFirst().first.map { $0.split(separator: " ").map(String.init) } ?? []
            #expect(row.count == 10)
            #expect(row.dropFirst().prefix(5) == ["team-b", "2", "1", "1", "0"])
            #expect(lines.first?.hasSuffix("compute s  slot s") == true, "\(usage.log)")

            // The same as CSV, every client: a header, then a line per client and day.
            let csv = try await ChildProcess.run(arguments: ["usage", "--config", config.path, "--days", "1", "--format", "csv"])
            #expect(csv.termination == .exited(0))
            let csvLines = csv.log.split(separator: "\n").map { $0.split(separator: ",", omittingEmptySubsequences: false).map(String.init) }
            #expect(csvLines.first == ["day", "client", "requests", "cache_hits", "upstream_calls", "errors", "bytes_in", "bytes_out", "compute_seconds", "slot_seconds"])
            #expect(csvLines.count == 2)
            let csvRow = csvLines.last ?? []
            #expect(csvRow.count == 10 && csvRow[0] == row.first && Array(csvRow[1...9]) == Array(row[1...9]), "\(csvLines)")
            // Seconds, with three decimals, as compute's.
            #expect(csvRow[9].split(separator: ".").last?.count == 3 && Double(csvRow[9]) != nil, "\(csvLines)")

            // A configured client that used nothing has an empty table; a name no client has and
            // none used is a typo, said so, with a failing status.
            let idle = try await ChildProcess.run(arguments: ["usage", "--config", config.path, "--client", "team-a", "--days", "1"])
            #expect(idle.termination == .exited(0))
            #expect(idle.log.contains("(no usage recorded in the last 1 day)"))
            let typo = try await ChildProcess.run(arguments: ["usage", "--config", config.path, "--client", "team-bb", "--days", "2"])
            #expect(typo.termination == .exited(1))
            #expect(typo.log.contains("algogate usage: no client named 'team-bb' is configured, and none of that name used the gateway in the last 2 days"), "\(typo.log)")

            // One calendar month: the row's month has the same row; an earlier one has none.
            let month = String(row.first?.prefix(7) ?? "")
            let inMonth = try await ChildProcess.run(arguments: ["usage", "--config", config.path, "--client", "team-b", "--month", month])
            #expect(inMonth.termination == .exited(0))
            #expect(inMonth.log == usage.log, "\(inMonth.log)")
            let earlier = try await ChildProcess.run(arguments: ["usage", "--config", config.path, "--month", "2020-01"])
            #expect(earlier.log.contains("(no usage recorded in 2020-01)"), "\(earlier.log)")
            for (arguments, message) in [(["--month", "2026-13"], "--month must be YYYY-MM, a month from 1970-01 to 9999-12 (such as 2026-11), not '2026-13'"),
                                         (["--days", "3", "--month", "2026-11"], "give --days or --month, not both")] {
                let refused = try await ChildProcess.run(arguments: ["usage", "--config", config.path] + arguments)
                #expect(refused.termination == .exited(64))
                #expect(refused.log.contains("Error: \(message)"), "\(refused.log)")
            }
        }
    }

    /// A month's days run from its first to its last, February's by the year; the last days
    /// end today.
    @Test func aUsagePeriodCoversItsDays() {
        let bounds = { (period: UsagePeriod) -> [String] in
            let days = period.days(today: 20_428)
            return [SQLiteUsageStore.dayString(days.lowerBound), SQLiteUsageStore.dayString(days.upperBound)]
        }
        #expect(bounds(UsagePeriod.month("2026-12")!) == ["2026-12-01", "2026-12-31"])
        #expect(bounds(UsagePeriod.month("2026-02")!) == ["2026-02-01", "2026-02-28"])
        #expect(bounds(UsagePeriod.month("2024-02")!) == ["2024-02-01", "2024-02-29"])
        #expect(bounds(.lastDays(7)) == ["2025-11-30", "2025-12-06"])
        for text in ["2026-1", "2026-00", "2026-13", "26-11", "2026/11", "2026-11-01", "１２３４-11", ""] {
            #expect(UsagePeriod.month(text) == nil, "\(text)")
        }
        #expect(UsagePeriod.month("2026-11")?.description == "2026-11")
        #expect(UsagePeriod.lastDays(1).description == "the last 1 day")
    }

    @Test func theDaysCountersSurviveARestart() async throws {
        try await withTemporaryDirectory("quota-restart") { directory in
            let path = directory.appendingPathComponent("state.sqlite").path
            let clock = TestClock()
            let yaml = "quota: {requests_per_day: 4}"
            try await GatewayHarness.run(extraYAML: yaml, now: { clock.now }, cachePath: path) { h in
                for _ in 0..<3 {
                    let reply = try await Self.call(h)
                    #expect(reply.status == 200)
                }
            }
            try await GatewayHarness.run(extraYAML: yaml, now: { clock.now }, cachePath: path) { h in
                let me = try await h.gateway.send(.GET, "/_gateway/me", headers: simple(Keys.teamB))
                #expect((me.object["used_today"] as? [String: Any])?["requests"] as? Int == 3)
                #expect((me.object["remaining"] as? [String: Any])?["requests_today"] as? Int == 1)
                #expect(try await Self.call(h).status == 200)
                #expect(try await Self.call(h).status == 429)
            }
        }
    }

    /// A reload that lowers a quota below what a window has already used leaves none remaining,
    /// never a negative count, in `/_gateway/me` and in the refusal's `RateLimit`; and the next
    /// call is refused under the new quota.
    @Test func aQuotaLoweredByAReloadBelowWhatIsUsedLeavesNoneRemaining() async throws {
        let clock = TestClock()  // a minute boundary
        try await GatewayHarness.run(extraYAML: "quota: {requests_per_minute: 3, requests_per_day: 100}", now: { clock.now }) { h in
            for _ in 0..<3 { #expect(try await Self.call(h).status == 200) }
            var config = h.app.state.snapshot.config
            config.quota.requestsPerMinute = 1
            config.quota.requestsPerDay = 2
            try h.app.state.replace(with: ConfigLoader.Loaded(config: config, upstreamKey: h.app.state.snapshot.upstreamKey))
            let me = try await h.gateway.send(.GET, "/_gateway/me", headers: simple(Keys.teamB))
            #expect(me.status == 200)
            let remaining = me.object["remaining"] as? [String: Any]
            #expect(remaining?["requests_this_minute"] as? Int == 0)
            #expect(remaining?["requests_today"] as? Int == 0)
            let refused = try await Self.call(h)
            #expect(refused.status == 429)
            #expect(refused.text == #"{"error":{"error_type":"QuotaExceeded","message":"client 'team-b' is over its requests_per_minute quota (1); retry in 60 s"}}"#)
            #expect(refused.header("RateLimit") == #""minute";r=0;t=60, "day";r=0;t=57600"#)
        }
    }

    /// A restart inside a minute keeps the minute's count: a rolling restart does not give every
    /// client a fresh window. The store keeps only the latest minute's rows.
    @Test func theMinutesRequestsSurviveARestart() async throws {
        try await withTemporaryDirectory("minute-restart") { directory in
            let path = directory.appendingPathComponent("state.sqlite").path
            let clock = TestClock()  // a minute boundary
            let yaml = "quota: {requests_per_minute: 3}"
            try await GatewayHarness.run(extraYAML: yaml, now: { clock.now }, cachePath: path) { h in
                let statuses = [try await Self.call(h).status, try await Self.call(h, key: Keys.teamA).status, try await Self.call(h).status]
                #expect(statuses == [200, 200, 200])
            }
            clock.advance(by: 10)
            try await GatewayHarness.run(extraYAML: yaml, now: { clock.now }, cachePath: path) { h in
                let me = try await h.gateway.send(.GET, "/_gateway/me", headers: simple(Keys.teamB))
                #expect((me.object["remaining"] as? [String: Any])?["requests_this_minute"] as? Int == 1)
                let last = try await Self.call(h)
                #expect(last.status == 200)
                #expect(last.header("RateLimit") == #""minute";r=0;t=50"#)
                let refused = try await Self.call(h)
                #expect(refused.status == 429)
                #expect(refused.text == #"{"error":{"error_type":"QuotaExceeded","message":"client 'team-b' is over its requests_per_minute quota (3); retry in 50 s"}}"#)
                #expect(try await Self.call(h, key: Keys.teamA).status == 200)
                clock.advance(by: 50)
                let next = try await Self.call(h)
                #expect(next.status == 200)
                #expect(next.header("RateLimit") == #""minute";r=2;t=60"#)
            }
            clock.advance(by: 1)
            try await GatewayHarness.run(extraYAML: yaml, now: { clock.now }, cachePath: path) { h in
                let reply = try await Self.call(h)
                #expect(reply.header("RateLimit") == #""minute";r=1;t=59"#)
                let other = try await Self.call(h, key: Keys.teamA)
                #expect(other.header("RateLimit") == #""minute";r=2;t=59"#)
            }
            let pool = try StateDatabase.open(path: path)
            let rows = try await pool.read { db in
                try Row.fetchAll(db, sql: "SELECT client, minute, requests FROM usage_minute ORDER BY client").map { "\($0["client"] as String) \($0["minute"] as Int64) \($0["requests"] as Int)" }
            }
            let minute = Int64(clock.now / 60)
            #expect(rows == ["team-a \(minute) 1", "team-b \(minute) 2"])
        }
    }

    /// A request admitted before midnight and finished after it counts in the day it was admitted
    /// in: what it moved does not use up the new day's `bytes_per_day`.
    @Test func aRequestFinishedAfterMidnightCountsInItsOwnDay() async throws {
        let clock = TestClock()
        let loaded = try ConfigLoader.load(yaml: """
            upstream: {url: "http://127.0.0.1:1", key_env: K}
            clients: [{name: late, key_sha256: "\(ClientRegistry.hash(of: Keys.teamA))", scopes: [algo], quota: {bytes_per_day: 1000}}]
            """, environment: ["K": "upstream-key-0123"])
        let client = try #require(try ClientRegistry(config: loaded.config).client(for: Secret(Keys.teamA)))
        let store = FlakyUsageStore()
        let ledger = QuotaLedger(store: store, now: { clock.now })
        try await ledger.load()
        let before = try ledger.admit(client)
        clock.advance(by: 57_600)  // to midnight
        let after = try ledger.admit(client)
        #expect(after.day == before.day + 1)
        var outcome = QuotaLedger.Outcome()
        outcome.bytesOut = 900
        ledger.record(client: "late", day: before.day, outcome)
        let today = ledger.standing(of: "late").today
        #expect(today.requests == 1 && today.bytesOut == 0)
        #expect(await ledger.flush())
        #expect(store.written.withLock { $0[UsageKey(client: "late", day: before.day)]?.bytesOut } == 900)
        #expect(store.written.withLock { $0[UsageKey(client: "late", day: after.day)]?.bytesOut } == 0)
    }

    @Test func quotasFailClosedWhenTheStoreFails() async throws {
        let store = FlakyUsageStore()
        store.failLoads.withLock { $0 = true }
        try await GatewayHarness.run(usageStore: store) { h in
            let refused = try await Self.call(h)
            #expect(refused.status == 503)
            #expect(refused.text == #"{"error":{"error_type":"QuotaStoreUnavailable","message":"usage cannot be recorded right now, so requests are refused; retry shortly"}}"#)
            #expect(refused.header("Retry-After") == "1")
            #expect(h.simulator.stats.snapshot.algoCalls.isEmpty)
            // Not ready meanwhile: a load balancer sends teams to a replica that can count them.
            let notReady = try await h.gateway.send(.GET, "/readyz")
            #expect(notReady.status == 503)
            #expect(notReady.text == #"{"error":{"error_type":"ServiceUnavailable","message":"usage counters cannot be read or written, so team requests are refused (quotas fail closed)"}}"#)
            store.failLoads.withLock { $0 = false }
            #expect(await h.app.ledger.flush())
            #expect(try await Self.call(h).status == 200)
            #expect(try await h.gateway.send(.GET, "/readyz").status == 200)
            store.failWrites.withLock { $0 = true }
            #expect(await h.app.ledger.flush() == false)
            #expect(try await Self.call(h).status == 503)
            #expect(try await h.gateway.send(.GET, "/readyz").status == 503)
            store.failWrites.withLock { $0 = false }
            #expect(await h.app.ledger.flush())
            #expect(try await Self.call(h).status == 200)
            #expect(try await h.gateway.send(.GET, "/readyz").status == 200)
            // Nothing was lost while the store failed: both admitted calls reached it, in the
            // day's counters and in the minute's (what a restart reads back).
            #expect(await h.app.ledger.flush())
            #expect(store.written.withLock { $0.values.reduce(0) { $0 + $1.requests } } == 2)
            #expect(store.writtenMinutes.withLock { $0.values.reduce(0, +) } == 2)
        }
    }

    /// Compute is read from the envelope's `metadata.duration` only, and is at most the time the
    /// call took upstream: an `output=raw` answer is the algorithm's own output, so one that ends
    /// in `"duration":12345` (any echo of a caller's input) counted 12345 s, and one ending in
    /// `"duration":1e999` an infinite figure that made every usage report of the day a 500.
    @Test func computeIsTheEnvelopesAndNeverMoreThanTheCallTook() async throws {
        try await GatewayHarness.run { h in
            for (body, type) in [(#""duration":1e999"#, "text/plain"), (#"{"duration":12345}"#, "application/json")] {
                let raw = try await h.gateway.send(.POST, "/v1/algo/util/Echo?output=raw", headers: simple(Keys.teamB) + [("Content-Type", type)], text: body)
                #expect(raw.status == 200)
                #expect(raw.text == body)
            }
            // The raw answers counted none, whatever they say.
            #expect(await eventually { h.app.ledger.standing(of: "team-b").today.upstreamCalls == 2 })
            #expect(h.app.ledger.standing(of: "team-b").today.computeSeconds == 0)
            let started = ContinuousClock.now
            let wrapped = try await Self.call(h, path: "/v1/algo/util/Echo")
            let took = ContinuousClock.now - started
            #expect(wrapped.status == 200)
            #expect(await eventually { h.app.ledger.standing(of: "team-b").today.upstreamCalls == 3 })
            // The simulator's own Echo, in the envelope: no more than the call took. (Not a fixed
            // bound: a stalled machine once took over a second for it.)
            let compute = h.app.ledger.standing(of: "team-b").today.computeSeconds
            #expect(compute > 0 && Duration.seconds(compute) <= took, "\(compute) s counted for a call that took \(took)")
            // A run that failed is billed as any: its envelope's duration counts.
            let failed = try await Self.call(h, path: "/v1/algo/test/Fail/1.0.0")
            #expect(failed.status == 200)
            #expect((failed.object["error"] as? [String: Any])?["error_type"] as? String == "AlgorithmError")
            #expect(await eventually { h.app.ledger.standing(of: "team-b").today.upstreamCalls == 4 })
            #expect(h.app.ledger.standing(of: "team-b").today.computeSeconds > compute)
            let usage = try await h.gateway.send(.GET, "/_admin/usage?days=1&client=team-b", headers: simple(Keys.admin))
            #expect(usage.status == 200)
            #expect(try await h.gateway.send(.GET, "/_gateway/me", headers: simple(Keys.teamB)).status == 200)
        }
        try await HeldUpstream.run { _, port in
            try await GatewayHarness.run(upstreamURL: { _ in "http://127.0.0.1:\(port)" }) { h in
                let started = ContinuousClock.now
                for claim in ["86400", "1e999", "-5"] {
                    let answer = try await h.gateway.send(.POST, "/v1/algo/test/Boast", headers: simple(Keys.teamB) + textType, text: claim)
                    #expect(answer.status == 200)
                }
                let took = ContinuousClock.now - started
                #expect(await eventually { h.app.ledger.standing(of: "team-b").today.upstreamCalls == 3 })
                let compute = h.app.ledger.standing(of: "team-b").today.computeSeconds
                #expect(compute >= 0 && Duration.seconds(compute) <= took, "\(compute) s counted for calls that took \(took)")
            }
        }
    }

    /// Every upstream call counts the seconds it held an upstream slot in the client's usage,
    /// whatever its answer says: a raw-mode call, which counts no compute, and a data transfer.
    /// A cache hit holds no slot and counts none. The reports show the same figure.
    @Test func slotSecondsCountEveryUpstreamCallAndNoHit() async throws {
        try await GatewayHarness.run { h in
            let today = { (client: String) in h.app.ledger.standing(of: client).today }
            let started = ContinuousClock.now
            let raw = try await h.gateway.send(.POST, "/v1/algo/test/Sleep?output=raw", headers: simple(Keys.teamB) + jsonType, text: "250")
            let took = ContinuousClock.now - started
            #expect(raw.status == 200)
            #expect(await eventually { today("team-b").upstreamCalls == 1 })
            #expect(today("team-b").computeSeconds == 0)
            let slept = today("team-b").slotSeconds
            #expect(slept >= 0.25 && Duration.seconds(slept) <= took, "\(slept) s counted for a call of 250 ms that took \(took)")

            // A miss holds a slot; the same call again is a hit, which holds none.
            #expect(try await Self.call(h).header("X-Cache") == "MISS")
            #expect(await eventually { today("team-b").upstreamCalls == 2 })
            let afterMiss = today("team-b").slotSeconds
            #expect(afterMiss > slept)
            #expect(try await Self.call(h).header("X-Cache") == "HIT")
            #expect(await eventually { today("team-b").cacheHits == 1 })
            #expect(today("team-b").slotSeconds == afterMiss)

            // A data transfer, streamed, counts until its body has been sent.
            let download = try await h.gateway.send(.GET, "/v1/data/.my/team-a", headers: simple(Keys.teamA))
            #expect(download.status == 404)
            #expect(await eventually { today("team-a").slotSeconds > 0 })
            // A management answer, read whole to point its links at the gateway, gives its slot back
            // as it has been read: counted before the request is.
            let beforeManagement = today("team-a")
            let algorithm = try await h.gateway.send(.GET, "/v1/algorithms/demo/Hello", headers: simple(Keys.teamA))
            #expect(algorithm.status == 200)
            #expect(await eventually { today("team-a").requests == beforeManagement.requests + 1 && today("team-a").bytesOut > beforeManagement.bytesOut })
            #expect(today("team-a").slotSeconds > beforeManagement.slotSeconds)

            // The stored report and the client's own view give the same figures.
            #expect(await eventually {
                let usage = try? await h.gateway.send(.GET, "/_admin/usage?days=1&client=team-b", headers: simple(Keys.admin))
                let row = (usage?.object["days"] as? [[String: Any]])?.first?["usage"] as? [String: Any]
                // (Summed in another order in SQLite, and written as decimal text: equal to the last digits.)
                return abs((row?["slot_seconds"] as? Double ?? -1) - afterMiss) < 1e-9
            })
            let me = try await h.gateway.send(.GET, "/_gateway/me", headers: simple(Keys.teamA))
            let mine = (me.object["used_today"] as? [String: Any])?["slot_seconds"] as? Double ?? -1
            #expect(abs(mine - today("team-a").slotSeconds) < 1e-9, "\(mine)")
        }
    }

    /// A client with a day's budget of one slot second (`timed`), and one without (`other`).
    static let timedClients = """
        clients:
          - {name: timed, key_sha256: "\(ClientRegistry.hash(of: Keys.teamA))", scopes: [algo, "data:read"], quota: {slot_seconds_per_day: 1}}
          - {name: other, key_sha256: "\(ClientRegistry.hash(of: Keys.teamB))", scopes: [algo]}
        """

    /// What `timed` is told once over its budget, 57,600 s before a UTC midnight.
    static let timedRefusal = "client 'timed' is over its slot_seconds_per_day quota (1): its calls have held the account's upstream slots that long "
        + "today, so only answers the cache holds are served until the day ends; retry in 57600 s"

    /// `slot_seconds_per_day`: once a client's calls have held the account's upstream slots that
    /// long today, each of its requests that would go upstream (an algorithm call, a data
    /// request) gets 429 until the UTC day ends, and reaches no slot; an answer the cache holds is
    /// still served, for nothing upstream. Other clients go on, and the next day the client does.
    @Test func aSlotSecondsQuotaRefusesUpstreamCallsButNotCachedAnswers() async throws {
        let clock = TestClock()  // 57,600 s before a UTC midnight
        try await GatewayHarness.run(now: { clock.now }, clientsYAML: Self.timedClients) { h in
            let sleep = { (key: String, path: String) in
                try await h.gateway.send(.POST, path, headers: simple(key) + jsonType, text: "1100")
            }
            // Within the quota: a pinned call that holds its slot 1.1 s, stored.
            let first = try await sleep(Keys.teamA, "/v1/algo/test/Sleep/1.0.0")
            #expect(first.status == 200)
            #expect(first.header("Cache-Status") == "algogate; fwd=miss; stored")
            #expect(await eventually { h.app.ledger.standing(of: "timed").today.slotSeconds >= 1.1 })
            let me = try await h.gateway.send(.GET, "/_gateway/me", headers: simple(Keys.teamA))
            #expect((me.object["quota"] as? [String: Any])?["slot_seconds_per_day"] as? Int == 1, "\(me.text)")
            #expect((me.object["remaining"] as? [String: Any])?["slot_seconds_today"] as? Double == 0, "\(me.text)")

            // Over it: the answer the cache holds is served ...
            let hit = try await sleep(Keys.teamA, "/v1/algo/test/Sleep/1.0.0")
            #expect(hit.status == 200)
            #expect(hit.header("X-Cache") == "HIT")
            #expect(hit.bytes == first.bytes)
            // ... and nothing that would go upstream: an unpinned call, a pinned call not stored, a data request.
            let message = Self.timedRefusal
            for refused in [try await sleep(Keys.teamA, "/v1/algo/test/Sleep"),
                            try await h.gateway.send(.POST, "/v1/algo/demo/Hello/0.1.0", headers: simple(Keys.teamA) + textType, text: "HAL"),
                            try await h.gateway.send(.GET, "/v1/data/.my/team-a", headers: simple(Keys.teamA))] {
                #expect(refused.status == 429)
                #expect(refused.text == #"{"error":{"error_type":"QuotaExceeded","message":"\#(message)"}}"#)
                #expect(refused.header("Retry-After") == "57600")
            }
            #expect(h.simulator.stats.snapshot.algoCalls == ["test/Sleep/1.0.0": 1])
            #expect(h.simulator.stats.snapshot.requestsByClass["data"] == nil)
            #expect(h.logs.all.filter { $0.contains("client=timed") && $0.contains(" quota=slot_seconds_per_day ") }.count == 3)
            let metrics = try await h.gateway.send(.GET, "/metrics").text
            #expect(metricSample(metrics, #"algogate_quota_refusals_total{client="timed",quota="slot_seconds_per_day"}"#) == 3)

            // Another client's calls go upstream, the identical one answered from the cache too.
            #expect(try await h.gateway.send(.POST, "/v1/algo/demo/Hello/0.1.0", headers: simple(Keys.teamB) + textType, text: "HAL").status == 200)
            #expect(try await sleep(Keys.teamB, "/v1/algo/test/Sleep/1.0.0").header("X-Cache") == "HIT")

            // The next UTC day, the client's calls go upstream again.
            clock.advance(by: 57_600)
            let next = try await h.gateway.send(.POST, "/v1/algo/demo/Hello/0.1.0", headers: simple(Keys.teamA) + textType, text: "HAL")
            #expect(next.status == 200)
            #expect(next.header("X-Cache") == "HIT")
            let unpinned = try await h.gateway.send(.POST, "/v1/algo/demo/Hello", headers: simple(Keys.teamA) + textType, text: "HAL")
            #expect(unpinned.status == 200)
            #expect(h.simulator.stats.snapshot.algoCalls["demo/Hello"] == 1)
        }
    }

    /// A call under way counts the time it has held its slot so far: once that reaches the
    /// budget, nothing more goes upstream for the client, before the call has ended.
    @Test func aCallUnderWayCountsAgainstTheSlotBudgetAsItGoes() async throws {
        let clock = TestClock()  // 57,600 s before a UTC midnight
        try await GatewayHarness.run(now: { clock.now }, clientsYAML: Self.timedClients) { h in
            // Held upstream 4 s: the budget runs out while it is under way.
            let long = Task { try await h.gateway.send(.POST, "/v1/algo/test/Sleep", headers: simple(Keys.teamA) + jsonType, text: "4000") }
            try #require(await eventually { h.simulator.stats.snapshot.inFlight == 1 }, "the call never reached the upstream")
            try #require(await eventually { h.app.ledger.standing(of: "timed").runningSlotSeconds >= 1 })
            let running = h.app.ledger.standing(of: "timed")
            #expect(running.today.slotSeconds == 0)
            let me = try await h.gateway.send(.GET, "/_gateway/me", headers: simple(Keys.teamA))
            #expect((me.object["remaining"] as? [String: Any])?["slot_seconds_today"] as? Double == 0, "\(me.text)")

            let message = Self.timedRefusal
            for refused in [try await h.gateway.send(.POST, "/v1/algo/demo/Hello", headers: simple(Keys.teamA) + textType, text: "HAL"),
                            try await h.gateway.send(.GET, "/v1/data/.my/team-a", headers: simple(Keys.teamA))] {
                #expect(refused.status == 429)
                #expect(refused.text == #"{"error":{"error_type":"QuotaExceeded","message":"\#(message)"}}"#)
                #expect(refused.header("Retry-After") == "57600")
            }
            // The call under way runs on, and another client's calls go upstream.
            #expect(h.simulator.stats.snapshot.inFlight == 1)
            #expect(try await h.gateway.send(.POST, "/v1/algo/demo/Hello", headers: simple(Keys.teamB) + textType, text: "HAL").status == 200)
            let done = try await long.value
            #expect(done.status == 200)
            #expect((done.object["result"] as? [String: Any])?["slept_ms"] as? Int == 4000, "\(done.text)")
            #expect(h.simulator.stats.snapshot.algoCalls == ["test/Sleep": 1, "demo/Hello": 1])
            #expect(h.simulator.stats.snapshot.requestsByClass["data"] == nil)

            // Ended, its time is the day's usage, and none is counted as running.
            #expect(await eventually { h.app.ledger.standing(of: "timed").today.slotSeconds >= 4 })
            #expect(h.app.ledger.standing(of: "timed").runningSlotSeconds == 0)
        }
    }

    /// `slot_seconds_per_month` counts the calendar month's days together, those before a
    /// restart included (read back from the state file), and refuses what would go upstream
    /// until the month ends; the first day of the next month starts again.
    @Test func aMonthlySlotSecondsQuotaCountsTheMonthAcrossDaysAndRestarts() async throws {
        try await withTemporaryDirectory("month-quota") { directory in
            let path = directory.appendingPathComponent("state.sqlite").path
            let clock = TestClock()  // 2027-01-15 08:00 UTC: the month ends 1,440,000 s later
            let yaml = """
            clients:
              - {name: monthly, key_sha256: "\(ClientRegistry.hash(of: Keys.teamA))", scopes: [algo], quota: {slot_seconds_per_month: 2}}
            """
            let sleep: @Sendable (GatewayHarness, String) async throws -> TestHTTP.Reply = { h, input in
                try await h.gateway.send(.POST, "/v1/algo/test/Sleep", headers: simple(Keys.teamA) + jsonType, text: input)
            }
            try await GatewayHarness.run(now: { clock.now }, cachePath: path, clientsYAML: yaml) { h in
                let first = try await sleep(h, "1100")
                #expect(first.status == 200)
                #expect(await eventually { h.app.ledger.standing(of: "monthly").monthSlotSeconds >= 1.1 })
            }
            // The next day, after a restart: the month's 1.1 s are read back, and 1.1 more are allowed.
            clock.advance(by: 86_400)
            try await GatewayHarness.run(now: { clock.now }, cachePath: path, clientsYAML: yaml) { h in
                let me = try await h.gateway.send(.GET, "/_gateway/me", headers: simple(Keys.teamA))
                let remaining = try #require(me.object["remaining"] as? [String: Any], "\(me.text)")
                let left = try #require(remaining["slot_seconds_this_month"] as? Double, "\(me.text)")
                #expect(left > 0 && left <= 0.9, "\(me.text)")
                #expect(remaining["seconds_to_month_end"] as? Int == 1_440_000 - 86_400)
                #expect((me.object["quota"] as? [String: Any])?["slot_seconds_per_month"] as? Int == 2)
                #expect(try await sleep(h, "1100").status == 200)
                #expect(await eventually { h.app.ledger.standing(of: "monthly").monthSlotSeconds >= 2.2 })
                let refused = try await sleep(h, "10")
                #expect(refused.status == 429)
                #expect(refused.text == #"{"error":{"error_type":"QuotaExceeded","message":"client 'monthly' is over its slot_seconds_per_month quota (2): its calls have held the account's upstream slots that long this month, so only answers the cache holds are served until the month ends; retry in 1353600 s"}}"#)
                #expect(refused.header("Retry-After") == "1353600")
                #expect(h.logs.all.contains { $0.contains("client=monthly") && $0.contains(" quota=slot_seconds_per_month ") })
                // The next day, without a restart: the day that ended still counts in the month.
                clock.advance(by: 86_400)
                let nextDay = try await sleep(h, "10")
                #expect(nextDay.status == 429)
                #expect(nextDay.header("Retry-After") == "1267200")
            }
            // Still refused later in the month, after another restart; the next month starts again.
            clock.advance(by: 1_267_199)
            try await GatewayHarness.run(now: { clock.now }, cachePath: path, clientsYAML: yaml) { h in
                #expect(try await sleep(h, "10").status == 429)
                clock.advance(by: 1)
                let next = try await sleep(h, "10")
                #expect(next.status == 200)
                let me = try await h.gateway.send(.GET, "/_gateway/me", headers: simple(Keys.teamA))
                let left = (me.object["remaining"] as? [String: Any])?["slot_seconds_this_month"] as? Double ?? -1
                // January's 2.2 s are not counted; the one short call of February is (slow under a loaded run).
                #expect(left > 1 && left < 2, "\(me.text)")
            }
        }
    }

    /// The report writes the counters down before it reads them: with the once-a-second
    /// maintenance that otherwise does it slowed to once an hour, a call just made is in it.
    @Test func theUsageReportHasCallsNotYetWrittenDown() async throws {
        try await GatewayHarness.run(maintenanceInterval: .seconds(3600)) { h in
            #expect(try await Self.call(h).status == 200)
            #expect(await eventually { h.app.ledger.standing(of: "team-b").today.upstreamCalls == 1 })  // counted once the call has ended
            let usage = try await h.gateway.send(.GET, "/_admin/usage?days=1&client=team-b", headers: simple(Keys.admin))
            #expect(usage.status == 200)
            let rows = usage.object["days"] as? [[String: Any]] ?? []
            #expect(rows.count == 1)
            let row = rows.first?["usage"] as? [String: Any] ?? [:]
            #expect(row["requests"] as? Int == 1)
            #expect(row["upstream_calls"] as? Int == 1)
            #expect(row["bytes_in"] as? Int == 3)
        }
    }

    @Test func usageIsAccountedPerClientPerDay() async throws {
        try await GatewayHarness.run { h in
            _ = try await Self.call(h)                                              // miss: upstream call
            _ = try await Self.call(h)                                              // hit
            _ = try await Self.call(h, path: "/v1/algo/test/Fail/1.0.0")            // an algorithm error, 200 upstream
            _ = try await h.gateway.send(.GET, "/v1/data/.my", headers: simple(Keys.teamB))   // 403: no data scope
            #expect(await eventually { h.app.ledger.standing(of: "team-b").today.bytesIn == 3 * 3 })  // counted as bodies finish
            let usage = try await h.gateway.send(.GET, "/_admin/usage?days=1&client=team-b", headers: simple(Keys.admin))
            #expect(usage.status == 200)
            let rows = usage.object["days"] as? [[String: Any]] ?? []
            #expect(rows.count == 1)
            let row = rows.first?["usage"] as? [String: Any] ?? [:]
            #expect(row["requests"] as? Int == 3)       // the 403 was refused before the quota step
            #expect(row["cache_hits"] as? Int == 1)
            #expect(row["upstream_calls"] as? Int == 2)
            #expect(row["errors"] as? Int == 0)
            #expect((row["bytes_in"] as? Int) == 3 * 3)
            #expect((row["bytes_out"] as? Int ?? 0) > 200)
            #expect((row["compute_seconds"] as? Double ?? 0) > 0)
            #expect(rows.first?["client"] as? String == "team-b")

            // One calendar month instead of the last days: the month of the row, whole, has it;
            // one before has nothing; a month that is not one, or both asked at once, is a 400.
            let day = rows.first?["day"] as? String ?? ""
            let thisMonth = try await h.gateway.send(.GET, "/_admin/usage?month=\(day.prefix(7))&client=team-b", headers: simple(Keys.admin))
            #expect(thisMonth.status == 200)
            #expect(canonicalJSON(thisMonth.json) == canonicalJSON(usage.json))
            let before = try await h.gateway.send(.GET, "/_admin/usage?month=2020-01", headers: simple(Keys.admin))
            #expect(before.text == #"{"days":[]}"#)
            let notAMonth = try await h.gateway.send(.GET, "/_admin/usage?month=2026-13", headers: simple(Keys.admin))
            #expect(notAMonth.status == 400)
            #expect(envelope(notAMonth).message == "month must be YYYY-MM, a month from 1970-01 to 9999-12 (such as 2026-11), not '2026-13'")
            let both = try await h.gateway.send(.GET, "/_admin/usage?days=3&month=2026-11", headers: simple(Keys.admin))
            #expect(both.status == 400)
            #expect(envelope(both).message == "give days or month, not both")
            let typoInMonth = try await h.gateway.send(.GET, "/_admin/usage?month=2020-01&client=team-bb", headers: simple(Keys.admin))
            #expect(typoInMonth.status == 404)
            #expect(envelope(typoInMonth).message == "no client named 'team-bb' is configured, and none of that name used the gateway in 2020-01")

            let me = try await h.gateway.send(.GET, "/_gateway/me", headers: simple(Keys.teamA))
            #expect(me.object["name"] as? String == "team-a")
            #expect(me.object["scopes"] as? [String] == ["algo", "data:read", "data:write", "manage"])
            #expect(me.object["data_prefixes"] as? [String] == ["data://.my/team-a/", "s3://bucket/team-a/"])
            let forbidden = try await h.gateway.send(.GET, "/_admin/usage", headers: simple(Keys.teamA))
            #expect(forbidden.status == 403)

            // A name no client has and none used is a typo: 404, not an empty list.
            let typo = try await h.gateway.send(.GET, "/_admin/usage?client=team-bb", headers: simple(Keys.admin))
            #expect(typo.status == 404)
            #expect(typo.text == #"{"error":{"error_type":"EntityNotFoundError","message":"no client named 'team-bb' is configured, and none of that name used the gateway in the last 7 days"}}"#)
            let idle = try await h.gateway.send(.GET, "/_admin/usage?client=reader", headers: simple(Keys.admin))
            #expect(idle.status == 200)
            #expect(idle.text == #"{"days":[]}"#)
            let asked = try await h.gateway.send(.GET, "/_gateway/me?client=team-b", headers: simple(Keys.teamA))
            #expect(asked.status == 400)
            #expect(envelope(asked).message == "GET /_gateway/me takes no parameters")
        }
    }

    @Test func metricsAreScrapedInPrometheusText() async throws {
        try await GatewayHarness.run { h in
            _ = try await Self.call(h)
            _ = try await Self.call(h)
            _ = try await Self.call(h, key: "wrong")
            _ = try await h.gateway.send(.GET, "/v1/algorithms/demo/Hello", headers: simple(Keys.teamA))
            _ = try await h.gateway.send(.GET, "/v1/data/.my/team-a", headers: simple(Keys.teamA))
            // Counted as bodies finish.
            #expect(try await eventually {
                let text = try await h.gateway.send(.GET, "/metrics").text
                return text.contains(#"algogate_requests_total{client="-",route="none",status="401"} 1"#)
                    && text.contains(#"algogate_requests_total{client="team-b",route="algo",status="200"} 2"#)
                    && metricSample(text, #"algogate_request_duration_seconds_count{route="data"}"#) == 1
            })
            let scrape = try await h.gateway.send(.GET, "/metrics")
            #expect(scrape.status == 200)
            #expect(scrape.header("Content-Type")?.hasPrefix("text/plain") == true)
            var samples: [String: Double] = [:]
            for line in scrape.text.split(separator: "\n") where !line.hasPrefix("#") {
                let parts = line.split(separator: " ")
                if parts.count == 2, let value = Double(parts[1]) { samples[String(parts[0])] = value }
            }
            #expect(samples[#"algogate_requests_total{client="team-b",route="algo",status="200"}"#] == 2)
            #expect(samples[#"algogate_requests_total{client="-",route="none",status="401"}"#] == 1)
            #expect(samples[#"algogate_cache_requests_total{result="hit"}"#] == 1)
            #expect(samples[#"algogate_cache_requests_total{result="miss"}"#] == 1)
            #expect(samples[#"algogate_upstream_duration_seconds_count{route="algo"}"#] == 1)
            // Every request's own duration, the hit answered on the event loop and the refusal too.
            #expect(samples[#"algogate_request_duration_seconds_count{route="algo"}"#] == 2)
            #expect(samples[#"algogate_request_duration_seconds_bucket{route="algo",le="+Inf"}"#] == 2)
            #expect(samples[#"algogate_request_duration_seconds_count{route="manage"}"#] == 1)
            #expect(samples[#"algogate_request_duration_seconds_count{route="data"}"#] == 1)
            // The refusal, and the scrapes before this one (as many as `eventually` took).
            #expect((samples[#"algogate_request_duration_seconds_count{route="none"}"#] ?? 0) >= 2)
            #expect((samples[#"algogate_request_duration_seconds_sum{route="algo"}"#] ?? 0) > 0)
            #expect((samples[#"algogate_request_duration_seconds_sum{route="algo"}"#] ?? 1) < 10)
            #expect(samples["algogate_upstream_in_flight"] == 0)
            #expect(samples["algogate_upstream_queued"] == 0)
        }
    }
}

/// A usage store that fails on demand, keeping what it was given.
final class FlakyUsageStore: UsageStore {
    let failLoads = Mutex(false)
    let failWrites = Mutex(false)
    let written = Mutex<[UsageKey: Usage]>([:])
    let writtenMinutes = Mutex<[MinuteKey: Int]>([:])
    struct Failure: Error {}

    func load(day: Int, minute: Int64) async throws -> StoredUsage {
        if failLoads.withLock({ $0 }) { throw Failure() }
        return StoredUsage()
    }

    func add(_ deltas: [UsageKey: Usage], minutes: [MinuteKey: Int]) async throws {
        if failWrites.withLock({ $0 }) { throw Failure() }
        written.withLock { written in for (key, usage) in deltas { written[key, default: Usage()].add(usage) } }
        writtenMinutes.withLock { written in for (key, requests) in minutes { written[key, default: 0] += requests } }
    }

    func report(days: ClosedRange<Int>, client: String?) async throws -> [UsageRow] { [] }
}
