import Hummingbird
import NIOCore
import Synchronization

/// Applies the request's `X-Sim-Fault` (or the simulator's default fault) before the API sees it.
struct FaultMiddleware: RouterMiddleware {
    typealias Context = SimRequestContext
    let defaultFault: Fault?
    let attempts = FirstAttempts()

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        guard request.uri.path.hasPrefix("/v1/") else { return try await next(request, context) }
        let fault: Fault?
        if let header = request.headers[SimHeaders.fault] {
            guard let parsed = Fault(parsing: header) else {
                throw SimError(.badRequest, "X-Sim-Fault: cannot parse '\(header)'; use delay=MS, status=CODE, drop, drop-first")
            }
            fault = parsed
        } else {
            fault = defaultFault
        }
        guard let fault else { return try await next(request, context) }
        if fault.delayMilliseconds > 0 {
            try await Task.sleep(for: .milliseconds(fault.delayMilliseconds))
        }
        if fault.dropConnection || (fault.dropFirstAttempt && attempts.isFirst(request.headers[SimHeaders.requestID])) {
            // Close the socket with no response at all: what a crashed upstream looks like.
            try? await context.channel.close()
            throw SimError(.internalServerError, "connection dropped by fault injection")
        }
        if let status = fault.status {
            throw SimError(HTTPResponse.Status(code: status), "injected fault: status \(status)", errorType: "SystemError")
        }
        return try await next(request, context)
    }
}

/// The request IDs seen by `drop-first`: at least the most recent 10,000 of them.
final class FirstAttempts: Sendable {
    private struct Seen {
        var ids: Set<String> = []
        var order: [String] = []
    }
    private let seen = Mutex(Seen())
    static let capacity = 10_000

    /// Whether this is the first request with `id` (always true without one), remembering it.
    func isFirst(_ id: String?) -> Bool {
        guard let id else { return true }
        return seen.withLock { seen in
            guard seen.ids.insert(id).inserted else { return false }
            seen.order.append(id)
            if seen.order.count >= 2 * Self.capacity {  // forget the older half at once
                seen.ids.subtract(seen.order.prefix(Self.capacity))
                seen.order.removeFirst(Self.capacity)
            }
            return true
        }
    }
}
