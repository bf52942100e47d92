import Foundation
import NIOCore

/// Finds the data URIs an algorithm input mentions: every JSON string (at any depth, keys
/// included) and a text input (or binary input that is UTF-8 text) that starts with a connector
/// scheme such as `data://` or `s3://`,
/// or is a path in the `.my` pseudonym without one (`.my/dir/file`, which the clients read as
/// `data://.my/dir/file`).
///
/// A JSON input's strings are read off its tokens, not off a parsed value: a parsed object keeps
/// one value per key, but whoever reads the input upstream (the API, an algorithm's own parser)
/// may keep another one of a duplicated key. Every string written in the document is checked.
enum DataReferences {
    /// Why an input's data URIs cannot be found.
    enum Unreadable: Error {
        /// JSON the gateway cannot parse (invalid, or nested deeper than Foundation reads): the
        /// upstream's parser may be more lenient.
        case json
        /// Not one of the three input types Algorithmia documents (or none): how the upstream, or an
        /// algorithm, reads it is unknown.
        case mediaType(String?)
        /// Text or JSON declared in a charset other than UTF-8 (or its subset US-ASCII): read as
        /// that charset upstream, its bytes could name a file that this scan, reading UTF-8, misses.
        case charset(String)
    }

    /// Charsets in which text is read as UTF-8 (US-ASCII is its subset).
    static let utf8Charsets: Set<String> = ["utf-8", "utf8", "us-ascii", "ascii"]

    /// The charset `contentType` declares, lowercased and unquoted, unless it is UTF-8 (or says
    /// none); a type that declares two reads as both (`utf-8, utf-16`), since readers differ on
    /// which of two parameters counts.
    static func otherCharset(of contentType: String) -> String? {
        guard contentType.utf8.contains(UInt8(ascii: ";")) else { return nil }
        var charsets: [String] = []
        for parameter in contentType.split(separator: ";").dropFirst() {
            let parts = parameter.split(separator: "=", maxSplits: 1)
            guard parts.count == 2, parts[0].trimmingCharacters(in: .whitespaces).lowercased() == "charset" else { continue }
            charsets.append(parts[1].trimmingCharacters(in: .whitespaces).trimmingCharacters(in: CharacterSet(charactersIn: "\"")).lowercased())
        }
        return charsets.allSatisfy(utf8Charsets.contains) ? nil : charsets.joined(separator: ", ")
    }

    static func find(in body: ByteBuffer, contentType: String?) throws(Unreadable) -> [String] {
        let mediaType = contentType?.split(separator: ";").first?.trimmingCharacters(in: .whitespaces).lowercased()
        if mediaType == "application/json" || mediaType == "text/plain", let contentType, let charset = otherCharset(of: contentType) {
            throw .charset(charset)
        }
        switch mediaType {
        case "application/json":
            guard JSON.parse(body) != nil, let strings = strings(inJSON: body.readableBytesView) else { throw .json }
            return strings.compactMap(reference)
        case "text/plain":
            return reference(in: String(buffer: body)).map { [$0] } ?? []
        case "application/octet-stream":
            // Bytes, handed to the algorithm as bytes; but one that decodes them may read a path in
            // them as a text input's: UTF-8 bytes are checked as text.
            guard let text = String(validating: body.readableBytesView, as: UTF8.self) else { return [] }
            return reference(in: text).map { [$0] } ?? []
        default:
            throw .mediaType(mediaType)
        }
    }

    /// Every string token of a UTF-8 JSON document, keys included, escapes decoded. Nil for a
    /// document in UTF-16 or UTF-32 (Foundation and Python read those too, but this scan would
    /// miss their strings: UTF-8 JSON never holds a NUL byte) or with a string not well formed.
    static func strings(inJSON bytes: some Collection<UInt8>) -> [String]? {
        guard !bytes.contains(0) else { return nil }
        var found: [String] = []
        var iterator = bytes.makeIterator()
        while let byte = iterator.next() {
            guard byte == UInt8(ascii: "\"") else { continue }
            var utf8: [UInt8] = []
            var units: [UInt16] = []  // pending \u escapes, joined so surrogate pairs decode
            func flushUnits() {
                guard !units.isEmpty else { return }
                utf8.append(contentsOf: String(decoding: units, as: UTF16.self).utf8)
                units.removeAll()
            }
            string: while true {
                guard let next = iterator.next() else { return nil }
                switch next {
                case UInt8(ascii: "\""):
                    break string
                case UInt8(ascii: "\\"):
                    guard let escaped = iterator.next() else { return nil }
                    if escaped == UInt8(ascii: "u") {
                        var unit: UInt16 = 0
                        for _ in 0..<4 {
                            guard let hex = iterator.next(), let digit = hexValue(hex) else { return nil }
                            unit = unit << 4 | UInt16(digit)
                        }
                        units.append(unit)
                        continue
                    }
                    flushUnits()
                    switch escaped {
                    case UInt8(ascii: "b"): utf8.append(0x08)
                    case UInt8(ascii: "f"): utf8.append(0x0c)
                    case UInt8(ascii: "n"): utf8.append(0x0a)
                    case UInt8(ascii: "r"): utf8.append(0x0d)
                    case UInt8(ascii: "t"): utf8.append(0x09)
                    default: utf8.append(escaped)  // \" \\ \/
                    }
                default:
                    flushUnits()
                    utf8.append(next)
                }
            }
            flushUnits()
            found.append(String(decoding: utf8, as: UTF8.self))
        }
        return found
    }

    private static func hexValue(_ byte: UInt8) -> UInt8? {
        switch byte {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): byte - UInt8(ascii: "0")
        case UInt8(ascii: "a")...UInt8(ascii: "f"): byte - UInt8(ascii: "a") + 10
        case UInt8(ascii: "A")...UInt8(ascii: "F"): byte - UInt8(ascii: "A") + 10
        default: nil
        }
    }

    /// The data URI `text` names, if it names one: a URI with a connector's scheme, or a path in
    /// the `.my` pseudonym written without one.
    static func reference(in text: String) -> String? {
        let trimmed = text.trimmingCharacters(in: .whitespacesAndNewlines)
        if looksLikeDataURI(trimmed) { return trimmed }
        return bareDataPath(trimmed).map { "data://" + $0 }
    }

    /// A `data://` path written without its scheme, in the `.my` pseudonym: the official clients
    /// take `.my/team-b/x` and `/.my/team-b/x` for `data://.my/team-b/x` (the Python client strips
    /// a leading `data://` or `/` and sends the rest as the path, whose dot segments urllib3
    /// resolves), so an algorithm handed such a string reads that file. Recognised however it is
    /// spelt (`./.my/…`, `%2emy/…`, `.MY/…`, `x/../.my/…`, a fullwidth `．my`), by the
    /// normalisation the prefix check uses. Other bare paths (`user/dir/file`) cannot be told from
    /// ordinary text and are not recognised (README, Known limits).
    static func bareDataPath(_ text: String) -> String? {
        // The leading `/` as a scalar: a combining mark after it makes the two one `Character`.
        let path = text.utf8.first == UInt8(ascii: "/") ? String(text.unicodeScalars.dropFirst()) : text
        // A `.my` path holds a dot, written, encoded (`%2e`) or folded from another character:
        // cheap to rule out first, since this runs on every string of an input.
        guard path.utf8.contains(where: { $0 == UInt8(ascii: ".") || $0 == UInt8(ascii: "%") || $0 >= 0x80 }),
              let location = try? DataURI.normalise(connector: "data", rawPath: path),
              let first = location.segments.first,
              first.precomposedStringWithCompatibilityMapping.lowercased() == ".my" else { return nil }
        return path
    }

    /// A scheme of a known connector (any case, optional `+label`) followed by `://`, found in the
    /// text's bytes (`DataURI.splitScheme`).
    static func looksLikeDataURI(_ text: String) -> Bool {
        let trimmed = text.trimmingCharacters(in: .whitespacesAndNewlines)
        guard let (scheme, _) = DataURI.splitScheme(trimmed) else { return false }
        let base = scheme.lowercased().split(separator: "+", maxSplits: 1).first.map(String.init) ?? ""
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
