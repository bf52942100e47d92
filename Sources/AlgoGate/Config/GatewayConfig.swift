import Foundation

/// The gateway's configuration, as written in YAML (`config/algogate.yaml` documents every field).
/// Every block but `upstream` and `clients` is optional; absent fields take the defaults below.
public struct GatewayConfig: Sendable, Equatable, Decodable {
    public var server = Server()
    public var upstream: Upstream
    public var limits = Limits()
    public var cache = Cache()
    public var compression = Compression()
    public var admin: Admin?
    /// Default quota for clients that do not set their own.
    public var quota = Quota()
    public var clients: [Client]

    enum CodingKeys: String, CodingKey, CaseIterable {
        case server, upstream, limits, cache, compression, admin, quota, clients
    }

    public init(upstream: Upstream, clients: [Client]) {
        self.upstream = upstream
        self.clients = clients
    }

    public init(from decoder: any Decoder) throws {
        try decoder.rejectUnknownKeys(CodingKeys.self)
        let c = try decoder.container(keyedBy: CodingKeys.self)
        server = try c.decodeIfPresent(Server.self, forKey: .server) ?? Server()
        upstream = try c.decode(Upstream.self, forKey: .upstream)
        limits = try c.decodeIfPresent(Limits.self, forKey: .limits) ?? Limits()
        cache = try c.decodeIfPresent(Cache.self, forKey: .cache) ?? Cache()
        compression = try c.decodeIfPresent(Compression.self, forKey: .compression) ?? Compression()
        admin = try c.decodeIfPresent(Admin.self, forKey: .admin)
        quota = try c.decodeIfPresent(Quota.self, forKey: .quota) ?? Quota()
        clients = try c.decode([Client].self, forKey: .clients)
    }

    public struct Server: Sendable, Equatable, Decodable {
        public var host = "0.0.0.0"
        public var port = 8080
        /// Serve HTTPS with this certificate chain and key (PEM files); absent means plain HTTP.
        public var tls: TLS?
        /// On SIGTERM: how long in-flight requests may take to finish before they are cut.
        public var drainTimeoutSeconds = 30
        /// A client connection with no request in progress, or whose request stops arriving, is
        /// closed after this long. Above the 60 s idle timeout of common load balancers (AWS ALB),
        /// so they never reuse a connection the gateway is closing.
        public var idleTimeoutSeconds = 75
        /// A client connection whose socket stays full this long (the client reads nothing of its
        /// answer) is closed, freeing the request's upstream slot (`SendTimeoutHandler`).
        public var sendTimeoutSeconds = 60
        /// Client connections open at once; beyond it, new ones wait in the listen backlog until
        /// one closes, so a flood of connections cannot use up the process's file descriptors
        /// (which upstream connections and the SQLite file need too).
        public var maxConnections = 10_000
        /// Connections the kernel holds, accepted, for the gateway to take (`listen(2)`'s
        /// backlog; Linux caps it at `net.core.somaxconn`). Above Hummingbird's 256, since a burst
        /// of clients connecting at once overflowed it (500 at once, in a test), and an overflowed
        /// connect waits a second or more for the kernel to retry it.
        public var listenBacklog = 1024
        /// The gateway's address as clients reach it (`https://algogate.example.com`), for links
        /// in answers that name the upstream (`LinkRewriter`); absent means each request's `Host`.
        /// Stored without a trailing slash.
        public var publicURL: String?
        /// Who may read `/metrics`: anyone (`open`, as Prometheus scrapes by default) or only the
        /// admin key (`admin`: the exposition names every client).
        public var metricsAccess = MetricsAccess.open

        public enum MetricsAccess: String, Sendable, Equatable, Decodable, ConfigChoice {
            case open, admin
            public init(from decoder: any Decoder) throws { self = try Self.choice(from: decoder) }
        }

        public struct TLS: Sendable, Equatable, Decodable {
            public var certFile: String
            public var keyFile: String

            enum CodingKeys: String, CodingKey, CaseIterable { case certFile = "cert_file", keyFile = "key_file" }
            public init(from decoder: any Decoder) throws {
                try decoder.rejectUnknownKeys(CodingKeys.self)
                let c = try decoder.container(keyedBy: CodingKeys.self)
                certFile = try c.decode(String.self, forKey: .certFile)
                keyFile = try c.decode(String.self, forKey: .keyFile)
            }
        }

        enum CodingKeys: String, CodingKey, CaseIterable { case host, port, tls, drainTimeoutSeconds = "drain_timeout_seconds", idleTimeoutSeconds = "idle_timeout_seconds"
            case sendTimeoutSeconds = "send_timeout_seconds", maxConnections = "max_connections", listenBacklog = "listen_backlog", publicURL = "public_url"
            case metricsAccess = "metrics_access" }
        public init() {}
        public init(from decoder: any Decoder) throws {
            try decoder.rejectUnknownKeys(CodingKeys.self)
            let c = try decoder.container(keyedBy: CodingKeys.self)
            host = try c.decodeIfPresent(String.self, forKey: .host) ?? host
            port = try c.decodeIfPresent(Int.self, forKey: .port) ?? port
            tls = try c.decodeIfPresent(TLS.self, forKey: .tls)
            drainTimeoutSeconds = try c.decodeIfPresent(Int.self, forKey: .drainTimeoutSeconds) ?? drainTimeoutSeconds
            idleTimeoutSeconds = try c.decodeIfPresent(Int.self, forKey: .idleTimeoutSeconds) ?? idleTimeoutSeconds
            sendTimeoutSeconds = try c.decodeIfPresent(Int.self, forKey: .sendTimeoutSeconds) ?? sendTimeoutSeconds
            maxConnections = try c.decodeIfPresent(Int.self, forKey: .maxConnections) ?? maxConnections
            listenBacklog = try c.decodeIfPresent(Int.self, forKey: .listenBacklog) ?? listenBacklog
            publicURL = try c.decodeIfPresent(String.self, forKey: .publicURL).map { $0.trimmingSuffix("/") }
            metricsAccess = try c.decodeIfPresent(MetricsAccess.self, forKey: .metricsAccess) ?? metricsAccess
        }
    }

    public struct Upstream: Sendable, Equatable, Decodable {
        public var url = "https://api.algorithmia.com"
        /// Environment variable holding the server-held Simple key.
        public var keyEnv: String?
        /// File holding the key (e.g. a mounted Kubernetes secret); one of `key_env`/`key_file`.
        public var keyFile: String?
        /// The account's concurrent-request limit (Algorithmia: 80).
        public var maxConcurrency = 80
        public var timeoutSeconds = 300
        /// How long a request may wait for an upstream slot before a 503.
        public var queueTimeoutSeconds = 30
        /// How long to keep trying to open a connection (the pool retries within this bound).
        public var connectTimeoutSeconds = 5
        /// PEM bundle of the CAs to trust for an https upstream instead of the system's; the
        /// upstream's certificate is always verified.
        public var caFile: String?
        /// Allows an `http://` upstream beyond loopback, which sends the server key unencrypted.
        public var allowPlainHTTP = false
        public var circuitBreaker = CircuitBreaker()
        /// An HTTP proxy every upstream connection goes through (a `CONNECT` tunnel), for networks
        /// whose only way out is one.
        public var proxy: Proxy?
        /// What becomes of an algorithm call already sent upstream when its client goes.
        public var abandonedCalls = AbandonedCalls.finish

        /// `upstream.abandoned_calls`. Either way a call whose client goes while it waits for a
        /// slot is never sent, and one whose answer the cache will store runs to its end.
        public enum AbandonedCalls: String, Sendable, Equatable, Decodable, ConfigChoice {
            /// The call runs to its end upstream, holding its slot, and its answer is read and
            /// dropped: the account never has more than `max_concurrency` calls running, whatever
            /// Algorithmia does with an algorithm whose caller has gone.
            case finish
            /// The upstream connection is closed and the slot goes to the next call at once: for
            /// an upstream that stops an algorithm whose caller goes. One that runs it on has more
            /// than `max_concurrency` calls running meanwhile.
            case cancel

            public init(from decoder: any Decoder) throws { self = try Self.choice(from: decoder) }
        }

        enum CodingKeys: String, CodingKey, CaseIterable {
            case url, keyEnv = "key_env", keyFile = "key_file", maxConcurrency = "max_concurrency"
            case timeoutSeconds = "timeout_seconds", queueTimeoutSeconds = "queue_timeout_seconds"
            case connectTimeoutSeconds = "connect_timeout_seconds", caFile = "ca_file", allowPlainHTTP = "allow_plain_http"
            case circuitBreaker = "circuit_breaker", proxy, abandonedCalls = "abandoned_calls"
        }
        public init(url: String, keyEnv: String) {
            self.url = url
            self.keyEnv = keyEnv
        }
        public init(from decoder: any Decoder) throws {
            try decoder.rejectUnknownKeys(CodingKeys.self)
            let c = try decoder.container(keyedBy: CodingKeys.self)
            url = try c.decodeIfPresent(String.self, forKey: .url) ?? url
            keyEnv = try c.decodeIfPresent(String.self, forKey: .keyEnv)
            keyFile = try c.decodeIfPresent(String.self, forKey: .keyFile)
            maxConcurrency = try c.decodeIfPresent(Int.self, forKey: .maxConcurrency) ?? maxConcurrency
            timeoutSeconds = try c.decodeIfPresent(Int.self, forKey: .timeoutSeconds) ?? timeoutSeconds
            queueTimeoutSeconds = try c.decodeIfPresent(Int.self, forKey: .queueTimeoutSeconds) ?? queueTimeoutSeconds
            connectTimeoutSeconds = try c.decodeIfPresent(Int.self, forKey: .connectTimeoutSeconds) ?? connectTimeoutSeconds
            caFile = try c.decodeIfPresent(String.self, forKey: .caFile)
            allowPlainHTTP = try c.decodeIfPresent(Bool.self, forKey: .allowPlainHTTP) ?? allowPlainHTTP
            circuitBreaker = try c.decodeIfPresent(CircuitBreaker.self, forKey: .circuitBreaker) ?? circuitBreaker
            proxy = try c.decodeIfPresent(Proxy.self, forKey: .proxy)
            abandonedCalls = try c.decodeIfPresent(AbandonedCalls.self, forKey: .abandonedCalls) ?? abandonedCalls
        }
    }

    /// `upstream.proxy`: the HTTP proxy upstream connections go through. Each connection asks it
    /// for a tunnel (`CONNECT host:port`); an https upstream's TLS runs inside the tunnel, end to
    /// end, so the proxy sees neither the key nor the calls.
    public struct Proxy: Sendable, Equatable, Decodable {
        /// `http://host[:port]` (80 when absent); no path and no credentials.
        public var url: String
        /// Environment variable holding `user:password`, sent to the proxy as Basic
        /// `Proxy-Authorization` on each `CONNECT`.
        public var authEnv: String?

        enum CodingKeys: String, CodingKey, CaseIterable { case url, authEnv = "auth_env" }
        public init(url: String, authEnv: String? = nil) {
            self.url = url
            self.authEnv = authEnv
        }
        public init(from decoder: any Decoder) throws {
            try decoder.rejectUnknownKeys(CodingKeys.self)
            let c = try decoder.container(keyedBy: CodingKeys.self)
            url = try c.decode(String.self, forKey: .url)
            authEnv = try c.decodeIfPresent(String.self, forKey: .authEnv)
        }

        /// The proxy's host and port, from a `url` that passed validation.
        public var endpoint: (host: String, port: Int)? {
            guard let url = URL(string: url), let host = url.host, !host.isEmpty else { return nil }
            return (host.trimmingCharacters(in: CharacterSet(charactersIn: "[]")), url.port ?? 80)
        }
    }

    /// `upstream.circuit_breaker`: after `failures` upstream requests in a row that got no answer,
    /// over at least a second, refuse requests at once for `open_seconds`, then let one through to
    /// test the upstream; each test that fails doubles the period, up to `max_open_seconds`.
    public struct CircuitBreaker: Sendable, Equatable, Decodable {
        /// 0 turns the breaker off.
        public var failures = 5
        public var openSeconds = 10
        public var maxOpenSeconds = 60

        enum CodingKeys: String, CodingKey, CaseIterable { case failures, openSeconds = "open_seconds", maxOpenSeconds = "max_open_seconds" }
        public init() {}
        public init(from decoder: any Decoder) throws {
            try decoder.rejectUnknownKeys(CodingKeys.self)
            let c = try decoder.container(keyedBy: CodingKeys.self)
            failures = try c.decodeIfPresent(Int.self, forKey: .failures) ?? failures
            openSeconds = try c.decodeIfPresent(Int.self, forKey: .openSeconds) ?? openSeconds
            // Absent, it is at least `open_seconds`, so that raising that alone keeps working.
            maxOpenSeconds = try c.decodeIfPresent(Int.self, forKey: .maxOpenSeconds) ?? max(maxOpenSeconds, openSeconds)
        }

        /// How long the circuit stays open after the test requests of `failedTests` open periods
        /// in a row failed: `open_seconds` doubled for each, up to `max_open_seconds`.
        func openPeriod(afterFailedTests failedTests: Int) -> Int {
            let doubled = openSeconds << min(failedTests, 20)
            return max(openSeconds, min(doubled, maxOpenSeconds))
        }
    }

    public struct Limits: Sendable, Equatable, Decodable {
        /// Algorithmia caps algorithm input at 10 MB …
        public var maxRequestBytes = 10_485_760
        /// … and output at 15 MB.
        public var maxResponseBytes = 15_728_640
        /// Algorithm input held in memory at once, across calls (`MemoryBudget`).
        public var maxBufferedBytes = 268_435_456
        /// Algorithm answers held in memory at once, across calls, until sent (`MemoryBudget`).
        public var maxBufferedAnswerBytes = 268_435_456

        enum CodingKeys: String, CodingKey, CaseIterable {
            case maxRequestBytes = "max_request_bytes", maxResponseBytes = "max_response_bytes", maxBufferedBytes = "max_buffered_bytes"
            case maxBufferedAnswerBytes = "max_buffered_answer_bytes"
        }
        public init() {}
        public init(from decoder: any Decoder) throws {
            try decoder.rejectUnknownKeys(CodingKeys.self)
            let c = try decoder.container(keyedBy: CodingKeys.self)
            maxRequestBytes = try c.decodeIfPresent(Int.self, forKey: .maxRequestBytes) ?? maxRequestBytes
            maxResponseBytes = try c.decodeIfPresent(Int.self, forKey: .maxResponseBytes) ?? maxResponseBytes
            maxBufferedBytes = try c.decodeIfPresent(Int.self, forKey: .maxBufferedBytes) ?? maxBufferedBytes
            maxBufferedAnswerBytes = try c.decodeIfPresent(Int.self, forKey: .maxBufferedAnswerBytes) ?? maxBufferedAnswerBytes
        }
    }

    public struct Cache: Sendable, Equatable, Decodable {
        public var enabled = true
        public var path = "var/algogate.sqlite"
        public var maxBytes = 1_073_741_824
        public var ttlSeconds = 604_800
        /// `shared`: entries serve every client (the upstream identity is the same); `client`:
        /// each client's entries are kept apart.
        public var scope: CacheScope = .shared
        /// Bytes of recently used entries kept in memory in front of SQLite.
        public var memoryBytes = 67_108_864
        /// Per-algorithm overrides; the first rule whose pattern matches wins.
        public var rules: [CacheRule] = []
        /// How long past expiry an entry may still answer a call whose upstream fails (RFC 5861's
        /// stale-if-error); 0 turns it off.
        public var staleIfErrorSeconds = 0
        /// Answer hits held in memory straight from the connection's event loop (`CachedHits`),
        /// rather than through the whole request pipeline; the answers are the same.
        public var fastHits = true

        enum CodingKeys: String, CodingKey, CaseIterable {
            case enabled, path, maxBytes = "max_bytes", ttlSeconds = "ttl_seconds", scope, memoryBytes = "memory_bytes", rules
            case staleIfErrorSeconds = "stale_if_error_seconds", fastHits = "fast_hits"
        }
        public init() {}
        public init(from decoder: any Decoder) throws {
            try decoder.rejectUnknownKeys(CodingKeys.self)
            let c = try decoder.container(keyedBy: CodingKeys.self)
            enabled = try c.decodeIfPresent(Bool.self, forKey: .enabled) ?? enabled
            path = try c.decodeIfPresent(String.self, forKey: .path) ?? path
            maxBytes = try c.decodeIfPresent(Int.self, forKey: .maxBytes) ?? maxBytes
            ttlSeconds = try c.decodeIfPresent(Int.self, forKey: .ttlSeconds) ?? ttlSeconds
            scope = try c.decodeIfPresent(CacheScope.self, forKey: .scope) ?? scope
            memoryBytes = try c.decodeIfPresent(Int.self, forKey: .memoryBytes) ?? memoryBytes
            rules = try c.decodeIfPresent([CacheRule].self, forKey: .rules) ?? rules
            staleIfErrorSeconds = try c.decodeIfPresent(Int.self, forKey: .staleIfErrorSeconds) ?? staleIfErrorSeconds
            fastHits = try c.decodeIfPresent(Bool.self, forKey: .fastHits) ?? fastHits
        }
    }

    public enum CacheScope: String, Sendable, Equatable, Decodable, ConfigChoice {
        case shared, client
        public init(from decoder: any Decoder) throws { self = try Self.choice(from: decoder) }
    }

    /// `{algo: "owner/name/*", ttl_seconds: N, enabled: false, scope: client}`; `*` matches one
    /// path segment or, last, the rest (so `owner/*` covers every algorithm of that owner).
    public struct CacheRule: Sendable, Equatable, Decodable {
        public var algo: String
        public var enabled: Bool?
        public var ttlSeconds: Int?
        public var scope: CacheScope?

        enum CodingKeys: String, CodingKey, CaseIterable {
            case algo, enabled, ttlSeconds = "ttl_seconds", scope
        }
        public init(from decoder: any Decoder) throws {
            try decoder.rejectUnknownKeys(CodingKeys.self)
            let c = try decoder.container(keyedBy: CodingKeys.self)
            algo = try c.decode(String.self, forKey: .algo)
            enabled = try c.decodeIfPresent(Bool.self, forKey: .enabled)
            ttlSeconds = try c.decodeIfPresent(Int.self, forKey: .ttlSeconds)
            scope = try c.decodeIfPresent(CacheScope.self, forKey: .scope)
        }

        /// Whether `owner/name/version` falls under this rule's pattern.
        public func matches(_ path: String) -> Bool {
            let pattern = algo.split(separator: "/")
            let parts = path.split(separator: "/")
            for (index, piece) in pattern.enumerated() {
                if piece == "*" && index == pattern.count - 1 { return parts.count > index }
                guard index < parts.count, piece == "*" || piece == parts[index] else { return false }
            }
            return pattern.count == parts.count
        }
    }

    public struct Compression: Sendable, Equatable, Decodable {
        /// Bodies shorter than this are sent (and cached) as they are.
        public var minBytes = 1024
        /// zlib level, 1 (fastest) to 9 (smallest).
        public var level = 6
        /// Media types worth compressing; `type/*` matches a whole family.
        public var types = ["application/json", "text/*", "application/xml", "application/javascript", "application/x-ndjson", "image/svg+xml"]

        enum CodingKeys: String, CodingKey, CaseIterable { case minBytes = "min_bytes", level, types }
        public init() {}
        public init(from decoder: any Decoder) throws {
            try decoder.rejectUnknownKeys(CodingKeys.self)
            let c = try decoder.container(keyedBy: CodingKeys.self)
            minBytes = try c.decodeIfPresent(Int.self, forKey: .minBytes) ?? minBytes
            level = try c.decodeIfPresent(Int.self, forKey: .level) ?? level
            types = try c.decodeIfPresent([String].self, forKey: .types) ?? types
        }

        /// Whether a `Content-Type` value names a type worth compressing.
        public func isCompressible(_ contentType: String?) -> Bool {
            guard let contentType else { return false }
            let mediaType = contentType.mediaType.utf8
            guard !mediaType.isEmpty else { return false }
            // Without lowercased copies: this runs on every answer.
            return types.contains { pattern in
                pattern.hasSuffix("/*") ? mediaType.hasPrefixIgnoringASCIICase(pattern.utf8.dropLast())
                                        : mediaType.equalsIgnoringASCIICase(pattern.utf8)
            }
        }
    }

    public struct Admin: Sendable, Equatable, Decodable {
        public var keySHA256: String
        /// The key being replaced, still accepted until it is removed (see `Client`).
        public var previousKeySHA256: String?

        enum CodingKeys: String, CodingKey, CaseIterable { case keySHA256 = "key_sha256", previousKeySHA256 = "previous_key_sha256" }
        public init(from decoder: any Decoder) throws {
            try decoder.rejectUnknownKeys(CodingKeys.self)
            let c = try decoder.container(keyedBy: CodingKeys.self)
            keySHA256 = try c.decode(String.self, forKey: .keySHA256)
            previousKeySHA256 = try c.decodeIfPresent(String.self, forKey: .previousKeySHA256)
        }
    }

    public struct Quota: Sendable, Equatable, Decodable {
        public var requestsPerMinute: Int?
        public var requestsPerDay: Int?
        public var maxConcurrent: Int?
        public var bytesPerDay: Int?

        enum CodingKeys: String, CodingKey, CaseIterable {
            case requestsPerMinute = "requests_per_minute", requestsPerDay = "requests_per_day"
            case maxConcurrent = "max_concurrent", bytesPerDay = "bytes_per_day"
        }
        public init() {}
        public init(from decoder: any Decoder) throws {
            try decoder.rejectUnknownKeys(CodingKeys.self)
            let c = try decoder.container(keyedBy: CodingKeys.self)
            requestsPerMinute = try c.decodeIfPresent(Int.self, forKey: .requestsPerMinute)
            requestsPerDay = try c.decodeIfPresent(Int.self, forKey: .requestsPerDay)
            maxConcurrent = try c.decodeIfPresent(Int.self, forKey: .maxConcurrent)
            bytesPerDay = try c.decodeIfPresent(Int.self, forKey: .bytesPerDay)
        }
    }

    public struct Client: Sendable, Equatable, Decodable {
        public var name: String
        /// Lowercase hex SHA-256 of the client's key; the key itself is never configured.
        public var keySHA256: String
        /// During a key rotation, the SHA-256 of the key being replaced: both keys are this client
        /// (one quota, one usage record) until the operator removes this line.
        public var previousKeySHA256: String?
        public var scopes: [Scope]
        /// Data URIs this client may touch (`data://.my/team-a/`); nil means every path.
        public var dataPrefixes: [String]?
        /// Algorithms this client may call and manage (`owner/name`, `owner/*`); nil means every one.
        public var algorithms: [String]?
        /// Web origins the key may be used from in a browser (`https://dash.example.com`, or `*`);
        /// nil: none, the key is not for browsers.
        public var corsOrigins: [String]?
        public var quota: Quota?

        enum CodingKeys: String, CodingKey, CaseIterable {
            case name, keySHA256 = "key_sha256", previousKeySHA256 = "previous_key_sha256", scopes, dataPrefixes = "data_prefixes", algorithms
            case corsOrigins = "cors_origins", quota
        }
        public init(name: String, keySHA256: String, scopes: [Scope], dataPrefixes: [String]? = nil) {
            self.name = name
            self.keySHA256 = keySHA256
            self.scopes = scopes
            self.dataPrefixes = dataPrefixes
        }
        public init(from decoder: any Decoder) throws {
            try decoder.rejectUnknownKeys(CodingKeys.self)
            let c = try decoder.container(keyedBy: CodingKeys.self)
            name = try c.decode(String.self, forKey: .name)
            keySHA256 = try c.decode(String.self, forKey: .keySHA256)
            previousKeySHA256 = try c.decodeIfPresent(String.self, forKey: .previousKeySHA256)
            scopes = try c.decode([Scope].self, forKey: .scopes)
            dataPrefixes = try c.decodeIfPresent([String].self, forKey: .dataPrefixes)
            algorithms = try c.decodeIfPresent([String].self, forKey: .algorithms)
            corsOrigins = try c.decodeIfPresent([String].self, forKey: .corsOrigins)
            quota = try c.decodeIfPresent(Quota.self, forKey: .quota)
        }
    }
}
