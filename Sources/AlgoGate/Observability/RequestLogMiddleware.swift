import Foundation
import HTTPTypes
import Hummingbird
import Logging
import NIOCore
import Synchronization
import W3CTraceContext

/// One structured log line per request: request id, client, route class, method, path, status,
/// duration and bytes in and out, the connection's peer address and the `X-Forwarded-For` it
/// claims, the trace id of a W3C `traceparent` it carries, and `key=previous` when the client
/// used a key being rotated out; for an answer that is not the one asked for, why (see `log`).
/// Never a key (Authorization is not read here), a query string or a body. Streamed answers
/// (data downloads), and algorithm answers large enough to be counted under
/// `limits.max_buffered_answer_bytes`, are logged once their last byte has been sent, or once
/// they stop short (`cut`); other answers held in memory (smaller algorithm answers, cache hits,
/// errors) as soon as they are ready.
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
        let response = try await next(request, context)
        return logging(response, to: request, context: context, started: started, bytesIn: bytesIn)
    }

    /// `response`, logged now or once it has been sent. Not inlined into `handle`, whose frame
    /// would otherwise hold all of this while the request waits (see `CacheMiddleware.handle`).
    @inline(never)
    private func logging(_ response: Response, to request: Request, context: Context, started: ContinuousClock.Instant,
                         bytesIn: ByteCounter) -> Response {
        var response = response
        let status = response.status.code
        let logger = logger
        let requestID = context.requestID
        let identity = context.client
        let client = identity?.name ?? "-"
        let viaPreviousKey = identity?.viaPreviousKey ?? false
        let route = context.route?.name ?? (CORSMiddleware.isPreflight(request.head) ? "preflight" : Self.routeName(request.uri.path))
        let method = request.method.rawValue
        let path = request.uri.path
        let remote = PeerAddresses.logged(context.remoteAddress)
        let forwardedFor = Self.forwardedFor(request.headers)
        let traceID = Self.traceID(request.headers)
        let facts = context.facts
        let shortfall = facts.shortfall
        let finish = { @Sendable (bytesOut: Int, cut: StreamCut?) in
            let elapsed = ContinuousClock.now - started
            let status = if case .unsent = cut { GatewayError.clientClosedRequest.status.code } else { status }
            facts.complete(status: Int(status), bytesIn: bytesIn.value, bytesOut: bytesOut, elapsed: elapsed)
            // Known only once the answer has been sent.
            var shortfall = shortfall
            shortfall.spooledBytes = facts.spooledBytes
            Self.log(logger, requestID: requestID, client: client, viaPreviousKey: viaPreviousKey, route: route, method: method, path: path,
                     status: status, elapsed: elapsed, bytesIn: bytesIn.value, bytesOut: bytesOut,
                     remote: remote, forwardedFor: forwardedFor, traceID: traceID, shortfall: shortfall, cut: cut)
        }
        // A large algorithm answer is held under `limits.max_buffered_answer_bytes` until sent.
        let holdsRoom = facts.holdsAnswerRoom
        guard facts.streamsResponse || holdsRoom else {
            // Every other answer is one buffer in memory: the request is over now. Leaving the body
            // as it is keeps Hummingbird's single write of head, body and end.
            finish(response.body.contentLength ?? 0, nil)
            return response
        }
        let bytesOut = ByteCounter()
        response.body = response.body.observed(counting: bytesOut, slices: holdsRoom ? Self.answerSlice : nil,
                                               writingOn: holdsRoom ? context.eventLoop : nil) { cut in finish(bytesOut.value, cut) }
        return response
    }

    /// A held answer is written in slices of this size, from the connection's event loop. The
    /// connection's writer waits for the socket only between writes, and only when it learns in
    /// time that the socket is full: an answer written whole would count as sent as soon as it was
    /// queued, all of it still in memory for a slow client. Written from another thread, each
    /// write is handed to the event loop and returns before the loop has tried the socket, so
    /// every slice is queued at once just the same (seen: 12 MB "sent" in 1.5 ms to a client that
    /// had read nothing). From the loop, a write reaches the socket before it returns, and the
    /// next waits while the socket is full: the room is given back once all but the last slice
    /// has gone to the socket.
    static let answerSlice = 256 * 1024

    static let maxForwardedFor = 256

    /// `X-Forwarded-For` as the client sent it (behind a load balancer, the real client's
    /// address): a claim, bounded so a client cannot make its own line arbitrarily long.
    static func forwardedFor(_ headers: HTTPFields) -> Substring {
        headers.value(.forwardedFor)?.prefix(maxForwardedFor) ?? ""
    }

    /// The trace id of the request's W3C Trace Context (`traceparent`, version `00`: 32 lowercase
    /// hex digits, not all zeros), so that its line can be found from the client's trace; nil
    /// without one, with one that is not valid, or with more than one (the header is then
    /// invalid, W3C Trace Context §3.2). The header itself goes upstream as it came: the gateway
    /// takes no part in the trace.
    static func traceID(_ headers: HTTPFields) -> String? {
        // Two fields read as one value joined by ", ", which no traceparent is.
        guard let value = headers[.traceParent], let context = try? TraceContext(traceParentHeaderValue: value) else { return nil }
        return context.traceID.description
    }

    /// Writes a request's line (for cache hits answered on the event loop too, `CachedHits`).
    /// An answer rendered from an error adds its `error_type`. When the gateway itself failed to
    /// get an answer (a 5xx of its own: upstream unreachable or too slow, no slot, a store that
    /// cannot be read) the line is a `warning`, an `error` for an internal error, and adds the
    /// message the client got (`error`) and what failed underneath (`cause`): an operator needs
    /// them, and they hold no key, body or query. A refused request (4xx) stays at `info` with
    /// its type only, since its message may quote the input. An expired entry that answered
    /// because the upstream failed is a `warning` with what failed (`stale`), and so is an answer
    /// the cache failed to store (`not_stored`: the client got it all the same). An upstream 401,
    /// passed on as it came, is an `error` naming the server key (`upstream`): every call fails
    /// alike until an operator replaces it.
    static func log(_ logger: Logger, requestID: String, client: String, viaPreviousKey: Bool, route: String, method: String, path: String,
                    status: Int, elapsed: Duration, bytesIn: Int, bytesOut: Int, remote: String, forwardedFor: Substring,
                    traceID: String? = nil, shortfall: Shortfall = Shortfall(), cut: StreamCut? = nil) {
        var metadata: Logger.Metadata = [
            "request_id": .string(requestID), "client": .string(client), "route": .string(route),
            "method": .string(method), "path": .string(path), "status": .number(status),
            "duration_ms": .stringConvertible(LogNumber(milliseconds: elapsed)),
            "bytes_in": .number(bytesIn), "bytes_out": .number(bytesOut),
            "remote": .string(remote),
        ]
        if viaPreviousKey { metadata["key"] = "previous" }
        // The answer went to a socket whose client had closed its side: it reads none of it,
        // unless it only half-closed (the bytes count what was written all the same).
        if shortfall.clientGone { metadata["departed"] = "before_answer" }
        if shortfall.asyncAccepted { metadata["async"] = "accepted" }
        if let queued = shortfall.queued { metadata["queued_ms"] = .stringConvertible(LogNumber(milliseconds: queued)) }
        if shortfall.spooledBytes > 0 { metadata["spooled_bytes"] = .number(shortfall.spooledBytes) }
        if !forwardedFor.isEmpty { metadata["forwarded_for"] = .string(String(forwardedFor)) }
        if let traceID { metadata["trace_id"] = .string(traceID) }
        switch cut {
        case nil:
            break
        case .client:
            metadata["cut"] = "client"
        case .unsent:
            metadata["cut"] = "client"
            metadata["error_type"] = .string(GatewayError.clientClosedRequest.errorType)
            logger.info("request", metadata: metadata)
            return
        case .source(let cause):
            metadata["cut"] = "upstream"
            metadata["error"] = "the answer was cut short: its stream from the upstream failed"
            metadata["cause"] = .string(cause)
            logger.warning("request", metadata: metadata)
            return
        }
        if let staleBecause = shortfall.staleBecause {
            // The client got an answer, but the upstream failed behind it.
            metadata["stale"] = .string(staleBecause)
            logger.warning("request", metadata: metadata)
            return
        }
        if shortfall.upstreamRefusedKey {
            metadata["upstream"] = "refused the server key (401): check upstream.key_env or upstream.key_file"
            logger.error("request", metadata: metadata)
            return
        }
        if shortfall.notStoredBecause != nil || shortfall.notReadBecause != nil {
            // The client got its answer; the cache's file failed behind it.
            if let notReadBecause = shortfall.notReadBecause { metadata["not_read"] = .string(notReadBecause) }
            if let notStoredBecause = shortfall.notStoredBecause { metadata["not_stored"] = .string(notStoredBecause) }
            logger.warning("request", metadata: metadata)
            return
        }
        guard let failure = shortfall.failure else {
            logger.info("request", metadata: metadata)
            return
        }
        metadata["error_type"] = .string(failure.errorType)
        if let quota = failure.quota { metadata["quota"] = .string(quota) }
        guard failure.isGatewayFailure else {
            logger.info("request", metadata: metadata)
            return
        }
        metadata["error"] = .string(failure.message)
        if let cause = failure.cause { metadata["cause"] = .string(cause) }
        logger.log(level: failure.errorType == GatewayError.internalErrorType ? .error : .warning, "request", metadata: metadata)
    }

    static func routeName(_ path: String) -> String {
        if path.dropPrefix("/_admin/") != nil { return "operator" }
        if path.dropPrefix("/_gateway/") != nil { return "gateway" }
        return AuthenticationMiddleware.openPaths.contains(path) ? "health" : "unknown"
    }
}

extension HTTPField.Name {
    static let forwardedFor = HTTPField.Name("X-Forwarded-For")!
    static let traceParent = HTTPField.Name("traceparent")!
}

/// A thread-safe byte count.
final class ByteCounter: Sendable {
    private let count = Atomic<Int>(0)
    func add(_ bytes: Int) { count.add(bytes, ordering: .relaxed) }
    var value: Int { count.load(ordering: .relaxed) }
}

extension ResponseBody {
    /// The same body, counting the bytes written and calling `done` once writing ends: with nil
    /// when it was all sent, else with how it stopped short. With `slices`, each write is passed on
    /// in pieces of at most that many bytes; with `eventLoop`, from that loop (the connection's:
    /// see `RequestLogMiddleware.answerSlice`).
    ///
    /// `done` is called once whatever becomes of the body, written or not: Hummingbird writes a
    /// body only once the head has gone, so a client that reset its connection before then has
    /// none written, and a body can be let go unwritten on its way out. Then `done` says it went
    /// unsent, as the body is let go (`WriteEnd`).
    func observed(counting counter: ByteCounter, slices: Int? = nil, writingOn eventLoop: (any EventLoop)? = nil,
                  done: @escaping @Sendable (StreamCut?) -> Void) -> ResponseBody {
        // The body is reached through `end` alone, so that the watches inside it end before this one.
        let end = WriteEnd(self, done: done)
        return ResponseBody(contentLength: contentLength) { writer in
            let clientFailed = FailureFlag()
            let body = end.body
            do {
                let counting = CountingWriter(base: writer, counter: counter, clientFailed: clientFailed, slices: slices)
                if let eventLoop {
                    try await withTaskExecutorPreference(EventLoopTaskExecutor(eventLoop)) { try await body.write(counting) }
                } else {
                    try await body.write(counting)
                }
                end(nil)
            } catch {
                end(clientFailed.isSet ? .client : .source(cause: GatewayError.describe(error)))
                throw error
            }
        }
    }
}

/// Calls a body's `done` once: as its writing ends, or, if it is never written, as the last copy
/// of the body is let go (`StreamCut.unsent`). What `done` gives back (an upstream slot, the room
/// an answer holds) and says (the request's log line, its usage) must not wait on a write that
/// will never come: a slot whose download's client reset its connection before the head went was
/// never given back.
///
/// It holds the body it watches, and lets it go before telling `done`: a watch inside it (the
/// upstream slot's, within the log line's) ends first, as it does when the body is written, so
/// the slot's seconds are counted before the request is.
final class WriteEnd: Sendable {
    private let done: @Sendable (StreamCut?) -> Void
    private let called = Atomic<Bool>(false)
    private let watched: Mutex<ResponseBody?>

    init(_ body: ResponseBody, done: @escaping @Sendable (StreamCut?) -> Void) {
        self.done = done
        self.watched = Mutex(body)
    }

    /// The body watched (empty once it has been let go, which only this watch's end does).
    var body: ResponseBody { watched.withLock { $0 } ?? ResponseBody() }

    func callAsFunction(_ cut: StreamCut?) {
        guard !called.exchange(true, ordering: .acquiringAndReleasing) else { return }
        done(cut)
    }

    deinit {
        guard !called.load(ordering: .acquiring) else { return }
        // Let go here, before `done`: the watches inside it end now.
        _ = watched.withLock { $0.take() }
        done(.unsent)
    }
}

/// How a streamed answer stopped short, for its log line.
enum StreamCut: Sendable {
    /// Writing to the client failed: it went away before the last byte.
    case client
    /// The answer was never sent: its client went before its head could be (`WriteEnd`). Logged
    /// and counted as 499, as an algorithm call given up when its client goes is.
    case unsent
    /// The answer's source failed (the upstream's stream broke, or held the key), with what it said.
    case source(cause: String)
}

/// Set once, read after: whether a step failed.
final class FailureFlag: Sendable {
    private let value = Atomic<Bool>(false)
    func set() { value.store(true, ordering: .relaxed) }
    var isSet: Bool { value.load(ordering: .relaxed) }
}

/// Passes writes on, counting their bytes and noting when the client's side fails.
struct CountingWriter: ResponseBodyWriter {
    var base: any ResponseBodyWriter
    let counter: ByteCounter
    let clientFailed: FailureFlag
    /// The largest piece passed on at once, if any (slices share the buffer's storage).
    var slices: Int?

    mutating func write(_ buffer: ByteBuffer) async throws {
        counter.add(buffer.readableBytes)
        do {
            guard let slices, buffer.readableBytes > slices else { return try await base.write(buffer) }
            var rest = buffer
            while let slice = rest.readSlice(length: Swift.min(slices, rest.readableBytes)), slice.readableBytes > 0 {
                try await base.write(slice)
            }
        } catch {
            clientFailed.set()
            throw error
        }
    }

    consuming func finish(_ trailingHeaders: HTTPFields?) async throws {
        do {
            try await base.finish(trailingHeaders)
        } catch {
            clientFailed.set()
            throw error
        }
    }
}
