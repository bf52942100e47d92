import Foundation
import HTTPTypes
import Hummingbird
import NIOCore
import Synchronization

/// Answers repeated calls of pinned algorithm versions from the cache. Runs after
/// authentication, authorisation (data prefixes in inputs included) and input reading, so a
/// client reaches the cache only once every check has passed.
///
/// Headers: `Cache-Status` (RFC 9211, cache name `algogate`) and `X-Cache: HIT|MISS|BYPASS`.
struct CacheMiddleware: RouterMiddleware {
    typealias Context = GatewayRequestContext

    /// An upstream answer shared with collapsed waiters.
    struct Shared: Sendable {
        let status: HTTPResponse.Status
        let headers: HTTPFields
        let body: ByteBuffer
    }

    let cache: ResponseCache
    let flights: SingleFlight<Shared>
    let policy: @Sendable () -> CachePolicy
    let now: @Sendable () -> Double

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        guard case .algo(let ref) = context.route, request.method == .post else { return try await next(request, context) }
        let input = try await request.body.collect(upTo: .max)
        var request = request
        request.body = .init(buffer: input)
        let decision = policy().decide(ref: ref, query: request.uri.query, headers: request.headers, body: input, client: context.client?.name ?? "")

        guard let key = decision.key else {
            if decision.onlyIfCached { throw Self.notCached }
            return Self.mark(try await next(request, context), status: "algogate; fwd=\(decision.bypassReason ?? "uri-miss")", xCache: "BYPASS")
        }
        while decision.lookup {
            if let answer = try await cache.lookup(key, now: now()) {
                return hit(answer, acceptsGzip: ContentCoding.preferred(acceptEncoding: request.headers[values: .acceptEncoding]) == .gzip)
            }
            if decision.onlyIfCached { throw Self.notCached }
            if flights.lead(key) { break }
            switch await flights.wait(key) {
            case .shared(let shared):
                return Self.mark(Response(status: shared.status, headers: shared.headers, body: .init(byteBuffer: shared.body)),
                                 status: "algogate; fwd=miss; collapsed", xCache: "MISS")
            case .retry:
                continue
            }
        }
        if decision.onlyIfCached { throw Self.notCached }

        // This request leads (or skipped the lookup): it goes upstream, then stores and shares.
        var shared: Shared?
        defer { if decision.lookup { flights.finish(key, with: shared) } }
        cache.recordMiss()
        let response = try await next(request, context)
        let body = try await response.body.collected()
        shared = Shared(status: response.status, headers: response.headers, body: body)
        var stored = false
        if decision.store, Self.isCacheable(status: response.status, headers: response.headers, body: body) {
            try await cache.store(key: key, algo: decision.algo, status: response.status.code,
                                  contentType: response.headers.value(.contentType) ?? "application/json",
                                  body: body, ttlSeconds: decision.ttlSeconds, now: now())
            stored = true
        }
        let status = decision.lookup ? "algogate; fwd=miss" : "algogate; fwd=request"
        return Self.mark(Response(status: response.status, headers: response.headers, body: .init(byteBuffer: body)),
                         status: stored ? status + "; stored" : status, xCache: decision.lookup ? "MISS" : "BYPASS")
    }

    /// A stored answer; stored gzip bytes go as they are to a client that prefers gzip.
    private func hit(_ answer: CachedAnswer, acceptsGzip: Bool) -> Response {
        let current = now()
        var headers: HTTPFields = [.contentType: answer.contentType]
        headers[.age] = String(max(0, Int(current - answer.createdAt)))
        var body = answer.body
        if acceptsGzip, let gzip = answer.gzipBody {
            body = gzip
            headers[.contentEncoding] = ContentCoding.gzip.rawValue
            ResponseCompressionMiddleware.addVary(&headers)
        }
        let response = Response(status: .init(code: answer.status), headers: headers, body: .init(byteBuffer: body))
        return Self.mark(response, status: "algogate; hit; ttl=\(max(0, Int(answer.expiresAt - current)))", xCache: "HIT")
    }

    static let notCached = GatewayError(status: .gatewayTimeout, errorType: "NotCached",
                                        message: "no cached answer for this call, and Cache-Control: only-if-cached forbids calling the algorithm",
                                        headers: [.cacheStatus: "algogate; fwd=miss", .xCache: "MISS"])

    /// 2xx with no `error` field: an algorithm error or a failure is never stored.
    static func isCacheable(status: HTTPResponse.Status, headers: HTTPFields, body: ByteBuffer) -> Bool {
        guard (200..<300).contains(status.code) else { return false }
        guard headers.value(.contentType)?.lowercased().hasPrefix("application/json") == true else { return true }
        guard let object = JSON.parse(body) else { return false }
        if let dictionary = object as? [String: Any] { return dictionary["error"] == nil }
        return true
    }

    static func mark(_ response: Response, status: String, xCache: String) -> Response {
        var response = response
        response.headers[.cacheStatus] = status
        response.headers[.xCache] = xCache
        return response
    }
}

extension HTTPField.Name {
    static let cacheStatus = HTTPField.Name("Cache-Status")!
    static let xCache = HTTPField.Name("X-Cache")!
}

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
