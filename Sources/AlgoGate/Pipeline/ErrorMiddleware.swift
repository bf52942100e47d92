import Hummingbird
import NIOCore
import NIOHTTP1

/// Renders whatever a later step throws as a response in Algorithmia's error envelope, so no
/// error reaches the client as Hummingbird's empty 500, and keeps the error for the request's log
/// line. Every answer passes here last before it is written, errors included, so it is also where
/// an upload streaming upstream is settled.
struct ErrorMiddleware: RouterMiddleware {
    typealias Context = GatewayRequestContext

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        let response: Response
        do {
            response = try await next(request, context)
        } catch {
            response = try Self.render(error, request: request, context: context)
        }
        return Self.settlingUpload(response, context: context)
    }

    /// A request body streaming upstream is handed back to Hummingbird only once the answer,
    /// whichever it is, has been sent (see `UploadRelay`). Not inlined into `handle` (see
    /// `CacheMiddleware.handle`).
    @inline(never)
    private static func settlingUpload(_ response: Response, context: Context) -> Response {
        guard let upload = context.facts.upload else { return response }
        var response = response
        response.body = response.body.settling(upload)
        return response
    }

    /// The gateway's own endpoints and their methods, as `GatewayApp` and `OperatorRoutes` register
    /// them (a test checks the two agree): another method on one of these paths is a 405 naming
    /// the right ones, not a 404.
    static let gatewayEndpoints: [String: [HTTPRequest.Method]] = [
        "/healthz": [.get, .head], "/readyz": [.get, .head], "/metrics": [.get],
        "/_admin/cache": [.get, .delete], "/_admin/usage": [.get], "/_admin/concurrency": [.get], "/_gateway/me": [.get],
    ]

    /// 404 for `path`; one under the gateway's own prefixes (`/_admin`, `/_gateway`) lists the
    /// endpoints there are, as an operator mistyping one would want.
    static func noSuchEndpoint(_ path: String) -> GatewayError {
        guard path.hasPrefix("/_admin") || path.hasPrefix("/_gateway") else { return .notFound("no such endpoint: \(path)") }
        let own = gatewayEndpoints.keys.filter { $0.hasPrefix("/_") }.sorted()
        return .notFound("no such endpoint: \(path); the gateway's own are \(own.joined(separator: ", "))")
    }

    /// The envelope answer for `error`, which is kept for the request's log line.
    @inline(never)
    static func render(_ error: any Error, request: Request, context: Context) throws -> Response {
        let failure = gatewayError(for: error, request: request)
        context.facts.record(failure: failure)
        return try failure.response(from: request, context: context)
    }

    static func gatewayError(for error: any Error, request: Request) -> GatewayError {
        switch error {
        case let error as GatewayError:
            return error
        case let error as HTTPError where error.status == .notFound:
            let path = request.uri.path
            if let methods = gatewayEndpoints[path] {
                return .methodNotAllowed("\(path) takes \(methods.map(\.rawValue).joined(separator: " or ")), not \(request.method.rawValue)",
                                         allow: methods)
            }
            return noSuchEndpoint(path)
        case let error as HTTPError where error.status == .methodNotAllowed:
            return .methodNotAllowed("method not allowed on this endpoint")
        case let error as HTTPError:
            return GatewayError(status: error.status, errorType: "InputError", message: error.body ?? error.status.reasonPhrase)
        case let error as HTTPParserError:
            // The body the client was sending is not valid HTTP/1.1, or its connection ended midway.
            return .malformed(error)
        case is NIOTooManyBytesError:
            return .tooLarge("request body is too large")
        default:
            // The client learns only that it failed; the operator's log line says what failed.
            return GatewayError.internalError("internal gateway error").caused(by: error)
        }
    }
}
