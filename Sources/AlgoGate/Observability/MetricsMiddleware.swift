import Hummingbird

/// Counts every answered request in the metrics once it has been sent.
struct MetricsMiddleware: RouterMiddleware {
    typealias Context = GatewayRequestContext
    let metrics: GatewayMetrics

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        let response = try await next(request, context)
        let cacheResult: String? = switch response.headers.value(.xCache) {
        case "HIT": "hit"
        case "STALE": "stale"
        case "MISS": (response.headers.value(.cacheStatus)?.hasSuffix("collapsed") ?? false) ? "collapsed" : "miss"
        case "BYPASS": "bypass"
        default: nil
        }
        let metrics = metrics
        context.facts.onCompletion { completion in
            metrics.request(client: completion.client ?? "-", route: completion.route ?? "none", status: completion.status)
            if let cacheResult { metrics.cache(cacheResult) }
            if completion.viaPreviousKey, let client = completion.client { metrics.previousKeyRequest(client: client) }
        }
        return response
    }
}
