import Foundation
import HTTPTypes

/// The key a request presents in its Authorization header, in any of the forms the official
/// clients send: `Simple KEY`, the bare `KEY` (Python client), or `Bearer KEY`.
enum Credentials {
    static func key(from headers: HTTPFields) throws -> Secret {
        let values = headers[values: .authorization]
        guard !values.isEmpty else {
            throw GatewayError.unauthorized("authorization required: send your algogate key as 'Authorization: Simple KEY'")
        }
        guard values.count == 1 else {
            throw GatewayError.badRequest("more than one Authorization header")
        }
        let parts = values[0].split(separator: " ", omittingEmptySubsequences: true)
        switch parts.count {
        case 1:
            return Secret(String(parts[0]))
        case 2 where ["simple", "bearer"].contains(parts[0].lowercased()):
            return Secret(String(parts[1]))
        default:
            throw GatewayError.unauthorized("unsupported Authorization scheme: use 'Simple KEY', 'Bearer KEY' or the bare key")
        }
    }
}
