import HTTPTypes
import Hummingbird
import NIOCore

/// Compresses answers for clients that accept gzip or deflate (q-values honoured, `q=0`
/// refuses) when the body is at least `compression.min_bytes`, of a compressible type and not
/// already encoded. Algorithm answers (already in memory, at most `max_response_bytes`) are
/// compressed whole, with a Content-Length (off the event loop when large: `BodyWork`); everything else, data downloads above all, is
/// compressed as it streams and never held whole.
struct ResponseCompressionMiddleware: RouterMiddleware {
    typealias Context = GatewayRequestContext
    let settings: @Sendable () -> GatewayConfig.Compression
    /// `limits.max_buffered_answer_bytes`: an answer holding room under it holds its compressed
    /// copy's too (see `handle`).
    let answerCapacity: @Sendable () -> Int

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        let response = try await next(request, context)
        return try await compressing(response, for: request, context: context)
    }

    /// Not inlined into `handle`, whose frame would otherwise hold all of this while the request
    /// waits (see `CacheMiddleware.handle`).
    @inline(never)
    private func compressing(_ response: Response, for request: Request, context: Context) async throws -> Response {
        var response = response
        let settings = settings()
        guard !Self.leavesAsIs(response, method: request.method, settings: settings) else { return response }
        let length = response.body.contentLength
        Self.addVary(&response.headers)
        guard let coding = ContentCoding.preferred(acceptEncoding: request.headers[values: .acceptEncoding]) else { return response }
        let level = Int32(settings.level)
        if case .algo = context.route, length != nil {
            let body = try await response.body.collected()
            // A large answer's compressed copy holds room beside it (its plain bytes may be
            // shared with collapsed calls).
            let compressed = try await HeldBytes.counting(copyOf: body.readableBytes, in: context.facts.answerRoom, capacity: answerCapacity()) {
                try await BodyWork.run(over: body.readableBytes) { try Deflater.compress(body, coding: coding, level: level) }
            } size: { $0.readableBytes }
            response.body = .init(byteBuffer: compressed)
        } else {
            response.body = Deflater.stream(response.body, coding: coding, level: level)
        }
        response.headers[.contentEncoding] = coding.rawValue
        response.headers[.contentLength] = nil
        HeaderPolicy.contentRecoded(&response.headers, rangesStay: false)
        return response
    }

    /// Whether this step sends `response` as it is, whatever the client accepts: a HEAD answer,
    /// no body, already encoded, a type not worth compressing, shorter than `min_bytes`, a part
    /// of a representation (206, or any answer with `Content-Range`: its range names plain
    /// bytes), or one the upstream marked `Cache-Control: no-transform` (RFC 9110 §7.7: a proxy
    /// must not change its content).
    static func leavesAsIs(_ response: Response, method: HTTPRequest.Method, settings: GatewayConfig.Compression) -> Bool {
        guard method != .head, response.status.code >= 200, response.status != .noContent,
              response.status != .notModified, response.status != .partialContent, response.headers.value(.contentEncoding) == nil,
              settings.isCompressible(response.headers.value(.contentType)), response.headers.value(.contentRange) == nil,
              !forbidsTransform(response.headers) else { return true }
        if let length = response.body.contentLength, length < settings.minBytes { return true }
        return false
    }

    /// Whether `Cache-Control` holds `no-transform` (read as the cache reads a request's).
    static func forbidsTransform(_ headers: HTTPFields) -> Bool {
        headers.value(.cacheControl) != nil && CachePolicy.cacheControl(headers).contains("no-transform")
    }

    /// The answer depends on Accept-Encoding whether or not this one was compressed.
    static func addVary(_ headers: inout HTTPFields) {
        let existing = headers[values: .vary].flatMap { $0.split(separator: ",").map { $0.trimmedSpaces.lowercased() } }
        if !existing.contains("accept-encoding") && !existing.contains("*") {
            headers.append(HTTPField(name: .vary, value: "Accept-Encoding"))
        }
    }
}
