import Foundation
import HTTPTypes
import Synchronization

/// Per-client request windows and the day's usage: admits or refuses each request (429, with
/// the IETF RateLimit fields), counts what it used, and persists the day's counters.
///
/// Counting happens in memory and reaches the store every second (and at shutdown), so the day's
/// counters and the current minute's requests survive a restart: a rolling restart does not give
/// every client a fresh minute. Quotas fail closed: while the store cannot be read or written,
/// every request is refused with 503 rather than let through uncounted. A full disk need not
/// come to that: the room `DiskReserve` holds goes to the counters.
public final class QuotaLedger: Sendable {
    public struct Admission: Sendable {
        /// The UTC day the request counts in.
        public let day: Int
        /// `RateLimit-Policy` and `RateLimit`, for the response.
        public let headers: HTTPFields
    }

    /// What a finished request used, beyond being admitted.
    public struct Outcome: Sendable {
        public var cacheHit = false
        public var upstreamCall = false
        public var error = false
        public var bytesIn = 0
        public var bytesOut = 0
        public var computeSeconds = 0.0
        public var slotSeconds = 0.0
    }

    /// A client's standing, for `/_gateway/me`.
    public struct Standing: Sendable {
        public let today: Usage
        /// What the client's calls under way have held their slots so far (not yet in `today`).
        public let runningSlotSeconds: Double
        public let minuteRequests: Int
        public let secondsToMinuteEnd: Int
        public let secondsToDayEnd: Int
        /// Slot seconds of the calendar month (UTC) so far, today's included.
        public let monthSlotSeconds: Double
        public let secondsToMonthEnd: Int
    }

    private struct ClientWindows {
        var minute: Int64 = -1
        var minuteCount = 0
        var day = -1
        var today = Usage()
        /// Slot seconds of `day`'s calendar month before `day` (`slot_seconds_per_month`).
        var monthBefore = 0.0

        /// Moves the day window on to `day`: the day that ends adds its slot seconds to the
        /// month's when `day` is in the same month, else the month starts again.
        mutating func roll(to day: Int) {
            guard self.day != day else { return }
            let sameMonth = self.day >= 0 && UsagePeriod.monthDays(containing: self.day).contains(day)
            monthBefore = sameMonth ? monthBefore + today.slotSeconds : 0
            self.day = day
            today = Usage()
        }

        /// Its standing as of `day`, without moving its windows on.
        func rolled(to day: Int) -> ClientWindows {
            var copy = self
            copy.roll(to: day)
            return copy
        }
    }

    /// The upstream slots a client holds now: how many, and the sum of when each was taken (in
    /// seconds since the ledger began, `QuotaLedger.since`), so the time they have held them so
    /// far is `count × now − sum`, with no timer per call.
    private struct Holding {
        var count = 0
        var takenSum = 0.0

        func seconds(at now: Double) -> Double { count == 0 ? 0 : max(0, Double(count) * now - takenSum) }
    }

    private struct State {
        var clients: [String: ClientWindows] = [:]
        var holding: [String: Holding] = [:]
        var pending: [UsageKey: Usage] = [:]
        var pendingMinutes: [MinuteKey: Int] = [:]
        var healthy = false
        var loadedDay: Int?
        var lastFailure: String?
    }

    private let state = Mutex(State())
    private let began = ContinuousClock.now
    let store: any UsageStore
    let now: @Sendable () -> Double

    public init(store: any UsageStore, now: @escaping @Sendable () -> Double) {
        self.store = store
        self.now = now
    }

    static func day(of seconds: Double) -> Int { Int((seconds / 86_400).rounded(.down)) }
    static func minute(of seconds: Double) -> Int64 { Int64((seconds / 60).rounded(.down)) }

    /// Reads the day's counters and the minute's requests back from the store; until this
    /// succeeds, requests get 503.
    public func load() async throws {
        let current = now()
        let day = Self.day(of: current), minute = Self.minute(of: current)
        let stored = try await store.load(day: day, minute: minute)
        // The month's earlier days, for `slot_seconds_per_month`.
        let monthStart = UsagePeriod.monthDays(containing: day).lowerBound
        let earlier = monthStart < day ? try await store.report(days: monthStart...(day - 1), client: nil) : []
        state.withLock { state in
            for (client, usage) in stored.days {
                var windows = state.clients[client] ?? ClientWindows()
                if windows.day != day { windows.day = day; windows.today = Usage() }
                windows.today.add(usage)
                state.clients[client] = windows
            }
            var monthBefore: [String: Double] = [:]
            for row in earlier { monthBefore[row.client, default: 0] += row.usage.slotSeconds }
            for (client, seconds) in monthBefore {
                var windows = state.clients[client] ?? ClientWindows()
                if windows.day != day { windows.day = day; windows.today = Usage() }
                windows.monthBefore = seconds
                state.clients[client] = windows
            }
            for (client, requests) in stored.minuteRequests {
                var windows = state.clients[client] ?? ClientWindows()
                if windows.minute != minute { windows.minute = minute; windows.minuteCount = 0 }
                windows.minuteCount += requests
                state.clients[client] = windows
            }
            state.loadedDay = day
            state.healthy = true
        }
    }

    /// Admits a request for `client` and counts it, or throws 429 (over a quota) or 503 (the
    /// store is failing).
    @inline(never)  // kept out of the pipeline step's frame (see `CacheMiddleware.handle`)
    public func admit(_ client: ClientIdentity) throws -> Admission {
        let current = now()
        let minute = Self.minute(of: current)
        let day = Self.day(of: current)
        let toMinuteEnd = max(1, Int((Double(minute + 1) * 60 - current).rounded(.up)))
        let toDayEnd = max(1, Int((Double(day + 1) * 86_400 - current).rounded(.up)))
        let quota = client.quota
        return try state.withLock { state in
            guard state.healthy else {
                throw GatewayError(status: .serviceUnavailable, errorType: "QuotaStoreUnavailable",
                                   message: "usage cannot be recorded right now, so requests are refused; retry shortly",
                                   headers: [.retryAfter: "1"])
            }
            var windows = state.clients[client.name] ?? ClientWindows()
            if windows.minute != minute { windows.minute = minute; windows.minuteCount = 0 }
            windows.roll(to: day)
            state.clients[client.name] = windows  // rolled over, whether admitted or not
            func refuse(_ name: String, _ limit: Int, retry: Int) -> GatewayError {
                var headers = Self.headers(quota, windows: windows, toMinuteEnd: toMinuteEnd, toDayEnd: toDayEnd)
                headers[.retryAfter] = String(retry)
                var refusal = GatewayError(status: .tooManyRequests, errorType: "QuotaExceeded",
                                           message: "client '\(client.name)' is over its \(name) quota (\(limit)); retry in \(retry) s",
                                           headers: headers)
                refusal.quota = name
                return refusal
            }
            if let limit = quota.requestsPerMinute, windows.minuteCount >= limit {
                throw refuse("requests_per_minute", limit, retry: toMinuteEnd)
            }
            if let limit = quota.requestsPerDay, windows.today.requests >= limit {
                throw refuse("requests_per_day", limit, retry: toDayEnd)
            }
            if let limit = quota.bytesPerDay, windows.today.bytesIn + windows.today.bytesOut >= limit {
                throw refuse("bytes_per_day", limit, retry: toDayEnd)
            }
            windows.minuteCount += 1
            windows.today.requests += 1
            state.clients[client.name] = windows
            state.pending[UsageKey(client: client.name, day: day), default: Usage()].requests += 1
            state.pendingMinutes[MinuteKey(client: client.name, minute: minute), default: 0] += 1
            return Admission(day: day, headers: Self.headers(quota, windows: windows, toMinuteEnd: toMinuteEnd, toDayEnd: toDayEnd))
        }
    }

    private func since(_ instant: ContinuousClock.Instant) -> Double { (instant - began).inSeconds }

    /// A call of `client` took an upstream slot at `instant`: until `slotGiven` with the same
    /// instant, the time it holds it counts against the client's slot budgets as it goes
    /// (`admitUpstream`), not only once the call has ended.
    public func slotTaken(by client: String, at instant: ContinuousClock.Instant) {
        let taken = since(instant)
        state.withLock { state in
            state.holding[client, default: Holding()].count += 1
            state.holding[client, default: Holding()].takenSum += taken
        }
    }

    /// The slot `slotTaken` told of, given back; its time is the call's usage now (`record`).
    public func slotGiven(by client: String, takenAt instant: ContinuousClock.Instant) {
        let taken = since(instant)
        state.withLock { state in
            guard var holding = state.holding[client] else { return }
            holding.count -= 1
            holding.takenSum -= taken
            // Exactly nothing once none is held, so rounding never builds up.
            state.holding[client] = holding.count > 0 ? holding : nil
        }
    }

    /// Refuses (429 `QuotaExceeded`, until the UTC day or month ends) a request about to go
    /// upstream for a client whose calls have held the account's upstream slots for its
    /// `slot_seconds_per_day` today or its `slot_seconds_per_month` this calendar month. Checked as
    /// a call is about to take a slot, not at admission: a cache hit costs the account nothing and
    /// is still answered. The calls under way count what they have held so far (`slotTaken`), so
    /// none starts once the budget is reached; those under way then run on, and may take the use
    /// past it by what they hold after.
    @inline(never)
    public func admitUpstream(_ client: ClientIdentity) throws {
        let quota = client.quota
        guard quota.slotSecondsPerDay != nil || quota.slotSecondsPerMonth != nil else { return }
        let current = now()
        let day = Self.day(of: current)
        let moment = since(.now)
        let (stored, holding) = state.withLock { ($0.clients[client.name], $0.holding[client.name]) }
        let windows = stored?.rolled(to: day) ?? ClientWindows()
        // The calls under way count what they have held so far: without them, a client at its
        // budget could go on starting calls until those already running had ended. (One begun
        // before midnight counts all it has held, yesterday's part too, until it ends and is
        // counted in its own day.)
        let running = holding?.seconds(at: moment) ?? 0
        func refuse(_ name: String, _ limit: Int, period: String, end: Int) -> GatewayError {
            let retry = max(1, Int((Double(end) * 86_400 - current).rounded(.up)))
            var refusal = GatewayError(status: .tooManyRequests, errorType: "QuotaExceeded",
                                       message: "client '\(client.name)' is over its \(name) quota (\(limit)): its calls have held the account's "
                                           + "upstream slots that long \(period == "day" ? "today" : "this month"), so only answers the cache holds "
                                           + "are served until the \(period) ends; retry in \(retry) s",
                                       headers: [.retryAfter: String(retry)])
            refusal.quota = name
            return refusal
        }
        if let limit = quota.slotSecondsPerDay, windows.today.slotSeconds + running >= Double(limit) {
            throw refuse("slot_seconds_per_day", limit, period: "day", end: day + 1)
        }
        if let limit = quota.slotSecondsPerMonth, windows.monthBefore + windows.today.slotSeconds + running >= Double(limit) {
            throw refuse("slot_seconds_per_month", limit, period: "month", end: UsagePeriod.monthDays(containing: day).upperBound + 1)
        }
    }

    /// Counts what an admitted request used once it has finished.
    public func record(client: String, day: Int, _ outcome: Outcome) {
        var delta = Usage()
        delta.cacheHits = outcome.cacheHit ? 1 : 0
        delta.upstreamCalls = outcome.upstreamCall ? 1 : 0
        delta.errors = outcome.error ? 1 : 0
        delta.bytesIn = outcome.bytesIn
        delta.bytesOut = outcome.bytesOut
        delta.computeSeconds = outcome.computeSeconds
        delta.slotSeconds = outcome.slotSeconds
        state.withLock { state in
            if var windows = state.clients[client], windows.day == day {
                windows.today.add(delta)
                state.clients[client] = windows
            } else if var windows = state.clients[client], windows.day > day,
                      UsagePeriod.monthDays(containing: day).contains(windows.day) {
                // A request of an earlier day of the month, ended after its day: the month counts it.
                windows.monthBefore += delta.slotSeconds
                state.clients[client] = windows
            }
            state.pending[UsageKey(client: client, day: day), default: Usage()].add(delta)
        }
    }

    /// Writes the counted deltas to the store; on failure keeps them and refuses requests until
    /// a later flush succeeds. Returns whether the store is healthy.
    ///
    /// A write that finds the disk full asks `makingRoom` for room (`DiskReserve.release`) and,
    /// when it says there may be some, is made again at once: requests go on being admitted all
    /// the while.
    @discardableResult
    public func flush(makingRoom: @Sendable () -> Bool = { false }) async -> Bool {
        if state.withLock({ $0.loadedDay == nil }) {
            do {
                try await load()
            } catch {
                state.withLock { $0.lastFailure = GatewayError.describe(error) }
                return false
            }
        }
        let (batch, minutes) = state.withLock { state in
            defer { state.pending = [:]; state.pendingMinutes = [:] }
            return (state.pending, state.pendingMinutes)
        }
        do {
            do {
                try await store.add(batch, minutes: minutes)
            } catch where DiskReserve.isDiskFull(error) && makingRoom() {
                try await store.add(batch, minutes: minutes)
            }
            state.withLock { $0.healthy = true }
            return true
        } catch {
            state.withLock { state in
                for (key, usage) in batch { state.pending[key, default: Usage()].add(usage) }
                for (key, requests) in minutes { state.pendingMinutes[key, default: 0] += requests }
                state.healthy = false
                state.lastFailure = GatewayError.describe(error)
            }
            return false
        }
    }

    /// Whether requests are admitted: the day's counters were read and the last write succeeded.
    public var isHealthy: Bool { state.withLock { $0.healthy } }

    /// Why the last read or write of the store failed, in SQLite's words (nil once one has
    /// succeeded since).
    public var lastFailure: String? { state.withLock { $0.healthy ? nil : $0.lastFailure } }

    public func standing(of client: String) -> Standing {
        let current = now()
        let minute = Self.minute(of: current)
        let day = Self.day(of: current)
        let moment = since(.now)
        let (stored, holding) = state.withLock { ($0.clients[client], $0.holding[client]) }
        let windows = stored?.rolled(to: day) ?? ClientWindows()
        let monthEnd = UsagePeriod.monthDays(containing: day).upperBound + 1
        return Standing(
            today: windows.today,
            runningSlotSeconds: holding?.seconds(at: moment) ?? 0,
            minuteRequests: windows.minute == minute ? windows.minuteCount : 0,
            secondsToMinuteEnd: max(1, Int((Double(minute + 1) * 60 - current).rounded(.up))),
            secondsToDayEnd: max(1, Int((Double(day + 1) * 86_400 - current).rounded(.up))),
            monthSlotSeconds: windows.monthBefore + windows.today.slotSeconds,
            secondsToMonthEnd: max(1, Int((Double(monthEnd) * 86_400 - current).rounded(.up))))
    }

    /// The IETF RateLimit fields (draft-ietf-httpapi-ratelimit-headers) for a client's quota.
    private static func headers(_ quota: GatewayConfig.Quota, windows: ClientWindows, toMinuteEnd: Int, toDayEnd: Int) -> HTTPFields {
        var policies: [String] = []
        var limits: [String] = []
        if let limit = quota.requestsPerMinute {
            policies.append("\"minute\";q=\(limit);w=60")
            limits.append("\"minute\";r=\(max(0, limit - windows.minuteCount));t=\(toMinuteEnd)")
        }
        if let limit = quota.requestsPerDay {
            policies.append("\"day\";q=\(limit);w=86400")
            limits.append("\"day\";r=\(max(0, limit - windows.today.requests));t=\(toDayEnd)")
        }
        if let limit = quota.bytesPerDay {
            policies.append("\"bytes\";q=\(limit);w=86400;qu=\"octets\"")
            limits.append("\"bytes\";r=\(max(0, limit - windows.today.bytesIn - windows.today.bytesOut));t=\(toDayEnd)")
        }
        if let limit = quota.maxConcurrent {
            policies.append("\"parallel\";q=\(limit);qu=\"concurrent-requests\"")
        }
        var fields = HTTPFields()
        if !policies.isEmpty { fields[.rateLimitPolicy] = policies.joined(separator: ", ") }
        if !limits.isEmpty { fields[.rateLimit] = limits.joined(separator: ", ") }
        return fields
    }
}

extension HTTPField.Name {
    static let rateLimitPolicy = HTTPField.Name("RateLimit-Policy")!
    static let rateLimit = HTTPField.Name("RateLimit")!
}
