import Hummingbird

/// Counts every answered request in the metrics once it has been sent.
struct MetricsMiddleware: RouterMiddleware {
    typealias Context = GatewayRequestContext
    let metrics: GatewayMetrics

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        let response = try await next(request, context)
        let cacheResult: String? = switch response.headers[.xCache] {
        case "HIT": "hit"
        case "MISS": (response.headers[.cacheStatus]?.hasSuffix("collapsed") ?? false) ? "collapsed" : "miss"
        case "BYPASS": "bypass"
        default: nil
        }
        let facts = context.facts
        let metrics = metrics
        facts.onCompletion { completion in
            let (client, route) = facts.state.withLock { ($0.client?.name ?? "-", $0.route?.name ?? "none") }
            metrics.request(client: client, route: route, status: completion.status)
            if let cacheResult { metrics.cache(cacheResult) }
        }
        return response
    }
}
