import Foundation
import HTTPTypes
import Hummingbird
import Logging
import NIOCore
import Synchronization

/// One structured log line per request: request id, client, route class, method, path, status,
/// duration and bytes in and out, the connection's peer address and the `X-Forwarded-For` it
/// claims, and `key=previous` when the client used a key being rotated out. Never a key
/// (Authorization is not read here), a query string or a body. Streamed answers (data downloads)
/// are logged once their last byte has been sent; answers held in memory (algorithm answers, cache
/// hits, errors) as soon as they are ready.
struct RequestLogMiddleware: RouterMiddleware {
    typealias Context = GatewayRequestContext
    let logger: Logger

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        let started = ContinuousClock.now
        let bytesIn = ByteCounter()
        var request = request
        let body = request.body
        request.body = RequestBody(asyncSequence: body.map { buffer in
            bytesIn.add(buffer.readableBytes)
            return buffer
        })
        var response = try await next(request, context)
        let status = response.status.code
        let logger = logger
        let requestID = context.requestID
        let identity = context.client
        let client = identity?.name ?? "-"
        let viaPreviousKey = identity?.viaPreviousKey ?? false
        let route = context.route?.name ?? Self.routeName(request.uri.path)
        let method = request.method.rawValue
        let path = request.uri.path
        let remote = context.remoteAddress?.ipAddress ?? "-"
        let forwardedFor = Self.forwardedFor(request.headers)
        let facts = context.facts
        let finish = { @Sendable (bytesOut: Int) in
            facts.complete(status: Int(status), bytesIn: bytesIn.value, bytesOut: bytesOut)
            Self.log(logger, requestID: requestID, client: client, viaPreviousKey: viaPreviousKey, route: route, method: method, path: path,
                     status: status, elapsed: ContinuousClock.now - started, bytesIn: bytesIn.value, bytesOut: bytesOut,
                     remote: remote, forwardedFor: forwardedFor)
        }
        guard facts.streamsResponse else {
            // Every other answer is one buffer in memory: the request is over now. Leaving the body
            // as it is keeps Hummingbird's single write of head, body and end.
            finish(response.body.contentLength ?? 0)
            return response
        }
        let bytesOut = ByteCounter()
        response.body = response.body.observed(counting: bytesOut) { finish(bytesOut.value) }
        return response
    }

    static let maxForwardedFor = 256

    /// `X-Forwarded-For` as the client sent it (behind a load balancer, the real client's
    /// address): a claim, bounded so a client cannot make its own line arbitrarily long.
    static func forwardedFor(_ headers: HTTPFields) -> Substring {
        headers.value(.forwardedFor)?.prefix(maxForwardedFor) ?? ""
    }

    /// Writes a request's line (for cache hits answered on the event loop too, `CachedHits`).
    static func log(_ logger: Logger, requestID: String, client: String, viaPreviousKey: Bool, route: String, method: String, path: String,
                    status: Int, elapsed: Duration, bytesIn: Int, bytesOut: Int, remote: String, forwardedFor: Substring) {
        var metadata: Logger.Metadata = [
            "request_id": .string(requestID), "client": .string(client), "route": .string(route),
            "method": .string(method), "path": .string(path), "status": .stringConvertible(status),
            "duration_ms": .string(Formatting.milliseconds(elapsed)),
            "bytes_in": .stringConvertible(bytesIn), "bytes_out": .stringConvertible(bytesOut),
            "remote": .string(remote),
        ]
        if viaPreviousKey { metadata["key"] = "previous" }
        if !forwardedFor.isEmpty { metadata["forwarded_for"] = .string(String(forwardedFor)) }
        logger.info("request", metadata: metadata)
    }

    static func routeName(_ path: String) -> String {
        if path.hasPrefix("/_admin/") { return "operator" }
        if path.hasPrefix("/_gateway/") { return "gateway" }
        return AuthenticationMiddleware.openPaths.contains(path) ? "health" : "unknown"
    }
}

extension HTTPField.Name {
    static let forwardedFor = HTTPField.Name("X-Forwarded-For")!
}

/// A thread-safe byte count.
final class ByteCounter: Sendable {
    private let count = Atomic<Int>(0)
    func add(_ bytes: Int) { count.add(bytes, ordering: .relaxed) }
    var value: Int { count.load(ordering: .relaxed) }
}

extension ResponseBody {
    /// The same body, counting the bytes written and calling `done` once writing ends (or fails).
    func observed(counting counter: ByteCounter, done: @escaping @Sendable () -> Void) -> ResponseBody {
        let body = self
        return ResponseBody(contentLength: body.contentLength) { writer in
            do {
                try await body.write(CountingWriter(base: writer, counter: counter))
                done()
            } catch {
                done()
                throw error
            }
        }
    }
}

struct CountingWriter: ResponseBodyWriter {
    var base: any ResponseBodyWriter
    let counter: ByteCounter

    mutating func write(_ buffer: ByteBuffer) async throws {
        counter.add(buffer.readableBytes)
        try await base.write(buffer)
    }

    consuming func finish(_ trailingHeaders: HTTPFields?) async throws {
        try await base.finish(trailingHeaders)
    }
}
