/// The algorithm an algo call names: `owner/name[/version]`, version as written; or, in a call
/// by the algorithm's id (`{uuid}[/version]`, Algorithmia's "invoke an algorithm by UUID"), the id
/// in `owner` and an empty `name`.
public struct AlgoRef: Sendable, Equatable, CustomStringConvertible {
    public let owner: String
    public let name: String
    public let version: String?

    /// A call by the algorithm's id rather than its owner and name. The id does not say which
    /// algorithm it is, so such a call is never cached and is refused to a client with an
    /// `algorithms` list.
    public var byID: Bool { name.isEmpty }

    public var description: String { (byID ? owner : owner + "/" + name) + (version.map { "/" + $0 } ?? "") }

    /// Parses the path after `/v1/algo/`; a trailing slash is ignored (the Node client adds one),
    /// and so is a leading `algo://` or `/`: the official Node clients put the reference they are
    /// given into the path as it is, and their README's first call is
    /// `client.algo("algo://demo/Hello/0.1.1")`, where every other official client (Python, Java,
    /// Scala, R, C#, Swift, Rust) strips `algo://` or a leading `/` itself. The call is the same
    /// one, and goes upstream as `upstreamPath` spells it.
    /// Scanned as bytes, without splitting into an array: this runs twice per call.
    init?(path: Substring) {
        let slash = UInt8(ascii: "/")
        var rest = path.utf8[...]
        if rest.starts(with: Self.scheme) {
            rest = rest.dropFirst(Self.scheme.count)
        } else if rest.first == slash {
            rest = rest.dropFirst()
        }
        if rest.last == slash { rest = rest.dropLast() }
        let head = rest.firstIndex(of: slash).map { rest[..<$0] } ?? rest
        if Self.isUUID(head) {
            // `{uuid}` or `{uuid}/{version}`, and nothing more.
            let versionBytes = head.endIndex < rest.endIndex ? rest[rest.index(after: head.endIndex)...] : nil
            guard versionBytes.map({ !$0.contains(slash) && Self.isSegment(bytes: $0, wildcard: true) }) ?? true else { return nil }
            owner = String(Substring(head))
            name = ""
            version = versionBytes.map { String(Substring($0)) }
            return
        }
        guard let first = rest.firstIndex(of: slash) else { return nil }
        let ownerBytes = rest[..<first]
        let afterOwner = rest[rest.index(after: first)...]
        let second = afterOwner.firstIndex(of: slash)
        let nameBytes = second.map { afterOwner[..<$0] } ?? afterOwner
        let versionBytes = second.map { afterOwner[afterOwner.index(after: $0)...] }
        guard Self.isSegment(bytes: ownerBytes, wildcard: true), Self.isSegment(bytes: nameBytes, wildcard: true),
              versionBytes.map({ Self.isSegment(bytes: $0, wildcard: true) }) ?? true else { return nil }
        // Split at ASCII slashes, so each part is whole UTF-8.
        owner = String(Substring(ownerBytes))
        name = String(Substring(nameBytes))
        version = versionBytes.map { String(Substring($0)) }
    }

    /// Account, algorithm and version names as Algorithmia spells them: letters, digits, `-`, `_`,
    /// `.` (and `*` in versions such as `1.2.*` when `wildcard`), and not a dot segment.
    static func isSegment(_ segment: some StringProtocol, wildcard: Bool) -> Bool {
        isSegment(bytes: segment.utf8, wildcard: wildcard)
    }

    static func isSegment(bytes segment: some Collection<UInt8>, wildcard: Bool) -> Bool {
        let dot = UInt8(ascii: ".")
        return !segment.isEmpty && !segment.elementsEqual(CollectionOfOne(dot)) && !segment.elementsEqual([dot, dot])
            && segment.allSatisfy { byte in
                switch byte {
                case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "0")...UInt8(ascii: "9"),
                     UInt8(ascii: "-"), UInt8(ascii: "_"), UInt8(ascii: "."): true
                case UInt8(ascii: "*"): wildcard
                default: false
                }
            }
    }

    /// A UUID as Algorithmia writes an algorithm's id: `8-4-4-4-12` hex digits.
    static func isUUID(_ bytes: some Collection<UInt8>) -> Bool {
        guard bytes.count == 36 else { return false }
        return bytes.enumerated().allSatisfy { index, byte in
            [8, 13, 18, 23].contains(index) ? byte == UInt8(ascii: "-")
                : (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(byte) || (UInt8(ascii: "a")...UInt8(ascii: "f")).contains(byte | 0x20)
        }
    }

    private static let scheme = Array("algo://".utf8)

    /// The upstream path for this call.
    var upstreamPath: String { "/v1/algo/" + description }
}
