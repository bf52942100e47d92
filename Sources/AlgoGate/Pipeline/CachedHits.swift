import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdCore
import Logging
import NIOCore
import NIOHTTPTypes

/// Cache hits answered on the connection's event loop, the way nginx serves its cache.
///
/// Through the pipeline, a hit costs about twice what Hummingbird's bare request handling does:
/// each request is handed from the event loop to a task and back, and passes a dozen async
/// steps. Most of those steps have nothing to do for a hit held in memory. `CachedHitHandler`
/// holds a small algorithm call until it has arrived, and when it is a hit this type can prove
/// the pipeline would answer from memory, answers it from there; anything else goes on to the
/// pipeline exactly as it arrived. The checks are the pipeline's own functions, in its order:
/// key (or the connection's last match of the same key, `RememberedClient`), scope,
/// algorithms, input limits, data prefixes inside the input, cache policy and
/// `Cache-Control`, the hot tier, compression, then the quota. Whenever one of them would refuse,
/// or anything is out of the ordinary (an `Expect`, an encoded input, an answer the compression
/// step would compress), the pipeline answers, so every error comes from one place.
///
/// The answer, log line, metrics, usage and cache counters are the pipeline's: the tests run the
/// same calls both ways and compare. `cache.fast_hits: false` turns this off.
struct CachedHits: Sendable {
    /// Inputs up to this size are held to be looked up here; larger ones go straight on.
    static let maxInput = 64 * 1024

    let state: GatewayState
    let cache: ResponseCache
    let ledger: QuotaLedger
    let metrics: GatewayMetrics
    let logger: Logger
    let serverName: String
    /// How long an input may take to arrive whole and still be held here: a second (64 KiB in a
    /// second is 0.5 Mbit/s), unless a test changes it (`GatewayApp.fastHitHold`). One that takes
    /// longer goes on to the pipeline (`CachedHitHandler`).
    let hold: TimeAmount
    let now: @Sendable () -> Double

    /// Whether the request might be a hit this type can answer: worth holding until its end. Calls
    /// of unpinned versions, never cached, go straight on.
    func mayAnswer(_ head: HTTPRequest) -> Bool {
        guard head.method == .post, let path = head.path.flatMap(RouteClass.algoReference(in:)),
              let ref = AlgoRef(path: path.utf8.firstIndex(of: UInt8(ascii: "?")).map { path[..<$0] } ?? path),
              let version = ref.version, CachePolicy.isPinned(version),
              let host = head.authority, HostField.isValid(host) else { return false }
        // One pass over the fields: no `Expect`, no `Content-Encoding`, no `Origin` (a web page's
        // call: its origin is checked, and its answer given CORS fields, by the pipeline), no
        // second `Host` (the pipeline refuses it, `HostField`), at most one small length, at most
        // one `Transfer-Encoding`, reading `chunked` alone (the pipeline refuses any other,
        // `TransferCoding`).
        var length: String?
        var chunked = false
        for field in head.headerFields {
            switch field.name {
            case .expect, .contentEncoding, .origin, HostField.name: return false
            case .contentLength:
                guard length == nil else { return false }
                length = field.value
            case .transferEncoding:
                guard !chunked, TransferCoding.isChunkedAlone(field.value) else { return false }
                chunked = true
            default: continue
            }
        }
        if let length {
            guard let length = Int(length), length <= Self.maxInput else { return false }
        }
        let config = state.snapshot.config.cache
        return config.enabled && config.fastHits
    }

    /// The pipeline's answer to this request when it is a hit in memory that every check lets
    /// through, with the request counted as the pipeline counts it; nil sends it to the pipeline.
    /// `remote`: the peer's address as the log line writes it.
    /// `remembered`: the connection's last key and the client it named (see `RememberedClient`).
    /// The answer's `lease` (a large hot-tier entry's, `HotTier.Lease`) is kept until it has been
    /// written to the socket.
    func answer(_ head: HTTPRequest, body: ByteBuffer, remote: String, remembered: inout RememberedClient?)
        -> (head: HTTPResponse, body: ByteBuffer, lease: HotTier.Lease?)? {
        let started = ContinuousClock.now
        let snapshot = state.snapshot
        let config = snapshot.config
        guard config.cache.enabled, config.cache.fastHits else { return nil }
        let fields = head.headerFields
        // Authentication and authorisation (`AuthenticationMiddleware`, `AuthorizationMiddleware`).
        let uri = URI(head.path ?? "")
        guard let client = RememberedClient.client(for: fields, in: snapshot, remembered: &remembered), !client.isOperator,
              case .algo(let ref)? = try? RouteClass.classify(path: uri.path), !ref.byID else { return nil }
        let route = RouteClass.algo(ref)
        guard client.scopes.contains(route.requiredScope(for: head.method)),
              AuthorizationMiddleware.overrideRefusal(fields, query: uri.query, method: head.method) == nil,
              client.algorithms?.permits(owner: ref.owner, name: ref.name) ?? true else { return nil }
        // The input (`AlgoInputMiddleware`).
        guard (try? AlgoOptions.parse(uri.query)) != nil,
              body.readableBytes <= config.limits.maxRequestBytes, fields[values: .contentType].count <= 1,
              (try? AlgoInputMiddleware.checkDataReferences(in: body, contentType: fields.value(.contentType), client: client)) != nil
        else { return nil }
        // The cache (`CacheMiddleware`), and what the compression step would do to the answer.
        let decision = CachePolicy(config: config.cache, origin: snapshot.cacheOrigin).decide(ref: ref, query: uri.query, headers: fields, body: body, client: client.name)
        let current = now()
        guard decision.lookup, let cacheKey = decision.key, let stored = cache.lookupInMemory(cacheKey, now: current, lifetime: decision.ttlSeconds),
              decision.freshness.accepts(createdAt: stored.createdAt, expiresAt: stored.expiresAt, now: current) else { return nil }
        let coding = ContentCoding.preferred(acceptEncoding: fields[values: .acceptEncoding])
        let gzip = CacheMiddleware.sendsStoredGzip(prefersGzip: coding == .gzip, contentType: stored.contentType, compression: config.compression)
        var (response, answerBody) = CacheMiddleware.hit(stored, gzip: gzip, now: current)
        if !ResponseCompressionMiddleware.leavesAsIs(response, method: head.method, settings: config.compression) {
            // The compression step would compress this answer for a client that accepts a
            // coding (the pipeline does that), and only add `Vary` for one that accepts none.
            guard coding == nil else { return nil }
            ResponseCompressionMiddleware.addVary(&response.headers)
        }
        // The quota last: from here on the request is answered and counted (`QuotaMiddleware`).
        guard let admission = try? ledger.admit(client) else { return nil }
        cache.recordHit(cacheKey, now: current)
        // Appended: a hit's answer has none of these fields yet.
        response.headers.append(contentsOf: admission.headers)
        let requestID = RequestIDMiddleware.accept(fields.value(.requestID)) ?? RequestIDs.next()
        response.headers.append(HTTPField(name: .requestID, value: requestID))
        // What Hummingbird adds to every answer.
        response.headers.append(HTTPField(name: .date, value: HTTPDate.now()))
        response.headers.append(HTTPField(name: .server, value: serverName))

        let elapsed = ContinuousClock.now - started
        let completion = RequestCompletion(status: response.status.code, bytesIn: body.readableBytes, bytesOut: response.body.contentLength ?? 0,
                                           elapsed: elapsed, client: client.name, viaPreviousKey: client.viaPreviousKey, route: route.name,
                                           upstreamCalled: false, computeSeconds: 0, slotSeconds: 0)
        MetricsMiddleware.count(completion, cacheResult: MetricsMiddleware.cacheResult(response.headers), in: metrics)
        metrics.fastHit()
        QuotaMiddleware.record(completion, fromCache: true, client: client.name, admission: admission, in: ledger)
        RequestLogMiddleware.log(logger, requestID: requestID, client: client.name, viaPreviousKey: client.viaPreviousKey, route: route.name,
                                 method: head.method.rawValue, path: uri.path, status: completion.status, elapsed: elapsed,
                                 bytesIn: completion.bytesIn, bytesOut: completion.bytesOut, remote: remote,
                                 forwardedFor: RequestLogMiddleware.forwardedFor(fields), traceID: RequestLogMiddleware.traceID(fields))
        return (response.head, answerBody, stored.lease)
    }
}

/// The key a connection last presented, as its Authorization header, and the client it named
/// under the configuration then current. A keep-alive connection presents the same key call
/// after call, so its next hit is matched against this (in constant time, as the registry
/// matches hashes) rather than hashed and looked up again. A reload replaces the configuration,
/// and with it what this remembers: a removed or changed client is never answered from here.
struct RememberedClient {
    /// The header's value: a key, so held as a `Secret` (redacted wherever it is described).
    let authorization: Secret
    let snapshot: GatewayState.Snapshot
    let client: ClientIdentity

    /// The client the request's one Authorization header names, nil when the pipeline must
    /// answer (no key, an unknown key, two headers).
    static func client(for fields: HTTPFields, in snapshot: GatewayState.Snapshot, remembered: inout RememberedClient?) -> ClientIdentity? {
        guard var authorization = try? Credentials.authorization(in: fields) else { return nil }
        // Compared in constant time: a connection may carry several clients' calls (behind a
        // shared proxy).
        if let known = remembered, known.snapshot === snapshot {
            var knownValue = known.authorization.revealed
            let same = knownValue.withUTF8 { knownBytes in
                authorization.withUTF8 { ClientRegistry.sameBytes(UnsafeRawBufferPointer(knownBytes), UnsafeRawBufferPointer($0)) }
            }
            if same { return known.client }
        }
        guard let key = try? Credentials.key(parsing: authorization), let client = snapshot.registry.client(for: key) else { return nil }
        remembered = RememberedClient(authorization: Secret(authorization), snapshot: snapshot, client: client)
        return client
    }
}
