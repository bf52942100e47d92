/// `MAJOR.MINOR.PATCH`, ordered numerically.
struct SemanticVersion: Comparable, Hashable, Sendable, CustomStringConvertible {
    var major: Int
    var minor: Int
    var patch: Int

    init(_ major: Int, _ minor: Int, _ patch: Int) {
        (self.major, self.minor, self.patch) = (major, minor, patch)
    }

    init?(_ text: String) {
        let parts = text.split(separator: ".", omittingEmptySubsequences: false).map { Int($0) }
        guard parts.count == 3, let major = parts[0], let minor = parts[1], let patch = parts[2],
              major >= 0, minor >= 0, patch >= 0 else { return nil }
        self.init(major, minor, patch)
    }

    static func < (lhs: Self, rhs: Self) -> Bool {
        (lhs.major, lhs.minor, lhs.patch) < (rhs.major, rhs.minor, rhs.patch)
    }

    var description: String { "\(major).\(minor).\(patch)" }

    /// The next version for a publish of the given kind (`major`, `minor` or `revision`/`patch`).
    func bumped(_ kind: String) -> SemanticVersion? {
        switch kind.lowercased() {
        case "major": SemanticVersion(major + 1, 0, 0)
        case "minor": SemanticVersion(major, minor + 1, 0)
        case "revision", "patch": SemanticVersion(major, minor, patch + 1)
        default: nil
        }
    }

    /// Whether a partial version such as `1`, `1.2`, `1.*` or `1.2.*` admits this one.
    func matches(partial text: String) -> Bool {
        let parts = text.split(separator: ".").map(String.init).filter { $0 != "*" }
        guard (1...2).contains(parts.count), parts.allSatisfy({ Int($0) != nil }) else { return false }
        let numbers = parts.compactMap { Int($0) }
        return numbers[0] == major && (numbers.count == 1 || numbers[1] == minor)
    }
}
