import Foundation
import Prometheus

/// The gateway's Prometheus metrics, served at `GET /metrics` in the text format:
/// requests by client, route class and status; cache results; upstream latency by route class;
/// upstream requests in flight and waiting for a slot.
public final class GatewayMetrics: Sendable {
    public let registry = PrometheusCollectorRegistry()
    private let inFlight: Gauge
    private let queued: Gauge
    static let latencyBuckets: [Duration] = [.milliseconds(5), .milliseconds(10), .milliseconds(25), .milliseconds(50),
                                             .milliseconds(100), .milliseconds(250), .milliseconds(500), .seconds(1),
                                             .seconds(2.5), .seconds(5), .seconds(10), .seconds(30), .seconds(60)]

    public init() {
        inFlight = registry.makeGauge(name: "algogate_upstream_in_flight", help: "Upstream requests in flight")
        queued = registry.makeGauge(name: "algogate_upstream_queued", help: "Requests waiting for an upstream slot")
    }

    func request(client: String, route: String, status: Int) {
        registry.makeCounter(name: "algogate_requests_total", labels: [("client", client), ("route", route), ("status", String(status))],
                             help: "Requests answered, by client, route class and status").increment()
    }

    func cache(_ result: String) {
        registry.makeCounter(name: "algogate_cache_requests_total", labels: [("result", result)],
                             help: "Cacheable algorithm calls by cache result: hit, miss, collapsed, bypass").increment()
    }

    func upstreamLatency(route: String, _ duration: Duration) {
        registry.makeDurationHistogram(name: "algogate_upstream_duration_seconds", labels: [("route", route)],
                                       buckets: Self.latencyBuckets, help: "Time to the upstream's answer (head), by route class").record(duration)
    }

    /// The text exposition, with the gauges read from the gate at scrape time.
    func exposition(gate: ConcurrencyGate) -> [UInt8] {
        inFlight.set(to: Double(gate.inFlight))
        queued.set(to: Double(gate.queued))
        return registry.emitToBuffer()
    }
}
