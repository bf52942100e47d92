import Hummingbird

/// Counts every `/v1` request and tracks how many are in flight at once.
struct StatsMiddleware: RouterMiddleware {
    typealias Context = SimRequestContext
    let stats: SimStats

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        let path = request.uri.path
        guard path.hasPrefix("/v1/") else { return try await next(request, context) }
        let routeClass: String
        if path.hasPrefix("/v1/algo/") { routeClass = "algo" }
        else if path.hasPrefix("/v1/data/") || path.hasPrefix("/v1/connector/") { routeClass = "data" }
        else if path.hasPrefix("/v1/algorithms/") { routeClass = "management" }
        else { routeClass = "other" }
        stats.begin(
            routeClass: routeClass,
            authorization: request.headers[.authorization],
            headerNames: request.headers.map { $0.name.canonicalName }
        )
        defer { stats.end() }
        // Bodies stream after the handler returns; the request counts as in flight only while
        // the handler runs, which is where the simulated work (and its duration) happens.
        return try await next(request, context)
    }
}
