import Foundation
import NIOCore

/// Helpers around `JSONSerialization`: algorithm inputs and outputs are arbitrary JSON.
enum JSON {
    /// `value` as JSON text. Strings, arrays and objects are written here; Foundation's writer
    /// escapes a string one character at a time (about 1.3 s for a 5 MB string, on the event
    /// loop), and an algorithm's output is often one large string. Numbers, booleans and null are
    /// written by `JSONSerialization`, which tells them apart.
    static func bytes(_ value: Any) -> [UInt8] {
        var out: [UInt8] = []
        write(value, into: &out)
        return out
    }

    static func buffer(_ value: Any) -> ByteBuffer { ByteBuffer(bytes: bytes(value)) }

    static func parse(_ buffer: ByteBuffer) -> Any? {
        try? JSONSerialization.jsonObject(with: Data(buffer.readableBytesView), options: [.fragmentsAllowed])
    }

    static func object(_ buffer: ByteBuffer) -> [String: Any]? { parse(buffer) as? [String: Any] }

    private static func write(_ value: Any, into out: inout [UInt8]) {
        switch value {
        case let string as String:
            write(string: string, into: &out)
        case let array as [Any]:
            out.append(UInt8(ascii: "["))
            for (index, element) in array.enumerated() {
                if index > 0 { out.append(UInt8(ascii: ",")) }
                write(element, into: &out)
            }
            out.append(UInt8(ascii: "]"))
        case let object as [String: Any]:
            out.append(UInt8(ascii: "{"))
            for (index, (key, element)) in object.enumerated() {
                if index > 0 { out.append(UInt8(ascii: ",")) }
                write(string: key, into: &out)
                out.append(UInt8(ascii: ":"))
                write(element, into: &out)
            }
            out.append(UInt8(ascii: "}"))
        default:
            let data = try? JSONSerialization.data(withJSONObject: value, options: [.fragmentsAllowed])
            out.append(contentsOf: data ?? Data("null".utf8))
        }
    }

    private static let hex = Array("0123456789abcdef".utf8)

    /// A JSON string: `"`, `\` and control characters escaped, every other run of bytes copied as
    /// it is.
    private static func write(string: String, into out: inout [UInt8]) {
        var string = string
        string.withUTF8 { utf8 in
            out.reserveCapacity(out.count + utf8.count + 2)
            out.append(UInt8(ascii: "\""))
            var start = 0
            for index in utf8.indices {
                let byte = utf8[index]
                guard byte < 0x20 || byte == UInt8(ascii: "\"") || byte == UInt8(ascii: "\\") else { continue }
                out.append(contentsOf: UnsafeBufferPointer(rebasing: utf8[start..<index]))
                start = index + 1
                switch byte {
                case 0x0a: out.append(contentsOf: [UInt8(ascii: "\\"), UInt8(ascii: "n")])
                case 0x0d: out.append(contentsOf: [UInt8(ascii: "\\"), UInt8(ascii: "r")])
                case 0x09: out.append(contentsOf: [UInt8(ascii: "\\"), UInt8(ascii: "t")])
                case ..<0x20:
                    out.append(contentsOf: [UInt8(ascii: "\\"), UInt8(ascii: "u"), UInt8(ascii: "0"), UInt8(ascii: "0"),
                                            hex[Int(byte >> 4)], hex[Int(byte & 0x0f)]])
                default:
                    out.append(contentsOf: [UInt8(ascii: "\\"), byte])
                }
            }
            out.append(contentsOf: UnsafeBufferPointer(rebasing: utf8[start...]))
            out.append(UInt8(ascii: "\""))
        }
    }
}
