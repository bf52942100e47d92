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
        guard (2...3).contains(parts.count), parts.allSatisfy({ Self.isSegment($0, wildcard: true) }) else { return nil }
        owner = String(parts[0])
        name = String(parts[1])
        version = parts.count == 3 ? String(parts[2]) : nil
    }

    /// Account, algorithm and version names as Algorithmia spells them: letters, digits, `-`, `_`,
    /// `.` (and `*` in versions such as `1.2.*` when `wildcard`), and not a dot segment.
    static func isSegment(_ segment: some StringProtocol, wildcard: Bool) -> Bool {
        !segment.isEmpty && segment != "." && segment != ".."
            && segment.utf8.allSatisfy { byte in
                switch byte {
                case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "0")...UInt8(ascii: "9"),
                     UInt8(ascii: "-"), UInt8(ascii: "_"), UInt8(ascii: "."): true
                case UInt8(ascii: "*"): wildcard
                default: false
                }
            }
    }

    /// The upstream path for this call.
    var upstreamPath: String { "/v1/algo/" + description }
}
