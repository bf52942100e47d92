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

/// The request's client and route, written once each by the steps that establish them.
final class RequestFacts: Sendable {
    struct State {
        var client: ClientIdentity?
        var route: RouteClass?
    }
    let state = Mutex(State())
}
