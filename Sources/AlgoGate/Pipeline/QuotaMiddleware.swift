import HTTPTypes
import Hummingbird

/// Admits each team request against its client's quota (429 when over, 503 when usage cannot be
/// recorded), puts the RateLimit fields on the response, and counts what the request used once
/// it has been sent. Cache hits count as requests; the operator key is not metered.
struct QuotaMiddleware: RouterMiddleware {
    typealias Context = GatewayRequestContext
    let ledger: QuotaLedger

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        guard let (client, admission) = try admit(context) else { return try await next(request, context) }
        let response: Response
        do {
            response = try await next(request, context)
        } catch {
            response = try ErrorMiddleware.render(error, request: request, context: context)
        }
        return recording(response, client: client, admission: admission, context: context)
    }

    /// The client's name and its admission; nil for a request that is not metered. Not inlined
    /// into `handle` (see `CacheMiddleware.handle`).
    @inline(never)
    private func admit(_ context: Context) throws -> (client: String, QuotaLedger.Admission)? {
        guard let client = context.client, !client.isOperator, context.route != nil else { return nil }
        return (client.name, try ledger.admit(client))
    }

    /// `response` with the RateLimit fields, counted once it has been sent. Not inlined into
    /// `handle` (see `CacheMiddleware.handle`).
    @inline(never)
    private func recording(_ response: Response, client: String, admission: QuotaLedger.Admission, context: Context) -> Response {
        var response = response
        for field in admission.headers { response.headers[field.name] = field.value }
        let fromCache = ["HIT", "STALE"].contains(response.headers.value(.xCache)) || (response.headers.value(.cacheStatus)?.hasSuffix("collapsed") ?? false)
        let ledger = ledger
        context.facts.onCompletion { completion in
            Self.record(completion, fromCache: fromCache, client: client, admission: admission, in: ledger)
        }
        return response
    }

    /// Counts what a finished request used (for cache hits answered on the event loop too, `CachedHits`).
    static func record(_ completion: RequestCompletion, fromCache: Bool, client: String, admission: QuotaLedger.Admission, in ledger: QuotaLedger) {
        ledger.record(client: client, day: admission.day, .init(
            cacheHit: fromCache, upstreamCall: completion.upstreamCalled, error: completion.status >= 400,
            bytesIn: completion.bytesIn, bytesOut: completion.bytesOut, computeSeconds: completion.computeSeconds,
            slotSeconds: completion.slotSeconds))
    }
}
