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
        case 2 where isScheme(parts[0], "simple") || isScheme(parts[0], "bearer"):
            return Secret(String(parts[1]))
        default:
            throw GatewayError.unauthorized("unsupported Authorization scheme: use 'Simple KEY', 'Bearer KEY' or the bare key")
        }
    }

    /// ASCII case-insensitive comparison with a lowercase scheme name, without lowercasing a copy.
    private static func isScheme(_ text: Substring, _ scheme: StaticString) -> Bool {
        let expected = UnsafeBufferPointer(start: scheme.utf8Start, count: scheme.utf8CodeUnitCount)
        return text.utf8.count == expected.count && zip(text.utf8, expected).allSatisfy { ($0 | 0x20) == $1 }
    }
}
