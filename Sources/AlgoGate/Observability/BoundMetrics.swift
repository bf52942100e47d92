import Prometheus

/// The bounds in force at `GET /metrics`, beside the gauges of what they bound, so a dashboard or
/// an alert reads how full each is without copying the configuration: the upstream slots, the
/// bytes of algorithm inputs and answers held in memory, and the cache's size, on disk and in
/// its hot tier (with the size itself, which the cache reads with its flush each second); and the
/// version serving (`algogate_build_info`).
final class BoundMetrics: Sendable {
    private let maxConcurrency: Gauge
    private let bufferedInputMax: Gauge
    private let bufferedAnswerMax: Gauge
    private let spoolMax: Gauge
    private let cacheEntries: Gauge
    private let cacheBytes: Gauge
    private let cacheMaxBytes: Gauge
    private let cacheMemoryBytes: Gauge
    private let cacheMemoryMaxBytes: Gauge

    init(registry: PrometheusCollectorRegistry) {
        // Constant: which release serves, for dashboards that follow a rollout across replicas.
        registry.makeGauge(descriptor: .init(metricName: "algogate_build_info", unitName: "", helpText: "1, labelled with the gateway's version"),
                           labels: [("version", AlgoGateVersion.string)]).set(to: 1)
        maxConcurrency = registry.makeGauge(descriptor: .init(
            metricName: "algogate_upstream_max_concurrency", unitName: "", helpText: "Upstream slots in force (upstream.max_concurrency)"))
        bufferedInputMax = registry.makeGauge(descriptor: .init(
            metricName: "algogate_buffered_input_max", unitName: "bytes", helpText: "The bound on algorithm input held in memory (limits.max_buffered_bytes)"))
        bufferedAnswerMax = registry.makeGauge(descriptor: .init(
            metricName: "algogate_buffered_answer_max", unitName: "bytes",
            helpText: "The bound on algorithm answers held in memory (limits.max_buffered_answer_bytes)"))
        spoolMax = registry.makeGauge(descriptor: .init(
            metricName: "algogate_spool_max", unitName: "bytes",
            helpText: "The bound on downloads waiting on disk for slow clients (limits.spool_max_bytes; 0: no spool)"))
        cacheEntries = registry.makeGauge(descriptor: .init(
            metricName: "algogate_cache_entries", unitName: "", helpText: "Answers stored in the cache, as of the last second"))
        cacheBytes = registry.makeGauge(descriptor: .init(
            metricName: "algogate_cache", unitName: "bytes",
            helpText: "The cache's size as cache.max_bytes counts it (bodies and 400 bytes an entry), as of the last second"))
        cacheMaxBytes = registry.makeGauge(descriptor: .init(
            metricName: "algogate_cache_max", unitName: "bytes", helpText: "The cache's bound (cache.max_bytes): least recently used answers are evicted beyond it"))
        cacheMemoryBytes = registry.makeGauge(descriptor: .init(
            metricName: "algogate_cache_memory", unitName: "bytes", helpText: "Answers held in the hot in-memory tier"))
        cacheMemoryMaxBytes = registry.makeGauge(descriptor: .init(
            metricName: "algogate_cache_memory_max", unitName: "bytes", helpText: "The hot tier's bound (cache.memory_bytes)"))
    }

    /// Reads the bounds and the cache's size now (at scrape time). Without a cache
    /// (`cache.enabled: false`) its gauges stay 0.
    func update(gate: ConcurrencyGate, cache: ResponseCache?, limits: GatewayConfig.Limits) {
        maxConcurrency.set(to: Double(gate.capacity))
        bufferedInputMax.set(to: Double(limits.maxBufferedBytes))
        bufferedAnswerMax.set(to: Double(limits.maxBufferedAnswerBytes))
        spoolMax.set(to: Double(limits.spoolMaxBytes))
        guard let cache else { return }
        if let size = cache.size {
            cacheEntries.set(to: Double(size.entries))
            cacheBytes.set(to: Double(size.bytes))
        }
        cacheMaxBytes.set(to: Double(cache.settings.withLock { $0.maxBytes }))
        cacheMemoryBytes.set(to: Double(cache.hot.bytes))
        cacheMemoryMaxBytes.set(to: Double(cache.hot.capacity))
    }
}
