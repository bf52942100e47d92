import CompressNIO
import NIOCore

/// Inflates a compressed stream chunk by chunk, refusing to produce more than `limit` bytes in
/// all, so a decompression bomb stops at the bound with the memory it used bounded too.
///
/// compress-nio does not report whether zlib reached the end of the stream, so a truncated body
/// would inflate to a silently shorter one. The trailer is checked instead: gzip ends with the
/// inflated size (ISIZE, RFC 1952), zlib with the Adler-32 of the inflated bytes (RFC 1950).
final class Inflater {
    private let decompressor: any NIODecompressor
    private let coding: ContentCoding
    private let limit: Int
    private(set) var produced = 0
    /// The last 8 input bytes seen: where the trailer is once the input ends.
    private var tail: [UInt8] = []
    private var adlerA: UInt32 = 1
    private var adlerB: UInt32 = 0

    /// Thrown when the inflated size would pass the limit.
    struct LimitExceeded: Error {}
    /// Thrown when the stream ends without a matching trailer (truncated or corrupt).
    struct Truncated: Error {}

    init(_ coding: ContentCoding, limit: Int) throws {
        decompressor = coding.algorithm().decompressor
        self.coding = coding
        self.limit = limit
        try decompressor.startStream()
    }

    /// The whole of `chunk`, inflated (bounded by the limit alone: for bodies held whole).
    func inflate(_ chunk: ByteBuffer) throws -> ByteBuffer {
        var input = chunk
        guard input.readableBytes > 0 else { return ByteBuffer() }
        arrived(input)
        let output: ByteBuffer
        do {
            output = try input.decompressStream(with: decompressor, maxSize: limit == .max ? .max : limit - produced + 1)
        } catch let error as CompressNIOError where error == .bufferOverflow {
            throw LimitExceeded()
        }
        try count(output)
        return output
    }

    /// Notes a chunk of the compressed stream as it arrives, for the trailer check.
    func arrived(_ chunk: ByteBuffer) {
        tail.append(contentsOf: chunk.readableBytesView.suffix(8))
        if tail.count > 8 { tail.removeFirst(tail.count - 8) }
    }

    /// Inflates from `input` (`arrived` first), moving past what it used, into `piece` until
    /// `piece` is full or `input` is used up. Returns whether `piece` filled up, in which case
    /// more may follow from the same input, or from zlib's own state with no input left.
    func inflate(_ input: inout ByteBuffer, into piece: inout ByteBuffer) throws -> Bool {
        var filled = false
        do {
            // Returns once the input is used up (zlib then wants the next chunk) or the stream ends.
            try input.decompressStream(to: &piece, with: decompressor)
        } catch let error as CompressNIOError where error == .bufferOverflow {
            filled = true
        }
        try count(piece)
        return filled
    }

    private func count(_ output: ByteBuffer) throws {
        produced += output.readableBytes
        if produced > limit { throw LimitExceeded() }
        if coding == .deflate { updateAdler(output) }
    }

    /// Checks the stream ended with its trailer (a truncated stream is corrupt).
    func finish() throws {
        try decompressor.finishStream()
        guard tail.count == 8 else { throw Truncated() }
        switch coding {
        case .gzip:
            let size = UInt32(tail[4]) | UInt32(tail[5]) << 8 | UInt32(tail[6]) << 16 | UInt32(tail[7]) << 24
            guard size == UInt32(truncatingIfNeeded: produced) else { throw Truncated() }
        case .deflate:
            let checksum = UInt32(tail[4]) << 24 | UInt32(tail[5]) << 16 | UInt32(tail[6]) << 8 | UInt32(tail[7])
            guard checksum == (adlerB << 16 | adlerA) else { throw Truncated() }
        }
    }

    private func updateAdler(_ buffer: ByteBuffer) {
        buffer.withUnsafeReadableBytes { bytes in
            var a = adlerA
            var b = adlerB
            var index = 0
            while index < bytes.count {
                // 5552 is the most bytes that can be summed before the sums must be reduced.
                let end = min(index + 5552, bytes.count)
                while index < end {
                    a &+= UInt32(bytes[index])
                    b &+= a
                    index += 1
                }
                a %= 65521
                b %= 65521
            }
            adlerA = a
            adlerB = b
        }
    }

    /// The most DEFLATE data inflates to, per byte: 1032 (258 bytes from a 2-bit code, at best).
    static let maximumRatio = 1032

    /// The size `body` says it inflates to, if it says: a gzip member ends with it (RFC 1952's
    /// ISIZE, modulo 2^32); zlib's format does not carry it. Only a hint: a body of several gzip
    /// members, or a corrupt one, inflates to something else, which inflating finds out.
    static func declaredSize(of body: ByteBuffer, coding: ContentCoding) -> Int? {
        guard coding == .gzip, body.readableBytes >= 18,
              body.getInteger(at: body.readerIndex, endianness: .big, as: UInt16.self) == 0x1f8b,
              let size = body.getInteger(at: body.writerIndex - 4, endianness: .little, as: UInt32.self) else { return nil }
        return Int(size)
    }

    /// The whole of `body`, inflated.
    static func inflateAll(_ body: ByteBuffer, coding: ContentCoding, limit: Int) throws -> ByteBuffer {
        let inflater = try Inflater(coding, limit: limit)
        let output = try inflater.inflate(body)
        try inflater.finish()
        return output
    }
}

/// A request or response body inflated as it streams, in pieces of at most `pieceBytes`: a
/// compressed chunk can inflate a thousandfold (zeros do), and is inflated a piece at a time as
/// the reader asks for more, so what is held and the time each step takes stay small whatever
/// the ratio.
struct InflatingSequence<Base: AsyncSequence & Sendable>: AsyncSequence, Sendable where Base.Element == ByteBuffer {
    typealias Element = ByteBuffer
    static var pieceBytes: Int { 256 * 1024 }
    let base: Base
    let coding: ContentCoding
    let limit: Int

    struct AsyncIterator: AsyncIteratorProtocol {
        var base: Base.AsyncIterator
        let inflater: Inflater?
        let error: (any Error)?
        var finished = false
        /// Compressed bytes arrived and not inflated yet.
        var input = ByteBuffer()
        /// The last piece filled up: zlib may hold more output even with no input left.
        var more = false

        mutating func next() async throws -> ByteBuffer? {
            if let error { throw error }
            guard let inflater, !finished else { return nil }
            while true {
                if input.readableBytes > 0 || more {
                    var piece = ByteBuffer()
                    piece.reserveCapacity(InflatingSequence.pieceBytes)
                    let used = input.readableBytes
                    more = try inflater.inflate(&input, into: &piece)
                    if piece.readableBytes > 0 { return piece }
                    // Nothing came out and nothing was used: bytes after the end of the stream.
                    if !more && input.readableBytes > 0 && input.readableBytes == used { throw Inflater.Truncated() }
                    continue
                }
                guard let chunk = try await base.next() else { break }
                inflater.arrived(chunk)
                input = chunk
            }
            finished = true
            try inflater.finish()
            return nil
        }
    }

    func makeAsyncIterator() -> AsyncIterator {
        do {
            return AsyncIterator(base: base.makeAsyncIterator(), inflater: try Inflater(coding, limit: limit), error: nil)
        } catch {
            return AsyncIterator(base: base.makeAsyncIterator(), inflater: nil, error: error)
        }
    }
}
