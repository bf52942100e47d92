import Foundation
import HTTPTypes
import NIOCore

/// Keeps the server-held key from coming back. Every upstream request carries the key in its
/// `Authorization` header, and anything that echoes request headers (a debugging upstream set as
/// `upstream.url` by mistake, a proxy's error page, an algorithm that prints what it was sent)
/// would hand it to the client, and through the cache to every client. So every upstream answer
/// is searched for the key's bytes, after inflating it and before any of it is sent or stored:
/// - a response header that holds it, or an answer read whole (algorithm calls, whose answers
///   are cached) that holds it anywhere, is withheld: the client gets a 502 envelope instead;
/// - a streamed body (data and management calls) is passed on a chunk behind, so a key split
///   between chunks is seen before any byte of it is sent; when one turns up, the stream is cut
///   there, before the chunk that holds it.
/// The key is matched as it is sent, byte for byte; an upstream that re-encodes it (base64,
/// percent-encoding), or compresses with a coding the gateway does not inflate, is not caught.
struct KeyEchoGuard: Sendable {
    private let key: Secret
    /// The key's byte to look for first: the one least likely to be common in an answer.
    private let anchor: Int

    init(key: Secret) {
        self.key = key
        anchor = Self.anchor(of: Array(key.revealed.utf8))
    }

    /// The position of the key's rarest byte, by how often such bytes turn up in text and JSON: an
    /// upper-case letter, else a digit, else punctuation, else a lower-case letter. Answers are
    /// mostly text, and memchr on a byte that is 1 in 10 of them runs 25 times slower than on one
    /// that is absent (690 MB/s against 17 GB/s, measured on English text).
    static func anchor(of key: [UInt8]) -> Int {
        func rank(_ byte: UInt8) -> Int {
            switch byte {
            case UInt8(ascii: "A")...UInt8(ascii: "Z"): 0
            case UInt8(ascii: "0")...UInt8(ascii: "9"): 1
            case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: " "), UInt8(ascii: "\""): 3
            default: 2
            }
        }
        return key.indices.min { rank(key[$0]) < rank(key[$1]) } ?? 0
    }

    static let withheld = GatewayError.answerRefused("the upstream's answer contained the gateway's upstream key, so it was withheld")

    /// Throws `withheld` when a field's value holds the key.
    func check(_ fields: HTTPFields) throws {
        for field in fields where contains(field.value) { throw Self.withheld }
    }

    /// Throws `withheld` when `body` holds the key.
    func check(_ body: ByteBuffer) throws {
        if body.withUnsafeReadableBytes({ contains($0) }) { throw Self.withheld }
    }

    func contains(_ bytes: [UInt8]) -> Bool {
        bytes.withUnsafeBytes { contains($0) }
    }

    func contains(_ text: String) -> Bool {
        var text = text
        return text.withUTF8 { contains(UnsafeRawBufferPointer($0)) }
    }

    func contains(_ haystack: UnsafeRawBufferPointer) -> Bool {
        var key = key.revealed
        return key.withUTF8 { needle in Self.find(UnsafeRawBufferPointer(needle), anchoredAt: anchor, in: haystack) }
    }

    /// Whether `needle` occurs in `haystack`: memchr for its byte at `anchor`, then memcmp of the
    /// whole needle around each hit.
    static func find(_ needle: UnsafeRawBufferPointer, anchoredAt anchor: Int, in haystack: UnsafeRawBufferPointer) -> Bool {
        guard let needleStart = needle.baseAddress, let base = haystack.baseAddress, needle.indices.contains(anchor),
              haystack.count >= needle.count else { return false }
        // The anchor byte of a match lies between these two addresses.
        let last = base + (haystack.count - needle.count) + anchor
        var at = base + anchor
        while at <= last {
            guard let hit = memchr(at, Int32(needle[anchor]), last - at + 1) else { return false }
            if memcmp(UnsafeRawPointer(hit) - anchor, needleStart, needle.count) == 0 { return true }
            at = UnsafeRawPointer(hit) + 1
        }
        return false
    }

    /// A streamed body's check. `pass` takes each chunk as it arrives and gives back what may now
    /// be sent: the chunk before it, once this one shows that no key runs across the boundary.
    /// `finish` gives back the last one. Chunks shorter than the key are gathered until there is
    /// enough to tell.
    struct Stream: Sendable {
        private let guarded: KeyEchoGuard
        /// The chunk not yet sent.
        private var pending: ByteBuffer?
        /// The stream's last `key length - 1` bytes so far: a key that crosses into the next
        /// chunk starts among them.
        private var tail: [UInt8] = []
        private let overlap: Int

        init(_ guarded: KeyEchoGuard) {
            self.guarded = guarded
            overlap = max(0, guarded.key.revealed.utf8.count - 1)
        }

        mutating func pass(_ chunk: ByteBuffer) throws -> ByteBuffer? {
            try guarded.check(chunk)
            let head = chunk.getBytes(at: chunk.readerIndex, length: min(overlap, chunk.readableBytes)) ?? []
            if !tail.isEmpty, guarded.contains(tail + head) { throw KeyEchoGuard.withheld }
            tail = chunk.readableBytes >= overlap
                ? chunk.getBytes(at: chunk.readerIndex + chunk.readableBytes - overlap, length: overlap) ?? []
                : Array((tail + head).suffix(overlap))
            // A key that ends in the next chunk starts in this chunk's last bytes only if this
            // chunk is at least as long as they are; a shorter one joins the chunk before it.
            if chunk.readableBytes < overlap, var gathered = pending {
                var chunk = chunk
                gathered.writeBuffer(&chunk)
                pending = gathered
                return nil
            }
            defer { pending = chunk }
            return pending
        }

        mutating func finish() -> ByteBuffer? {
            defer { pending = nil }
            return pending
        }
    }
}
