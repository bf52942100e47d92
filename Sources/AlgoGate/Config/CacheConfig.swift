extension GatewayConfig {
    /// `cache`: the version-pinned answer cache in SQLite, its bounds and its per-algorithm rules.
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
            enabled = try decoder.optional(Bool.self, .enabled, in: c) ?? enabled
            path = try decoder.optional(String.self, .path, in: c) ?? path
            maxBytes = try decoder.optional(Int.self, .maxBytes, in: c) ?? maxBytes
            ttlSeconds = try decoder.optional(Int.self, .ttlSeconds, in: c) ?? ttlSeconds
            scope = try decoder.optional(CacheScope.self, .scope, in: c) ?? scope
            memoryBytes = try decoder.optional(Int.self, .memoryBytes, in: c) ?? memoryBytes
            rules = try decoder.optional([CacheRule].self, .rules, in: c) ?? rules
            staleIfErrorSeconds = try decoder.optional(Int.self, .staleIfErrorSeconds, in: c) ?? staleIfErrorSeconds
            fastHits = try decoder.optional(Bool.self, .fastHits, in: c) ?? fastHits
        }
    }

    public enum CacheScope: String, Sendable, Equatable, Decodable, ConfigChoice {
        case shared, client
        public init(from decoder: any Decoder) throws { self = try Self.choice(from: decoder) }
    }

    /// `{algo: "owner/name/*", ttl_seconds: N, enabled: false, scope: client}`; `*` matches one
    /// path segment or, last, the rest (so `owner/*` covers every algorithm of that owner).
    /// `owner/name` is every version of that algorithm, as a purge and a client's `algorithms`
    /// read it (matched as written, it would match no call: every cached call names a version).
    public struct CacheRule: Sendable, Equatable, Decodable {
        public var algo: String
        public var enabled: Bool?
        public var ttlSeconds: Int?
        public var scope: CacheScope?

        enum CodingKeys: String, CodingKey, CaseIterable {
            case algo, enabled, ttlSeconds = "ttl_seconds", scope
        }
        public init(algo: String, enabled: Bool? = nil, ttlSeconds: Int? = nil, scope: CacheScope? = nil) {
            self.algo = algo
            self.enabled = enabled
            self.ttlSeconds = ttlSeconds
            self.scope = scope
        }
        public init(from decoder: any Decoder) throws {
            try decoder.rejectUnknownKeys(CodingKeys.self)
            let c = try decoder.container(keyedBy: CodingKeys.self)
            algo = try c.decode(String.self, forKey: .algo)
            enabled = try decoder.optional(Bool.self, .enabled, in: c)
            ttlSeconds = try decoder.optional(Int.self, .ttlSeconds, in: c)
            scope = try decoder.optional(CacheScope.self, .scope, in: c)
        }

        /// What the pattern asks of a call's owner, name and version, in that order: the segment
        /// as written, or nil for any.
        var constraints: [Substring?] {
            var pattern = algo.split(separator: "/", omittingEmptySubsequences: false)
            if pattern.count == 2, pattern[1] != "*" { pattern.append("*") }
            var out = pattern.prefix(3).map { $0 == "*" ? nil : Optional($0) }
            // A `*` that ends a shorter pattern stands for the rest.
            while out.count < 3 { out.append(nil) }
            return out
        }

        /// Whether every call `other` matches is matched by this rule too, so that `other`, placed
        /// after it, never applies.
        func covers(_ other: CacheRule) -> Bool {
            zip(constraints, other.constraints).allSatisfy { mine, theirs in mine == nil || mine == theirs }
        }

        /// Whether `owner/name/version` falls under this rule's pattern (read as `covers` reads it).
        public func matches(_ path: String) -> Bool {
            let parts = path.split(separator: "/", omittingEmptySubsequences: false)
            return parts.count == 3 && zip(constraints, parts).allSatisfy { wanted, part in wanted == nil || wanted == part }
        }
    }
}
