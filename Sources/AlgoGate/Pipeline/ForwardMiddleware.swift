import Hummingbird
import NIOCore

/// The last step for `/v1` requests: hands them to the forwarder by route class.
struct ForwardMiddleware: RouterMiddleware {
    typealias Context = GatewayRequestContext
    let forwarder: Forwarder

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        switch context.route {
        case .algo(let ref):
            guard request.method == .post else {
                throw GatewayError.methodNotAllowed("algorithms are called with POST")
            }
            let input = try await request.body.collect(upTo: .max)
            return try await forwarder.forwardAlgo(request, ref: ref, input: input, context: context)
        case .data(let uri, let connectorForm):
            return try await forwarder.forwardStreaming(request, path: uri.upstreamPath(connectorForm: connectorForm), context: context)
        case .manage, .admin:
            return try await forwarder.forwardStreaming(request, path: request.uri.path, context: context)
        case nil:
            return try await next(request, context)
        }
    }
}
