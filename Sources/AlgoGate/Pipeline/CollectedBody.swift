import Hummingbird
import HTTPTypes
import NIOCore
import Synchronization

extension ResponseBody {
    /// The whole body in one buffer. Only for bodies already held in memory (algorithm answers).
    func collected() async throws -> ByteBuffer {
        let sink = BufferSink()
        try await write(CollectingWriter(sink: sink))
        return sink.buffer.withLock { $0 }
    }
}

final class BufferSink: Sendable {
    let buffer = Mutex(ByteBuffer())
}

struct CollectingWriter: ResponseBodyWriter {
    let sink: BufferSink
    mutating func write(_ buffer: ByteBuffer) async throws {
        var buffer = buffer
        _ = sink.buffer.withLock { $0.writeBuffer(&buffer) }
    }
    consuming func finish(_ trailingHeaders: HTTPFields?) async throws {}
}
