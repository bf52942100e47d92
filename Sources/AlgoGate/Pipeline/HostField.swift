import HTTPTypes

/// The request's `Host` (RFC 9112 §3.2): an HTTP/1.1 request without one, with more than one, or
/// with one that is not a host and optional port is refused with 400, as the RFC requires and
/// nginx does, before any key is asked for. HTTP/1.0 makes `Host` optional:
/// `ConnectionPersistenceHandler`, which still sees the protocol version, gives such a request an
/// empty one, the value a request naming no authority sends. Health probes (`/healthz`,
/// `/readyz`) are answered whatever their `Host` (`AuthenticationMiddleware`).
///
/// Hummingbird's request carries the first `Host` as its authority and leaves any further one
/// among its fields.
enum HostField {
    static let name = HTTPField.Name("Host")!

    /// The refusal of a request whose `Host` is missing, repeated or malformed; nil when it is sound.
    static func refusal(_ head: HTTPRequest) -> GatewayError? {
        guard let host = head.authority else {
            return .badRequest("the request has no Host header: an HTTP/1.1 request names the host it is sent to (RFC 9112 §3.2)")
        }
        if head.headerFields[name] != nil {
            return .badRequest("the request has more than one Host header: send one (RFC 9112 §3.2)")
        }
        guard isValid(host) else {
            let shown = host.utf8.count <= 255 ? "'\(host)'" : "of \(host.utf8.count) bytes"
            return .badRequest("the Host header \(shown) is not a host name or address with an optional port (RFC 9112 §3.2)")
        }
        return nil
    }

    /// Whether `value` reads `uri-host [ ":" port ]` (RFC 9110 §7.2, RFC 3986 §3.2.2): a
    /// registered name or IPv4 address, or an IP literal in brackets, then optionally `:` and
    /// digits. Empty is valid: the authority of a target that names none.
    static func isValid(_ value: String) -> Bool {
        var bytes = value.utf8[...]
        if bytes.first == UInt8(ascii: "[") {
            guard let close = bytes.firstIndex(of: UInt8(ascii: "]")) else { return false }
            let literal = bytes[bytes.index(after: bytes.startIndex)..<close]
            guard !literal.isEmpty, literal.allSatisfy({ isUnreserved($0) || isSubDelimiter($0) || $0 == UInt8(ascii: ":") }) else { return false }
            bytes = bytes[bytes.index(after: close)...]
        } else {
            let end = bytes.firstIndex(of: UInt8(ascii: ":")) ?? bytes.endIndex
            guard isRegisteredName(bytes[..<end]) else { return false }
            bytes = bytes[end...]
        }
        guard let colon = bytes.first else { return true }
        return colon == UInt8(ascii: ":") && bytes.dropFirst().allSatisfy { $0 >= 0x30 && $0 <= 0x39 }
    }

    /// `reg-name = *( unreserved / pct-encoded / sub-delims )`; IPv4 addresses read as one.
    private static func isRegisteredName(_ bytes: Substring.UTF8View) -> Bool {
        var index = bytes.startIndex
        while index < bytes.endIndex {
            let byte = bytes[index]
            if byte == UInt8(ascii: "%") {
                let digits = bytes[bytes.index(after: index)...].prefix(2)
                guard digits.count == 2, digits.allSatisfy(isHexDigit) else { return false }
                index = digits.endIndex
                continue
            }
            guard isUnreserved(byte) || isSubDelimiter(byte) else { return false }
            index = bytes.index(after: index)
        }
        return true
    }

    private static func isUnreserved(_ byte: UInt8) -> Bool {
        (byte >= 0x30 && byte <= 0x39) || (byte | 0x20 >= 0x61 && byte | 0x20 <= 0x7a)
            || byte == UInt8(ascii: "-") || byte == UInt8(ascii: ".") || byte == UInt8(ascii: "_") || byte == UInt8(ascii: "~")
    }

    private static func isSubDelimiter(_ byte: UInt8) -> Bool {
        "!$&'()*+,;=".utf8.contains(byte)
    }

    private static func isHexDigit(_ byte: UInt8) -> Bool {
        (byte >= 0x30 && byte <= 0x39) || (byte | 0x20 >= 0x61 && byte | 0x20 <= 0x66)
    }
}
