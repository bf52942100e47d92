import Hummingbird
import Logging
import NIOCore
import Synchronization

/// Per-request state the pipeline fills in as the request passes each step.
public struct GatewayRequestContext: RequestContext {
    public var coreContext: CoreRequestContextStorage
    /// `X-Request-ID`, taken from the client when well-formed, else generated.
    public var requestID = ""
    /// What later steps learn, shared by reference so outer steps (the log line) see it too.
    let facts = RequestFacts()

    /// The client's connection (`ExpectContinueMiddleware` sends its interim answer on it).
    let channel: any Channel
    /// The connection's peer (a load balancer's address when one is in front).
    let remoteAddress: SocketAddress?
    /// The event loop of the client's connection (see `EventLoopAffinityMiddleware`).
    var eventLoop: any EventLoop { channel.eventLoop }

    public init(source: ApplicationRequestContextSource) {
        self.coreContext = .init(source: source)
        self.channel = source.channel
        self.remoteAddress = PeerAddresses.remote(of: source.channel)
    }

    /// The authenticated client; nil before authentication and on the gateway's own open routes.
    public var client: ClientIdentity? {
        get { facts.state.withLock { $0.client } }
        nonmutating set { facts.state.withLock { $0.client = newValue } }
    }

    /// What the request is, once classified.
    public var route: RouteClass? {
        get { facts.state.withLock { $0.route } }
        nonmutating set { facts.state.withLock { $0.route = newValue } }
    }

    /// Bodies are bounded per route by the pipeline (algo inputs by `limits.max_request_bytes`);
    /// data uploads stream through and are not bounded at all.
    public var maxUploadSize: Int { .max }

    /// The logger for a line about this request besides its request line: with `request_id`, the
    /// `X-Request-ID` its client got and its request line carries, in place of Hummingbird's own
    /// `hb.request.id`, which names the request nowhere else. Made only when such a line is written.
    var lineLogger: Logger {
        var logger = logger
        logger[metadataKey: "hb.request.id"] = nil
        logger[metadataKey: "request_id"] = .string(requestID)
        return logger
    }
}

/// What the pipeline learns about a request, shared by every step's copy of the context: the
/// client and route, whether an upstream call was made, and who wants to hear when it ends.
final class RequestFacts: Sendable {
    struct State {
        var client: ClientIdentity?
        var route: RouteClass?
        var upstreamCalled = false
        /// The `upstream.url` an algorithm call was sent to (`Forwarder.forwardAlgo`): its answer
        /// is stored only under that upstream's key (a reload may change it during the call).
        var upstreamURL: String?
        var computeSeconds = 0.0
        /// The seconds the request held an upstream slot, counted as the slot is given back.
        var slotSeconds = 0.0
        /// The response body streams from the upstream rather than sitting in memory.
        var streamsResponse = false
        /// The request body as it streams upstream, to settle once the answer has been sent.
        var upload: UploadRelay?
        var completions: [@Sendable (RequestCompletion) -> Void] = []
        /// The error the answer was rendered from, when it was one (`ErrorMiddleware`).
        var failure: GatewayError?
        /// Why an expired cache entry answered instead of the upstream (`stale_if_error_seconds`).
        var staleBecause: String?
        /// Why an answer the cache would have kept was not stored (the store failed).
        var notStoredBecause: String?
        /// Why the cache could not be read for the call (its file failed), which went upstream.
        var notReadBecause: String?
        /// The upstream answered 401: it refused the server key.
        var upstreamRefusedKey = false
        /// The algorithm's answer is wanted even if the client goes: the cache stores it, or
        /// collapsed waiters share it (see `ClientDeparture`).
        var keepsAnswer = false
        /// The client went before the algorithm's answer came, and the call ran on to its end.
        var clientGone = false
        /// The upstream accepted the call as an asynchronous one (`output=void`).
        var asyncAccepted = false
        /// How long the request waited for an upstream slot, when it had to.
        var queued: Duration?
        /// Bytes of a streamed answer that waited on disk for the client (`SpoolPipe`).
        var spooledBytes = 0
        /// The room the algorithm's answer holds under `limits.max_buffered_answer_bytes`, given
        /// back once the answer has been sent (`complete`), or when these facts go.
        var answerRoom: HeldBytes?
        /// A hit from the hot tier on a large entry: let go once the answer has been sent.
        var lease: HotTier.Lease?
    }
    let state = Mutex(State())

    /// Runs `handler` once the response has been sent (or failed), with its figures.
    func onCompletion(_ handler: @escaping @Sendable (RequestCompletion) -> Void) {
        state.withLock { $0.completions.append(handler) }
    }

    /// Calls the handlers once, with what the request learnt, and lets them go: they must not
    /// outlive the request (nor keep it alive through a closure that captured it).
    func complete(status: Int, bytesIn: Int, bytesOut: Int, elapsed: Duration) {
        let (handlers, completion, room, lease) = state.withLock { state in
            let handlers = state.completions
            state.completions = []
            defer { state.answerRoom = nil }
            return (handlers, RequestCompletion(
                status: status, bytesIn: bytesIn, bytesOut: bytesOut, elapsed: elapsed,
                client: state.client?.name, viaPreviousKey: state.client?.viaPreviousKey ?? false, route: state.route?.name,
                upstreamCalled: state.upstreamCalled, computeSeconds: state.computeSeconds, slotSeconds: state.slotSeconds), state.answerRoom, state.lease.take())
        }
        // The room and the lease are let go here, outside the lock.
        withExtendedLifetime(lease) { room?.release() }
        for handler in handlers { handler(completion) }
    }

    /// The answer is held in memory under `room` until it has been sent: the request's log line
    /// waits for that too (`RequestLogMiddleware`).
    func holdAnswer(in room: HeldBytes) {
        state.withLock { $0.answerRoom = room }
    }

    /// The answer is a hot-tier entry's bytes, held by `lease` until it has been sent: sent the
    /// way an answer holding room is, so that the lease goes only once the bytes have reached the
    /// socket.
    func holdAnswer(_ lease: HotTier.Lease) {
        state.withLock { $0.lease = lease }
    }

    /// The room the answer holds, if any (shared with collapsed waiters, `CacheMiddleware`).
    var answerRoom: HeldBytes? {
        state.withLock { $0.answerRoom }
    }

    /// Whether the answer holds room that is given back once it has been sent.
    var holdsAnswerRoom: Bool {
        state.withLock { ($0.answerRoom?.held ?? 0) > 0 || $0.lease != nil }
    }

    /// The response body is an upstream stream: the request is over only once it has been sent.
    var streamsResponse: Bool {
        get { state.withLock { $0.streamsResponse } }
        set { state.withLock { $0.streamsResponse = newValue } }
    }

    /// The error the answer was rendered from: its type, and for a 5xx what happened, go in the log line.
    func record(failure: GatewayError) {
        state.withLock { $0.failure = failure }
    }

    /// What failed upstream when an expired entry answered in its place: for the log line.
    func record(staleBecause reason: String) {
        state.withLock { $0.staleBecause = reason }
    }

    /// Why the cache did not keep an answer it would have: for the log line.
    func record(notStoredBecause reason: String) {
        state.withLock { $0.notStoredBecause = reason }
    }

    /// Why the cache could not be read for the call: for the log line. Returns whether it is the
    /// call's first such failure (a call reads the cache again before it leads a flight).
    @discardableResult
    func record(notReadBecause reason: String) -> Bool {
        state.withLock { state in
            defer { state.notReadBecause = reason }
            return state.notReadBecause == nil
        }
    }

    /// The upstream answered 401, refusing the server key (`Forwarder`).
    var upstreamRefusedKey: Bool {
        get { state.withLock { $0.upstreamRefusedKey } }
        set { state.withLock { $0.upstreamRefusedKey = newValue } }
    }

    /// Why the answer is not the one asked for, or was not kept, read in one go for the log line.
    var shortfall: Shortfall {
        state.withLock { Shortfall(failure: $0.failure, staleBecause: $0.staleBecause, notStoredBecause: $0.notStoredBecause,
                                   notReadBecause: $0.notReadBecause, upstreamRefusedKey: $0.upstreamRefusedKey, clientGone: $0.clientGone,
                                   asyncAccepted: $0.asyncAccepted, queued: $0.queued, spooledBytes: $0.spooledBytes) }
    }

    /// Bytes of the streamed answer that waited on disk for the client (`SpoolPipe`).
    var spooledBytes: Int {
        get { state.withLock { $0.spooledBytes } }
        set { state.withLock { $0.spooledBytes = newValue } }
    }

    /// Whether the algorithm's answer is wanted even if the client goes (`ClientDeparture`).
    var keepsAnswer: Bool {
        get { state.withLock { $0.keepsAnswer } }
        set { state.withLock { $0.keepsAnswer = newValue } }
    }

    /// The client went before the algorithm's answer came, and the call ran on to its end
    /// (`ForwardMiddleware`): its log line says so.
    func markClientGone() {
        state.withLock { $0.clientGone = true }
    }

    /// The upstream accepted the call as an asynchronous one, whose algorithm runs on after the
    /// answer (`ForwardMiddleware`): its log line says so.
    func markAsyncAccepted() {
        state.withLock { $0.asyncAccepted = true }
    }

    /// The request waited this long for an upstream slot (`ForwardMiddleware`): its log line says so.
    func markQueued(_ wait: Duration?) {
        guard let wait else { return }
        state.withLock { $0.queued = wait }
    }

    /// Set when the request body streams upstream (`Forwarder.forwardStreaming`).
    var upload: UploadRelay? {
        get { state.withLock { $0.upload } }
        set { state.withLock { $0.upload = newValue } }
    }

    var upstreamURL: String? {
        get { state.withLock { $0.upstreamURL } }
        set { state.withLock { $0.upstreamURL = newValue } }
    }

    func markUpstreamCall(computeSeconds: Double = 0) {
        state.withLock { state in
            state.upstreamCalled = true
            state.computeSeconds += computeSeconds
        }
    }

    /// The request held an upstream slot this long, now given back: before its completion, since
    /// an algorithm call gives its slot back as its answer comes in and a streamed transfer as its
    /// last byte is handed on, inside the log step's watch of the same body.
    func markSlotHeld(_ time: Duration) {
        state.withLock { $0.slotSeconds += max(0, time.inSeconds) }
    }
}

/// A finished request's figures and what the pipeline learnt about it.
struct RequestCompletion: Sendable {
    let status: Int
    let bytesIn: Int
    let bytesOut: Int
    /// From the request's head to its answer's last byte handed to the socket (as its log line's
    /// `duration_ms`).
    let elapsed: Duration
    let client: String?
    /// The client presented the key being rotated out.
    let viaPreviousKey: Bool
    let route: String?
    let upstreamCalled: Bool
    let computeSeconds: Double
    let slotSeconds: Double
}

/// What went wrong behind a request's answer, for its log line (`RequestLogMiddleware.log`).
struct Shortfall: Sendable {
    /// The error the answer was rendered from, when it was one.
    var failure: GatewayError?
    /// What failed upstream when an expired entry answered in its place.
    var staleBecause: String?
    /// Why the cache did not keep an answer it would have.
    var notStoredBecause: String?
    /// Why the cache could not be read for the call.
    var notReadBecause: String?
    /// The upstream answered 401: it refused the server key.
    var upstreamRefusedKey = false
    /// The client went before the algorithm's answer came, and the call ran on to its end.
    var clientGone = false
    /// Not a shortfall, but told on the same line: the upstream accepted an asynchronous call
    /// (`output=void`), whose algorithm runs on outside the gateway's slots.
    var asyncAccepted = false
    /// Nor this: how long the request waited for an upstream slot, when it had to.
    var queued: Duration?
    /// Nor this: bytes of a streamed answer that waited on disk for a slow client.
    var spooledBytes = 0
}
