import CompressNIO
import HTTPTypes
import Hummingbird
import NIOCore
import Synchronization

/// Dispatches `/v1/...` to the algorithm, data and management APIs. Paths are taken raw rather
/// than through the router, because data paths may carry a URI (`/v1/data/s3://bucket/key`)
/// whose `//` a router would fold away.
struct SimAPI: RouterMiddleware {
    typealias Context = SimRequestContext
    let algorithms: AlgoRoutes
    let data: DataRoutes
    let management: ManagementRoutes

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        let path = request.uri.path
        // `/v1/web/algo/...` is the same call, as Algorithmia's browser client makes it.
        if let rest = path.dropPrefix("/v1/algo/") ?? path.dropPrefix("/v1/web/algo/") {
            return try await algorithms.handle(request, context: context, path: rest)
                .gzipped(if: request.headers[.acceptEncoding]?.contains("gzip") == true, stats: algorithms.stats)
        }
        if let rest = path.dropPrefix("/v1/data/") {
            return try await data.handle(request, context: context, path: try DataPath.parse(dataPath: rest))
        }
        if path == "/v1/data" {
            return try await data.handle(request, context: context, path: DataPath(connector: "data", segments: []))
        }
        if let rest = path.dropPrefix("/v1/connector/") {
            return try await data.handle(request, context: context, path: try DataPath.parse(connectorPath: rest))
        }
        if let rest = path.dropPrefix("/v1/algorithms/") {
            return try await management.handle(request, context: context, path: rest)
        }
        if path.hasPrefix("/v1/") {
            throw SimError.notFound("no such endpoint: \(path)")
        }
        return try await next(request, context)
    }
}

extension String {
    func dropPrefix(_ prefix: String) -> Substring? {
        hasPrefix(prefix) ? dropFirst(prefix.count) : nil
    }
}

extension Response {
    /// Algorithmia compresses answers for clients that ask; so does the simulator, for algorithm
    /// answers of 1 KiB or more, counting each in the stats.
    func gzipped(if accepted: Bool, stats: SimStats) async throws -> Response {
        guard accepted, let length = body.contentLength, length >= 1024, headers[.contentEncoding] == nil else { return self }
        let sink = BodySink()
        try await body.write(SinkWriter(sink: sink))
        var plain = sink.buffer.withLock { $0 }
        var response = self
        response.body = .init(byteBuffer: try plain.compress(with: .gzip()))
        response.headers[.contentEncoding] = "gzip"
        stats.recordGzipResponse()
        return response
    }
}

final class BodySink: Sendable {
    let buffer = Mutex(ByteBuffer())
}

struct SinkWriter: ResponseBodyWriter {
    let sink: BodySink
    mutating func write(_ buffer: ByteBuffer) async throws {
        var buffer = buffer
        _ = sink.buffer.withLock { $0.writeBuffer(&buffer) }
    }
    consuming func finish(_ trailingHeaders: HTTPFields?) async throws {}
}
