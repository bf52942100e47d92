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

    /// Names compare byte for byte: `String`'s `==` holds canonically equivalent spellings equal
    /// (the Kelvin sign U+212A is `K` to it), which the upstream keeps apart. A created
    /// algorithm's name comes from the request body, so it can be spelt any way.
    func permits(owner: some StringProtocol, name: some StringProtocol) -> Bool {
        self.owner.utf8.elementsEqual(owner.utf8) && (self.name.map { $0.utf8.elementsEqual(name.utf8) } ?? true)
    }

    /// Whether this pattern covers every algorithm of `owner` (owner-level management requests).
    func coversOwner(_ owner: some StringProtocol) -> Bool {
        self.owner.utf8.elementsEqual(owner.utf8) && name == nil
    }

    /// An account or algorithm name (no wildcard): see `AlgoRef.isSegment`.
    static func isName(_ segment: some StringProtocol) -> Bool {
        AlgoRef.isSegment(segment, wildcard: false)
    }
}

extension Array where Element == AlgorithmPattern {
    func permits(owner: some StringProtocol, name: some StringProtocol) -> Bool {
        contains { $0.permits(owner: owner, name: name) }
    }
}
