import Foundation
import HTTPTypes
import Hummingbird

/// Gives every request an `X-Request-ID`: the client's own when it is a sane token, else a new
/// UUID. The same id goes upstream, into the log line and back on the response.
struct RequestIDMiddleware: RouterMiddleware {
    typealias Context = GatewayRequestContext

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        var context = context
        context.requestID = Self.accept(request.headers[.requestID]) ?? UUID().uuidString.lowercased()
        var response = try await next(request, context)
        response.headers[.requestID] = context.requestID
        return response
    }

    /// Accepts ids of up to 128 letters, digits, `-`, `_`, `.`, so an id cannot inject log syntax.
    static func accept(_ value: String?) -> String? {
        guard let value, (1...128).contains(value.utf8.count),
              value.utf8.allSatisfy({ (0x30...0x39).contains($0) || (0x41...0x5a).contains($0) || (0x61...0x7a).contains($0) || $0 == 0x2d || $0 == 0x5f || $0 == 0x2e })
        else { return nil }
        return value
    }
}

extension HTTPField.Name {
    static let requestID = HTTPField.Name("X-Request-ID")!
}
