import Foundation

extension GatewayConfig {
    /// `upstream`: where the server-held key goes, how many calls at once, and how long each may
    /// take.
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
        /// How long a pooled upstream connection may stay idle before the gateway closes it: below
        /// the upstream's own keep-alive timeout, so that the gateway, not the far side, closes it.
        public var idleConnectionSeconds = 50
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
        /// slot is never sent, unless its answer is kept (the cache will store it, or collapsed
        /// waiters share it): such a call is sent, queued or not, and runs to its end.
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
            case connectTimeoutSeconds = "connect_timeout_seconds", idleConnectionSeconds = "idle_connection_seconds"
            case caFile = "ca_file", allowPlainHTTP = "allow_plain_http"
            case circuitBreaker = "circuit_breaker", proxy, abandonedCalls = "abandoned_calls"
        }
        public init(url: String, keyEnv: String) {
            self.url = url
            self.keyEnv = keyEnv
        }
        public init(from decoder: any Decoder) throws {
            try decoder.rejectUnknownKeys(CodingKeys.self)
            let c = try decoder.container(keyedBy: CodingKeys.self)
            url = try decoder.optional(String.self, .url, in: c) ?? url
            keyEnv = try decoder.optional(String.self, .keyEnv, in: c)
            keyFile = try decoder.optional(String.self, .keyFile, in: c)
            maxConcurrency = try decoder.optional(Int.self, .maxConcurrency, in: c) ?? maxConcurrency
            timeoutSeconds = try decoder.optional(Int.self, .timeoutSeconds, in: c) ?? timeoutSeconds
            queueTimeoutSeconds = try decoder.optional(Int.self, .queueTimeoutSeconds, in: c) ?? queueTimeoutSeconds
            connectTimeoutSeconds = try decoder.optional(Int.self, .connectTimeoutSeconds, in: c) ?? connectTimeoutSeconds
            idleConnectionSeconds = try decoder.optional(Int.self, .idleConnectionSeconds, in: c) ?? idleConnectionSeconds
            caFile = try decoder.optional(String.self, .caFile, in: c)
            allowPlainHTTP = try decoder.optional(Bool.self, .allowPlainHTTP, in: c) ?? allowPlainHTTP
            circuitBreaker = try decoder.optional(CircuitBreaker.self, .circuitBreaker, in: c) ?? circuitBreaker
            proxy = try decoder.optional(Proxy.self, .proxy, in: c)
            abandonedCalls = try decoder.optional(AbandonedCalls.self, .abandonedCalls, in: c) ?? abandonedCalls
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
            authEnv = try decoder.optional(String.self, .authEnv, in: c)
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
            failures = try decoder.optional(Int.self, .failures, in: c) ?? failures
            openSeconds = try decoder.optional(Int.self, .openSeconds, in: c) ?? openSeconds
            // Absent, it is at least `open_seconds`, so that raising that alone keeps working.
            maxOpenSeconds = try decoder.optional(Int.self, .maxOpenSeconds, in: c) ?? max(maxOpenSeconds, openSeconds)
        }

        /// How long the circuit stays open after the test requests of `failedTests` open periods
        /// in a row failed: `open_seconds` doubled for each, up to `max_open_seconds`.
        func openPeriod(afterFailedTests failedTests: Int) -> Int {
            let doubled = openSeconds << min(failedTests, 20)
            return max(openSeconds, min(doubled, maxOpenSeconds))
        }
    }
}
