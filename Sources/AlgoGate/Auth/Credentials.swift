import Foundation
import HTTPTypes

/// The key a request presents in its Authorization header, in any of the forms the official
/// clients send: `Simple KEY`, the bare `KEY` (Python client), or `Bearer KEY`.
enum Credentials {
    static let unsupported = GatewayError.unauthorized("unsupported Authorization scheme: use 'Simple KEY', 'Bearer KEY' or the bare key")

    private static let simple = Array("simple".utf8), bearer = Array("bearer".utf8)

    static func key(from headers: HTTPFields) throws -> Secret {
        guard let value = try authorization(in: headers) else {
            throw GatewayError.unauthorized("authorization required: send your algogate key as 'Authorization: Simple KEY'")
        }
        return try key(parsing: value)
    }

    /// The request's one Authorization header as sent; nil without one, an error with two.
    static func authorization(in headers: HTTPFields) throws -> String? {
        var value: String?
        for field in headers where field.name == .authorization {
            guard value == nil else { throw GatewayError.badRequest("more than one Authorization header") }
            value = field.value
        }
        return value
    }

    /// The key in an Authorization header's value.
    static func key(parsing value: String) throws -> Secret {
        // One or two words separated by runs of spaces, found in the bytes without an array: this
        // runs per request. (Split at ASCII spaces, so each word is whole UTF-8.)
        let space = UInt8(ascii: " ")
        let bytes = value.utf8
        let trimmed = bytes.drop { $0 == space }
        let first = trimmed.prefix { $0 != space }
        let rest = trimmed[first.endIndex...].drop { $0 == space }
        let second = rest.prefix { $0 != space }
        let trailing = rest[second.endIndex...].drop { $0 == space }
        guard !first.isEmpty, trailing.isEmpty else { throw Self.unsupported }
        if second.isEmpty { return Secret(String(Substring(first))) }
        guard first.equalsIgnoringASCIICase(Self.simple) || first.equalsIgnoringASCIICase(Self.bearer) else { throw Self.unsupported }
        return Secret(String(Substring(second)))
    }
}
