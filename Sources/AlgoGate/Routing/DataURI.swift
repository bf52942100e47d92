import Foundation

/// A normalised data location: a connector (`data`, `s3`, `dropbox+work`, …) and path segments.
///
/// Every way of writing a path that a server might resolve differently is folded here before any
/// prefix check: percent-encoding (including `%2e` and `%2f`), backslashes, repeated slashes,
/// `.` and `..`. What cannot be folded safely (double encoding, NUL or control characters, `..`
/// above the root, segments that a laxer server would read as `..` or as holding a slash) is
/// refused, so the path that is checked is the path that is forwarded.
public struct DataURI: Sendable, Equatable, CustomStringConvertible {
    public let connector: String
    public let segments: [String]

    public static let connectors: Set<String> = ["data", "s3", "azureblob", "gs", "dropbox"]

    public var description: String { "\(connector)://" + segments.joined(separator: "/") }

    /// Whether this location is `prefix` itself or lies below it.
    public func isWithin(_ prefix: DataURI) -> Bool {
        connector == prefix.connector && segments.count >= prefix.segments.count
            && Array(segments.prefix(prefix.segments.count)) == prefix.segments
    }

    /// The directory a POST of `{"name": name}` to this one creates. The name must be one plain
    /// segment, however it is read: not empty, `.` or `..`, and without a separator, raw or
    /// percent-encoded (`a/b`, `%2fb`, `..\\b`), even where the path it would make still lies
    /// one level down (`x/../y`), since a server may take such a name as a path of its own.
    public func appending(_ name: String) throws -> DataURI {
        let decoded = try Self.decodeOnce(name)
        guard !decoded.isEmpty, decoded != ".", decoded != "..", !decoded.contains("/"), !decoded.contains("\\") else {
            throw GatewayError.badRequest("invalid directory name: it must be a single path segment")
        }
        if let reason = Self.ambiguity(of: decoded[...]) {
            throw GatewayError.badRequest("directory name '\(name)' is refused: \(reason)")
        }
        return DataURI(connector: connector, segments: segments + [decoded])
    }

    /// Parses a URI such as `data://.my/team-a/` or `s3://bucket/key` (config prefixes, algo inputs).
    public static func parse(uri: String) throws -> DataURI {
        guard let range = uri.range(of: "://") else {
            throw GatewayError.badRequest("'\(uri)' is not a data URI such as data://.my/dir/")
        }
        return try normalise(connector: String(uri[..<range.lowerBound]), rawPath: String(uri[range.upperBound...]))
    }

    /// Parses the path after `/v1/data/`, which may itself be a URI (`s3://bucket/key`).
    public static func parse(dataPath raw: Substring) throws -> DataURI {
        let decoded = try decodeOnce(String(raw))
        if let range = decoded.range(of: "://") {
            return try normalise(connector: String(decoded[..<range.lowerBound]), decodedPath: String(decoded[range.upperBound...]))
        }
        return try normalise(connector: "data", decodedPath: decoded)
    }

    /// Parses `{type}/{path}` after `/v1/connector/`.
    public static func parse(connectorPath raw: Substring) throws -> DataURI {
        let type = raw.prefix { $0 != "/" }
        return try normalise(connector: String(type), rawPath: String(raw.dropFirst(type.count)))
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
        let connector = rawConnector.lowercased()
        let base = connector.split(separator: "+", maxSplits: 1).first.map(String.init) ?? ""
        guard connectors.contains(base),
              connector.allSatisfy({ $0.isASCII && ($0.isLetter || $0.isNumber || "+-_".contains($0)) }) else {
            throw GatewayError.badRequest("unknown data connector '\(rawConnector)'; use data, s3, azureblob, gs or dropbox (optionally +label)")
        }
        // Backslashes are path separators to some servers: fold them rather than let one slip past.
        let path = decodedPath.replacingOccurrences(of: "\\", with: "/")
        var segments: [String] = []
        for segment in path.split(separator: "/", omittingEmptySubsequences: true) {
            switch segment {
            case ".": continue
            case "..":
                guard !segments.isEmpty else { throw GatewayError.badRequest("data path climbs above its root with '..'") }
                segments.removeLast()
            default:
                if let reason = ambiguity(of: segment) {
                    throw GatewayError.badRequest("data path segment '\(segment)' is refused: \(reason)")
                }
                segments.append(String(segment))
            }
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
        let folded = String(segment).precomposedStringWithCompatibilityMapping
        for mark: Character in ["/", "\\", "%", ";"] where folded.count(where: { $0 == mark }) > segment.count(where: { $0 == mark }) {
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
