import Hummingbird
import NIOCore

/// Applies the request's `X-Sim-Fault` (or the simulator's default fault) before the API sees it.
struct FaultMiddleware: RouterMiddleware {
    typealias Context = SimRequestContext
    let defaultFault: Fault?

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        guard request.uri.path.hasPrefix("/v1/") else { return try await next(request, context) }
        let fault: Fault?
        if let header = request.headers[SimHeaders.fault] {
            guard let parsed = Fault(parsing: header) else {
                throw SimError(.badRequest, "X-Sim-Fault: cannot parse '\(header)'; use delay=MS, status=CODE, drop")
            }
            fault = parsed
        } else {
            fault = defaultFault
        }
        guard let fault else { return try await next(request, context) }
        if fault.delayMilliseconds > 0 {
            try await Task.sleep(for: .milliseconds(fault.delayMilliseconds))
        }
        if fault.dropConnection {
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
