import Foundation
import Prometheus
import Synchronization

/// The gateway's Prometheus metrics, served at `GET /metrics` in the text format:
/// requests by client, route class and status; how long requests took, by route class; cache results; upstream latency by route class;
/// upstream requests in flight and waiting for a slot; requests sent again after a lost upstream
/// connection; whether the upstream circuit is open and what it refused; log lines dropped;
/// requests made with a key being rotated out, by client; cache hits answered on the event loop;
/// upstream answers withheld because they held the server key; algorithm input and answer bytes
/// held in memory, and calls waiting for room or for an identical call's answer; client
/// connections closed because their client stopped reading; algorithm calls that ran to their
/// end after their client went, by client; asynchronous calls the upstream accepted, by client;
/// requests refused over a quota, by client and quota;
/// configuration reloads applied and refused; and the process's own memory, CPU time and file
/// descriptors (`ProcessMetrics`); the bounds in force beside what they bound (upstream slots,
/// buffered bytes, the cache's size and its hot tier's).
public final class GatewayMetrics: Sendable {
    public let registry = PrometheusCollectorRegistry()
    private let eventLoopHits: Counter
    private let inFlight: Gauge
    private let queued: Gauge
    private let reservedUnused: Gauge
    private let bufferedInputBytes: Gauge
    private let bufferedInputWaiting: Gauge
    private let bufferedAnswerBytes: Gauge
    private let bufferedAnswerWaiting: Gauge
    private let spoolBytes: Gauge
    private let collapsedWaiting: Gauge
    private let logLinesDropped: Counter
    private let logLinesDroppedCounted = Mutex(0)
    private let circuitOpen: Gauge
    private let circuitRefused: Counter
    private let circuitRefusedCounted = Mutex(0)
    private let keyWithheld: Counter
    private let accountKeyPresentations: Counter
    private let sendTimeouts: Counter
    private let storeFailures: Counter
    private let readFailures: Counter
    private let usageStoreFailing: Gauge
    private let corruptEntries: Counter
    private let corruptEntriesCounted = Mutex(0)
    private let diskReserveHeld: Gauge
    private let keyRefused: Counter
    private let reloadsApplied: Counter
    private let reloadsRefused: Counter
    private let lastReloadSuccessful: Gauge
    private let process: ProcessMetrics
    private let bounds: BoundMetrics
    static let latencyBuckets: [Duration] = [.milliseconds(5), .milliseconds(10), .milliseconds(25), .milliseconds(50),
                                             .milliseconds(100), .milliseconds(250), .milliseconds(500), .seconds(1),
                                             .seconds(2.5), .seconds(5), .seconds(10), .seconds(30), .seconds(60)]

    public init() {
        eventLoopHits = registry.makeCounter(descriptor: .init(
            metricName: "algogate_cache_fast_hits", unitName: "total",
            helpText: "Cache hits answered from memory on the connection's event loop (cache.fast_hits), also counted as hits"))
        inFlight = registry.makeGauge(descriptor: .init(metricName: "algogate_upstream_in_flight", unitName: "", helpText: "Upstream requests in flight"))
        queued = registry.makeGauge(descriptor: .init(metricName: "algogate_upstream_queued", unitName: "", helpText: "Requests waiting for an upstream slot"))
        reservedUnused = registry.makeGauge(descriptor: .init(metricName: "algogate_upstream_reserved_unused", unitName: "",
                                                              helpText: "Upstream slots reserved for clients (quota.reserved_concurrent) and not in use by them, which no other client may take"))
        bufferedInputBytes = registry.makeGauge(descriptor: .init(
            metricName: "algogate_buffered_input_bytes", unitName: "",
            helpText: "Algorithm input bytes held in memory (reserved by calls being read or waiting), bounded by limits.max_buffered_bytes"))
        bufferedInputWaiting = registry.makeGauge(descriptor: .init(
            metricName: "algogate_buffered_input_waiting", unitName: "", helpText: "Algorithm calls waiting for room under limits.max_buffered_bytes"))
        bufferedAnswerBytes = registry.makeGauge(descriptor: .init(
            metricName: "algogate_buffered_answer_bytes", unitName: "",
            helpText: "Algorithm answer bytes held in memory (answers of 64 KiB or more, being read or sent), bounded by limits.max_buffered_answer_bytes"))
        bufferedAnswerWaiting = registry.makeGauge(descriptor: .init(
            metricName: "algogate_buffered_answer_waiting", unitName: "", helpText: "Algorithm answers waiting for room under limits.max_buffered_answer_bytes"))
        spoolBytes = registry.makeGauge(descriptor: .init(
            metricName: "algogate_spool", unitName: "bytes",
            helpText: "Bytes of downloads waiting on disk for clients slower than the upstream, bounded by limits.spool_max_bytes"))
        collapsedWaiting = registry.makeGauge(descriptor: .init(
            metricName: "algogate_cache_collapsed_waiting", unitName: "", helpText: "Cacheable calls waiting for an identical call's upstream answer (single flight)"))
        logLinesDropped = registry.makeCounter(descriptor: .init(
            metricName: "algogate_log_lines_dropped", unitName: "total", helpText: "Log lines dropped because the log's reader fell behind"))
        circuitOpen = registry.makeGauge(descriptor: .init(
            metricName: "algogate_upstream_circuit_open", unitName: "", helpText: "1 while requests are refused because the upstream could not be reached"))
        circuitRefused = registry.makeCounter(descriptor: .init(
            metricName: "algogate_upstream_circuit_refused", unitName: "total", helpText: "Requests refused at once because the upstream circuit was open"))
        keyWithheld = registry.makeCounter(descriptor: .init(
            metricName: "algogate_upstream_key_withheld", unitName: "total",
            helpText: "Upstream answers withheld (502), or streams cut, because they held the server key"))
        accountKeyPresentations = registry.makeCounter(descriptor: .init(
            metricName: "algogate_account_key_presented", unitName: "total",
            helpText: "Requests that presented the account's upstream key as their own (refused): the key has reached someone it should not"))
        sendTimeouts = registry.makeCounter(descriptor: .init(
            metricName: "algogate_client_send_timeouts", unitName: "total",
            helpText: "Client connections closed because their socket stayed full (the client reading nothing of its answer, or very little) for server.send_timeout_seconds"))
        keyRefused = registry.makeCounter(descriptor: .init(
            metricName: "algogate_upstream_key_refused", unitName: "total",
            helpText: "Upstream answers 401: the upstream refused the server key (revoked, rotated or misconfigured)"))
        storeFailures = registry.makeCounter(descriptor: .init(
            metricName: "algogate_cache_store_failures", unitName: "total",
            helpText: "Answers the cache would have stored but could not (the SQLite file failed); each was sent all the same"))
        readFailures = registry.makeCounter(descriptor: .init(
            metricName: "algogate_cache_read_failures", unitName: "total",
            helpText: "Cacheable calls for which the cache could not be read (the SQLite file failed); each went upstream"))
        corruptEntries = registry.makeCounter(descriptor: .init(
            metricName: "algogate_cache_corrupt_entries", unitName: "total",
            helpText: "Cache entries that did not read back as stored (their gzip or SHA-256 check failed), deleted; each call went upstream"))
        usageStoreFailing = registry.makeGauge(descriptor: .init(
            metricName: "algogate_usage_store_failing", unitName: "",
            helpText: "1 while usage counters cannot be read or written, so team requests are refused (quotas fail closed)"))
        diskReserveHeld = registry.makeGauge(descriptor: .init(
            metricName: "algogate_disk_reserve_held", unitName: "",
            helpText: "0 while the disk holding cache.path is full: its reserve went to the usage counters and the cache stores nothing"))
        let reloads = MetricNameDescriptor(metricName: "algogate_config_reloads", unitName: "total",
                                           helpText: "Configuration reloads (SIGHUP, or a change seen by serve --watch), by result: applied or refused")
        reloadsApplied = registry.makeCounter(descriptor: reloads, labels: [("result", "applied")])
        reloadsRefused = registry.makeCounter(descriptor: reloads, labels: [("result", "refused")])
        lastReloadSuccessful = registry.makeGauge(descriptor: .init(
            metricName: "algogate_config_last_reload_successful", unitName: "",
            helpText: "0 while the last reload was refused (the configuration in force is older than the file), else 1"))
        lastReloadSuccessful.set(to: 1)
        process = ProcessMetrics(registry: registry)
        bounds = BoundMetrics(registry: registry)
        let registry = registry
        requestHistograms = Self.requestHistogramRoutes.map { route in
            registry.makeDurationHistogram(descriptor: Self.requestDuration, labels: [("route", route)], buckets: Self.requestBuckets)
        }
    }

    private static var requests: MetricNameDescriptor { .init(
        metricName: "algogate_requests", unitName: "total", helpText: "Requests answered, by client, route class and status") }
    private static var cacheRequests: MetricNameDescriptor { .init(
        metricName: "algogate_cache_requests", unitName: "total", helpText: "Cacheable algorithm calls by cache result: hit, stale, miss, collapsed, bypass") }
    private static var previousKeyRequests: MetricNameDescriptor { .init(
        metricName: "algogate_previous_key_requests", unitName: "total",
        helpText: "Requests made with a client's previous_key_sha256 key (a rotation still under way), by client") }
    private static var unreadAnswers: MetricNameDescriptor { .init(
        metricName: "algogate_unread_answers", unitName: "total",
        helpText: "Algorithm calls that ran to their end upstream after their client went (upstream.abandoned_calls: finish, or kept for the cache), by client") }
    private static var asyncCalls: MetricNameDescriptor { .init(
        metricName: "algogate_async_calls", unitName: "total",
        helpText: "Asynchronous algorithm calls (output=void) the upstream accepted, by client: their algorithms run upstream after the gateway has freed their slot") }
    private static var quotaRefusals: MetricNameDescriptor { .init(
        metricName: "algogate_quota_refusals", unitName: "total",
        helpText: "Requests refused with 429 QuotaExceeded, by client and the quota they were over (requests_per_minute, requests_per_day, bytes_per_day, slot_seconds_per_day, slot_seconds_per_month)") }
    private static var clientInFlight: MetricNameDescriptor { .init(
        metricName: "algogate_upstream_client_in_flight", unitName: "",
        helpText: "Upstream requests in flight, by client (every client that has held or awaited a slot since the start)") }
    private static var slotSeconds: MetricNameDescriptor { .init(
        metricName: "algogate_upstream_slot_seconds", unitName: "total",
        helpText: "Seconds of upstream slots held, by client: its rate is the slots a client keeps busy on average, to size max_concurrent and reserved_concurrent by") }
    private static var clientQueued: MetricNameDescriptor { .init(
        metricName: "algogate_upstream_client_queued", unitName: "", helpText: "Requests waiting for an upstream slot, by client") }
    private static var upstreamRetries: MetricNameDescriptor { .init(
        metricName: "algogate_upstream_retries", unitName: "total",
        helpText: "Bodiless GET, HEAD and OPTIONS requests sent again after their upstream connection was lost, by route class") }
    private static var upstreamDuration: MetricNameDescriptor { .init(
        metricName: "algogate_upstream_duration", unitName: "seconds", helpText: "Time to the upstream's answer (head), by route class") }
    private static var requestDuration: MetricNameDescriptor { .init(
        metricName: "algogate_request_duration", unitName: "seconds",
        helpText: "Time from a request's head to its answer's last byte handed to the socket, cache hits included, by route class") }
    static let requestBuckets: [Duration] = [.milliseconds(1), .milliseconds(2.5), .milliseconds(5), .milliseconds(10), .milliseconds(25),
                                             .milliseconds(50), .milliseconds(100), .milliseconds(250), .milliseconds(500), .seconds(1),
                                             .seconds(2.5), .seconds(5), .seconds(10), .seconds(30), .seconds(60), .seconds(300)]

    private struct RequestLabels: Hashable {
        let client: String
        let route: String
        let status: Int
    }

    /// Collectors already made, so a request costs one dictionary look-up rather than the
    /// registry's name validation and label matching.
    private let requestCounters = Mutex<[RequestLabels: Counter]>([:])
    private let cacheCounters = Mutex<[String: Counter]>([:])
    private let previousKeyCounters = Mutex<[String: Counter]>([:])
    private let unreadAnswerCounters = Mutex<[String: Counter]>([:])
    private let asyncCallCounters = Mutex<[String: Counter]>([:])
    private let quotaRefusalCounters = Mutex<[[String]: Counter]>([:])
    private let clientSlotGauges = Mutex<[String: (inFlight: Gauge, queued: Gauge)]>([:])
    private let slotSecondsCounters = Mutex<[String: Counter]>([:])
    private let retryCounters = Mutex<[String: Counter]>([:])
    private let upstreamHistograms = Mutex<[String: DurationHistogram]>([:])
    /// One per route class and `none` (`requestHistogramRoutes`, in that order), made up front:
    /// recorded for every request, so found without a lock or a hash.
    private let requestHistograms: [DurationHistogram]
    private static let requestHistogramRoutes = ["algo", "data", "manage", "admin", "none"]

    func request(client: String, route: String, status: Int) {
        Self.memoised(requestCounters, RequestLabels(client: client, route: route, status: status)) {
            registry.makeCounter(descriptor: Self.requests, labels: [("client", client), ("route", route), ("status", String(status))])
        }.increment()
    }

    func cache(_ result: String) {
        Self.memoised(cacheCounters, result) {
            registry.makeCounter(descriptor: Self.cacheRequests, labels: [("result", result)])
        }.increment()
    }

    func fastHit() { eventLoopHits.increment() }

    func upstreamKeyWithheld() { keyWithheld.increment() }
    func accountKeyPresented() { accountKeyPresentations.increment() }
    func clientSendTimedOut() { sendTimeouts.increment() }
    func cacheStoreFailed() { storeFailures.increment() }
    func cacheReadFailed() { readFailures.increment() }
    func upstreamKeyRefused() { keyRefused.increment() }

    func configReload(applied: Bool) {
        (applied ? reloadsApplied : reloadsRefused).increment()
        lastReloadSuccessful.set(to: applied ? 1 : 0)
    }

    func previousKeyRequest(client: String) {
        Self.memoised(previousKeyCounters, client) {
            registry.makeCounter(descriptor: Self.previousKeyRequests, labels: [("client", client)])
        }.increment()
    }

    func unreadAnswer(client: String) {
        Self.memoised(unreadAnswerCounters, client) {
            registry.makeCounter(descriptor: Self.unreadAnswers, labels: [("client", client)])
        }.increment()
    }

    func asyncCall(client: String) {
        Self.memoised(asyncCallCounters, client) {
            registry.makeCounter(descriptor: Self.asyncCalls, labels: [("client", client)])
        }.increment()
    }

    func quotaRefusal(client: String, quota: String) {
        Self.memoised(quotaRefusalCounters, [client, quota]) {
            registry.makeCounter(descriptor: Self.quotaRefusals, labels: [("client", client), ("quota", quota)])
        }.increment()
    }

    func slotHeld(client: String, _ duration: Duration) {
        Self.memoised(slotSecondsCounters, client) {
            registry.makeCounter(descriptor: Self.slotSeconds, labels: [("client", client)])
        }.increment(by: max(0, duration.inSeconds))
    }

    func upstreamRetry(route: String) {
        Self.memoised(retryCounters, route) {
            registry.makeCounter(descriptor: Self.upstreamRetries, labels: [("route", route)])
        }.increment()
    }

    func requestDuration(route: String, _ duration: Duration) {
        let index = switch route {
        case "algo": 0
        case "data": 1
        case "manage": 2
        case "admin": 3
        default: 4
        }
        requestHistograms[index].record(duration)
    }

    func upstreamLatency(route: String, _ duration: Duration) {
        Self.memoised(upstreamHistograms, route) {
            registry.makeDurationHistogram(descriptor: Self.upstreamDuration, labels: [("route", route)], buckets: Self.latencyBuckets)
        }.record(duration)
    }

    private static func memoised<Key: Hashable & Sendable, Value: Sendable>(_ table: borrowing Mutex<[Key: Value]>, _ key: Key, make: () -> Value) -> Value {
        table.withLock { entries in
            if let value = entries[key] { return value }
            let value = make()
            entries[key] = value
            return value
        }
    }

    /// The text exposition, with the gauges read from the gate, the log writer's drops, the
    /// bounds in force with the cache's size, and the process's own figures brought up to date
    /// at scrape time.
    func exposition(gate: ConcurrencyGate, inputBudget: MemoryBudget, answerBudget: MemoryBudget, spoolBudget: MemoryBudget, collapsedWaiting: Int,
                    breaker: CircuitBreaker, logWriter: LogWriter?, ledger: QuotaLedger, reserve: DiskReserve?,
                    cache: ResponseCache?, limits: GatewayConfig.Limits) -> [UInt8] {
        if let cache { Self.catchUp(corruptEntries, counted: corruptEntriesCounted, to: cache.corruptEntriesTotal) }
        bounds.update(gate: gate, cache: cache, limits: limits)
        usageStoreFailing.set(to: ledger.isHealthy ? 0 : 1)
        diskReserveHeld.set(to: (reserve?.isHeld ?? true) ? 1 : 0)
        inFlight.set(to: Double(gate.inFlight))
        queued.set(to: Double(gate.queued))
        reservedUnused.set(to: Double(gate.unusedReserved))
        for (client, standing) in gate.standing().clients {
            let (inFlight, queued) = Self.memoised(clientSlotGauges, client) {
                (registry.makeGauge(descriptor: Self.clientInFlight, labels: [("client", client)]),
                 registry.makeGauge(descriptor: Self.clientQueued, labels: [("client", client)]))
            }
            inFlight.set(to: Double(standing.inFlight))
            queued.set(to: Double(standing.queued))
        }
        bufferedInputBytes.set(to: Double(inputBudget.held))
        bufferedInputWaiting.set(to: Double(inputBudget.waiting))
        bufferedAnswerBytes.set(to: Double(answerBudget.held))
        bufferedAnswerWaiting.set(to: Double(answerBudget.waiting))
        spoolBytes.set(to: Double(spoolBudget.held))
        self.collapsedWaiting.set(to: Double(collapsedWaiting))
        circuitOpen.set(to: breaker.isOpen ? 1 : 0)
        Self.catchUp(circuitRefused, counted: circuitRefusedCounted, to: breaker.refusedTotal)
        if let logWriter {
            Self.catchUp(logLinesDropped, counted: logLinesDroppedCounted, to: logWriter.droppedLines)
        }
        process.update()
        return registry.emitToBuffer()
    }

    /// Brings a counter kept elsewhere (as a running total) up to date at scrape time.
    private static func catchUp(_ counter: Counter, counted: borrowing Mutex<Int>, to total: Int) {
        let added = counted.withLock { counted in
            defer { counted = max(counted, total) }
            return total - counted
        }
        if added > 0 { counter.increment(by: Int64(added)) }
    }
}
