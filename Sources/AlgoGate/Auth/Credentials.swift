import Foundation
import HTTPTypes

/// The key a request presents in its Authorization header, in any of the forms the official
/// clients send: `Simple KEY`, the bare `KEY` (Python client), or `Bearer KEY`.
enum Credentials {
    static func key(from headers: HTTPFields) throws -> Secret {
        var value: Substring?
        for field in headers where field.name == .authorization {
            guard value == nil else { throw GatewayError.badRequest("more than one Authorization header") }
            value = field.value[...]
        }
        guard let value else {
            throw GatewayError.unauthorized("authorization required: send your algogate key as 'Authorization: Simple KEY'")
        }
        let parts = value.split(separator: " ", maxSplits: 2, omittingEmptySubsequences: true)
        switch parts.count {
        case 1:
            return Secret(String(parts[0]))
        case 2 where parts[0].utf8.equalsIgnoringASCIICase("simple".utf8) || parts[0].utf8.equalsIgnoringASCIICase("bearer".utf8):
            return Secret(String(parts[1]))
        default:
            throw GatewayError.unauthorized("unsupported Authorization scheme: use 'Simple KEY', 'Bearer KEY' or the bare key")
        }
    }
}
