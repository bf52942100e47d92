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
    /// `also`: further checks of the decoded configuration, whose problems are named with the
    /// others (`check-config`'s look at `cache.path`).
    public static func load(path: String, environment: [String: String] = ProcessInfo.processInfo.environment,
                            slotsInForce: Int? = nil, also: (GatewayConfig) -> [ConfigError] = { _ in [] }) throws -> Loaded {
        let text: String
        do {
            text = try String(contentsOfFile: path, encoding: .utf8)
        } catch {
            throw ConfigError(field: "", message: "cannot read config file \(path): \(error.localizedDescription)")
        }
        return try load(yaml: text, environment: environment, slotsInForce: slotsInForce, also: also)
    }

    /// Refuses a configuration with every problem found (`ConfigError.others`), not only the
    /// first: its unknown fields, its values that cannot be read or are invalid, and the key,
    /// proxy credentials and TLS files it names that cannot be read.
    public static func load(yaml: String, environment: [String: String], slotsInForce: Int? = nil,
                            also: (GatewayConfig) -> [ConfigError] = { _ in [] }) throws -> Loaded {
        let (config, decodingProblems) = try decodeNamingProblems(yaml: yaml)
        var problems = decodingProblems + Self.problems(config, slotsInForce: slotsInForce) + also(config)
        func attempt<T>(_ read: () throws -> T) throws -> T? {
            do {
                return try read()
            } catch let problem as ConfigError {
                problems.append(problem)
                return nil
            }
        }
        // Without exactly one of key_env and key_file there is no key to read, and that is said already.
        let key = (config.upstream.keyEnv == nil) == (config.upstream.keyFile == nil)
            ? nil : try attempt { try upstreamKey(config.upstream, environment: environment) }
        let proxyAuth = try attempt { try proxyCredentials(config.upstream.proxy, environment: environment) } ?? nil
        // Files already found unreadable are not read again.
        let tls = problems.contains(where: { $0.field.hasPrefix("server.tls.") })
            ? nil : try attempt { try config.server.tls.map(TLSCredentials.read) } ?? nil
        if let refusal = ConfigError(problems: problems) { throw refusal }
        guard let key else { throw ConfigError(field: "upstream", message: "set exactly one of key_env and key_file") }
        return Loaded(config: config, upstreamKey: key, proxyAuth: proxyAuth, tls: tls)
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
        let (config, decodingProblems) = try decodeNamingProblems(yaml: text)
        if let refusal = ConfigError(problems: decodingProblems + problems(config)) { throw refusal }
        return config
    }

    /// The configuration and the problems met decoding it: unknown fields, and optional fields
    /// whose values cannot be read (their defaults stand in). A file that cannot be decoded at all
    /// (not YAML, a required field missing or of the wrong type) is refused with the problems met
    /// before that.
    static func decodeNamingProblems(yaml: String) throws -> (GatewayConfig, [ConfigError]) {
        let problems = ConfigProblems()
        do {
            return (try YAMLDecoder().decode(GatewayConfig.self, from: yaml, userInfo: [ConfigProblems.key: problems]), problems.found)
        } catch {
            let failure = ConfigError.describing(error)
            throw ConfigError(problems: problems.found + [failure]) ?? failure
        }
    }

    /// What Codable cannot check (ranges, formats, uniqueness, consistency), in the order
    /// checked. A check that would only repeat an earlier problem in other words (a bound
    /// measured against a value already refused) is skipped.
    static func problems(_ config: GatewayConfig, slotsInForce: Int? = nil) -> [ConfigError] {
        var problems: [ConfigError] = []
        /// Whether `condition` holds; when not, `field`'s problem is written down.
        @discardableResult
        func require(_ condition: Bool, _ field: String, _ message: String) -> Bool {
            if !condition { problems.append(ConfigError(field: field, message: message)) }
            return condition
        }
        require((0...65535).contains(config.server.port), "server.port", "must be from 0 to 65535")
        require(!config.server.host.isEmpty, "server.host", "must not be empty")
        require((0...3600).contains(config.server.drainTimeoutSeconds), "server.drain_timeout_seconds", "must be from 0 to 3600")
        require((1...3600).contains(config.server.idleTimeoutSeconds), "server.idle_timeout_seconds", "must be from 1 to 3600")
        require((1...3600).contains(config.server.sendTimeoutSeconds), "server.send_timeout_seconds", "must be from 1 to 3600")
        require((1...1_000_000).contains(config.server.maxConnections), "server.max_connections", "must be from 1 to 1000000")
        require((1...65_535).contains(config.server.listenBacklog), "server.listen_backlog", "must be from 1 to 65535")
        require(config.server.metricsAccess == .open || config.admin != nil, "server.metrics_access",
                "'admin' needs an admin key (admin.key_sha256): without one nobody could read /metrics")
        if let publicURL = config.server.publicURL {
            let url = URL(string: publicURL)
            require(url.map { ["http", "https"].contains($0.scheme?.lowercased() ?? "") && $0.host.map(LinkRewriter.isPlainHost) == true } ?? false,
                    "server.public_url", "must be an http:// or https:// URL with a host")
            require(url.map { $0.path.isEmpty && $0.query == nil && $0.fragment == nil && $0.user == nil } ?? false,
                    "server.public_url", "must be an origin only (scheme, host, optional port), with no path, query or credentials")
        }
        if let tls = config.server.tls {
            require(FileManager.default.isReadableFile(atPath: tls.certFile), "server.tls.cert_file", "cannot read \(tls.certFile)")
            require(FileManager.default.isReadableFile(atPath: tls.keyFile), "server.tls.key_file", "cannot read \(tls.keyFile)")
        }
        if let caFile = config.upstream.caFile {
            require(FileManager.default.isReadableFile(atPath: caFile), "upstream.ca_file", "cannot read \(caFile)")
            // Unchecked, a file that is not PEM would fail every upstream call, as a certificate not verified.
            require(!((try? NIOSSLCertificate.fromPEMFile(caFile)) ?? []).isEmpty, "upstream.ca_file", "\(caFile) holds no PEM certificate")
        }

        let upstream = config.upstream
        let url = URL(string: upstream.url)
        require(url.map { ["http", "https"].contains($0.scheme?.lowercased() ?? "") && $0.host != nil } ?? false,
                "upstream.url", "must be an http:// or https:// URL with a host")
        require(url?.query == nil && url?.fragment == nil, "upstream.url", "must not have a query or fragment")
        // Credentials in it would be printed wherever the URL is (check-config, the start-up and
        // reload lines); the upstream is authenticated by the server-held key alone.
        require(url.map { $0.user == nil && $0.password == nil } ?? true, "upstream.url",
                "must not hold credentials (user:password@): the gateway authenticates with the key named by key_env or key_file")
        require((upstream.keyEnv == nil) != (upstream.keyFile == nil), "upstream", "set exactly one of key_env and key_file")
        if let url, url.scheme?.lowercased() == "http", let host = url.host, !Self.isLoopback(host) {
            require(upstream.allowPlainHTTP, "upstream.url",
                    "plain http would send the server-held key unencrypted to \(host); use https://, or set upstream.allow_plain_http: true on a network you trust")
        }
        if let proxy = upstream.proxy {
            // The URL is not quoted back: it may hold credentials, the one mistake refused here.
            let proxyURL = URL(string: proxy.url)
            require(proxyURL.map { $0.user == nil && $0.password == nil } ?? true, "upstream.proxy.url",
                    "must not hold credentials: put user:password in the variable named by upstream.proxy.auth_env")
            require(proxyURL.map { $0.scheme?.lowercased() == "http" && proxy.endpoint != nil } ?? false, "upstream.proxy.url",
                    "must be an http:// URL with a host (the gateway speaks plain HTTP to the proxy and tunnels through it)")
            require(proxyURL.map { ["", "/"].contains($0.path) && $0.query == nil && $0.fragment == nil } ?? false,
                    "upstream.proxy.url", "must be the proxy's origin only (scheme, host, optional port), with no path or query")
            require(proxy.endpoint.map { (1...65535).contains($0.port) } ?? false, "upstream.proxy.url", "port must be from 1 to 65535")
            // Through a proxy even a loopback upstream's traffic, key included, passes the proxy.
            if url?.scheme?.lowercased() == "http" {
                require(upstream.allowPlainHTTP, "upstream.url",
                        "plain http through upstream.proxy would send the server-held key unencrypted through the proxy; use https://, or set upstream.allow_plain_http: true on a network you trust")
            }
        }
        let maxConcurrencyValid = require((1...10_000).contains(upstream.maxConcurrency), "upstream.max_concurrency", "must be from 1 to 10000")
        require((1...3000).contains(upstream.timeoutSeconds), "upstream.timeout_seconds", "must be from 1 to 3000 (Algorithmia's maximum)")
        require((1...300).contains(upstream.connectTimeoutSeconds), "upstream.connect_timeout_seconds", "must be from 1 to 300")
        require((1...3600).contains(upstream.idleConnectionSeconds), "upstream.idle_connection_seconds", "must be from 1 to 3600")
        let queueTimeoutValid = require((0...3600).contains(upstream.queueTimeoutSeconds), "upstream.queue_timeout_seconds", "must be from 0 to 3600")
        require((0...1000).contains(upstream.circuitBreaker.failures), "upstream.circuit_breaker.failures", "must be from 0 (off) to 1000")
        let openSecondsValid = require((1...3600).contains(upstream.circuitBreaker.openSeconds), "upstream.circuit_breaker.open_seconds", "must be from 1 to 3600")
        if openSecondsValid {
            require((upstream.circuitBreaker.openSeconds...86_400).contains(upstream.circuitBreaker.maxOpenSeconds), "upstream.circuit_breaker.max_open_seconds",
                    "must be from open_seconds (\(upstream.circuitBreaker.openSeconds)) to 86400")
        }
        // A streamed upload waiting for an upstream slot reads nothing meanwhile: the idle timeout
        // would cut it before its wait could end.
        if queueTimeoutValid {
            require(config.server.idleTimeoutSeconds > upstream.queueTimeoutSeconds, "server.idle_timeout_seconds",
                    "must be above upstream.queue_timeout_seconds (\(upstream.queueTimeoutSeconds)), or an upload waiting for an upstream slot is cut")
        }

        require(config.limits.maxRequestBytes > 0, "limits.max_request_bytes", "must be positive")
        require(config.limits.maxResponseBytes > 0, "limits.max_response_bytes", "must be positive")
        require(config.limits.maxBufferedBytes >= config.limits.maxRequestBytes, "limits.max_buffered_bytes",
                "must be at least limits.max_request_bytes (\(config.limits.maxRequestBytes)), or the largest input could never be read")
        require(config.limits.maxBufferedAnswerBytes >= config.limits.maxResponseBytes, "limits.max_buffered_answer_bytes",
                "must be at least limits.max_response_bytes (\(config.limits.maxResponseBytes)), or the largest answer could never be held")
        require((1...3600).contains(config.limits.inputTimeoutSeconds), "limits.input_timeout_seconds", "must be from 1 to 3600")
        require(Self.uploadRates.contains(config.limits.uploadMinBytesPerSecond), "limits.upload_min_bytes_per_second", Self.uploadRateRange)
        require(config.limits.spoolMaxBytes >= 0, "limits.spool_max_bytes", "must not be negative (0 turns the spool off)")
        require(!config.cache.path.isEmpty, "cache.path", "must not be empty")
        require(config.cache.maxBytes > 0, "cache.max_bytes", "must be positive")
        require(config.cache.ttlSeconds > 0, "cache.ttl_seconds", "must be positive")
        require(config.cache.staleIfErrorSeconds >= 0, "cache.stale_if_error_seconds", "must not be negative (0 turns stale answers off)")
        require(config.cache.memoryBytes >= 0, "cache.memory_bytes", "must not be negative")
        for (index, rule) in config.cache.rules.enumerated() {
            let parts = rule.algo.split(separator: "/", omittingEmptySubsequences: false)
            // One segment matches no call unless it is `*` (every algorithm).
            let algoValid = require((2...3).contains(parts.count) && parts.allSatisfy { !$0.isEmpty } || rule.algo == "*", "cache.rules[\(index)].algo",
                    "use owner/*, owner/name or owner/name/version, with * for a whole segment (e.g. owner/*/1.0.0)")
            if let ttl = rule.ttlSeconds { require(ttl > 0, "cache.rules[\(index)].ttl_seconds", "must be positive") }
            // The first rule that matches wins: one after a rule that matches all its calls is dead.
            if algoValid, let earlier = config.cache.rules[..<index].firstIndex(where: { $0.covers(rule) }) {
                require(false, "cache.rules[\(index)].algo", "'\(rule.algo)' never applies: cache.rules[\(earlier)] ('\(config.cache.rules[earlier].algo)') matches every call it would, and the first match wins; put the narrower rule first")
            }
        }
        require(config.compression.minBytes >= 0, "compression.min_bytes", "must not be negative")
        require((1...9).contains(config.compression.level), "compression.level", "must be from 1 (fastest) to 9 (smallest)")
        for (index, type) in config.compression.types.enumerated() {
            require(type.split(separator: "/").count == 2, "compression.types[\(index)]", "must be a media type such as text/* or application/json")
        }
        // Every key hash, current or previous, admits exactly one identity.
        var hashes: Set<String> = []
        func checkKeyHashes(_ current: String, _ previous: String?, field: String) {
            for (name, hash) in [("key_sha256", current), ("previous_key_sha256", previous)] {
                guard let hash, require(isSHA256Hex(hash), "\(field).\(name)", "must be 64 lowercase hex digits (sha256sum of the key)") else { continue }
                require(hashes.insert(hash).inserted, "\(field).\(name)", "the same key hash is used twice")
            }
        }
        if let admin = config.admin {
            checkKeyHashes(admin.keySHA256, admin.previousKeySHA256, field: "admin")
        }
        problems += Self.problems(config.quota, field: "quota")

        require(!config.clients.isEmpty, "clients", "list at least one client")
        var names: Set<String> = []
        var reservedTotal = 0
        var oneReservationTooLarge = false
        // Reservations are kept out of the slots the gateway runs with: on a reload, those it
        // started with, when fewer than the file now says.
        let slots = min(config.upstream.maxConcurrency, slotsInForce ?? .max)
        let slotsNamed = slots < config.upstream.maxConcurrency
            ? "the \(slots) upstream slots in force (upstream.max_concurrency's \(config.upstream.maxConcurrency) applies from the next start)"
            : "upstream.max_concurrency's \(slots) slots"
        for (index, client) in config.clients.enumerated() {
            let field = "clients[\(index)]"
            let nameProblem = Self.clientNameProblem(client.name)
            if require(nameProblem == nil, "\(field).name", nameProblem ?? "") {
                require(names.insert(client.name).inserted, "\(field).name", "duplicate client name '\(client.name)'")
            }
            checkKeyHashes(client.keySHA256, client.previousKeySHA256, field: field)
            require(!client.scopes.isEmpty, "\(field).scopes", "list at least one scope")
            for (prefixIndex, prefix) in (client.dataPrefixes ?? []).enumerated() {
                do {
                    _ = try DataURI.parse(uri: prefix)
                } catch {
                    require(false, "\(field).data_prefixes[\(prefixIndex)]", Self.message(of: error))
                }
            }
            for (patternIndex, pattern) in (client.algorithms ?? []).enumerated() {
                do {
                    _ = try AlgorithmPattern(parsing: pattern)
                } catch {
                    require(false, "\(field).algorithms[\(patternIndex)]", Self.message(of: error))
                }
            }
            for (originIndex, origin) in (client.corsOrigins ?? []).enumerated() {
                do {
                    _ = try BrowserOrigins(parsing: [origin])
                } catch {
                    require(false, "\(field).cors_origins[\(originIndex)]", error.message)
                }
            }
            if let rate = client.uploadMinBytesPerSecond {
                require(Self.uploadRates.contains(rate), "\(field).upload_min_bytes_per_second", Self.uploadRateRange)
            }
            if let quota = client.quota { problems += Self.problems(quota, field: "\(field).quota") }
            let quota = ClientRegistry.merge(client.quota, over: config.quota)
            if let reserved = quota.reservedConcurrent {
                let reservedField = client.quota?.reservedConcurrent != nil ? "\(field).quota.reserved_concurrent" : "quota.reserved_concurrent"
                if maxConcurrencyValid, !require(reserved < slots, reservedField, "\(reserved) slots for client '\(client.name)' alone would leave none of \(slotsNamed) for the others") {
                    oneReservationTooLarge = true
                }
                if let cap = quota.maxConcurrent {
                    require(reserved <= cap, reservedField,
                            "\(reserved) is more than client '\(client.name)' may have under way (max_concurrent: \(cap)), so it could never use them all")
                }
                reservedTotal += reserved
            }
        }
        // One client's reservation too large for the slots alone makes the sum so too.
        if maxConcurrencyValid, !oneReservationTooLarge {
            require(reservedTotal < slots, "clients[].quota.reserved_concurrent",
                    "the clients' reservations add up to \(reservedTotal) of \(slotsNamed); keep them below it, so the operator and clients without a reservation have a slot")
        }
        return problems
    }

    /// What `upload_min_bytes_per_second` may be, globally or for one client.
    private static let uploadRates = 0...1_073_741_824
    private static let uploadRateRange = "must be from 0 (no minimum) to 1073741824"

    /// What a parser's error says of the value it refused.
    private static func message(of error: any Error) -> String {
        (error as? GatewayError)?.message ?? "\(error)"
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

    static func problems(_ quota: GatewayConfig.Quota, field: String) -> [ConfigError] {
        var problems: [ConfigError] = []
        for (name, value) in [("requests_per_minute", quota.requestsPerMinute), ("requests_per_day", quota.requestsPerDay),
                              ("max_concurrent", quota.maxConcurrent), ("bytes_per_day", quota.bytesPerDay),
                              ("slot_seconds_per_day", quota.slotSecondsPerDay), ("slot_seconds_per_month", quota.slotSecondsPerMonth)] {
            if let value, value <= 0 { problems.append(ConfigError(field: "\(field).\(name)", message: "must be positive")) }
        }
        if let reserved = quota.reservedConcurrent, reserved < 0 {
            problems.append(ConfigError(field: "\(field).reserved_concurrent", message: "must be 0 or more"))
        }
        return problems
    }

    /// The shortest upstream key accepted.
    static let minimumKeyLength = 16

    static func upstreamKey(_ upstream: GatewayConfig.Upstream, environment: [String: String]) throws -> Secret {
        let raw: String
        if let variable = upstream.keyEnv {
            guard let value = environment[variable], !value.isEmpty else {
                throw ConfigError(field: "upstream.key_env", message: unsetVariable(variable, holding: "the key", example: "ALGOGATE_UPSTREAM_KEY"))
            }
            raw = value
        } else if let path = upstream.keyFile {
            guard let value = try? String(contentsOfFile: path, encoding: .utf8) else {
                let message = path.contains("/") || path.contains(".") ? "cannot read \(path)"
                    : "cannot read the file it names; the name is not shown, since it has no '/' or '.' and may be the key itself: key_file names the file that holds the key (/run/secrets/algogate-upstream-key, say)"
                throw ConfigError(field: "upstream.key_file", message: message)
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

    /// Why a variable a setting names, meant to hold a secret (`holding`), cannot be read: it is
    /// not set. Its name is said when it reads as one (capitals, digits and `_`, as POSIX names
    /// the shell's variables); else it may be the secret itself, pasted where its variable's name
    /// belongs, and the message, which reaches logs, does not show it.
    static func unsetVariable(_ name: String, holding secret: String, example: String) -> String {
        if !name.isEmpty, name.unicodeScalars.allSatisfy({ ("A"..."Z").contains($0) || ("0"..."9").contains($0) || $0 == "_" }) {
            return "environment variable \(name) is not set"
        }
        return "the environment variable it names is not set; the name is not shown, since it is not in capitals, digits and '_' and may be \(secret) itself: the setting names the variable that holds \(secret) (\(example), say)"
    }

    /// The proxy's credentials from the variable `upstream.proxy.auth_env` names, if it names one.
    static func proxyCredentials(_ proxy: GatewayConfig.Proxy?, environment: [String: String]) throws -> ProxyCredentials? {
        guard let variable = proxy?.authEnv else { return nil }
        guard let value = environment[variable], !value.isEmpty else {
            throw ConfigError(field: "upstream.proxy.auth_env", message: unsetVariable(variable, holding: "user:password", example: "ALGOGATE_PROXY_AUTH"))
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
