import CompressNIO
import HTTPTypes
import Hummingbird
import NIOCore

/// Compresses response bodies: whole buffers at once, streams chunk by chunk as they pass.
enum Deflater {
    static func compress(_ body: ByteBuffer, coding: ContentCoding, level: Int32) throws -> ByteBuffer {
        var input = body
        return try input.compress(with: coding.algorithm(level: level))
    }

    /// A body compressed on the fly: each chunk is compressed and sync-flushed as it arrives, so
    /// nothing is held back beyond zlib's window and a download of any size uses bounded memory.
    static func stream(_ body: ResponseBody, coding: ContentCoding, level: Int32) -> ResponseBody {
        ResponseBody { writer in
            let compressor = coding.algorithm(level: level).compressor
            try compressor.startStream()
            try await body.write(CompressingWriter(base: writer, compressor: SendableCompressor(compressor)))
        }
    }
}

/// `@unchecked`: the compressor is used by one body writer, one chunk at a time, never shared.
struct SendableCompressor: @unchecked Sendable {
    let compressor: any NIOCompressor
    init(_ compressor: any NIOCompressor) { self.compressor = compressor }
}

struct CompressingWriter: ResponseBodyWriter {
    var base: any ResponseBodyWriter
    let compressor: SendableCompressor

    mutating func write(_ buffer: ByteBuffer) async throws {
        var input = buffer
        guard input.readableBytes > 0 else { return }
        let output = try input.compressStream(with: compressor.compressor, flush: .sync)
        if output.readableBytes > 0 { try await base.write(output) }
    }

    consuming func finish(_ trailingHeaders: HTTPFields?) async throws {
        var empty = ByteBuffer()
        let tail = try empty.compressStream(with: compressor.compressor, flush: .finish)
        try compressor.compressor.finishStream()
        if tail.readableBytes > 0 { try await base.write(tail) }
        try await base.finish(trailingHeaders)
    }
}
