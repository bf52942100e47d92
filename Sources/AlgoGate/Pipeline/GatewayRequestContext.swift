import Hummingbird
import Synchronization

/// Per-request state the pipeline fills in as the request passes each step.
public struct GatewayRequestContext: RequestContext {
    public var coreContext: CoreRequestContextStorage
    /// `X-Request-ID`, taken from the client when well-formed, else generated.
    public var requestID = ""
    /// What later steps learn, shared by reference so outer steps (the log line) see it too.
    let facts = RequestFacts()

    public init(source: ApplicationRequestContextSource) {
        self.coreContext = .init(source: source)
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
}

/// What the pipeline learns about a request, shared by every step's copy of the context: the
/// client and route, whether an upstream call was made, and who wants to hear when it ends.
final class RequestFacts: Sendable {
    struct State {
        var client: ClientIdentity?
        var route: RouteClass?
        var upstreamCalled = false
        var computeSeconds = 0.0
        var completions: [@Sendable (RequestCompletion) -> Void] = []
    }
    let state = Mutex(State())

    /// Runs `handler` once the response has been sent (or failed), with its figures.
    func onCompletion(_ handler: @escaping @Sendable (RequestCompletion) -> Void) {
        state.withLock { $0.completions.append(handler) }
    }

    func complete(_ completion: RequestCompletion) {
        for handler in state.withLock({ $0.completions }) { handler(completion) }
    }

    func markUpstreamCall(computeSeconds: Double = 0) {
        state.withLock { state in
            state.upstreamCalled = true
            state.computeSeconds += computeSeconds
        }
    }
}

/// A finished request's figures, as the log line reports them.
struct RequestCompletion: Sendable {
    let status: Int
    let bytesIn: Int
    let bytesOut: Int
    let duration: Duration
}
