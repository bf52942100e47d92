import Foundation

/// Whether a query parameter's name is one the gateway must read, however a server might spell it.
///
/// Servers compare parameter names in different ways: byte for byte, percent-decoded, in any
/// case. "In any case" differs too. Java's `equalsIgnoreCase` holds `ſ` (long s, U+017F) equal to
/// `s` and `ı` (dotless i, U+0131) equal to `i`, since they uppercase to `S` and `I`. A server that
/// normalises text first (NFKC) reads fullwidth `ｓｕｄｏ` or the ligature `ﬆ` as ASCII. A name
/// that any of these readers takes for the gateway's own is that name here; the caller then
/// refuses it unless it is spelt plainly.
enum ParameterName {
    /// The one of `names` (lowercase ASCII) that `raw`, a name as the query spells it, may be read
    /// as, or nil.
    static func reading(_ raw: Substring, among names: [String]) -> String? {
        // The longest spelling of a name: each letter a percent-encoded 3-byte lookalike.
        guard raw.utf8.count <= 9 * names.reduce(0, { max($0, $1.utf8.count) }) else { return nil }
        let decoded = raw.utf8.contains(UInt8(ascii: "%")) ? (String(raw).removingPercentEncoding ?? String(raw)) : String(raw)
        let spellings = decoded.utf8.allSatisfy { $0 < 0x80 } ? [decoded] : [decoded, decoded.precomposedStringWithCompatibilityMapping]
        for spelling in spellings {
            if let name = names.first(where: { matches(spelling, $0) }) { return name }
        }
        return nil
    }

    /// Whether `spelling` is `name` letter for letter, in any case, a letter's Unicode case
    /// partners included (`ſ`, `ı`, `İ`, the Kelvin sign).
    private static func matches(_ spelling: String, _ name: String) -> Bool {
        spelling.unicodeScalars.count == name.utf8.count && zip(spelling.unicodeScalars, name.utf8).allSatisfy { scalar, letter in
            if scalar.isASCII { return lowercased(UInt8(scalar.value)) == letter }
            return [scalar.properties.uppercaseMapping, scalar.properties.lowercaseMapping].contains { mapping in
                mapping.unicodeScalars.first.map { $0.isASCII && lowercased(UInt8($0.value)) == letter } ?? false
            }
        }
    }

    private static func lowercased(_ byte: UInt8) -> UInt8 {
        (UInt8(ascii: "A")...UInt8(ascii: "Z")).contains(byte) ? byte + 32 : byte
    }
}
