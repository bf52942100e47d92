import HTTPTypes
import Hummingbird

/// Counts every answered request in the metrics once it has been sent.
struct MetricsMiddleware: RouterMiddleware {
    typealias Context = GatewayRequestContext
    let metrics: GatewayMetrics

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        let response = try await next(request, context)
        counting(response, context: context)
        return response
    }

    /// Not inlined into `handle` (see `CacheMiddleware.handle`).
    @inline(never)
    private func counting(_ response: Response, context: Context) {
        let cacheResult = Self.cacheResult(response.headers)
        let metrics = metrics, facts = context.facts
        context.facts.onCompletion { completion in
            Self.count(completion, cacheResult: cacheResult, in: metrics)
            if completion.status == 429, let quota = facts.shortfall.failure?.quota { metrics.quotaRefusal(client: completion.client ?? "-", quota: quota) }
        }
    }

    /// The `algogate_cache_requests_total` result an answer counts under, from its cache headers.
    static func cacheResult(_ headers: HTTPFields) -> String? {
        switch headers.value(.xCache) {
        case "HIT": "hit"
        case "STALE": "stale"
        case "MISS": (headers.value(.cacheStatus)?.hasSuffix("collapsed") ?? false) ? "collapsed" : "miss"
        case "BYPASS": "bypass"
        default: nil
        }
    }

    /// Counts a finished request (for cache hits answered on the event loop too, `CachedHits`).
    static func count(_ completion: RequestCompletion, cacheResult: String?, in metrics: GatewayMetrics) {
        metrics.request(client: completion.client ?? "-", route: completion.route ?? "none", status: completion.status)
        metrics.requestDuration(route: completion.route ?? "none", completion.elapsed)
        if let cacheResult { metrics.cache(cacheResult) }
        if completion.viaPreviousKey, let client = completion.client { metrics.previousKeyRequest(client: client) }
    }
}
