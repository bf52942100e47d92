import Hummingbird

/// Matches the request's key to a configured client. The gateway's open routes (`/healthz`,
/// `/readyz`, and `/metrics` unless `server.metrics_access` is `admin`) need no key; everything
/// else does. A request from a web page (it carries `Origin`) is refused unless the client's
/// `cors_origins` list that page's origin.
struct AuthenticationMiddleware: RouterMiddleware {
    typealias Context = GatewayRequestContext
    let registry: @Sendable () -> ClientRegistry
    /// `/metrics` needs the admin key (`server.metrics_access: admin`).
    let metricsNeedKey: @Sendable () -> Bool
    /// The account's key, which the gateway sends upstream: a client presenting it is refused as
    /// any unknown key, and the operator told (`accountKeyPresented`).
    let upstreamKey: @Sendable () -> Secret
    let metrics: GatewayMetrics
    static let openPaths: Set<String> = ["/healthz", "/readyz", "/metrics"]
    static let probePaths: Set<String> = ["/healthz", "/readyz"]

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        try authenticate(request, context: context)
        return try await next(request, context)
    }

    /// Sets `context.client`, or throws the refusal; open routes pass with no client. Kept out of
    /// `handle` (`@inline(never)`): what an async function holds goes in its frame, allocated for
    /// every request that passes through it, and a synchronous function's stays on the thread's
    /// stack (see `Benchmarks/inflight.sh`).
    @inline(never)
    func authenticate(_ request: Request, context: Context) throws {
        // Refused before credentials: a client that takes the gateway for a proxy sends none.
        if request.method == .connect || request.method == .trace { throw GatewayError.unsupported(request.method) }
        if let refusal = TransferCoding.refusal(request.headers) { throw refusal }
        let path = request.uri.path
        // Health probes are answered whatever their Host: an old probe that leaves it out must not
        // take a sound replica out of rotation.
        if !Self.probePaths.contains(path), let refusal = HostField.refusal(request.head) { throw refusal }
        let keyedMetrics = path == "/metrics" && metricsNeedKey()
        guard !Self.openPaths.contains(path) || keyedMetrics else { return }
        // Prefixes matched in bytes, as the router and the upstream match them (`dropPrefix`).
        guard path.dropPrefix("/v1/") != nil || path.dropPrefix("/_admin/") != nil || path.dropPrefix("/_gateway/") != nil || keyedMetrics else {
            throw ErrorMiddleware.noSuchEndpoint(path)
        }
        let key = try Credentials.key(from: request.headers)
        guard let client = registry().client(for: key) else {
            if ClientRegistry.sameKey(key, upstreamKey()) { accountKeyPresented(context: context) }
            throw GatewayError.unauthorized("authorization failed: unknown algogate key")
        }
        context.client = client
        // A browser names the page's origin: the key must be one for that site (`cors_origins`).
        if let origin = request.headers[.origin], !client.corsOrigins.permits(origin) {
            throw GatewayError.forbidden("client '\(client.name)' may not be used from the web page at \(origin): its cors_origins do not list it")
        }
    }

    /// A request that presented the account's own key. The gateway exists so that only it holds
    /// that key; in a team's client (or anyone's) it has leaked, and it reaches Algorithmia
    /// without the gateway's checks. The request is refused as any unknown key (the answer says
    /// nothing of it), and the operator is told: a warning and `algogate_account_key_presented_total`.
    private func accountKeyPresented(context: Context) {
        metrics.accountKeyPresented()
        context.lineLogger.warning("a request presented the account's upstream key as its own (refused as an unknown key): the key has reached someone who should not have it; rotate it at Algorithmia and in upstream.key_env or upstream.key_file", metadata: [
            "remote": .string(PeerAddresses.logged(context.remoteAddress)),
        ])
    }
}
