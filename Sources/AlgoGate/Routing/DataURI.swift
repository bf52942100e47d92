import Foundation

/// A normalised data location: a connector (`data`, `s3`, `dropbox+work`, …) and path segments.
///
/// Every way of writing a path that a server might resolve differently is folded here before any
/// prefix check: percent-encoding (including `%2e` and `%2f`), backslashes, repeated slashes,
/// `.` and `..`. What cannot be folded safely (double encoding, NUL or control characters, `..`
/// above the root, segments that a laxer server would read as `..` or as holding a slash) is
/// refused, so the path that is checked is the path that is forwarded.
///
/// Every decision here is made on Unicode scalars, never on Swift's `Character`s: a combining
/// mark after a `/` (U+0301) or a prepended mark before it (U+0600) makes the two one
/// `Character`, so a split on `Character`s would not see that separator where every other reader
/// does; and `String`'s `==` holds canonically equivalent spellings equal (`é`, `e` and U+0301)
/// that the upstream, which stores names as bytes, keeps apart. Segments compare as bytes.
public struct DataURI: Sendable, Equatable, CustomStringConvertible {
    public let connector: String
    public let segments: [String]

    public static let connectors: Set<String> = ["data", "s3", "azureblob", "gs", "dropbox"]

    public var description: String { "\(connector)://" + segments.joined(separator: "/") }

    /// The same location: the same connector and segments, byte for byte.
    public static func == (lhs: DataURI, rhs: DataURI) -> Bool {
        lhs.connector.utf8.elementsEqual(rhs.connector.utf8) && lhs.segments.elementsEqual(rhs.segments, by: Self.sameBytes)
    }

    /// Whether this location is `prefix` itself or lies below it, its segments compared as bytes.
    public func isWithin(_ prefix: DataURI) -> Bool {
        connector.utf8.elementsEqual(prefix.connector.utf8) && segments.count >= prefix.segments.count
            && segments.prefix(prefix.segments.count).elementsEqual(prefix.segments, by: Self.sameBytes)
    }

    static func sameBytes(_ a: String, _ b: String) -> Bool { a.utf8.elementsEqual(b.utf8) }

    /// This URI written as the configuration writes a data prefix: a directory, with its
    /// trailing slash (`data://.my/team-a/`), as refusals and `/_gateway/me` show it.
    var asPrefix: String { segments.isEmpty ? description : description + "/" }

    /// A client's data prefixes as its refusals name them, so that a team refused a path sees
    /// where it may go: each as the directory it is (`data://.my/team-a/`), the first four and how
    /// many more, in parentheses: `(data://.my/team-a/, s3://bucket/team-a/)`. They are the
    /// client's own, shown only to a request made with its key.
    static func naming(_ prefixes: [DataURI]) -> String {
        let shown = prefixes.prefix(4).map(\.asPrefix)
        let more = prefixes.count > shown.count ? ", and \(prefixes.count - shown.count) more" : ""
        return "(" + shown.joined(separator: ", ") + more + ")"
    }

    /// The directory a POST of `{"name": name}` to this one creates. The name must be one plain
    /// segment, however it is read: not empty, `.` or `..`, and without a separator, raw or
    /// percent-encoded (`a/b`, `%2fb`, `..\\b`), even where the path it would make still lies
    /// one level down (`x/../y`), since a server may take such a name as a path of its own.
    public func appending(_ name: String) throws -> DataURI {
        let decoded = try Self.decodeOnce(name)
        guard !decoded.isEmpty, !Self.isDotSegment(decoded[...]),
              !decoded.utf8.contains(UInt8(ascii: "/")), !decoded.utf8.contains(UInt8(ascii: "\\")) else {
            throw GatewayError.badRequest("invalid directory name: it must be a single path segment")
        }
        if let reason = Self.ambiguity(of: decoded[...]) {
            throw GatewayError.badRequest("directory name '\(name)' is refused: \(reason)")
        }
        return DataURI(connector: connector, segments: segments + [decoded])
    }

    /// Parses a URI such as `data://.my/team-a/` or `s3://bucket/key` (config prefixes, algo inputs).
    public static func parse(uri: String) throws -> DataURI {
        guard let (scheme, rest) = splitScheme(uri) else {
            throw GatewayError.badRequest("'\(uri)' is not a data URI such as data://.my/dir/")
        }
        return try normalise(connector: scheme, rawPath: rest)
    }

    /// `text` split at its first `://`, found in its bytes: a scalar joined to a slash (U+0301
    /// after it) cannot hide the scheme from the check while the upstream still reads it.
    static func splitScheme(_ text: String) -> (scheme: String, rest: String)? {
        let bytes = text.utf8, colon = UInt8(ascii: ":"), slash = UInt8(ascii: "/")
        var index = bytes.startIndex
        while let found = bytes[index...].firstIndex(of: colon) {
            let after = bytes[bytes.index(after: found)...]
            if after.starts(with: [slash, slash]) {
                return (String(Substring(bytes[..<found])), String(Substring(after.dropFirst(2))))
            }
            index = after.startIndex
        }
        return nil
    }

    /// `text` split at every `separator` byte (an ASCII one, so each piece is whole UTF-8),
    /// empty pieces left out.
    static func split(_ text: String, at separator: Unicode.Scalar) -> [Substring] {
        text.unicodeScalars.split(separator: separator).map { Substring($0) }
    }

    /// `.` or `..`, byte for byte.
    static func isDotSegment(_ segment: Substring) -> Bool {
        let bytes = segment.utf8
        return (bytes.count == 1 || bytes.count == 2) && bytes.allSatisfy { $0 == UInt8(ascii: ".") }
    }

    /// Parses the path after `/v1/data/`, which may itself be a URI (`s3://bucket/key`).
    public static func parse(dataPath raw: Substring) throws -> DataURI {
        let decoded = try decodeOnce(isEncodedWhole(raw) ? spacesForPluses(raw) : String(raw))
        if let (scheme, rest) = splitScheme(decoded) {
            return try normalise(connector: scheme, decodedPath: rest)
        }
        return try normalise(connector: "data", decodedPath: decoded)
    }

    /// Whether a data path is percent-encoded whole, separators too: it has an encoded `/` and no
    /// plain one. The Java and Scala clients send every data path so (`URLEncoder.encode(path)`:
    /// `data://.my/java dir/a+b` is `.my%2Fjava+dir%2Fa%2Bb`), and `URLEncoder` writes a space as
    /// `+` and a `+` as `%2B`. Every other encoder that encodes `/` encodes `+` too (JavaScript's
    /// `encodeURIComponent`, Python's `quote(path, safe="")`), so in such a path a `+` can only be
    /// a space, and is read as one: a directory the Java client names `java dir` is created (its
    /// name goes in a JSON body) and then read, listed and deleted as `java dir`, not `java+dir`.
    /// Anywhere else a `+` is itself (RFC 3986), as the Python client means it. The location is
    /// forwarded with its space encoded (`%20`), which no server reads as anything else.
    static func isEncodedWhole(_ raw: Substring) -> Bool {
        let bytes = Array(raw.utf8)
        guard !bytes.contains(UInt8(ascii: "/")), bytes.count >= 3 else { return false }
        return (0..<bytes.count - 2).contains { bytes[$0] == UInt8(ascii: "%") && bytes[$0 + 1] == UInt8(ascii: "2") && bytes[$0 + 2] | 0x20 == UInt8(ascii: "f") }
    }

    /// `raw` with each `+` byte a space.
    static func spacesForPluses(_ raw: Substring) -> String {
        String(decoding: raw.utf8.map { $0 == UInt8(ascii: "+") ? UInt8(ascii: " ") : $0 }, as: UTF8.self)
    }

    /// Parses `{type}/{path}` after `/v1/connector/`.
    public static func parse(connectorPath raw: Substring) throws -> DataURI {
        let type = raw.unicodeScalars.prefix { $0 != "/" }
        return try normalise(connector: String(type), rawPath: String(raw.unicodeScalars[type.endIndex...]))
    }

    /// The upstream path that names this location, in the form the client used:
    /// `/v1/data/a/b`, `/v1/connector/s3/b/k`, or `/v1/data/s3://b/k` (keeping its `//`).
    public func upstreamPath(connectorForm: Bool) -> String {
        let encoded = segments.map(Self.encode).joined(separator: "/")
        if connector == "data" { return "/v1/data/" + encoded }
        return connectorForm ? "/v1/connector/\(connector)/" + encoded : "/v1/data/\(connector)://" + encoded
    }

    static func normalise(connector: String, rawPath: String) throws -> DataURI {
        try normalise(connector: connector, decodedPath: try decodeOnce(rawPath))
    }

    static func normalise(connector rawConnector: String, decodedPath: String) throws -> DataURI {
        // The type in any case (`S3` is `s3`, as schemes are); a label as written, case included:
        // whether the upstream holds `dropbox+Work` and `dropbox+work` to be one account is not
        // known, so a prefix with one does not cover the other, and the label goes upstream as the
        // client wrote it.
        let plus = rawConnector.utf8.firstIndex(of: UInt8(ascii: "+")) ?? rawConnector.utf8.endIndex
        let base = String(Substring(rawConnector.utf8[..<plus])).lowercased()
        guard connectors.contains(base), rawConnector.utf8.allSatisfy({ byte in
            switch byte {
            case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "0")...UInt8(ascii: "9"),
                 UInt8(ascii: "+"), UInt8(ascii: "-"), UInt8(ascii: "_"): true
            default: false
            }
        }) else {
            throw GatewayError.badRequest("unknown data connector '\(rawConnector)'; use data, s3, azureblob, gs or dropbox (optionally +label)")
        }
        let connector = base + String(Substring(rawConnector.utf8[plus...]))
        // Backslashes are path separators to some servers: fold them rather than let one slip past.
        // Split at both, as scalars: `replacingOccurrences` matches `Character`s, and missed a `\`
        // joined to a combining mark after it (found by Tests/Fuzz).
        var segments: [String] = []
        for segment in decodedPath.unicodeScalars.split(whereSeparator: { $0 == "/" || $0 == "\\" }).map(Substring.init) {
            if segment.utf8.elementsEqual(".".utf8) { continue }
            if segment.utf8.elementsEqual("..".utf8) {
                guard !segments.isEmpty else { throw GatewayError.badRequest("data path climbs above its root with '..'") }
                segments.removeLast()
                continue
            }
            if let reason = ambiguity(of: segment) {
                throw GatewayError.badRequest("data path segment '\(segment)' is refused: \(reason)")
            }
            segments.append(String(segment))
        }
        return DataURI(connector: connector, segments: segments)
    }

    /// Why a segment could mean something else to a server that reads paths less strictly than
    /// this one, or nil. Some servers fold Unicode compatibility forms (NFKC: fullwidth `．．` is
    /// `..`, `／` is `/`, `％2e` is `%2e`); some cut a segment at `;` (path parameters: `..;x` is
    /// `..`); Windows-style servers trim trailing dots and spaces (`.. ` is `..`). A segment that
    /// any of these could read as `..` or as holding a separator is refused rather than
    /// forwarded, so no reading of the forwarded path climbs out of the prefix that was checked.
    static func ambiguity(of segment: Substring) -> String? {
        // Counted in scalars, as every later reader counts them (see the type's note). ASCII is
        // its own compatibility folding: most segments skip the fold.
        let folded = segment.utf8.allSatisfy({ $0 < 0x80 }) ? String(segment).unicodeScalars
            : String(segment).precomposedStringWithCompatibilityMapping.unicodeScalars
        for mark: Unicode.Scalar in ["/", "\\", "%", ";"]
        where folded.count(where: { $0 == mark }) > segment.unicodeScalars.count(where: { $0 == mark }) {
            return "it holds a character that some servers read as '\(mark)'"
        }
        let name = folded.prefix { $0 != ";" }
        guard name.allSatisfy({ $0 == "." || $0 == " " }) else { return nil }
        return name.count == folded.count ? "a name made only of dots and spaces" : "before its ';' it is only dots and spaces"
    }

    /// Percent-decodes exactly once; a result that still holds an escape (double encoding such as
    /// `%252e`) or a control character is refused rather than guessed at.
    static func decodeOnce(_ raw: String) throws -> String {
        guard let decoded = raw.removingPercentEncoding else {
            throw GatewayError.badRequest("data path has invalid percent-encoding")
        }
        if decoded != raw, decoded.range(of: "%[0-9A-Fa-f]{2}", options: .regularExpression) != nil {
            throw GatewayError.badRequest("data path is percent-encoded twice")
        }
        guard !decoded.unicodeScalars.contains(where: { $0.value < 0x20 || $0.value == 0x7f }) else {
            throw GatewayError.badRequest("data path contains control characters")
        }
        return decoded
    }

    /// RFC 3986 `pchar` without `;`: some servers cut a segment at `;` (path parameters, so `..;` is
    /// `..` to them), so a `;` in a name is forwarded encoded.
    private static let segmentCharacters = CharacterSet(charactersIn: "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~!$&'()*+,=:@")

    static func encode(_ segment: String) -> String {
        segment.addingPercentEncoding(withAllowedCharacters: segmentCharacters) ?? segment
    }
}
