import Foundation

/// Hot-path formatting without Foundation's `String(format:)`, which costs microseconds a call on
/// Linux and showed up as a fifth of the cache-hit path's CPU.
enum Formatting {
    private static let digits: [UInt8] = Array("0123456789abcdef".utf8)

    /// Lowercase hex of bytes (SHA-256 digests as keys and `key_sha256` values).
    static func hex(_ bytes: some ContiguousBytes) -> String {
        bytes.withUnsafeBytes { hex(bytes: $0) }
    }

    static func hex(bytes: UnsafeRawBufferPointer) -> String {
        String(unsafeUninitializedCapacity: bytes.count * 2) { out in
            var index = 0
            for byte in bytes {
                out[index] = digits[Int(byte >> 4)]
                out[index + 1] = digits[Int(byte & 0x0f)]
                index += 2
            }
            return index
        }
    }

    /// A size as people read it: `16 MiB`, `1.5 GiB`, `900 KiB`, `12 bytes` (one decimal where it
    /// is not whole). Not for hot paths: it uses `String(format:)`.
    static func size(_ bytes: Int) -> String {
        for (unit, shift) in [("GiB", 30), ("MiB", 20), ("KiB", 10)] where bytes >= 1 << shift {
            let value = Double(bytes) / Double(1 << shift)
            return value == value.rounded() ? "\(Int(value)) \(unit)" : String(format: "%.1f", value) + " " + unit
        }
        return "\(bytes) bytes"
    }

    /// A whole number left-padded with zeros to `width`.
    static func padded(_ value: Int, _ width: Int) -> String {
        let text = String(value)
        return text.count >= width ? text : String(repeating: "0", count: width - text.count) + text
    }

    /// Milliseconds with three decimals, e.g. `12.345`.
    static func milliseconds(_ duration: Duration) -> String {
        let (seconds, attoseconds) = duration.components
        let micros = max(0, Int(seconds) * 1_000_000 + Int(attoseconds / 1_000_000_000_000))
        // Written backwards into a small buffer: this runs for every log line.
        let whole = String(micros / 1000)
        var fraction = micros % 1000
        return String(unsafeUninitializedCapacity: whole.utf8.count + 4) { out in
            var index = 0
            for byte in whole.utf8 { out[index] = byte; index += 1 }
            out[index] = UInt8(ascii: ".")
            for position in stride(from: index + 3, to: index, by: -1) {
                out[position] = UInt8(ascii: "0") + UInt8(fraction % 10)
                fraction /= 10
            }
            return index + 4
        }
    }
}

extension Duration {
    /// The duration in seconds, to the attosecond as far as a `Double` holds it.
    var inSeconds: Double {
        let (seconds, attoseconds) = components
        return Double(seconds) + Double(attoseconds) / 1e18
    }
}

extension Collection<UInt8> {
    /// ASCII case-insensitive equality on UTF-8 bytes, without lowercased copies (hot-path header
    /// and scheme checks).
    func equalsIgnoringASCIICase(_ other: some Collection<UInt8>) -> Bool {
        count == other.count && hasPrefixIgnoringASCIICase(other)
    }

    func hasPrefixIgnoringASCIICase(_ prefix: some Collection<UInt8>) -> Bool {
        count >= prefix.count && zip(self, prefix).allSatisfy { asciiFolded($0) == asciiFolded($1) }
    }
}

private func asciiFolded(_ byte: UInt8) -> UInt8 {
    (UInt8(ascii: "A")...UInt8(ascii: "Z")).contains(byte) ? byte | 0x20 : byte
}
