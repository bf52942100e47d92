import Foundation
import NIOSSL
import Yams

/// Reads and validates the YAML configuration and the upstream key it points at.
public enum ConfigLoader {
    /// A validated configuration with the upstream key it names, read from its variable or file,
    /// the proxy's credentials (`upstream.proxy.auth_env`) and the TLS certificate and key
    /// (`server.tls`), when it names them.
    public struct Loaded: Sendable {
        public let config: GatewayConfig
        public let upstreamKey: Secret
        public var proxyAuth: ProxyCredentials?
        /// Read and checked with the rest; nil without `server.tls` (or in a `Loaded` made by
        /// hand, whose files `GatewayState` reads).
        public var tls: TLSCredentials.Pair?

        public init(config: GatewayConfig, upstreamKey: Secret, proxyAuth: ProxyCredentials? = nil, tls: TLSCredentials.Pair? = nil) {
            self.config = config
            self.upstreamKey = upstreamKey
            self.proxyAuth = proxyAuth
            self.tls = tls
        }
    }

    /// The user and password the gateway gives its upstream proxy; the password is redacted
    /// wherever it is described.
    public struct ProxyCredentials: Sendable, Equatable {
        public let user: String
        public let password: Secret
    }

    /// `slotsInForce`: on a reload, the upstream slots the running gateway has (`max_concurrency`
    /// as it started: a change applies at the next start), which the reservations must fit too.
    public static func load(path: String, environment: [String: String] = ProcessInfo.processInfo.environment,
                            slotsInForce: Int? = nil) throws -> Loaded {
        let text: String
        do {
            text = try String(contentsOfFile: path, encoding: .utf8)
        } catch {
            throw ConfigError(field: "", message: "cannot read config file \(path): \(error.localizedDescription)")
        }
        return try load(yaml: text, environment: environment, slotsInForce: slotsInForce)
    }

    public static func load(yaml: String, environment: [String: String], slotsInForce: Int? = nil) throws -> Loaded {
        let config = try decode(yaml: yaml)
        try validate(config, slotsInForce: slotsInForce)
        return Loaded(config: config, upstreamKey: try upstreamKey(config.upstream, environment: environment),
                      proxyAuth: try proxyCredentials(config.upstream.proxy, environment: environment),
                      tls: try config.server.tls.map(TLSCredentials.read))
    }

    /// The validated configuration without its upstream key: for operator commands (cache stats,
    /// purges) that open the gateway's storage but never call the upstream.
    public static func loadWithoutKey(path: String) throws -> GatewayConfig {
        let text: String
        do {
            text = try String(contentsOfFile: path, encoding: .utf8)
        } catch {
            throw ConfigError(field: "", message: "cannot read config file \(path): \(error.localizedDescription)")
        }
        let config = try decode(yaml: text)
        try validate(config)
        return config
    }

    static func decode(yaml: String) throws -> GatewayConfig {
        do {
            return try YAMLDecoder().decode(GatewayConfig.self, from: yaml)
        } catch let error as DecodingError {
            throw ConfigError.from(error)
        } catch let error as ConfigError {
            throw error
        } catch let error as YamlError {
            throw ConfigError.from(error)
        } catch {
            throw ConfigError(field: "", message: "not valid YAML: \(error)")
        }
    }

    /// Checks what Codable cannot: ranges, formats, uniqueness, consistency.
    static func validate(_ config: GatewayConfig, slotsInForce: Int? = nil) throws {
        func require(_ condition: Bool, _ field: String, _ message: String) throws {
            if !condition { throw ConfigError(field: field, message: message) }
        }
        try require((0...65535).contains(config.server.port), "server.port", "must be from 0 to 65535")
        try require(!config.server.host.isEmpty, "server.host", "must not be empty")
        try require((0...3600).contains(config.server.drainTimeoutSeconds), "server.drain_timeout_seconds", "must be from 0 to 3600")
        try require((1...3600).contains(config.server.idleTimeoutSeconds), "server.idle_timeout_seconds", "must be from 1 to 3600")
        try require((1...3600).contains(config.server.sendTimeoutSeconds), "server.send_timeout_seconds", "must be from 1 to 3600")
        try require((1...1_000_000).contains(config.server.maxConnections), "server.max_connections", "must be from 1 to 1000000")
        try require((1...65_535).contains(config.server.listenBacklog), "server.listen_backlog", "must be from 1 to 65535")
        try require(config.server.metricsAccess == .open || config.admin != nil, "server.metrics_access",
                    "'admin' needs an admin key (admin.key_sha256): without one nobody could read /metrics")
        if let publicURL = config.server.publicURL {
            let url = URL(string: publicURL)
            try require(url.map { ["http", "https"].contains($0.scheme?.lowercased() ?? "") && $0.host.map(LinkRewriter.isPlainHost) == true } ?? false,
                        "server.public_url", "must be an http:// or https:// URL with a host")
            try require(url.map { $0.path.isEmpty && $0.query == nil && $0.fragment == nil && $0.user == nil } ?? false,
                        "server.public_url", "must be an origin only (scheme, host, optional port), with no path, query or credentials")
        }
        if let tls = config.server.tls {
            try require(FileManager.default.isReadableFile(atPath: tls.certFile), "server.tls.cert_file", "cannot read \(tls.certFile)")
            try require(FileManager.default.isReadableFile(atPath: tls.keyFile), "server.tls.key_file", "cannot read \(tls.keyFile)")
        }
        if let caFile = config.upstream.caFile {
            try require(FileManager.default.isReadableFile(atPath: caFile), "upstream.ca_file", "cannot read \(caFile)")
            // Unchecked, a file that is not PEM would fail every upstream call, as a certificate not verified.
            try require(!((try? NIOSSLCertificate.fromPEMFile(caFile)) ?? []).isEmpty, "upstream.ca_file", "\(caFile) holds no PEM certificate")
        }

        let upstream = config.upstream
        let url = URL(string: upstream.url)
        try require(url.map { ["http", "https"].contains($0.scheme?.lowercased() ?? "") && $0.host != nil } ?? false,
                    "upstream.url", "must be an http:// or https:// URL with a host")
        try require(url?.query == nil && url?.fragment == nil, "upstream.url", "must not have a query or fragment")
        // Credentials in it would be printed wherever the URL is (check-config, the start-up and
        // reload lines); the upstream is authenticated by the server-held key alone.
        try require(url.map { $0.user == nil && $0.password == nil } ?? true, "upstream.url",
                    "must not hold credentials (user:password@): the gateway authenticates with the key named by key_env or key_file")
        try require((upstream.keyEnv == nil) != (upstream.keyFile == nil), "upstream", "set exactly one of key_env and key_file")
        if let url, url.scheme?.lowercased() == "http", let host = url.host, !Self.isLoopback(host) {
            try require(upstream.allowPlainHTTP, "upstream.url",
                        "plain http would send the server-held key unencrypted to \(host); use https://, or set upstream.allow_plain_http: true on a network you trust")
        }
        if let proxy = upstream.proxy {
            // The URL is not quoted back: it may hold credentials, the one mistake refused here.
            let proxyURL = URL(string: proxy.url)
            try require(proxyURL.map { $0.user == nil && $0.password == nil } ?? true, "upstream.proxy.url",
                        "must not hold credentials: put user:password in the variable named by upstream.proxy.auth_env")
            try require(proxyURL.map { $0.scheme?.lowercased() == "http" && proxy.endpoint != nil } ?? false, "upstream.proxy.url",
                        "must be an http:// URL with a host (the gateway speaks plain HTTP to the proxy and tunnels through it)")
            try require(proxyURL.map { ["", "/"].contains($0.path) && $0.query == nil && $0.fragment == nil } ?? false,
                        "upstream.proxy.url", "must be the proxy's origin only (scheme, host, optional port), with no path or query")
            try require(proxy.endpoint.map { (1...65535).contains($0.port) } ?? false, "upstream.proxy.url", "port must be from 1 to 65535")
            // Through a proxy even a loopback upstream's traffic, key included, passes the proxy.
            if url?.scheme?.lowercased() == "http" {
                try require(upstream.allowPlainHTTP, "upstream.url",
                            "plain http through upstream.proxy would send the server-held key unencrypted through the proxy; use https://, or set upstream.allow_plain_http: true on a network you trust")
            }
        }
        try require((1...10_000).contains(upstream.maxConcurrency), "upstream.max_concurrency", "must be from 1 to 10000")
        try require((1...3000).contains(upstream.timeoutSeconds), "upstream.timeout_seconds", "must be from 1 to 3000 (Algorithmia's maximum)")
        try require((1...300).contains(upstream.connectTimeoutSeconds), "upstream.connect_timeout_seconds", "must be from 1 to 300")
        try require((1...3600).contains(upstream.idleConnectionSeconds), "upstream.idle_connection_seconds", "must be from 1 to 3600")
        try require((0...3600).contains(upstream.queueTimeoutSeconds), "upstream.queue_timeout_seconds", "must be from 0 to 3600")
        try require((0...1000).contains(upstream.circuitBreaker.failures), "upstream.circuit_breaker.failures", "must be from 0 (off) to 1000")
        try require((1...3600).contains(upstream.circuitBreaker.openSeconds), "upstream.circuit_breaker.open_seconds", "must be from 1 to 3600")
        try require((upstream.circuitBreaker.openSeconds...86_400).contains(upstream.circuitBreaker.maxOpenSeconds), "upstream.circuit_breaker.max_open_seconds",
                    "must be from open_seconds (\(upstream.circuitBreaker.openSeconds)) to 86400")
        // A streamed upload waiting for an upstream slot reads nothing meanwhile: the idle timeout
        // would cut it before its wait could end.
        try require(config.server.idleTimeoutSeconds > upstream.queueTimeoutSeconds, "server.idle_timeout_seconds",
                    "must be above upstream.queue_timeout_seconds (\(upstream.queueTimeoutSeconds)), or an upload waiting for an upstream slot is cut")

        try require(config.limits.maxRequestBytes > 0, "limits.max_request_bytes", "must be positive")
        try require(config.limits.maxResponseBytes > 0, "limits.max_response_bytes", "must be positive")
        try require(config.limits.maxBufferedBytes >= config.limits.maxRequestBytes, "limits.max_buffered_bytes",
                    "must be at least limits.max_request_bytes (\(config.limits.maxRequestBytes)), or the largest input could never be read")
        try require(config.limits.maxBufferedAnswerBytes >= config.limits.maxResponseBytes, "limits.max_buffered_answer_bytes",
                    "must be at least limits.max_response_bytes (\(config.limits.maxResponseBytes)), or the largest answer could never be held")
        try require(!config.cache.path.isEmpty, "cache.path", "must not be empty")
        try require(config.cache.maxBytes > 0, "cache.max_bytes", "must be positive")
        try require(config.cache.ttlSeconds > 0, "cache.ttl_seconds", "must be positive")
        try require(config.cache.staleIfErrorSeconds >= 0, "cache.stale_if_error_seconds", "must not be negative (0 turns stale answers off)")
        try require(config.cache.memoryBytes >= 0, "cache.memory_bytes", "must not be negative")
        for (index, rule) in config.cache.rules.enumerated() {
            let parts = rule.algo.split(separator: "/", omittingEmptySubsequences: false)
            // One segment matches no call unless it is `*` (every algorithm).
            try require((2...3).contains(parts.count) && parts.allSatisfy { !$0.isEmpty } || rule.algo == "*", "cache.rules[\(index)].algo",
                        "use owner/*, owner/name or owner/name/version, with * for a whole segment (e.g. owner/*/1.0.0)")
            if let ttl = rule.ttlSeconds { try require(ttl > 0, "cache.rules[\(index)].ttl_seconds", "must be positive") }
            // The first rule that matches wins: one after a rule that matches all its calls is dead.
            if let earlier = config.cache.rules[..<index].firstIndex(where: { $0.covers(rule) }) {
                throw ConfigError(field: "cache.rules[\(index)].algo", message: "'\(rule.algo)' never applies: cache.rules[\(earlier)] ('\(config.cache.rules[earlier].algo)') matches every call it would, and the first match wins; put the narrower rule first")
            }
        }
        try require(config.compression.minBytes >= 0, "compression.min_bytes", "must not be negative")
        try require((1...9).contains(config.compression.level), "compression.level", "must be from 1 (fastest) to 9 (smallest)")
        for (index, type) in config.compression.types.enumerated() {
            try require(type.split(separator: "/").count == 2, "compression.types[\(index)]", "must be a media type such as text/* or application/json")
        }
        // Every key hash, current or previous, admits exactly one identity.
        var hashes: Set<String> = []
        func checkKeyHashes(_ current: String, _ previous: String?, field: String) throws {
            for (name, hash) in [("key_sha256", current), ("previous_key_sha256", previous)] {
                guard let hash else { continue }
                try require(isSHA256Hex(hash), "\(field).\(name)", "must be 64 lowercase hex digits (sha256sum of the key)")
                try require(hashes.insert(hash).inserted, "\(field).\(name)", "the same key hash is used twice")
            }
        }
        if let admin = config.admin {
            try checkKeyHashes(admin.keySHA256, admin.previousKeySHA256, field: "admin")
        }
        try validate(config.quota, field: "quota")

        try require(!config.clients.isEmpty, "clients", "list at least one client")
        var names: Set<String> = []
        var reservedTotal = 0
        // Reservations are kept out of the slots the gateway runs with: on a reload, those it
        // started with, when fewer than the file now says.
        let slots = min(config.upstream.maxConcurrency, slotsInForce ?? .max)
        let slotsNamed = slots < config.upstream.maxConcurrency
            ? "the \(slots) upstream slots in force (upstream.max_concurrency's \(config.upstream.maxConcurrency) applies from the next start)"
            : "upstream.max_concurrency's \(slots) slots"
        for (index, client) in config.clients.enumerated() {
            let field = "clients[\(index)]"
            if let problem = Self.clientNameProblem(client.name) { throw ConfigError(field: "\(field).name", message: problem) }
            try require(names.insert(client.name).inserted, "\(field).name", "duplicate client name '\(client.name)'")
            try checkKeyHashes(client.keySHA256, client.previousKeySHA256, field: field)
            try require(!client.scopes.isEmpty, "\(field).scopes", "list at least one scope")
            for (prefixIndex, prefix) in (client.dataPrefixes ?? []).enumerated() {
                do {
                    _ = try DataURI.parse(uri: prefix)
                } catch let error as GatewayError {
                    throw ConfigError(field: "\(field).data_prefixes[\(prefixIndex)]", message: error.message)
                }
            }
            for (patternIndex, pattern) in (client.algorithms ?? []).enumerated() {
                do {
                    _ = try AlgorithmPattern(parsing: pattern)
                } catch let error as GatewayError {
                    throw ConfigError(field: "\(field).algorithms[\(patternIndex)]", message: error.message)
                }
            }
            for (originIndex, origin) in (client.corsOrigins ?? []).enumerated() {
                do {
                    _ = try BrowserOrigins(parsing: [origin])
                } catch {
                    throw ConfigError(field: "\(field).cors_origins[\(originIndex)]", message: error.message)
                }
            }
            if let quota = client.quota { try validate(quota, field: "\(field).quota") }
            let quota = ClientRegistry.merge(client.quota, over: config.quota)
            if let reserved = quota.reservedConcurrent {
                let reservedField = client.quota?.reservedConcurrent != nil ? "\(field).quota.reserved_concurrent" : "quota.reserved_concurrent"
                try require(reserved < slots, reservedField, "\(reserved) slots for client '\(client.name)' alone would leave none of \(slotsNamed) for the others")
                if let cap = quota.maxConcurrent {
                    try require(reserved <= cap, reservedField,
                                "\(reserved) is more than client '\(client.name)' may have under way (max_concurrent: \(cap)), so it could never use them all")
                }
                reservedTotal += reserved
            }
        }
        try require(reservedTotal < slots, "clients[].quota.reserved_concurrent",
                    "the clients' reservations add up to \(reservedTotal) of \(slotsNamed); keep them below it, so the operator and clients without a reservation have a slot")
    }

    /// What is wrong with a client's name, or nil: the configuration and `keygen` check it alike.
    public static func clientNameProblem(_ name: String) -> String? {
        if name.isEmpty || !name.allSatisfy({ $0.isLetter || $0.isNumber || "-_.".contains($0) }) {
            return "use letters, digits, '-', '_' and '.'"
        }
        if name == "admin" {
            return "'admin' names the operator (the admin key) in logs, metrics, usage and quotas; choose another name"
        }
        return nil
    }

    static func validate(_ quota: GatewayConfig.Quota, field: String) throws {
        for (name, value) in [("requests_per_minute", quota.requestsPerMinute), ("requests_per_day", quota.requestsPerDay),
                              ("max_concurrent", quota.maxConcurrent), ("bytes_per_day", quota.bytesPerDay)] {
            if let value, value <= 0 { throw ConfigError(field: "\(field).\(name)", message: "must be positive") }
        }
        if let reserved = quota.reservedConcurrent, reserved < 0 {
            throw ConfigError(field: "\(field).reserved_concurrent", message: "must be 0 or more")
        }
    }

    /// The shortest upstream key accepted.
    static let minimumKeyLength = 16

    static func upstreamKey(_ upstream: GatewayConfig.Upstream, environment: [String: String]) throws -> Secret {
        let raw: String
        if let variable = upstream.keyEnv {
            guard let value = environment[variable], !value.isEmpty else {
                throw ConfigError(field: "upstream.key_env", message: "environment variable \(variable) is not set")
            }
            raw = value
        } else if let path = upstream.keyFile {
            guard let value = try? String(contentsOfFile: path, encoding: .utf8) else {
                throw ConfigError(field: "upstream.key_file", message: "cannot read \(path)")
            }
            raw = value
        } else {
            throw ConfigError(field: "upstream", message: "set exactly one of key_env and key_file")
        }
        let key = raw.trimmingCharacters(in: .whitespacesAndNewlines)
        let field = upstream.keyEnv != nil ? "upstream.key_env" : "upstream.key_file"
        for scheme in ["Simple ", "Bearer "] where key.lowercased().hasPrefix(scheme.lowercased()) {
            throw ConfigError(field: field, message: "give the key alone, without '\(scheme.dropLast())': the gateway sends it as Authorization: Simple KEY")
        }
        guard !key.isEmpty, key.allSatisfy({ $0.isASCII && !$0.isWhitespace && !$0.isNewline }) else {
            throw ConfigError(field: field,
                              message: "the upstream key is empty or has spaces or non-ASCII characters")
        }
        // The gateway withholds any answer, and redacts any log line, in which the key turns up:
        // a short one turns up in ordinary text. Algorithmia's keys are far longer.
        guard key.utf8.count >= minimumKeyLength else {
            throw ConfigError(field: field,
                              message: "the upstream key is \(key.utf8.count) characters long, under \(minimumKeyLength): it would turn up in ordinary answers, which the gateway withholds wherever the key appears; use the account's API key")
        }
        return Secret(key)
    }

    /// The proxy's credentials from the variable `upstream.proxy.auth_env` names, if it names one.
    static func proxyCredentials(_ proxy: GatewayConfig.Proxy?, environment: [String: String]) throws -> ProxyCredentials? {
        guard let variable = proxy?.authEnv else { return nil }
        guard let value = environment[variable], !value.isEmpty else {
            throw ConfigError(field: "upstream.proxy.auth_env", message: "environment variable \(variable) is not set")
        }
        // Not quoted back: it is a password.
        guard let colon = value.firstIndex(of: ":"), colon != value.startIndex,
              !value.contains(where: { $0.isNewline }) else {
            throw ConfigError(field: "upstream.proxy.auth_env", message: "environment variable \(variable) must hold user:password")
        }
        return ProxyCredentials(user: String(value[..<colon]), password: Secret(String(value[value.index(after: colon)...])))
    }

    public static func isSHA256Hex(_ text: String) -> Bool {
        text.count == 64 && text.allSatisfy { ("0"..."9").contains($0) || ("a"..."f").contains($0) }
    }
}
