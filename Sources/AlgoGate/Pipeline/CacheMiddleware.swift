import Foundation
import HTTPTypes
import Hummingbird
import NIOCore
import Synchronization

/// Answers repeated calls of pinned algorithm versions from the cache. Runs after
/// authentication, authorisation (data prefixes in inputs included) and input reading, so a
/// client reaches the cache only once every check has passed.
///
/// Headers: `Cache-Status` (RFC 9211, cache name `algogate`) and `X-Cache: HIT|MISS|BYPASS|STALE`.
///
/// With `cache.stale_if_error_seconds` (RFC 5861's stale-if-error), a call whose upstream fails
/// (500, 502, 503, 504, or the gateway's own 502/503/504) is answered from an entry that expired
/// less than that long ago: a pinned version's answer does not change when its entry expires.
struct CacheMiddleware: RouterMiddleware {
    typealias Context = GatewayRequestContext

    /// An upstream answer, as sent to the call that fetched it and shared with collapsed waiters.
    struct Shared: Sendable {
        let status: HTTPResponse.Status
        let headers: HTTPFields
        let body: ByteBuffer
        /// The gzip bytes the cache stored, when it stored the answer compressed.
        var gzipBody: ByteBuffer?
        /// The room the answer holds under `limits.max_buffered_answer_bytes`: each waiter that
        /// sends it holds it too, so it is given back once the last has sent it.
        var room: HeldBytes?
        /// The cache's purge mark as the call went upstream (`ResponseCache.purgeMark`).
        var asked: Int64 = 0
        /// The timeout the call that fetched it ran with (the client's, clamped), and whether the
        /// answer is a success (one the cache may store): an error may be that timeout running out
        /// (`AlgorithmTimeoutError`), which a waiter that allows longer does not take as its own.
        var timeout = Int.max
        var succeeded = true

        /// The answer for one client: with `gzip` (`sendsStoredGzip`), the stored gzip bytes, as a
        /// hit would send them, rather than the same bytes compressed again
        /// (`ResponseCompressionMiddleware` leaves an encoded answer as it is).
        func response(gzip: Bool) -> Response {
            var headers = headers
            var body = body
            if gzip, let gzipBody {
                body = gzipBody
                headers[.contentEncoding] = ContentCoding.gzip.rawValue
                headers[.contentLength] = nil  // set anew from the body
                ResponseCompressionMiddleware.addVary(&headers)
            }
            return Response(status: status, headers: headers, body: .init(byteBuffer: body))
        }
    }

    let cache: ResponseCache
    let flights: SingleFlight<Shared>
    let policy: @Sendable () -> CachePolicy
    let compression: @Sendable () -> GatewayConfig.Compression
    let now: @Sendable () -> Double
    /// Hits read from SQLite hold room for their answers under `limits.max_buffered_answer_bytes`
    /// (see `AnswerRoom`), waiting at most `upstream.queue_timeout_seconds` for it.
    let answerBudget: MemoryBudget?
    let limits: @Sendable () -> GatewayConfig.Limits
    let queueTimeout: @Sendable () -> Duration
    /// `upstream.timeout_seconds`, which bounds a call's own `timeout` option.
    let upstreamTimeout: @Sendable () -> Int
    let metrics: GatewayMetrics

    // `handle` is split into steps, none inlined into another (`@inline(never)`), and the
    // other pipeline steps are shaped the same way: Swift allocates an async function's frame
    // for the whole call, sized for every value any of its code (inlined callees included) keeps
    // across an await. Work done before or after the rest of the pipeline, left in `handle`,
    // would sit in memory all the while the call waits for its upstream slot and its answer:
    // 9.5 KB a call for this step before, 3.4 KB now; over all the steps, 8 to 25 KB less for
    // each request in the pipeline (`Benchmarks/inflight.sh`).
    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        guard case .algo(let ref) = context.route, request.method == .post else {
            if request.method == .delete, case .manage = context.route, let algorithm = Self.algorithmDeleted(by: request.uri.path) {
                return try await purgeOnDelete(request, algorithm: algorithm, context: context, next: next)
            }
            return try await next(request, context)
        }
        var request = request
        let (decision, origin) = try await decide(&request, ref: ref, context: context)
        guard let key = decision.key else {
            if decision.onlyIfCached { try Self.refuseUncached() }
            return Self.bypassed(try await next(request, context), decision: decision)
        }
        return try await answer(request, key: key, decision: decision, origin: origin, context: context, next: next)
    }

    /// The algorithm (`owner/name`) a `DELETE /v1/algorithms/{owner}/{name}` deletes, or nil.
    static func algorithmDeleted(by path: String) -> String? {
        guard let rest = path.dropPrefix("/v1/algorithms/") else { return nil }
        let parts = rest.split(separator: "/", omittingEmptySubsequences: false)
        let names = parts.last == "" ? parts.dropLast() : parts[...]
        guard names.count == 2, names.allSatisfy({ AlgoRef.isSegment($0, wildcard: false) }) else { return nil }
        return names.joined(separator: "/")
    }

    /// An algorithm deleted through the gateway takes its cached answers with it: its pinned
    /// versions' answers would otherwise go on being served from the cache, for up to their TTL,
    /// after the upstream had stopped answering for them. Purged once the upstream has said yes
    /// (2xx), as `DELETE /_admin/cache?algo=owner/name` would; a purge that fails is logged, the
    /// delete's answer sent as it came.
    @inline(never)
    private func purgeOnDelete(_ request: Request, algorithm: String, context: Context,
                               next: (Request, Context) async throws -> Response) async throws -> Response {
        let response = try await next(request, context)
        guard (200..<300).contains(response.status.code) else { return response }
        do {
            let purged = try await cache.purge(algo: algorithm)
            context.lineLogger.info("algorithm deleted upstream: its cached answers purged", metadata: ["algo": .string(algorithm), "purged": .stringConvertible(purged)])
        } catch {
            context.lineLogger.error("algorithm deleted upstream, but its cached answers could not be purged: \(error)", metadata: ["algo": .string(algorithm)])
        }
        return response
    }

    /// What the cache does with the call, and the upstream it was decided for
    /// (`CachePolicy.origin`); the call's input is read whole into `request`.
    @inline(never)
    private func decide(_ request: inout Request, ref: AlgoRef, context: Context) async throws -> (CachePolicy.Decision, origin: String?) {
        let input = try await request.body.collect(upTo: .max)
        request.body = .init(buffer: input)
        let policy = policy(), query = request.uri.query, headers = request.headers, client = context.client?.name ?? ""
        // Only a pinned call's input is hashed.
        let hashed = ref.version.map(CachePolicy.isPinned) == true ? input.readableBytes : 0
        let decision = try await BodyWork.run(over: hashed) { policy.decide(ref: ref, query: query, headers: headers, body: input, client: client) }
        return (decision, policy.origin)
    }

    @inline(never)
    private static func bypassed(_ response: Response, decision: CachePolicy.Decision) -> Response {
        mark(response, status: "algogate; fwd=\(decision.bypassReason ?? "uri-miss")", xCache: "BYPASS")
    }

    /// How a cacheable call's answers are sent and held: whether a stored answer goes as its
    /// gzip bytes (`sendsStoredGzip`), and the room an answer read from SQLite holds under
    /// `limits.max_buffered_answer_bytes` while it is sent (see `AnswerRoom`), waiting at most
    /// `upstream.queue_timeout_seconds` for it.
    private struct Terms {
        let gzip: (_ contentType: String?) -> Bool
        let holding: ResponseCache.Holding
    }

    @inline(never)
    private func terms(_ request: Request, context: Context) -> Terms {
        let prefersGzip = ContentCoding.preferred(acceptEncoding: request.headers[values: .acceptEncoding]) == .gzip
        let compression = compression()
        let limits = limits()
        var room = AnswerRoom(budget: answerBudget, capacity: limits.maxBufferedAnswerBytes, timeout: queueTimeout(),
                              timeoutName: "upstream.queue_timeout_seconds", facts: context.facts, leavesWith: context.channel)
        // An entry whose plain size was not recorded holds at most its stored and plain bytes.
        return Terms(gzip: { Self.sendsStoredGzip(prefersGzip: prefersGzip, contentType: $0, compression: compression) },
                     holding: { bytes in try await room.hold(bytes ?? 2 * limits.maxResponseBytes) })
    }

    /// A cacheable call: answered from the cache, from the answer of an identical call under way
    /// (single flight), or from the upstream (stored, and shared when it leads).
    @inline(never)
    private func answer(_ request: Request, key: String, decision: CachePolicy.Decision, origin: String?, context: Context,
                        next: (Request, Context) async throws -> Response) async throws -> Response {
        let terms = terms(request, context: context)
        var leads = false, refused = false
        if decision.lookup {
            switch try await lookUp(key, request: request, decision: decision, terms: terms, context: context, refused: &refused) {
            case .answered(let response): return response
            case .leads: leads = true
            case .goesUpstream: break
            case .refused(let refusal):
                var shared = refusal
                shared.cause = "the answer of an identical call under way, refused: " + (refusal.cause ?? refusal.message)
                return try await staleHit(after: shared, key: key, decision: decision, terms: terms, facts: context.facts)
            case .timedOut(let failure), .failedAgain(let failure):
                return try await staleHit(after: failure, key: key, decision: decision, terms: terms, facts: context.facts)
            }
        }
        if decision.onlyIfCached { try Self.refuseUncached() }

        // This request leads (or skipped the lookup, or its leader failed): it goes upstream, then
        // stores, and shares when it leads.
        var shared: Shared?
        var failure: (any Error)?
        // Whatever happens from here on, a leader ends its flight: its waiters would wait for good.
        defer {
            if leads { flights.finish(key, with: shared, failure: failure, sharing: { [room = shared?.room] waiters in room?.share(with: waiters) }) }
        }
        // Room held for an entry that went before it could be read is given back.
        try await terms.holding(0)
        cache.recordMiss()
        // Fetched even if this client goes: the cache stores it, or waiters share it.
        context.facts.keepsAnswer = decision.store || leads
        // A purge that begins from here on keeps this call's answer out of the cache.
        let asked = cache.purgeMark()
        let response: Response
        do {
            response = try await next(request, context)
        } catch {
            failure = leads ? leaderFailure(error, request: request) : error
            return try await staleHit(after: error, key: key, decision: decision, terms: terms, facts: context.facts)
        }
        let kept: Response
        (kept, shared) = try await keep(response, key: key, decision: decision, refused: refused, origin: origin, asked: asked,
                                        timeout: leads ? callTimeout(request) : .max, terms: terms, context: context)
        return kept
    }

    private enum LookUp {
        case answered(Response)
        /// No stored answer, and no identical call under way: this one leads.
        case leads
        /// The identical call waited for failed for its own client's sake, or its answer may be
        /// what a purge removed: this one goes upstream on its own.
        case goesUpstream
        /// The answer of an identical call was refused for what it is: so is this call's.
        case refused(GatewayError)
        /// The identical call under way had not answered within this call's own timeout (and the
        /// grace), as this call's own upstream call would not have.
        case timedOut(GatewayError)
        /// The identical call that relayed a failed one failed too, on the upstream's side: this
        /// call's own would most likely fail the same way.
        case failedAgain(GatewayError)
    }

    /// The stored answer, or the answer of an identical call under way (waiting for it, without
    /// an upstream slot), or that this call leads. `refused`: a stored answer was there that the
    /// request's own bounds did not take (`RequestFreshness`).
    @inline(never)
    private func lookUp(_ key: String, request: Request, decision: CachePolicy.Decision, terms: Terms, context: Context,
                        refused: inout Bool) async throws -> LookUp {
        // A waiter waits no longer than its own call would have taken: its timeout and the grace,
        // from its first wait.
        var waits: (timeout: Int, deadline: NIODeadline)?
        // Whether a call this one waited for has failed on the upstream's side (a 502), so that
        // the one it waits for now relays it (see `.leaderFailed` below).
        var upstreamFailed = false
        while true {
            switch try await read(key, decision: decision, terms: terms, facts: context.facts) {
            case .answer(let answer): return .answered(hit(answer, gzip: terms.gzip(answer.contentType), facts: context.facts))
            case .refused: refused = true
            case .none: break
            }
            if decision.onlyIfCached { try Self.refuseUncached() }
            if flights.lead(key) {
                // A leader that finished after the look-up above, and before this call could wait
                // for it, has stored its answer: without a second look this call would make a
                // second upstream call.
                let stored: ResponseCache.Found
                do {
                    stored = try await read(key, decision: decision, terms: terms, facts: context.facts)
                } catch {
                    flights.finish(key, with: nil)
                    throw error
                }
                guard case .answer(let stored) = stored else { return .leads }
                flights.finishFound(key)
                return .answered(hit(stored, gzip: terms.gzip(stored.contentType), facts: context.facts))
            }
            // A purge known by now and not when the call waited for went upstream: its answer may
            // be what was purged, and this call goes upstream on its own.
            let joined = cache.purgeMark()
            let waiting = waits ?? { let timeout = callTimeout(request); return (timeout, .now() + .seconds(Int64(timeout)) + Forwarder.timeoutGrace) }()
            waits = waiting
            let outcome: SingleFlight<Shared>.Outcome
            do {
                outcome = try await waitForLeader(key, until: waiting.deadline, timeout: waiting.timeout, context: context)
            } catch let failure as GatewayError where failure.status == .gatewayTimeout {
                return .timedOut(failure)
            }
            switch outcome {
            case .shared(let shared) where shared.asked < joined:
                // Counted among the answer's holders when it was shared: let go now, not when
                // the last reference to it goes.
                shared.room?.release()
                return .goesUpstream
            case .shared(let shared) where !shared.succeeded && shared.timeout < waiting.timeout:
                // An error from a call that allowed less time than this one (the algorithm's
                // timeout running out, maybe): this call looks again, and goes upstream itself,
                // or waits for another identical call that allows as long.
                shared.room?.release()
                continue
            case .shared(let shared):
                if let room = shared.room { context.facts.holdAnswer(in: room) }
                return .answered(Self.mark(shared.response(gzip: terms.gzip(shared.headers.value(.contentType))),
                                           status: "algogate; fwd=miss; collapsed", xCache: "MISS"))
            case .retry:
                continue
            case .refused(let refusal):
                return .refused(refusal)
            case .leaderFailed(let failure as TimedOutLeader) where failure.timeout >= waiting.timeout:
                // A call that allowed as long as this one found the upstream would not answer in
                // time (a hung algorithm, say): this one's own call would most likely wait as long
                // again, holding one of the account's slots, so it gets the 504 now.
                var timedOut = Forwarder.timedOut(seconds: waiting.timeout)
                timedOut.cause = "the identical call under way, which allowed as long as this one, had no answer in time: "
                    + (failure.failure.cause ?? failure.failure.message)
                return .timedOut(timedOut)
            case .leaderFailed(let failure as GatewayError) where failure.status == .badGateway:
                // The call waited for failed on the upstream's side: the upstream could not be
                // reached, closed the connection, or sent an answer that could not be read. The
                // first time, one of its waiters relays it, the first to look again, and the rest
                // wait for that one, each within its own deadline: not all at once, which would
                // send the same input as many times as calls were waiting, each holding one of
                // the account's slots. When the relay fails so too, the rest take its 502 rather
                // than each sending the input again, paying again for a run whose answer may
                // have been lost.
                guard upstreamFailed else {
                    upstreamFailed = true
                    continue
                }
                var failedAgain = failure
                failedAgain.cause = "the identical call under way failed, as the one before it had: " + (failure.cause ?? failure.message)
                return .failedAgain(failedAgain)
            case .leaderFailed(is TimedOutLeader):
                // The upstream did not answer a call that allowed less time than this one: one of
                // the waiters that allow longer relays it, as above.
                continue
            case .leaderFailed:
                // The call failed for its own client's sake (no upstream slot in time for it, its
                // client gone while it queued): each waiter goes upstream on its own, queueing
                // for a slot of its own client's, rather than one after another behind a new
                // leader each, each waiting out the queue's timeout in turn.
                return .goesUpstream
            case .cancelled:
                throw CancellationError()
            }
        }
    }

    /// A leader's failure, as its waiters are told it: a 504 (the upstream did not answer in time)
    /// with the timeout the leader's call allowed.
    private func leaderFailure(_ error: any Error, request: Request) -> any Error {
        guard let failure = error as? GatewayError, failure.status == .gatewayTimeout else { return error }
        return TimedOutLeader(failure: failure, timeout: callTimeout(request))
    }

    /// A leader the upstream did not answer in time, and the timeout its call allowed.
    struct TimedOutLeader: Error {
        let failure: GatewayError
        let timeout: Int
    }

    /// The call's `timeout` option, as the forwarder sends it (`Forwarder.query`).
    private func callTimeout(_ request: Request) -> Int {
        Forwarder.query(request.uri.query, clampingTimeoutTo: upstreamTimeout()).timeout
    }

    /// Waits for the identical call under way, giving up when the client goes
    /// (`GatewayError.clientClosedRequest`) or at `deadline` (504, as the call's own upstream call
    /// would be given up then): a waiter holds its input, and its client waits for no longer than
    /// its own timeout, whatever the call it waits for allows.
    @inline(never)
    private func waitForLeader(_ key: String, until deadline: NIODeadline, timeout: Int, context: Context) async throws -> SingleFlight<Shared>.Outcome {
        guard let departure = await ClientDeparture.of(context.channel) else { return await flights.wait(key) }
        let flights = flights, loop = context.channel.eventLoop
        let received = ReceivedOutcome()
        do {
            return try await departure.watching(departures: true) { watch in
                var expired = Forwarder.timedOut(seconds: timeout)
                expired.cause = "the identical call under way, whose answer this call waited for, had not answered within this call's timeout and the grace"
                let expiry = watch?.expire(at: deadline, on: loop, with: expired)
                defer { expiry?.cancel() }
                let outcome = await flights.wait(key)
                received.set(outcome)
                return outcome
            }
        } catch {
            // An answer shared just as the wait was given up is let go.
            if case .shared(let shared)? = received.value { shared.room?.release() }
            throw error
        }
    }

    private final class ReceivedOutcome: Sendable {
        private let outcome = Mutex<SingleFlight<Shared>.Outcome?>(nil)
        func set(_ value: SingleFlight<Shared>.Outcome) { outcome.withLock { $0 = value } }
        var value: SingleFlight<Shared>.Outcome? { outcome.withLock { $0 } }
    }

    /// `cache.lookup`, a file that cannot be read (an I/O error, a damaged page) taken for a miss.
    private func read(_ key: String, decision: CachePolicy.Decision, terms: Terms, facts: RequestFacts) async throws -> ResponseCache.Found {
        try await readingFile(facts: facts, unread: .none) {
            try await cache.lookup(key, now: now(), holding: terms.holding, within: decision.freshness, lifetime: decision.ttlSeconds)
        }
    }

    /// Runs a read of the cache's file; one the file fails (not one refused room for its answer
    /// in time, 503, nor a cancellation) is logged with `not_read`, counted, and answered with
    /// `unread`: a cache that cannot be read costs no answer, as one that cannot store costs none.
    private func readingFile<T>(facts: RequestFacts, unread: T, _ read: () async throws -> T) async throws -> T {
        do {
            return try await read()
        } catch let error as GatewayError {
            throw error
        } catch is CancellationError {
            throw CancellationError()
        } catch {
            if facts.record(notReadBecause: GatewayError.describe(error)) { metrics.cacheReadFailed() }
            return unread
        }
    }

    /// The upstream's answer to a call: stored when it may be, and as shared with the calls
    /// waiting for it (nil when an expired entry answers instead: `stale_if_error_seconds`).
    /// `asked`: the cache's purge mark as the call went upstream (`ResponseCache.purgeMark`).
    @inline(never)
    private func keep(_ response: Response, key: String, decision: CachePolicy.Decision, refused: Bool, origin: String?, asked: Int64,
                      timeout: Int, terms: Terms, context: Context) async throws -> (Response, Shared?) {
        if decision.lookup, Self.staleIfError.contains(response.status.code),
           let stale = try await staleHit(key, decision: decision, terms: terms, facts: context.facts) {
            context.facts.record(staleBecause: "the upstream answered \(response.status.code)")
            return (stale, nil)
        }
        let body = try await response.body.collected()
        var answer = Shared(status: response.status, headers: response.headers, body: body, asked: asked, timeout: timeout)
        var stored = false
        // Keyed under the upstream the call was decided for: one that a reload changed meanwhile
        // answered it, and its answer is not that upstream's to store.
        let sameUpstream = context.facts.upstreamURL.map { CachePolicy.origin(of: $0) == origin } ?? true
        answer.succeeded = false
        if decision.store {
            answer.succeeded = try await BodyWork.run(over: body.readableBytes) { [headers = response.headers] in
                Self.isCacheable(status: response.status, headers: headers, body: body)
            }
        }
        if answer.succeeded {
            if !sameUpstream {
                context.facts.record(notStoredBecause: "upstream.url changed while the call was under way")
            } else {
                do {
                    // A large answer's gzip copy holds room beside it: it lives beside the plain
                    // bytes until the last call sharing them has sent its answer (one that prefers
                    // gzip is sent the copy).
                    (stored, answer.gzipBody) = try await HeldBytes.counting(copyOf: body.readableBytes, in: context.facts.answerRoom,
                                                                             capacity: limits().maxBufferedAnswerBytes) {
                        try await cache.store(key: key, algo: decision.algo, status: response.status.code,
                                              contentType: response.headers.value(.contentType) ?? "application/json",
                                              body: body, ttlSeconds: decision.ttlSeconds, now: now(), askedAt: asked)
                    } size: { $0.gzipBody?.readableBytes ?? 0 }
                } catch is CancellationError {
                    throw CancellationError()
                } catch {
                    // The answer is in hand and paid for: a cache that cannot keep it (its file locked
                    // by another writer past the busy timeout, the disk full) must not lose it. Sent
                    // as a miss that was not stored, logged and counted.
                    context.facts.record(notStoredBecause: GatewayError.describe(error))
                    metrics.cacheStoreFailed()
                }
            }
        }
        answer.room = context.facts.answerRoom
        // RFC 9211: `fwd=request` when the request kept the cache from answering (`no-cache`, or
        // a stored answer outside its `max-age` or `min-fresh`).
        let forwarded = !decision.lookup || refused
        let status = forwarded ? "algogate; fwd=request" : "algogate; fwd=miss"
        return (Self.mark(answer.response(gzip: terms.gzip(answer.headers.value(.contentType))), status: stored ? status + "; stored" : status,
                          xCache: forwarded ? "BYPASS" : "MISS"), answer)
    }

    /// Statuses that let an expired entry answer (RFC 5861 §4).
    static let staleIfError: Set<Int> = [500, 502, 503, 504]

    /// The answer to a call whose upstream failed with `error`: an entry expired within
    /// `cache.stale_if_error_seconds`, when there is one and the failure lets it answer; else
    /// `error`, thrown again.
    @inline(never)
    private func staleHit(after error: any Error, key: String, decision: CachePolicy.Decision, terms: Terms, facts: RequestFacts) async throws -> Response {
        guard let failure = error as? GatewayError, decision.lookup, Self.staleIfError.contains(failure.status.code),
              let stale = try await staleHit(key, decision: decision, terms: terms, facts: facts) else { throw error }
        facts.record(staleBecause: failure.message + (failure.cause.map { " (\($0))" } ?? ""))
        return stale
    }

    /// An entry expired within `cache.stale_if_error_seconds`, as the answer to a failed call (or
    /// a fresh one, stored by another call meanwhile: an ordinary hit); never one outside the
    /// request's own bounds (`RequestFreshness`: no expired entry is fresh for a `min-fresh`).
    private func staleHit(_ key: String, decision: CachePolicy.Decision, terms: Terms, facts: RequestFacts) async throws -> Response? {
        let current = now()
        // A file that cannot be read leaves the upstream's failure as the answer.
        let found = try await readingFile(facts: facts, unread: nil) {
            try await cache.lookupStale(key, now: current, holding: terms.holding, within: decision.freshness, lifetime: decision.ttlSeconds)
        }
        guard let answer = found else { return nil }
        return hit(answer, gzip: terms.gzip(answer.contentType), stale: answer.expiresAt <= current, facts: facts)
    }

    /// A hit from the hot tier on a large entry holds its lease until the answer has been sent.
    private func hit(_ answer: CachedAnswer, gzip: Bool, stale: Bool = false, facts: RequestFacts) -> Response {
        if let lease = answer.lease { facts.holdAnswer(lease) }
        return Self.hit(answer, gzip: gzip, now: now(), stale: stale).response
    }
}
