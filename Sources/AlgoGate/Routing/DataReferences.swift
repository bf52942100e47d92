import Foundation
import NIOCore

/// Finds the data URIs an algorithm input mentions: every JSON string (at any depth, keys
/// included) and a text input that starts with a connector scheme such as `data://` or `s3://`.
enum DataReferences {
    /// A JSON input the gateway cannot parse (invalid, or nested deeper than Foundation reads):
    /// the data URIs in it cannot be found, and the upstream's parser may be more lenient.
    struct Unreadable: Error {}

    static func find(in body: ByteBuffer, contentType: String?) throws(Unreadable) -> [String] {
        let mediaType = contentType?.split(separator: ";").first?.trimmingCharacters(in: .whitespaces).lowercased()
        switch mediaType {
        case "application/json":
            guard let value = JSON.parse(body) else { throw Unreadable() }
            var found: [String] = []
            collect(value, into: &found)
            return found
        case "text/plain":
            let text = String(buffer: body).trimmingCharacters(in: .whitespacesAndNewlines)
            return looksLikeDataURI(text) ? [text] : []
        default:
            return []
        }
    }

    private static func collect(_ value: Any, into found: inout [String]) {
        switch value {
        case let text as String:
            if looksLikeDataURI(text) { found.append(text.trimmingCharacters(in: .whitespacesAndNewlines)) }
        case let array as [Any]:
            for element in array { collect(element, into: &found) }
        case let object as [String: Any]:
            for (key, element) in object {
                if looksLikeDataURI(key) { found.append(key) }
                collect(element, into: &found)
            }
        default:
            break
        }
    }

    /// A scheme of a known connector (any case, optional `+label`) followed by `://`.
    static func looksLikeDataURI(_ text: String) -> Bool {
        let trimmed = text.trimmingCharacters(in: .whitespacesAndNewlines)
        guard let range = trimmed.range(of: "://") else { return false }
        let scheme = trimmed[..<range.lowerBound].lowercased()
        let base = scheme.split(separator: "+", maxSplits: 1).first.map(String.init) ?? ""
        return DataURI.connectors.contains(base)
    }
}

/// `JSONSerialization` helpers: algorithm inputs are arbitrary JSON.
enum JSON {
    static func parse(_ buffer: ByteBuffer) -> Any? {
        try? JSONSerialization.jsonObject(with: Data(buffer.readableBytesView), options: [.fragmentsAllowed])
    }

    static func object(_ buffer: ByteBuffer) -> [String: Any]? { parse(buffer) as? [String: Any] }
}
