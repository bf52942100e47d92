import Foundation
import NIOCore

/// Thin helpers around `JSONSerialization`: algorithm inputs and outputs are arbitrary JSON.
enum JSON {
    static func bytes(_ value: Any) -> [UInt8] {
        let data = (try? JSONSerialization.data(withJSONObject: value, options: [.fragmentsAllowed, .withoutEscapingSlashes])) ?? Data("null".utf8)
        return [UInt8](data)
    }

    static func buffer(_ value: Any) -> ByteBuffer { ByteBuffer(bytes: bytes(value)) }

    static func parse(_ buffer: ByteBuffer) -> Any? {
        try? JSONSerialization.jsonObject(with: Data(buffer.readableBytesView), options: [.fragmentsAllowed])
    }

    static func object(_ buffer: ByteBuffer) -> [String: Any]? { parse(buffer) as? [String: Any] }
}
