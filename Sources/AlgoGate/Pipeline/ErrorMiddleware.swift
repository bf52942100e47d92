import Hummingbird
import NIOCore

/// Renders whatever a later step throws as a response in Algorithmia's error envelope, so no
/// error reaches the client as Hummingbird's empty 500.
struct ErrorMiddleware: RouterMiddleware {
    typealias Context = GatewayRequestContext

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        do {
            return try await next(request, context)
        } catch {
            return try Self.gatewayError(for: error).response(from: request, context: context)
        }
    }

    static func gatewayError(for error: any Error) -> GatewayError {
        switch error {
        case let error as GatewayError:
            return error
        case let error as HTTPError where error.status == .notFound:
            return .notFound("no such endpoint")
        case let error as HTTPError where error.status == .methodNotAllowed:
            return .methodNotAllowed("method not allowed on this endpoint")
        case let error as HTTPError:
            return GatewayError(status: error.status, errorType: "InputError", message: error.body ?? error.status.reasonPhrase)
        case is NIOTooManyBytesError:
            return .tooLarge("request body is too large")
        default:
            return .internalError("internal gateway error")
        }
    }
}
