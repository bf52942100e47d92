import AsyncHTTPClient
import Foundation
import HTTPTypes
import Hummingbird
import Logging
import NIOCore
import NIOPosix
import NIOHTTP1

/// Sends a request to the upstream with the server-held key and turns the answer (or the failure)
/// into a response. One shared `HTTPClient` keeps pooled keep-alive connections to the origin.
/// Redirects are never followed, so the key only ever goes to the configured origin.
public struct Forwarder: Sendable {
    /// Time the gateway waits beyond an algorithm's own `timeout`, for the upstream to report it.
    static let timeoutGrace: TimeAmount = .seconds(5)
    /// Algorithmia's default `timeout` for algorithm calls, in seconds.
    static let algorithmDefaultTimeout = 300

    let client: HTTPClient
    let settings: @Sendable () -> Settings
    let breaker: CircuitBreaker?
    let metrics: GatewayMetrics?
    /// Where algorithm answers hold room until sent (`limits.max_buffered_answer_bytes`).
    let answerBudget: MemoryBudget?
    /// What downloads waiting for slow clients hold on disk (`limits.spool_max_bytes`).
    let spoolBudget: MemoryBudget?

    /// What the forwarder reads from the (reloadable) configuration.
    public struct Settings: Sendable {
        public var origin: String
        public var key: Secret
        public var timeoutSeconds: Int
        public var maxResponseBytes: Int
        /// `limits.max_buffered_answer_bytes`: algorithm answers held in memory at once.
        public var maxBufferedAnswerBytes = Int.max
        /// `server.public_url`, and whether the gateway serves HTTPS: where links in answers point.
        public var publicURL: String? = nil
        public var tls = false
        /// `limits.upload_min_bytes_per_second`, and the window it is judged over (`UploadRelay`).
        var uploadMinimumRate = UploadRelay.MinimumRate(bytesPerSecond: 0, window: .seconds(20))
        /// Where streamed answers wait for slow clients (`SpoolPipe`); nil: they do not.
        var spool: SpoolPipe.Settings?
    }

    public init(client: HTTPClient, breaker: CircuitBreaker? = nil, metrics: GatewayMetrics? = nil, answerBudget: MemoryBudget? = nil,
                spoolBudget: MemoryBudget? = nil, settings: @escaping @Sendable () -> Settings) {
        self.client = client
        self.breaker = breaker
        self.metrics = metrics
        self.answerBudget = answerBudget
        self.spoolBudget = spoolBudget
        self.settings = settings
    }

    /// Forwards an algorithm call whose input has been read; its answer is read whole, bounded by
    /// `max_response_bytes`, so later steps (cache, compression) can work on it. A large answer
    /// holds room under `limits.max_buffered_answer_bytes` from before it is read until it has been
    /// sent (`RequestFacts.holdAnswer`).
    ///
    /// The call's timeout (and the grace) bounds the whole exchange, the answer's body included:
    /// the upstream client's deadline covers the head alone, and its read timeout only silence,
    /// so an answer trickling in would otherwise hold the call and its slot past it. `watch`
    /// gives the call up then (`CallWatch`); without one (a test's bare channel) only the head
    /// is bounded.
    @inline(never)
    func forwardAlgo(_ request: Request, ref: AlgoRef, input: ByteBuffer, context: GatewayRequestContext,
                     watch: CallWatch? = nil) async throws -> (Response, ByteBuffer) {
        // Split in three, none inlined into another: what is made before the call and what reads
        // its answer would otherwise sit in this function's frame all the while the call waits
        // for the upstream (see `CacheMiddleware.handle`).
        let settings = settings()
        let (upstream, timeout, deadline) = algoRequest(request, ref: ref, input: input, settings: settings, context: context)
        let expiry = watch.map { expire($0, at: deadline, timeout: timeout, context: context) }
        defer { expiry?.cancel() }
        let response = try await execute(upstream, upstream: settings.origin, deadline: deadline, timeoutSeconds: timeout, wholeCall: true, facts: context.facts)
        return try await readAnswer(response, settings: settings, timeout: timeout, context: context)
    }

    /// The upstream request for an algorithm call, its timeout (the client's, clamped) and its
    /// deadline.
    @inline(never)
    private func algoRequest(_ request: Request, ref: AlgoRef, input: ByteBuffer, settings: Settings,
                             context: GatewayRequestContext) -> (HTTPClientRequest, timeout: Int, deadline: NIODeadline) {
        context.facts.upstreamURL = settings.origin
        let query = Self.query(request.uri.query, clampingTimeoutTo: settings.timeoutSeconds)
        var upstream = makeRequest(request, path: ref.upstreamPath, query: query.text, settings: settings, context: context)
        upstream.body = .bytes(input)
        return (upstream, query.timeout, NIODeadline.now() + .seconds(Int64(query.timeout)) + Self.timeoutGrace)
    }

    @inline(never)
    private func expire(_ watch: CallWatch, at deadline: NIODeadline, timeout: Int, context: GatewayRequestContext) -> Scheduled<Void> {
        var expired = Self.timedOut(seconds: timeout)
        expired.cause = Self.deadlinePassed
        return watch.expire(at: deadline, on: context.channel.eventLoop, with: expired)
    }

    /// An algorithm's answer, read whole (see `forwardAlgo`).
    @inline(never)
    private func readAnswer(_ response: HTTPClientResponse, settings: Settings, timeout: Int,
                            context: GatewayRequestContext) async throws -> (Response, ByteBuffer) {
        let tooLarge = GatewayError.answerRefused("the algorithm's response exceeds the gateway's \(settings.maxResponseBytes)-byte limit (limits.max_response_bytes)")
        var room = AnswerRoom(budget: answerBudget, capacity: settings.maxBufferedAnswerBytes,
                              timeout: .seconds(timeout) + .nanoseconds(Self.timeoutGrace.nanoseconds), facts: context.facts)
        let declared = response.headers.first(name: "content-length").flatMap(Int.init)
        let limit = settings.maxResponseBytes
        // A coding the gateway inflates (any other passes through as it came).
        let encodings = response.headers["content-encoding"]
        let coding = encodings.isEmpty ? nil : (try? ContentCoding.of(contentEncoding: encodings.joined(separator: ", "))) ?? nil
        // A plain answer declared too large is refused before any of it is read or held. (A
        // compressed one is judged once inflated: gzip can add a few bytes to what it cannot shrink.)
        if let declared, declared > limit, encodings.isEmpty { throw tooLarge }
        // Room for all the answer will need, reserved before it is read and while it holds none
        // (see `AnswerRoom.hold`): a plain answer its declared length; a compressed one, when its
        // compressed bytes are large enough to hold room, those and the most they inflate to (the
        // limit). An answer of undeclared length reads its first `AnswerRoom.from` bytes first.
        // What it turns out not to need is given back as soon as that is known.
        var body: ByteBuffer
        do {
            if let declared {
                try await room.hold(coding == nil ? min(declared, limit) : declared >= AnswerRoom.from ? declared + limit : 0)
                body = try await response.body.collect(upTo: limit)
            } else {
                body = try await Self.collectUndeclared(response.body, limit: limit, reserving: coding == nil ? limit : 2 * limit, room: &room)
            }
        } catch is NIOTooManyBytesError {
            throw tooLarge
        } catch {
            throw failure(error, timeoutSeconds: timeout, wholeCall: true)
        }
        var headers = HeaderPolicy.downstreamResponse(response.headers.map { ($0.name, $0.value) })
        headers[.contentLength] = nil
        if let coding {
            let compressed = body
            // Room for the plain answer, beside the compressed one, before it is inflated: the size
            // gzip's trailer states, or else the most DEFLATE can expand to, up to the limit. An
            // answer whose compressed bytes were small reserves it only now (holding none before);
            // one that reserved the limit gives back what the trailer says it will not need.
            let plain = Inflater.declaredSize(of: compressed, coding: coding) ?? compressed.readableBytes * Inflater.maximumRatio
            try await room.hold(compressed.readableBytes + min(plain, limit))
            do {
                body = try await BodyWork.run(over: compressed.readableBytes) { try Inflater.inflateAll(compressed, coding: coding, limit: limit) }
            } catch is Inflater.LimitExceeded {
                throw tooLarge
            } catch {
                throw GatewayError.badGateway("the upstream sent a corrupt \(coding.rawValue) body").caused(by: error)
            }
            headers[.contentEncoding] = nil
            HeaderPolicy.contentRecoded(&headers, rangesStay: true)
        }
        // The plain answer alone is held from here on (a compressed one was inflated on one of
        // BodyWork's few threads, so few inflate at once).
        try await room.hold(body.readableBytes)
        try await refuseEchoedKey(KeyEchoGuard(key: settings.key), headers: headers, body: body, context: context)
        return (Response(status: .init(code: Int(response.status.code), reasonPhrase: response.status.reasonPhrase),
                         headers: headers, body: .init(byteBuffer: body)), body)
    }

    /// An answer of undeclared length (chunked; an upstream that compresses on the fly sends
    /// them so): its first `AnswerRoom.from` bytes are read without room, as a small answer's
    /// would be, and only one that goes on past them holds room, for as much as it may need,
    /// before the rest is read. Most answers are small: holding `max_response_bytes` for each
    /// before reading it would make small answers wait for large ones' room.
    /// `reserving`: the room the answer will need at most (twice the limit for a compressed one:
    /// its compressed bytes, then its plain ones beside them).
    static func collectUndeclared<Parts: AsyncSequence>(_ parts: Parts, limit: Int, reserving: Int,
                                                         room: inout AnswerRoom) async throws -> ByteBuffer
    where Parts.Element == ByteBuffer {
        var body = ByteBuffer()
        var holding = false
        for try await part in parts {
            guard body.readableBytes + part.readableBytes <= limit else { throw NIOTooManyBytesError(maxBytes: limit) }
            if !holding, body.readableBytes + part.readableBytes >= AnswerRoom.from {
                try await room.hold(reserving)
                holding = true
            }
            body.writeImmutableBuffer(part)
        }
        return body
    }

    /// Throws `KeyEchoGuard.withheld`, logged and counted, when the answer's headers or its body
    /// (one read whole, scanned off the event loop when large: `BodyWork`) hold the upstream key.
    func refuseEchoedKey(_ keyGuard: KeyEchoGuard, headers: HTTPFields, body: ByteBuffer? = nil, context: GatewayRequestContext) async throws {
        do {
            try keyGuard.check(headers)
            if let body { try await BodyWork.run(over: body.readableBytes) { try keyGuard.check(body) } }
        } catch {
            withheld(context)
            throw error
        }
    }

    /// An answer that held the upstream key was withheld, or its stream cut: the operator needs to
    /// know why the client got a 502 or a short body (the line names neither the key nor the body).
    func withheld(_ context: GatewayRequestContext) {
        metrics?.upstreamKeyWithheld()
        context.lineLogger.error("the upstream's answer contained the upstream key; withheld from the client")
    }

    func makeRequest(_ request: Request, path: String, query: String?, settings: Settings, context: GatewayRequestContext) -> HTTPClientRequest {
        var url = settings.origin + path
        if let query, !query.isEmpty { url += "?" + query }
        var upstream = HTTPClientRequest(url: url)
        upstream.method = HTTPMethod(rawValue: request.method.rawValue)
        for (name, value) in HeaderPolicy.upstreamRequest(request.headers, requestID: context.requestID, key: settings.key,
                                                           head: request.method == .head) {
            upstream.headers.add(name: name, value: value)
        }
        return upstream
    }

    /// Sends `request`; when it is `replayable` (idempotent, no body) and its connection was lost
    /// before an answer came, sends it once more within the same deadline. A pooled keep-alive
    /// connection that the origin (or a load balancer in front of it) closed just as it was reused
    /// fails this way, and a second connection is the answer. Anything with a body, and algorithm
    /// calls (POST: they run, and bill, again), is never replayed.
    ///
    /// When the client's own body failed (`upload`), the exchange failed on the client's side: it
    /// is the client's error (400), and says nothing of the upstream to the circuit breaker.
    /// `timeoutSeconds`: what the deadline is, as a failure names it; `wholeCall`: see `translate`.
    /// `upstream`: the origin it goes to, for the circuit breaker.
    @inline(never)
    func execute(_ request: HTTPClientRequest, upstream: String, deadline: NIODeadline, timeoutSeconds seconds: Int, wholeCall: Bool = false,
                         facts: RequestFacts, replayable: Bool = false,
                         upload: UploadRelay? = nil, onRetry: @Sendable () -> Void = {}) async throws -> HTTPClientResponse {
        let admission = try breaker?.admit(upstream: upstream)
        func record(_ outcome: CircuitBreaker.Outcome) {
            if let breaker, let admission { breaker.record(outcome, admission) }
        }
        do {
            let response: HTTPClientResponse
            do {
                response = try await client.execute(request, deadline: deadline)
            } catch let error where replayable && Self.isLostConnection(error) && !Task.isCancelled {
                onRetry()
                response = try await client.execute(request, deadline: deadline)
            }
            record(.answered)
            if response.status == .unauthorized {
                // The client passed the gateway's check, so it is the server key the upstream
                // refused (revoked, rotated, or the wrong one configured). The 401 goes to the
                // client as it came, which reads as if its own key were wrong: the operator is told.
                metrics?.upstreamKeyRefused()
                facts.upstreamRefusedKey = true
            }
            return response
        } catch {
            throw failed(error, upload: upload, admission: admission, timeoutSeconds: seconds, wholeCall: wholeCall)
        }
    }

    /// What `execute` throws when the exchange failed, with the circuit breaker told.
    @inline(never)
    private func failed(_ error: any Error, upload: UploadRelay?, admission: CircuitBreaker.Admission?,
                        timeoutSeconds seconds: Int, wholeCall: Bool) -> any Error {
        func record(_ outcome: CircuitBreaker.Outcome) {
            if let breaker, let admission { breaker.record(outcome, admission) }
        }
        if let failure = upload?.clientFailure {
            record(.unknown)
            if let slow = failure as? UploadTooSlow { return GatewayError.inputTimeout(slow.message) }
            return (failure as? HTTPParserError).map(GatewayError.malformed) ?? .malformed(.invalidEOFState)
        }
        record(Self.isUnreachable(error) ? .unreachable : .unknown)
        return failure(error, timeoutSeconds: seconds, wholeCall: wholeCall)
    }

    /// `translate`, with a cause that quotes the upstream key (no transport error is known to)
    /// replaced, since the cause goes to the log.
    func failure(_ error: any Error, timeoutSeconds: Int, wholeCall: Bool = false) -> GatewayError {
        var failure = Self.translate(error, timeoutSeconds: timeoutSeconds, wholeCall: wholeCall)
        if let cause = failure.cause, KeyEchoGuard(key: settings().key).contains(cause) {
            failure.cause = "(not shown: the description held the upstream key)"
        }
        return failure
    }

    /// The query to send upstream, with `timeout` clamped to the configured maximum, and that
    /// timeout. An unreadable `timeout`, or one given twice or spelt otherwise than plainly, has
    /// been refused before (`AlgoOptions`), so the one plain `timeout=` is the one to clamp.
    public static func query(_ raw: String?, clampingTimeoutTo maximum: Int) -> (text: String, timeout: Int) {
        var parts = (raw ?? "").split(separator: "&").map(String.init)
        var timeout = min(algorithmDefaultTimeout, maximum)
        if let index = parts.firstIndex(where: { $0.hasPrefix("timeout=") }) {
            let requested = Int(parts[index].dropFirst("timeout=".count)) ?? maximum  // digits too many for an Int
            // 0 is none given (`AlgoOptions.timeout`): the default, said plainly to the upstream.
            if requested > 0 { timeout = min(requested, maximum) }
            parts[index] = "timeout=\(timeout)"
        } else if maximum < algorithmDefaultTimeout {
            // Without a timeout the upstream would wait its default 300 s; tell it the gateway's bound.
            parts.append("timeout=\(timeout)")
        }
        return (parts.joined(separator: "&"), timeout)
    }
}
