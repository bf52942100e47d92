import Foundation
import Hummingbird
import NIOCore

/// The gateway's own endpoints beside the Algorithmia API.
///
/// For the admin key:
/// - `GET /_admin/cache`: entries, bytes, hits, misses, hit ratio, top algorithms.
/// - `DELETE /_admin/cache[?algo=owner/name[/version]]`: purge one version, one algorithm, or all.
/// - `GET /_admin/usage[?days=N|month=YYYY-MM][&client=NAME]`: usage per client per day.
/// - `GET /_admin/concurrency`: the account's upstream slots now: in flight, queued and reserved,
///   in all and per client.
///
/// For any client key:
/// - `GET /_gateway/me`: the client's name, scopes, data prefixes, quotas and what remains today.
public struct OperatorRoutes: Sendable {
    let cache: ResponseCache?
    let ledger: QuotaLedger
    let usage: any UsageStore
    /// The names of the clients the configuration holds now.
    let configuredClients: @Sendable () -> [String]
    let gate: ConcurrencyGate
    /// Each configured client's quota as it applies (its own fields over the defaults).
    let quotas: @Sendable () -> [String: GatewayConfig.Quota]
    /// `limits.upload_min_bytes_per_second`: the rate a client without its own keeps its uploads to.
    let uploadMinimum: @Sendable () -> Int
    let now: @Sendable () -> Double

    func register(on router: Router<GatewayRequestContext>) {
        router.get("/_admin/cache") { request, context -> Response in
            let cache = try requireCache(context)
            // Stats are the whole cache's: `?algo=` filters nothing, and says so.
            _ = try Self.parameters(of: request, taking: [], endpoint: "GET /_admin/cache")
            return try Self.json(try await cache.stats())
        }
        router.delete("/_admin/cache") { request, context -> Response in
            let cache = try requireCache(context)
            let algo = try Self.parameters(of: request, taking: ["algo"], endpoint: "DELETE /_admin/cache")["algo"]
            if let algo, !Self.isAlgoPattern(algo) {
                throw GatewayError.badRequest("algo must be owner/name or owner/name/version")
            }
            let purged = try await cache.purge(algo: algo)
            // Who purged what, for whoever later wonders where the cached answers went (the
            // request line carries no query).
            context.lineLogger.notice("cache purged by an operator", metadata: ["algo": .string(algo ?? "*"), "purged": .stringConvertible(purged)])
            return Response(status: .ok, headers: [.contentType: "application/json"],
                            body: .init(byteBuffer: ByteBuffer(string: #"{"purged":\#(purged)}"#)))
        }
        router.get("/_admin/usage") { request, context -> Response in
            try requireOperator(context)
            let parameters = try Self.parameters(of: request, taking: ["days", "month", "client"], endpoint: "GET /_admin/usage")
            let period: UsagePeriod
            switch (parameters["days"], parameters["month"]) {
            case (.some, .some):
                throw GatewayError.badRequest("give days or month, not both")
            case (_, .some(let text)):
                guard let month = UsagePeriod.month(text) else { throw GatewayError.badRequest(UsagePeriod.monthRefusal("month", text)) }
                period = month
            case (let text, nil):
                let days = text.map { Int($0) } ?? 7
                guard let days, (1...3660).contains(days) else { throw GatewayError.badRequest("days must be a whole number from 1 to 3660") }
                period = .lastDays(days)
            }
            await ledger.flush()
            let today = QuotaLedger.day(of: now())
            let client = parameters["client"]
            let rows = try await usage.report(days: period.days(today: today), client: client)
            if let client, rows.isEmpty, !configuredClients().contains(client) {
                throw GatewayError.notFound(Self.unknownClient(client, in: period))
            }
            return try Self.json(["days": rows])
        }
        router.get("/_admin/concurrency") { request, context -> Response in
            try requireOperator(context)
            _ = try Self.parameters(of: request, taking: [], endpoint: "GET /_admin/concurrency")
            return try Self.json(Concurrency(gate.standing(), quotas: quotas()))
        }
        router.get("/_gateway/me") { request, context -> Response in
            guard let client = context.client, !client.isOperator else {
                throw GatewayError.forbidden("/_gateway/me describes a client key; the admin key has no quota")
            }
            _ = try Self.parameters(of: request, taking: [], endpoint: "GET /_gateway/me")
            return try Self.json(Me(client: client, uploadMinimum: client.uploadMinBytesPerSecond ?? uploadMinimum(),
                                    standing: ledger.standing(of: client.name)))
        }
    }

    /// The body of `/_admin/concurrency`: who holds the account's upstream slots and who waits,
    /// for an operator asking why a team gets `UpstreamBusy`.
    struct Concurrency: Encodable {
        struct Client: Encodable {
            var name: String
            var inFlight: Int
            var queued: Int
            var peak: Int
            var maxConcurrent: Int?
            var reservedConcurrent: Int?
            enum CodingKeys: String, CodingKey {
                case name, inFlight = "in_flight", queued, peak, maxConcurrent = "max_concurrent", reservedConcurrent = "reserved_concurrent"
            }
        }
        var maxConcurrency: Int
        var inFlight: Int
        var queued: Int
        var reservedUnused: Int
        /// The configured clients, and any other holding or awaiting a slot (the operator, a
        /// client a reload removed), by name.
        var clients: [Client]
        enum CodingKeys: String, CodingKey {
            case maxConcurrency = "max_concurrency", inFlight = "in_flight", queued, reservedUnused = "reserved_unused", clients
        }

        init(_ standing: ConcurrencyGate.Standing, quotas: [String: GatewayConfig.Quota]) {
            maxConcurrency = standing.capacity
            inFlight = standing.inFlight
            queued = standing.queued
            reservedUnused = standing.unusedReserved
            let active = standing.clients.filter { $0.value.inFlight > 0 || $0.value.queued > 0 }.keys
            clients = Set(quotas.keys).union(active).sorted().map { name in
                let held = standing.clients[name] ?? .init()
                return Client(name: name, inFlight: held.inFlight, queued: held.queued, peak: held.peak,
                              maxConcurrent: quotas[name]?.maxConcurrent, reservedConcurrent: quotas[name]?.reservedConcurrent)
            }
        }
    }

    /// The body of `/_gateway/me`.
    struct Me: Encodable {
        struct Remaining: Encodable {
            var requestsThisMinute: Int?
            var requestsToday: Int?
            var bytesToday: Int?
            var slotSecondsToday: Double?
            var slotSecondsThisMonth: Double?
            var secondsToMinuteEnd: Int
            var secondsToDayEnd: Int
            /// Only with a monthly quota.
            var secondsToMonthEnd: Int?
            enum CodingKeys: String, CodingKey {
                case requestsThisMinute = "requests_this_minute", requestsToday = "requests_today", bytesToday = "bytes_today"
                case slotSecondsToday = "slot_seconds_today", slotSecondsThisMonth = "slot_seconds_this_month"
                case secondsToMinuteEnd = "seconds_to_minute_end", secondsToDayEnd = "seconds_to_day_end", secondsToMonthEnd = "seconds_to_month_end"
            }
        }
        struct Quota: Encodable {
            var requestsPerMinute: Int?
            var requestsPerDay: Int?
            var maxConcurrent: Int?
            var reservedConcurrent: Int?
            var bytesPerDay: Int?
            var slotSecondsPerDay: Int?
            var slotSecondsPerMonth: Int?
            enum CodingKeys: String, CodingKey {
                case requestsPerMinute = "requests_per_minute", requestsPerDay = "requests_per_day"
                case maxConcurrent = "max_concurrent", reservedConcurrent = "reserved_concurrent", bytesPerDay = "bytes_per_day"
                case slotSecondsPerDay = "slot_seconds_per_day", slotSecondsPerMonth = "slot_seconds_per_month"
            }
        }
        var name: String
        /// `current`, or `previous` for the key a rotation is replacing: time to switch.
        var key: String
        var scopes: [String]
        var dataPrefixes: [String]?
        var algorithms: [String]?
        /// The web origins the key may be used from (`*` for any); absent: none.
        var corsOrigins: [String]?
        /// Whether the key may make asynchronous calls (`output=void`).
        var asyncCalls: Bool
        /// The least rate its uploads must keep (0: none), its own or the global one.
        var uploadMinBytesPerSecond: Int
        var quota: Quota
        var usedToday: Usage
        var remaining: Remaining
        enum CodingKeys: String, CodingKey {
            case name, key, scopes, dataPrefixes = "data_prefixes", algorithms, corsOrigins = "cors_origins", asyncCalls = "async_calls", quota
            case uploadMinBytesPerSecond = "upload_min_bytes_per_second", usedToday = "used_today", remaining
        }

        init(client: ClientIdentity, uploadMinimum: Int, standing: QuotaLedger.Standing) {
            let quota = client.quota
            name = client.name
            key = client.viaPreviousKey ? "previous" : "current"
            scopes = client.scopes.map(\.rawValue).sorted()
            dataPrefixes = client.dataPrefixes?.map(\.asPrefix)
            algorithms = client.algorithms?.map(\.description)
            let origins = client.corsOrigins
            corsOrigins = origins.isEmpty ? nil : (origins.any ? ["*"] : []) + origins.origins.sorted()
            asyncCalls = client.asyncCalls
            uploadMinBytesPerSecond = uploadMinimum
            self.quota = Quota(requestsPerMinute: quota.requestsPerMinute, requestsPerDay: quota.requestsPerDay,
                               maxConcurrent: quota.maxConcurrent, reservedConcurrent: quota.reservedConcurrent, bytesPerDay: quota.bytesPerDay,
                               slotSecondsPerDay: quota.slotSecondsPerDay, slotSecondsPerMonth: quota.slotSecondsPerMonth)
            usedToday = standing.today
            remaining = Remaining(
                requestsThisMinute: quota.requestsPerMinute.map { max(0, $0 - standing.minuteRequests) },
                requestsToday: quota.requestsPerDay.map { max(0, $0 - standing.today.requests) },
                bytesToday: quota.bytesPerDay.map { max(0, $0 - standing.today.bytesIn - standing.today.bytesOut) },
                slotSecondsToday: quota.slotSecondsPerDay.map { max(0, Double($0) - standing.today.slotSeconds - standing.runningSlotSeconds) },
                slotSecondsThisMonth: quota.slotSecondsPerMonth.map { max(0, Double($0) - standing.monthSlotSeconds - standing.runningSlotSeconds) },
                secondsToMinuteEnd: standing.secondsToMinuteEnd, secondsToDayEnd: standing.secondsToDayEnd,
                secondsToMonthEnd: quota.slotSecondsPerMonth == nil ? nil : standing.secondsToMonthEnd)
        }
    }

    private func requireOperator(_ context: GatewayRequestContext) throws {
        guard context.client?.isOperator == true else {
            throw GatewayError.forbidden("operator endpoints need the admin key")
        }
    }

    private func requireCache(_ context: GatewayRequestContext) throws -> ResponseCache {
        try requireOperator(context)
        guard let cache else { throw GatewayError.notFound("the cache is disabled (cache.enabled: false)") }
        return cache
    }

    /// What an operator asking for the usage of `client` is told when no client of that name is
    /// configured and none has usage in the window: a misspelt name, not a client that used nothing.
    /// (A client since removed from the configuration still has its past usage reported.)
    public static func unknownClient(_ client: String, in period: UsagePeriod) -> String {
        "no client named '\(client)' is configured, and none of that name used the gateway in \(period.description)"
    }

    /// The request's query parameters, each given at most once and only those the endpoint takes:
    /// a misspelt or second `algo` would otherwise purge the whole cache, or less than was meant.
    static func parameters(of request: Request, taking names: [String], endpoint: String) throws -> [String: String] {
        var found: [String: String] = [:]
        for (name, value) in request.uri.queryParameters {
            let name = String(name)
            guard names.contains(name) else {
                throw GatewayError.badRequest(names.isEmpty ? "\(endpoint) takes no parameters"
                                                             : "\(endpoint) takes no parameter '\(name)'; it takes \(Self.list(names))")
            }
            guard found.updateValue(String(value), forKey: name) == nil else {
                throw GatewayError.badRequest("\(endpoint) takes '\(name)' once")
            }
        }
        return found
    }

    /// `a`, `a and b`, `a, b and c`.
    static func list(_ names: [String]) -> String {
        names.count <= 2 ? names.joined(separator: " and ") : names.dropLast().joined(separator: ", ") + " and " + names[names.count - 1]
    }

    /// Whether `text` names what a purge may: `owner/name` or `owner/name/version` (the HTTP
    /// endpoint and `algogate cache purge` alike).
    public static func isAlgoPattern(_ text: String) -> Bool {
        let parts = text.utf8.split(separator: UInt8(ascii: "/"), omittingEmptySubsequences: false)
        return (2...3).contains(parts.count) && parts.allSatisfy { !$0.isEmpty && !$0.contains(UInt8(ascii: "%")) }
    }

    static func json(_ value: some Encodable) throws -> Response {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        return Response(status: .ok, headers: [.contentType: "application/json"],
                        body: .init(byteBuffer: ByteBuffer(bytes: try encoder.encode(value))))
    }
}
