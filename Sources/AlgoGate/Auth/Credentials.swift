import Foundation
import HTTPTypes

/// The key a request presents in its Authorization header, in any of the forms the official
/// clients send: `Simple KEY`, the bare `KEY` (Python client), or `Bearer KEY`.
enum Credentials {
    static let unsupported = GatewayError.unauthorized("unsupported Authorization scheme: use 'Simple KEY', 'Bearer KEY' or the bare key")

    static func key(from headers: HTTPFields) throws -> Secret {
        var value: Substring?
        for field in headers where field.name == .authorization {
            guard value == nil else { throw GatewayError.badRequest("more than one Authorization header") }
            value = field.value[...]
        }
        guard let value else {
            throw GatewayError.unauthorized("authorization required: send your algogate key as 'Authorization: Simple KEY'")
        }
        // One or two words separated by runs of spaces, found without an array: this runs per request.
        let trimmed = value.drop { $0 == " " }
        let first = trimmed.prefix { $0 != " " }
        let rest = trimmed[first.endIndex...].drop { $0 == " " }
        let second = rest.prefix { $0 != " " }
        let trailing = rest[second.endIndex...].drop { $0 == " " }
        guard !first.isEmpty, trailing.isEmpty else { throw Self.unsupported }
        if second.isEmpty { return Secret(String(first)) }
        guard first.utf8.equalsIgnoringASCIICase("simple".utf8) || first.utf8.equalsIgnoringASCIICase("bearer".utf8) else { throw Self.unsupported }
        return Secret(String(second))
    }
}
