/// One entry of a client's `algorithms` list: `owner/name` (that algorithm) or `owner/*` (every
/// algorithm of that owner). Matching is exact and case-sensitive; anything spelled otherwise
/// (another case, a percent-encoding) does not match and is refused, the safe way round for an
/// allow-list.
public struct AlgorithmPattern: Sendable, Equatable, CustomStringConvertible {
    public let owner: String
    /// nil: every algorithm of `owner`.
    public let name: String?

    public var description: String { "\(owner)/\(name ?? "*")" }

    /// Parses `owner/name` or `owner/*`; throws a message for the config error.
    public init(parsing text: String) throws {
        let parts = text.split(separator: "/", omittingEmptySubsequences: false)
        guard parts.count == 2, Self.isName(parts[0]), parts[1] == "*" || Self.isName(parts[1]) else {
            throw GatewayError.badRequest("'\(text)' is not owner/name or owner/*")
        }
        owner = String(parts[0])
        name = parts[1] == "*" ? nil : String(parts[1])
    }

    func permits(owner: some StringProtocol, name: some StringProtocol) -> Bool {
        self.owner == owner && (self.name == nil || self.name! == name)
    }

    /// Whether this pattern covers every algorithm of `owner` (owner-level management requests).
    func coversOwner(_ owner: some StringProtocol) -> Bool {
        self.owner == owner && name == nil
    }

    /// Account and algorithm names as Algorithmia spells them: letters, digits, `_`, `-`, `.`, and
    /// not a dot segment.
    static func isName(_ segment: some StringProtocol) -> Bool {
        !segment.isEmpty && segment != "." && segment != ".."
            && segment.utf8.allSatisfy { byte in
                switch byte {
                case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "0")...UInt8(ascii: "9"),
                     UInt8(ascii: "-"), UInt8(ascii: "_"), UInt8(ascii: "."): true
                default: false
                }
            }
    }
}

extension Array where Element == AlgorithmPattern {
    func permits(owner: some StringProtocol, name: some StringProtocol) -> Bool {
        contains { $0.permits(owner: owner, name: name) }
    }
}
