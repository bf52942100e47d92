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
        server = try decoder.optional(Server.self, .server, in: c) ?? Server()
        upstream = try c.decode(Upstream.self, forKey: .upstream)
        limits = try decoder.optional(Limits.self, .limits, in: c) ?? Limits()
        cache = try decoder.optional(Cache.self, .cache, in: c) ?? Cache()
        compression = try decoder.optional(Compression.self, .compression, in: c) ?? Compression()
        admin = try decoder.optional(Admin.self, .admin, in: c)
        quota = try decoder.optional(Quota.self, .quota, in: c) ?? Quota()
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
            host = try decoder.optional(String.self, .host, in: c) ?? host
            port = try decoder.optional(Int.self, .port, in: c) ?? port
            tls = try decoder.optional(TLS.self, .tls, in: c)
            drainTimeoutSeconds = try decoder.optional(Int.self, .drainTimeoutSeconds, in: c) ?? drainTimeoutSeconds
            idleTimeoutSeconds = try decoder.optional(Int.self, .idleTimeoutSeconds, in: c) ?? idleTimeoutSeconds
            sendTimeoutSeconds = try decoder.optional(Int.self, .sendTimeoutSeconds, in: c) ?? sendTimeoutSeconds
            maxConnections = try decoder.optional(Int.self, .maxConnections, in: c) ?? maxConnections
            listenBacklog = try decoder.optional(Int.self, .listenBacklog, in: c) ?? listenBacklog
            publicURL = try decoder.optional(String.self, .publicURL, in: c).map { $0.trimmingSuffix("/") }
            metricsAccess = try decoder.optional(MetricsAccess.self, .metricsAccess, in: c) ?? metricsAccess
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
        /// How long an algorithm input may take to arrive whole once room is held for it
        /// (`AlgoInputMiddleware`), so that a client trickling its input cannot hold that room.
        public var inputTimeoutSeconds = 60
        /// The least rate a streamed upload must keep while the gateway waits for it (`UploadRelay`),
        /// so that a client trickling an upload cannot hold its upstream slot; 0: no minimum.
        public var uploadMinBytesPerSecond = 1024
        /// What downloads waiting for slow clients may hold on disk at once, beside the state
        /// file (`SpoolPipe`), so the upstream exchange ends when the upstream has sent them; 0: none.
        public var spoolMaxBytes = 1_073_741_824

        enum CodingKeys: String, CodingKey, CaseIterable {
            case maxRequestBytes = "max_request_bytes", maxResponseBytes = "max_response_bytes", maxBufferedBytes = "max_buffered_bytes"
            case maxBufferedAnswerBytes = "max_buffered_answer_bytes", inputTimeoutSeconds = "input_timeout_seconds"
            case uploadMinBytesPerSecond = "upload_min_bytes_per_second", spoolMaxBytes = "spool_max_bytes"
        }
        public init() {}
        public init(from decoder: any Decoder) throws {
            try decoder.rejectUnknownKeys(CodingKeys.self)
            let c = try decoder.container(keyedBy: CodingKeys.self)
            maxRequestBytes = try decoder.optional(Int.self, .maxRequestBytes, in: c) ?? maxRequestBytes
            maxResponseBytes = try decoder.optional(Int.self, .maxResponseBytes, in: c) ?? maxResponseBytes
            maxBufferedBytes = try decoder.optional(Int.self, .maxBufferedBytes, in: c) ?? maxBufferedBytes
            maxBufferedAnswerBytes = try decoder.optional(Int.self, .maxBufferedAnswerBytes, in: c) ?? maxBufferedAnswerBytes
            inputTimeoutSeconds = try decoder.optional(Int.self, .inputTimeoutSeconds, in: c) ?? inputTimeoutSeconds
            uploadMinBytesPerSecond = try decoder.optional(Int.self, .uploadMinBytesPerSecond, in: c) ?? uploadMinBytesPerSecond
            spoolMaxBytes = try decoder.optional(Int.self, .spoolMaxBytes, in: c) ?? spoolMaxBytes
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
            minBytes = try decoder.optional(Int.self, .minBytes, in: c) ?? minBytes
            level = try decoder.optional(Int.self, .level, in: c) ?? level
            types = try decoder.optional([String].self, .types, in: c) ?? types
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
            previousKeySHA256 = try decoder.optional(String.self, .previousKeySHA256, in: c)
        }
    }

    public struct Quota: Sendable, Equatable, Decodable {
        public var requestsPerMinute: Int?
        public var requestsPerDay: Int?
        public var maxConcurrent: Int?
        /// Upstream slots kept for this client alone: others may not take the last ones it has
        /// not used (`ConcurrencyGate`).
        public var reservedConcurrent: Int?
        public var bytesPerDay: Int?
        /// Seconds the client's calls may hold the account's upstream slots in a UTC day (usage's
        /// `slot_seconds`); beyond it, only answers from the cache (`QuotaLedger.admitUpstream`).
        public var slotSecondsPerDay: Int?
        /// The same over the calendar month (UTC).
        public var slotSecondsPerMonth: Int?

        enum CodingKeys: String, CodingKey, CaseIterable {
            case requestsPerMinute = "requests_per_minute", requestsPerDay = "requests_per_day"
            case maxConcurrent = "max_concurrent", reservedConcurrent = "reserved_concurrent", bytesPerDay = "bytes_per_day"
            case slotSecondsPerDay = "slot_seconds_per_day", slotSecondsPerMonth = "slot_seconds_per_month"
        }
        public init() {}
        public init(from decoder: any Decoder) throws {
            try decoder.rejectUnknownKeys(CodingKeys.self)
            let c = try decoder.container(keyedBy: CodingKeys.self)
            requestsPerMinute = try decoder.optional(Int.self, .requestsPerMinute, in: c)
            requestsPerDay = try decoder.optional(Int.self, .requestsPerDay, in: c)
            maxConcurrent = try decoder.optional(Int.self, .maxConcurrent, in: c)
            reservedConcurrent = try decoder.optional(Int.self, .reservedConcurrent, in: c)
            bytesPerDay = try decoder.optional(Int.self, .bytesPerDay, in: c)
            slotSecondsPerDay = try decoder.optional(Int.self, .slotSecondsPerDay, in: c)
            slotSecondsPerMonth = try decoder.optional(Int.self, .slotSecondsPerMonth, in: c)
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
        /// Whether the client may make asynchronous algorithm calls (`output=void`); nil: it may.
        public var asyncCalls: Bool?
        /// The least rate this client's uploads must keep, over `limits.upload_min_bytes_per_second`
        /// (0: none), for a team that streams a slow source; nil: the global one.
        public var uploadMinBytesPerSecond: Int?
        public var quota: Quota?

        enum CodingKeys: String, CodingKey, CaseIterable {
            case name, keySHA256 = "key_sha256", previousKeySHA256 = "previous_key_sha256", scopes, dataPrefixes = "data_prefixes", algorithms
            case corsOrigins = "cors_origins", asyncCalls = "async_calls", uploadMinBytesPerSecond = "upload_min_bytes_per_second", quota
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
            previousKeySHA256 = try decoder.optional(String.self, .previousKeySHA256, in: c)
            scopes = try c.decode([Scope].self, forKey: .scopes)
            dataPrefixes = try decoder.optional([String].self, .dataPrefixes, in: c)
            algorithms = try decoder.optional([String].self, .algorithms, in: c)
            corsOrigins = try decoder.optional([String].self, .corsOrigins, in: c)
            asyncCalls = try decoder.optional(Bool.self, .asyncCalls, in: c)
            uploadMinBytesPerSecond = try decoder.optional(Int.self, .uploadMinBytesPerSecond, in: c)
            quota = try decoder.optional(Quota.self, .quota, in: c)
        }
    }
}
