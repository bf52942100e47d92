import HTTPTypes
import Hummingbird
import NIOCore

/// How the cache's answers look on the wire, as the pipeline and `CachedHits` both send them:
/// a hit's headers (`Cache-Status`, RFC 9211, and `X-Cache`), the refusal of `only-if-cached`,
/// and what may be stored at all.
extension CacheMiddleware {
    /// Whether an answer of `contentType` goes to a client as the gzip bytes the cache stored for
    /// it (when it has them): the client prefers gzip, and the compression step would compress
    /// such an answer (`compression.types`), so a first call and its repeats are sent alike.
    static func sendsStoredGzip(prefersGzip: Bool, contentType: String?, compression: GatewayConfig.Compression) -> Bool {
        prefersGzip && compression.isCompressible(contentType)
    }

    /// The answer to a hit at `current`, as the pipeline and `CachedHits` both send it, and its
    /// body: with `gzip` (`sendsStoredGzip`), the stored gzip bytes as they are.
    static func hit(_ answer: CachedAnswer, gzip: Bool, now current: Double, stale: Bool = false) -> (response: Response, body: ByteBuffer) {
        // Built by appending: every field is new, so none needs looking for first.
        var headers = HTTPFields()
        headers.reserveCapacity(12)
        headers.append(HTTPField(name: .contentType, value: answer.contentType))
        headers.append(HTTPField(name: .age, value: String(max(0, Int(current - answer.createdAt)))))
        var body = answer.body
        if gzip, let gzipBody = answer.gzipBody {
            body = gzipBody
            headers.append(HTTPField(name: .contentEncoding, value: ContentCoding.gzip.rawValue))
            ResponseCompressionMiddleware.addVary(&headers)
        }
        if stale {
            // RFC 9211: a negative ttl is how far past its freshness the answer is.
            headers.append(HTTPField(name: .cacheStatus, value: "algogate; hit; ttl=\(min(0, Int((answer.expiresAt - current).rounded(.down)))); detail=stale-if-error"))
            headers.append(HTTPField(name: .xCache, value: "STALE"))
        } else {
            headers.append(HTTPField(name: .cacheStatus, value: "algogate; hit; ttl=\(max(0, Int(answer.expiresAt - current)))"))
            headers.append(HTTPField(name: .xCache, value: "HIT"))
        }
        return (Response(status: .init(code: answer.status), headers: headers, body: .init(byteBuffer: body)), body)
    }

    /// Throws `notCached` (from a function of its own: a thrown value is copied through the
    /// thrower's frame).
    @inline(never)
    static func refuseUncached() throws -> Never { throw notCached }

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
