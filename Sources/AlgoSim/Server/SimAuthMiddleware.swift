import Foundation
import Hummingbird

/// Accepts the account key in each form the official clients send: `Simple KEY`, the bare `KEY`
/// (the Python client) and `Bearer KEY`. Anything else under `/v1` is 401.
struct SimAuthMiddleware: RouterMiddleware {
    typealias Context = SimRequestContext
    let apiKey: String

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        guard request.uri.path.hasPrefix("/v1/") else { return try await next(request, context) }
        let values = request.headers[values: .authorization]
        guard values.count == 1, let presented = Self.key(from: values[0]), presented == apiKey else {
            let message = values.isEmpty ? "authorization required" : "authorization failed: invalid api key"
            throw SimError(.unauthorized, message, errorType: "AuthorizationError")
        }
        return try await next(request, context)
    }

    static func key(from header: String) -> String? {
        let trimmed = header.trimmingCharacters(in: .whitespaces)
        let parts = trimmed.split(separator: " ", maxSplits: 1).map(String.init)
        switch parts.count {
        case 1: return parts[0]
        case 2 where ["simple", "bearer"].contains(parts[0].lowercased()):
            return parts[1].trimmingCharacters(in: .whitespaces)
        default: return nil
        }
    }
}
