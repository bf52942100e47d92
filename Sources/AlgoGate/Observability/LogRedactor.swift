import Synchronization

/// The last guard between the server-held key and the log. No code logs the key; but a log line
/// also carries text the gateway did not write (what a failed transport, TLS library or
/// database said: `cause`, `stale`, a reload's `reason`), and one of those could quote it. So
/// every line is searched for each upstream key this process has held (the one it started with
/// and any a reload brought), as rendered (JSON-escaped too), and each occurrence is written as
/// `[redacted]`. The search costs a memchr per line for the key's rarest byte, not a copy.
/// Client keys cannot be searched for: the gateway knows only their hashes, and never logs the
/// `Authorization` field they arrive in.
public final class LogRedactor: Sendable {
    public static let replacement: [UInt8] = Array("[redacted]".utf8)

    private let secrets = Mutex<[Needle]>([])

    private struct Needle: Sendable {
        let bytes: [UInt8]
        let anchor: Int
    }

    public init() {}

    /// Adds `secret` (kept for the rest of the process: lines about the past may still name it).
    public func add(_ secret: Secret) {
        let raw = Array(secret.revealed.utf8)
        guard !raw.isEmpty else { return }
        var quoted: [UInt8] = []
        LogLineFormat.appendQuoted(secret.revealed, to: &quoted)
        let escaped = Array(quoted.dropFirst().dropLast())
        let forms = escaped == raw ? [raw] : [raw, escaped]
        secrets.withLock { needles in
            for form in forms where !needles.contains(where: { $0.bytes == form }) {
                needles.append(Needle(bytes: form, anchor: KeyEchoGuard.anchor(of: form)))
            }
        }
    }

    /// `line` with every secret in it replaced; the same array when it holds none.
    public func redact(_ line: [UInt8]) -> [UInt8] {
        let needles = secrets.withLock { $0 }
        var line = line
        for needle in needles where Self.contains(needle, in: line) {
            line = Self.replacing(needle.bytes, in: line)
        }
        return line
    }

    private static func contains(_ needle: Needle, in line: [UInt8]) -> Bool {
        needle.bytes.withUnsafeBytes { bytes in
            line.withUnsafeBytes { KeyEchoGuard.find(bytes, anchoredAt: needle.anchor, in: $0) }
        }
    }

    /// Found by `contains` first, so this plain search runs only for a line that needs it.
    private static func replacing(_ needle: [UInt8], in line: [UInt8]) -> [UInt8] {
        var result: [UInt8] = []
        result.reserveCapacity(line.count)
        var index = 0
        while index < line.count {
            if line[index] == needle[0], index + needle.count <= line.count, line[index..<index + needle.count].elementsEqual(needle) {
                result.append(contentsOf: replacement)
                index += needle.count
            } else {
                result.append(line[index])
                index += 1
            }
        }
        return result
    }
}
