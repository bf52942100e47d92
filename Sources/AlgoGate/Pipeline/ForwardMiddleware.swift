import Foundation
import Hummingbird
import NIOCore
import Synchronization

/// The last step for `/v1` requests: takes an upstream slot (fair share of the account's
/// concurrency), hands the request to the forwarder by route class, and gives the slot back when
/// the upstream exchange is over (for streamed bodies, when the upstream has sent the body: to the
/// client, or, for a client slower than the upstream, to the spool, `SpoolPipe`). An algorithm
/// call whose client goes while it waits for a slot is given up, and so is one whose answer is not
/// all in by the call's timeout (`ClientDeparture`); a data or management request whose client
/// goes while it waits leaves the queue, and is not sent. One whose client goes once it has been sent
/// runs to its end, holding its slot, or is given up too, as `upstream.abandoned_calls` says.
/// A client over its `slot_seconds_per_day` or `slot_seconds_per_month` goes no further
/// (`QuotaLedger.admitUpstream`).
struct ForwardMiddleware: RouterMiddleware {
    typealias Context = GatewayRequestContext
    let forwarder: Forwarder
    let gate: ConcurrencyGate
    let queueTimeout: @Sendable () -> Duration
    let abandonedCalls: @Sendable () -> GatewayConfig.Upstream.AbandonedCalls
    let metrics: GatewayMetrics
    let ledger: QuotaLedger

    // The two kinds of forwarding are functions of their own, not inlined into `handle` or into
    // each other: an async function's frame holds everything any of its code keeps across an
    // await, for as long as the call waits (see `CacheMiddleware.handle`).
    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        guard let route = context.route else { return try await next(request, context) }
        if let client = context.client { try ledger.admitUpstream(client) }
        if case .algo(let ref) = route { return try await forwardAlgo(request, ref: ref, route: route, context: context) }
        return try await forwardStreaming(request, route: route, context: context)
    }

    @inline(never)
    private func forwardAlgo(_ request: Request, ref: AlgoRef, route: RouteClass, context: Context) async throws -> Response {
        let call = { @Sendable [self] (watch: CallWatch?) async throws -> Response in
            try await callUpstream(request, ref: ref, route: route, context: context, watch: watch)
        }
        // A call is given up once its client has gone, unless its answer is kept
        // (`ClientDeparture`), or it has been sent and `upstream.abandoned_calls` is `finish`;
        // and once its time is up, body included.
        guard let departure = await ClientDeparture.of(context.channel) else { return try await call(nil) }
        let response = try await departure.watching(departures: !context.facts.keepsAnswer, call)
        if departure.hasDeparted {
            context.facts.markClientGone()
            metrics.unreadAnswer(client: context.client?.name ?? "-")
        }
        return response
    }

    /// An algorithm call, once it has a slot, and its slot given back once its answer is in.
    @inline(never)
    private func callUpstream(_ request: Request, ref: AlgoRef, route: RouteClass, context: Context, watch: CallWatch?) async throws -> Response {
        let client = context.client?.name ?? "-"
        context.facts.markQueued(try await gate.acquire(client: client, limit: context.client?.quota.maxConcurrent, timeout: queueTimeout()))
        let held = took(client)
        defer { release(client, heldSince: held, facts: context.facts) }
        if abandonedCalls() == .finish { watch?.runToEnd() }
        let started = ContinuousClock.now
        let input = try await request.body.collect(upTo: .max)
        let (response, body) = try await forwarder.forwardAlgo(request, ref: ref, input: input, context: context, watch: watch)
        let upstreamTime = ContinuousClock.now - started
        metrics.upstreamLatency(route: route.name, upstreamTime)
        // The options were checked as the input was read; one that no longer parses counts no compute.
        let options = request.uri.query == nil ? AlgoOptions() : (try? AlgoOptions.parse(request.uri.query)) ?? AlgoOptions(output: "unread")
        let wrapped = options.wrapsAnswer && response.headers[.contentType]?.lowercased().hasPrefix("application/json") == true
        context.facts.markUpstreamCall(computeSeconds: wrapped ? Self.computeSeconds(in: body, within: upstreamTime) : 0)
        // Its algorithm runs on upstream, outside the slot just given back (`clients[].async_calls`).
        if options.isAsync, (200..<300).contains(response.status.code) {
            metrics.asyncCall(client: client)
            context.facts.markAsyncAccepted()
        }
        return response
    }

    @inline(never)
    private func forwardStreaming(_ request: Request, route: RouteClass, context: Context) async throws -> Response {
        let client = context.client?.name ?? "-"
        if !gate.tryAcquire(client: client, limit: context.client?.quota.maxConcurrent) {
            context.facts.markQueued(try await queue(client: client, context: context))
        }
        let started = took(client)
        // Given back once: when the upstream has sent its answer (which a spooled download's can
        // do well before its client has read it), or when the request is over, whichever is first.
        let release = release, facts = context.facts
        let giveBack = Once { release(client, started, facts) }
        let response: Response
        do {
            let path = if case .data(let uri, let connectorForm) = route { uri.upstreamPath(connectorForm: connectorForm) } else { request.uri.path }
            let metrics = metrics, routeName = route.name
            response = try await forwarder.forwardStreaming(request, path: path, context: context, upstreamEnded: giveBack.run) {
                metrics.upstreamRetry(route: routeName)
            }
        } catch {
            giveBack.run()
            throw error
        }
        return streamed(response, route: route, started: started, giveBack: giveBack, context: context)
    }

    /// Waits for a slot, leaving the queue when the client goes, as an algorithm call does
    /// (`ClientDeparture`): its answer would go nowhere, and the slot to a call someone waits for.
    /// A slot granted as the client went is given back.
    @inline(never)
    private func queue(client: String, context: Context) async throws -> Duration? {
        let limit = context.client?.quota.maxConcurrent, timeout = queueTimeout(), gate = gate
        guard let departure = await ClientDeparture.of(context.channel) else {
            return try await gate.acquire(client: client, limit: limit, timeout: timeout)
        }
        let granted = FailureFlag()
        do {
            return try await departure.watching(departures: true) { _ in
                let queued = try await gate.acquire(client: client, limit: limit, timeout: timeout)
                granted.set()
                return queued
            }
        } catch {
            // Every task of the watch has ended here: a slot its wait was granted is known.
            if granted.isSet { release(client, heldSince: took(client), facts: context.facts) }
            throw (error as? GatewayError) == GatewayError.clientClosedRequest ? GatewayError.clientClosedWhileQueued : error
        }
    }

    /// The slot is held until the upstream has sent the body: it is busy until then. Without a
    /// spool, that is until the client has taken it (and one never sent, its client gone before
    /// the head, gives it back as it is let go: `WriteEnd`); with one, a slow client reads the
    /// rest from it (`SpoolPipe`). An answer read whole already (a HEAD's, an empty one, a
    /// management answer rewritten whole) has ended upstream: its slot is given back at once.
    @inline(never)
    private func streamed(_ response: Response, route: RouteClass, started: ContinuousClock.Instant, giveBack: Once, context: Context) -> Response {
        metrics.upstreamLatency(route: route.name, ContinuousClock.now - started)
        context.facts.markUpstreamCall()
        guard context.facts.streamsResponse else {
            giveBack.run()
            return response
        }
        var streamed = response
        streamed.body = response.body.observed(counting: ByteCounter()) { _ in giveBack.run() }
        return streamed
    }

    /// A slot just granted: from now, the time it is held counts against the client's slot
    /// budgets as it goes (`QuotaLedger.slotTaken`). Every slot taken is given back by `release`
    /// with the instant this returns.
    private func took(_ client: String) -> ContinuousClock.Instant {
        let now = ContinuousClock.now
        ledger.slotTaken(by: client, at: now)
        return now
    }

    /// Gives the client's slot back, and counts the time it held it
    /// (`algogate_upstream_slot_seconds_total`, and the client's usage).
    private func release(_ client: String, heldSince: ContinuousClock.Instant, facts: RequestFacts) {
        gate.release(client: client)
        ledger.slotGiven(by: client, takenAt: heldSince)
        let held = ContinuousClock.now - heldSince
        metrics.slotHeld(client: client, held)
        facts.markSlotHeld(held)
    }

    private static let durationField = Array(#""duration":"#.utf8)

    /// The answer's `metadata.duration`, read from the tail of the body where Algorithmia puts
    /// the metadata, so no answer is parsed whole for it; only for answers in Algorithmia's
    /// envelope (the default output mode), whose last `"duration":` key is the metadata's: in
    /// `output=raw` the body is the algorithm's own output, any key of which a caller could make
    /// read as hours of compute. At most the time the call took upstream, which the algorithm's
    /// run is within, so no answer can claim more (nor an infinite figure that no usage report
    /// could then be written with).
    static func computeSeconds(in body: ByteBuffer, within upstreamTime: Duration) -> Double {
        let claimed = computeSeconds(in: body)
        return claimed.isFinite ? min(claimed, max(0, upstreamTime.inSeconds)) : 0
    }

    static func computeSeconds(in body: ByteBuffer) -> Double {
        let view = body.readableBytesView
        let tail = Array(view.suffix(4096))
        guard tail.count >= durationField.count else { return 0 }
        var index = tail.count - durationField.count
        while index >= 0 {
            if tail[index..<index + durationField.count].elementsEqual(durationField) {
                let number = tail[(index + durationField.count)...].prefix { ($0 >= 0x30 && $0 <= 0x39) || $0 == 0x2e || $0 == 0x65 || $0 == 0x45 || $0 == 0x2d || $0 == 0x2b }
                return Double(String(decoding: number, as: UTF8.self)).map { max(0, $0) } ?? 0
            }
            index -= 1
        }
        return 0
    }
}

/// An action run at most once, by whichever of its callers comes first.
final class Once: Sendable {
    private let action: @Sendable () -> Void
    private let done = Atomic<Bool>(false)

    init(_ action: @escaping @Sendable () -> Void) { self.action = action }

    @Sendable func run() {
        guard !done.exchange(true, ordering: .acquiringAndReleasing) else { return }
        action()
    }
}
