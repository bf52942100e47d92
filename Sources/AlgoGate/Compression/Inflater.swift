import CompressNIO
import NIOCore

/// Inflates a compressed stream chunk by chunk, refusing to produce more than `limit` bytes in
/// all, so a decompression bomb stops at the bound with the memory it used bounded too.
///
/// A gzip body may hold several members one after another (RFC 1952 §2.2: `cat a.gz b.gz`,
/// bgzip's blocks); it inflates to their contents in turn, as `gunzip`, Python and Go read it.
/// zlib stops at the end of each member, so the next is started afresh; anything after a member
/// that is not another one is corrupt. A `deflate` body is one zlib stream.
///
/// compress-nio does not report whether zlib reached the end of the stream, so a truncated body
/// would inflate to a silently shorter one. The trailer is checked instead: gzip ends each member
/// with its inflated size (ISIZE, RFC 1952), zlib with the Adler-32 of the inflated bytes (RFC 1950).
final class Inflater {
    private let decompressor: any NIODecompressor
    private let coding: ContentCoding
    private let limit: Int
    /// Bytes inflated in all (what the limit bounds).
    private(set) var produced = 0
    /// Bytes inflated from the current member (what its trailer states).
    private var memberProduced = 0
    /// The last 8 bytes the current member has used: its trailer once it ends.
    private var tail: [UInt8] = []
    private var adlerA: UInt32 = 1
    private var adlerB: UInt32 = 0

    /// Thrown when the inflated size would pass the limit.
    struct LimitExceeded: Error {}
    /// Thrown when the stream ends without a matching trailer (truncated or corrupt), or has
    /// bytes after its end that do not begin another gzip member.
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
        var output = ByteBuffer()
        while input.readableBytes > 0 {
            let start = input.readerIndex
            let piece: ByteBuffer
            do {
                piece = try input.decompressStream(with: decompressor, maxSize: limit == .max ? .max : limit - produced + 1)
            } catch let error as CompressNIOError where error == .bufferOverflow {
                throw LimitExceeded()
            }
            used(input, from: start)
            try count(piece)
            if output.readableBytes == 0 { output = piece } else { output.writeImmutableBuffer(piece) }
            // Bytes left over: the member ended before them.
            if input.readableBytes > 0 { try nextMember() }
        }
        return output
    }

    /// Inflates from `input`, moving past what it used, into `piece` until `piece` is full or
    /// `input` is used up. Returns whether `piece` filled up, in which case more may follow from
    /// the same input, or from zlib's own state with no input left.
    func inflate(_ input: inout ByteBuffer, into piece: inout ByteBuffer) throws -> Bool {
        while true {
            var filled = false
            let start = input.readerIndex, before = piece.readableBytes
            do {
                // Returns once the input is used up (zlib then wants the next chunk) or the member ends.
                try input.decompressStream(to: &piece, with: decompressor)
            } catch let error as CompressNIOError where error == .bufferOverflow {
                filled = true
            }
            used(input, from: start)
            try count(piece, from: before)
            // Input left over with room to spare: the member ended before it; go on with the next.
            guard !filled && input.readableBytes > 0 else { return filled }
            try nextMember()
        }
    }

    /// Notes the bytes of `input` that zlib used, from `start` to its reader index: the last 8 of
    /// a member are its trailer.
    private func used(_ input: ByteBuffer, from start: Int) {
        let count = input.readerIndex - start
        // Read back through a copy whose reader index is `start`: a buffer gives only its
        // readable bytes, and these are behind `input`'s reader index now.
        var consumed = input
        consumed.moveReaderIndex(to: start)
        guard count > 0, let bytes = consumed.getBytes(at: input.readerIndex - min(count, 8), length: min(count, 8)) else { return }
        tail.append(contentsOf: bytes)
        if tail.count > 8 { tail.removeFirst(tail.count - 8) }
    }

    /// Counts the bytes of `output` after its first `offset` (those just inflated into it).
    private func count(_ output: ByteBuffer, from offset: Int = 0) throws {
        let added = output.readableBytes - offset
        produced += added
        memberProduced += added
        if produced > limit { throw LimitExceeded() }
        if coding == .deflate, added > 0, let new = output.getSlice(at: output.readerIndex + offset, length: added) { updateAdler(new) }
    }

    /// The member that just ended, checked by its trailer; then, for gzip, the next one begun
    /// (zlib reads its header, and refuses what is not one as corrupt). A zlib stream has no next.
    private func nextMember() throws {
        try checkTrailer()
        guard coding == .gzip else { throw Truncated() }
        try decompressor.resetStream()
        memberProduced = 0
        tail = []
    }

    /// Checks the stream ended with its trailer (a truncated stream is corrupt).
    func finish() throws {
        try decompressor.finishStream()
        try checkTrailer()
    }

    private func checkTrailer() throws {
        guard tail.count == 8 else { throw Truncated() }
        switch coding {
        case .gzip:
            let size = UInt32(tail[4]) | UInt32(tail[5]) << 8 | UInt32(tail[6]) << 16 | UInt32(tail[7]) << 24
            guard size == UInt32(truncatingIfNeeded: memberProduced) else { throw Truncated() }
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
/// the ratio. Whatever goes wrong in inflating (corrupt, truncated, past the limit) is thrown as
/// `corrupt`, which says whose bytes they were; what the base sequence throws passes as it is.
struct InflatingSequence<Base: AsyncSequence & Sendable>: AsyncSequence, Sendable where Base.Element == ByteBuffer {
    typealias Element = ByteBuffer
    static var pieceBytes: Int { 256 * 1024 }
    let base: Base
    let coding: ContentCoding
    let limit: Int
    let corrupt: GatewayError

    struct AsyncIterator: AsyncIteratorProtocol {
        var base: Base.AsyncIterator
        let inflater: Inflater?
        let error: (any Error)?
        let corrupt: GatewayError
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
                    let left = input.readableBytes
                    do {
                        more = try inflater.inflate(&input, into: &piece)
                    } catch {
                        throw corrupt.caused(by: error)
                    }
                    if piece.readableBytes > 0 { return piece }
                    // Nothing came out and nothing was used: not expected (zlib uses input or ends
                    // a member, and `inflate` begins the next), but never loop on it.
                    if !more && input.readableBytes > 0 && input.readableBytes == left { throw corrupt.caused(by: Inflater.Truncated()) }
                    continue
                }
                guard let chunk = try await base.next() else { break }
                input = chunk
            }
            finished = true
            do {
                try inflater.finish()
            } catch {
                throw corrupt.caused(by: error)
            }
            return nil
        }
    }

    func makeAsyncIterator() -> AsyncIterator {
        do {
            return AsyncIterator(base: base.makeAsyncIterator(), inflater: try Inflater(coding, limit: limit), error: nil, corrupt: corrupt)
        } catch {
            return AsyncIterator(base: base.makeAsyncIterator(), inflater: nil, error: corrupt.caused(by: error), corrupt: corrupt)
        }
    }
}
