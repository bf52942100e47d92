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

    /// A data location an input names, read as the upstream would read it; or, when it cannot
    /// be read one way only, why.
    enum Reference: Equatable {
        case location(DataURI)
        case unreadable(reason: String)
    }

    /// The media types of a text input: `text/plain`, as the official clients send it, and
    /// `application/text`, as Algorithmia's API reference names it.
    static let textTypes: Set<String> = ["text/plain", "application/text"]

    static func find(in body: ByteBuffer, contentType: String?) throws(Unreadable) -> [Reference] {
        let mediaType = contentType?.split(separator: ";").first?.trimmingCharacters(in: .whitespaces).lowercased()
        if mediaType == "application/json" || mediaType.map(textTypes.contains) == true, let contentType, let charset = otherCharset(of: contentType) {
            throw .charset(charset)
        }
        switch mediaType {
        case "application/json":
            guard JSON.parse(body) != nil, let strings = strings(inJSON: body.readableBytesView) else { throw .json }
            return strings.flatMap(references)
        case let type? where textTypes.contains(type):
            return references(in: String(buffer: body))
        case "application/octet-stream":
            // Bytes, handed to the algorithm as bytes; but one that decodes them may read a path in
            // them as a text input's: UTF-8 bytes are checked as text.
            guard let text = String(validating: body.readableBytesView, as: UTF8.self) else { return [] }
            return references(in: text)
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

    /// The data locations `text` names: as a URI with a connector's scheme, or as a path in the
    /// `.my` pseudonym written without one (`mentionsMyPseudonym`).
    ///
    /// The input reaches the algorithm as written, not normalised as a request's path is, so what
    /// it names is read every way its reader may read it, and each reading must be checked: as
    /// written, and as the Python client sends it (urllib3 resolves dot segments before anything
    /// decodes them, so `a/%2e%2e/../b` is `a/b` to the gateway's reading and `b` to urllib3's).
    /// A location whose readers would split it into different segments (a `\`, a separator to
    /// some and a character to a Linux store; an encoded `/` or `\`, decoded before the split by
    /// some and after by others; an empty segment, part of an object key to S3 and folded by
    /// others) cannot be checked safely.
    static func references(in text: String) -> [Reference] {
        let trimmed = text.trimmingCharacters(in: .whitespacesAndNewlines)
        if let (scheme, rest) = DataURI.splitScheme(trimmed), isConnectorScheme(scheme) {
            return readings(of: rest) { try DataURI.parse(uri: scheme + "://" + $0) }
        }
        // The Python client strips a leading `/` (a scalar: a combining mark after it makes the two
        // one `Character`) and reads the rest as a `/v1/data/` path, as the gateway reads one.
        let path = trimmed.utf8.first == UInt8(ascii: "/") ? String(trimmed.unicodeScalars.dropFirst()) : trimmed
        guard mentionsMyPseudonym(path) else { return [] }
        return readings(of: path) { try DataURI.parse(dataPath: Substring($0)) }
    }

    private static func readings(of path: String, parse: (String) throws -> DataURI) -> [Reference] {
        if path.utf8.contains(UInt8(ascii: "\\")) {
            return [.unreadable(reason: "it holds a '\\', which some servers read as a separator and others as a character")]
        }
        if let empty = path.utf8.firstRange(of: "//".utf8) {
            // Most often a sentence or a list naming a URI: a text input is checked as one path.
            if path.utf8[..<empty.lowerBound].contains(where: { $0 == UInt8(ascii: " ") || (0x09...0x0D).contains($0) }) {
                return [.unreadable(reason: "it holds a '//' after a space or line break: a text input that names a data location is checked as one path, where another URI reads as an empty segment; send one location alone, or each as a JSON string of its own")]
            }
            return [.unreadable(reason: emptySegment)]
        }
        if path.utf8.first == UInt8(ascii: "/") {
            return [.unreadable(reason: emptySegment)]
        }
        if path.range(of: "%(2[fF]|5[cC])", options: .regularExpression) != nil {
            return [.unreadable(reason: "it holds an encoded separator (%2F or %5C), which some servers decode before splitting the path and others after")]
        }
        let sent = sentByClient(path)
        var found: [Reference] = []
        for reading in sent.utf8.elementsEqual(path.utf8) ? [path] : [path, sent] {
            do { found.append(.location(try parse(reading))) } catch { found.append(.unreadable(reason: reason(error))) }
        }
        return found
    }

    private static let emptySegment = "it holds an empty segment ('//'), which some stores keep (s3://bucket//team-a/x is the key /team-a/x) and others fold"

    private static func reason(_ error: any Error) -> String { (error as? GatewayError)?.message ?? "\(error)" }

    /// The path as urllib3 sends it: `.` and `..` segments resolved as written, before any
    /// decoding (RFC 3986 §5.2.4; a climb above the root stops at it).
    static func sentByClient(_ path: String) -> String {
        var segments: [Substring] = []
        for segment in DataURI.split(path, at: "/") {
            if DataURI.isDotSegment(segment) {
                if segment.utf8.count == 2 { _ = segments.popLast() }
            } else {
                segments.append(segment)
            }
        }
        return segments.joined(separator: "/")
    }

    /// Whether a path written without a scheme may name a location in the `.my` pseudonym, or name
    /// a connector's scheme, to any reader: the official clients take `.my/team-b/x` and
    /// `/.my/team-b/x` for `data://.my/team-b/x`, so an algorithm handed such a string reads that
    /// file. Looked for in every spelling a server may read (as written, and decoded up to three
    /// times, leniently), compatibility-folded (`．my`), in any case, with backslashes as
    /// separators, and in every segment, cut at a `;` and with trailing dots and spaces trimmed;
    /// wherever it stands, since dot segments around it may make it the first (`x/../.my/…`).
    /// Other bare paths (`user/dir/file`) cannot be told from ordinary text and are not recognised
    /// (README, Known limits).
    static func mentionsMyPseudonym(_ path: String) -> Bool {
        // Cheap to rule out first, since this runs on every string of an input: in plain ASCII,
        // only a dot and an `m` and a `y` can spell `.my`, and a scheme here comes only from
        // decoding (`%3a`) or folding (a fullwidth colon).
        var dot = false, m = false, y = false
        for byte in path.utf8 {
            switch byte {
            case UInt8(ascii: "%"), 0x80...: dot = true; m = true; y = true
            case UInt8(ascii: "."): dot = true
            case UInt8(ascii: "m"), UInt8(ascii: "M"): m = true
            case UInt8(ascii: "y"), UInt8(ascii: "Y"): y = true
            default: continue
            }
            if dot && m && y { break }
        }
        guard dot && m && y else { return false }
        var folds: [Unicode.Scalar: [UInt8]] = [:]
        var spelling = path
        for round in 0...3 {
            if foldedNamesMy(asciiFold(spelling, folds: &folds)) { return true }
            guard round < 3 else { break }
            let decoded = decodeLeniently(spelling)
            guard !decoded.utf8.elementsEqual(spelling.utf8) else { break }
            spelling = decoded
        }
        return false
    }

    /// `text` as the ASCII it folds to, scalar by scalar: letters lowercased, each other scalar
    /// replaced by its compatibility folding (`．` is `.`, `／` is `/`, `℀` is `a/c`), and what
    /// folds to no ASCII as 0xFF. Folding scalar by scalar finds every ASCII character folding
    /// the whole text would (composition never makes one), at a cost linear in the text: folding
    /// a 10 MB input whole takes Foundation about half a second.
    private static func asciiFold(_ text: String, folds: inout [Unicode.Scalar: [UInt8]]) -> [UInt8] {
        func lower(_ byte: UInt8) -> UInt8 { (UInt8(ascii: "A")...UInt8(ascii: "Z")).contains(byte) ? byte + 32 : byte }
        var out: [UInt8] = []
        out.reserveCapacity(text.utf8.count)
        for scalar in text.unicodeScalars {
            if scalar.isASCII {
                out.append(lower(UInt8(scalar.value)))
            } else if let known = folds[scalar] {
                out += known
            } else {
                let folded = String(scalar).precomposedStringWithCompatibilityMapping.unicodeScalars.map { $0.isASCII ? lower(UInt8($0.value)) : 0xFF }
                folds[scalar] = folded
                out += folded
            }
        }
        return out
    }

    /// Whether folded text starts with a connector's scheme, or has a segment that reads `.my`.
    private static func foldedNamesMy(_ bytes: [UInt8]) -> Bool {
        let colon = UInt8(ascii: ":"), slash = UInt8(ascii: "/")
        if let at = bytes.indices.first(where: { bytes[$0] == colon && bytes[($0 + 1)...].starts(with: [slash, slash]) }),
           isConnectorScheme(String(decoding: bytes[..<at], as: UTF8.self)) {
            return true
        }
        for segment in bytes.split(whereSeparator: { $0 == slash || $0 == UInt8(ascii: "\\") }) {
            var name = segment.prefix { $0 != UInt8(ascii: ";") }
            while let last = name.last, last == UInt8(ascii: ".") || last == UInt8(ascii: " ") { name = name.dropLast() }
            if name.elementsEqual(".my".utf8) { return true }
        }
        return false
    }

    /// Every `%XX` escape decoded, anything else kept as written (where `removingPercentEncoding`
    /// gives up on the whole text at one stray `%`); bytes that are not UTF-8 read as U+FFFD.
    static func decodeLeniently(_ text: String) -> String {
        let bytes = Array(text.utf8)
        guard bytes.contains(UInt8(ascii: "%")) else { return text }
        var out: [UInt8] = []
        out.reserveCapacity(bytes.count)
        var index = 0
        while index < bytes.count {
            if bytes[index] == UInt8(ascii: "%"), index + 2 < bytes.count,
               let high = hexValue(bytes[index + 1]), let low = hexValue(bytes[index + 2]) {
                out.append(high << 4 | low)
                index += 3
            } else {
                out.append(bytes[index])
                index += 1
            }
        }
        return String(decoding: out, as: UTF8.self)
    }

    /// A known connector's scheme, in any case, with an optional `+label`.
    static func isConnectorScheme(_ scheme: String) -> Bool {
        DataURI.connectors.contains(scheme.lowercased().split(separator: "+", maxSplits: 1).first.map(String.init) ?? "")
    }
}

/// `JSONSerialization` helpers: algorithm inputs are arbitrary JSON.
enum JSON {
    static func parse(_ buffer: ByteBuffer) -> Any? {
        try? JSONSerialization.jsonObject(with: Data(buffer.readableBytesView), options: [.fragmentsAllowed])
    }

    static func object(_ buffer: ByteBuffer) -> [String: Any]? { parse(buffer) as? [String: Any] }
}
