/// The algorithm an algo call names: `owner/name[/version]`, version as written.
public struct AlgoRef: Sendable, Equatable, CustomStringConvertible {
    public let owner: String
    public let name: String
    public let version: String?

    public var description: String { "\(owner)/\(name)" + (version.map { "/\($0)" } ?? "") }

    /// Parses the path after `/v1/algo/`; a trailing slash is ignored (the Node client adds one).
    init?(path: Substring) {
        var parts = path.split(separator: "/", omittingEmptySubsequences: false)
        if parts.last == "" { parts.removeLast() }
        guard (2...3).contains(parts.count), parts.allSatisfy({ Self.isValidSegment($0) }) else { return nil }
        owner = String(parts[0])
        name = String(parts[1])
        version = parts.count == 3 ? String(parts[2]) : nil
    }

    private static func isValidSegment(_ segment: Substring) -> Bool {
        !segment.isEmpty && segment != "." && segment != ".."
            && segment.allSatisfy { $0.isASCII && ($0.isLetter || $0.isNumber || "-_.*".contains($0)) }
    }

    /// The upstream path for this call.
    var upstreamPath: String { "/v1/algo/" + description }
}
