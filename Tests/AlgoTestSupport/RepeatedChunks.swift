import NIOCore

/// `count` copies of one buffer as an async sequence, so an upload is never held whole.
public struct RepeatedChunks: AsyncSequence, Sendable {
    public init(chunk: ByteBuffer, count: Int) {
        self.chunk = chunk
        self.count = count
    }

    public typealias Element = ByteBuffer
    let chunk: ByteBuffer
    let count: Int

    public struct AsyncIterator: AsyncIteratorProtocol {
        let chunk: ByteBuffer
        var remaining: Int
        public mutating func next() async -> ByteBuffer? {
            guard remaining > 0 else { return nil }
            remaining -= 1
            return chunk
        }
    }

    public func makeAsyncIterator() -> AsyncIterator { AsyncIterator(chunk: chunk, remaining: count) }
}
