/// A key held in memory. Its descriptions are redacted, so interpolating one into a log line or
/// an error message cannot leak it; the value is reachable only through `revealed`.
public struct Secret: Sendable, Equatable, CustomStringConvertible, CustomDebugStringConvertible, CustomReflectable {
    private let value: String

    public init(_ value: String) { self.value = value }

    /// The key itself, for the one place that must send it (the upstream Authorization header).
    public var revealed: String { value }

    public var description: String { "<redacted>" }
    public var debugDescription: String { "<redacted>" }
    public var customMirror: Mirror { Mirror(self, children: []) }
}
