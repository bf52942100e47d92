@testable import AlgoGate
import AlgoTestSupport
import Foundation
import Testing

@Suite struct ConfigTests {
    static let hashA = String(repeating: "a", count: 64)
    static let hashB = String(repeating: "b", count: 64)
    static let env = ["UP_KEY": "upstream-key-0123"]

    static func yaml(_ body: String) -> String {
        """
        upstream:
          url: http://127.0.0.1:9000
          key_env: UP_KEY
        \(body)
        """
    }

    static func refusal(_ yaml: String, environment: [String: String] = env) -> ConfigError? {
        do {
            _ = try ConfigLoader.load(yaml: yaml, environment: environment)
            return nil
        } catch let error as ConfigError {
            return error
        } catch {
            return ConfigError(field: "?", message: "\(error)")
        }
    }

    @Test func aMinimalConfigTakesTheDocumentedDefaults() throws {
        let loaded = try ConfigLoader.load(yaml: Self.yaml("clients: [{name: a, key_sha256: \"\(Self.hashA)\", scopes: [algo]}]"), environment: Self.env)
        let config = loaded.config
        #expect(config.server.host == "0.0.0.0" && config.server.port == 8080)
        #expect(config.upstream.maxConcurrency == 80 && config.upstream.timeoutSeconds == 300)
        #expect(config.upstream.abandonedCalls == .finish)
        #expect(config.limits.maxRequestBytes == 10_485_760 && config.limits.maxResponseBytes == 15_728_640)
        #expect(config.limits.maxBufferedBytes == 268_435_456 && config.limits.maxBufferedAnswerBytes == 268_435_456)
        #expect(config.cache.path == "var/algogate.sqlite" && config.cache.maxBytes == 1_073_741_824 && config.cache.ttlSeconds == 604_800)
        #expect(config.compression.minBytes == 1024)
        #expect(config.clients[0].dataPrefixes == nil)
        #expect(config.server.publicURL == nil)
        #expect(config.server.idleTimeoutSeconds == 75 && config.server.sendTimeoutSeconds == 60)
        #expect(try ConfigLoader.load(yaml: Self.yaml("server: {public_url: \"https://algogate.example.com:8443/\"}\nclients: [{name: a, key_sha256: \"\(Self.hashA)\", scopes: [algo]}]"),
                                      environment: Self.env).config.server.publicURL == "https://algogate.example.com:8443")
        #expect(loaded.upstreamKey.revealed == "upstream-key-0123")
        #expect("\(loaded.upstreamKey)" == "<redacted>")
    }

    @Test func theDocumentedExampleAndTheDemoConfigAreValid() throws {
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        let example = try ConfigLoader.load(path: root.appendingPathComponent("config/algogate.yaml").path, environment: ["ALGOGATE_UPSTREAM_KEY": "upstream-key-0123"])
        #expect(example.config.clients.map(\.name) == ["team-a"])
        #expect(example.config.cache.fastHits && GatewayConfig.Cache().fastHits)
        #expect(example.config.limits.uploadMinBytesPerSecond == 1024 && GatewayConfig.Limits().uploadMinBytesPerSecond == 1024)
        let demo = try ConfigLoader.load(path: root.appendingPathComponent("config/demo.yaml").path, environment: ["ALGOGATE_DEMO_UPSTREAM_KEY": "upstream-key-0123"])
        #expect(demo.config.clients.map(\.name) == ["team-a", "team-b"])
    }

    @Test func mistakesAreRefusedNamingTheField() {
        let client = "clients: [{name: a, key_sha256: \"\(Self.hashA)\", scopes: [algo]}]"
        let cases: [(String, String, [String: String])] = [
            (Self.yaml("upstream_typo: 1\n" + client), "upstream_typo: unknown field", Self.env),
            (Self.yaml("limits: {max_request_byte: 5}\n" + client), "limits.max_request_byte: unknown field; did you mean max_request_bytes?", Self.env),
            // Unknown fields are refused naming the one likely meant, where one is close.
            ("upstream: {url: 'http://127.0.0.1', key_env: UP_KEY, max_concurency: 8}\n" + client, "upstream.max_concurency: unknown field; did you mean max_concurrency?", Self.env),
            ("upstream: {url: 'http://127.0.0.1', key_env: UP_KEY, maxConcurrency: 8}\n" + client, "upstream.maxConcurrency: unknown field; did you mean max_concurrency?", Self.env),
            ("upstream: {url: 'http://127.0.0.1', key_env: UP_KEY, timeout: 60}\n" + client, "upstream.timeout: unknown field; did you mean timeout_seconds?", Self.env),
            // Beside what an unknown field leaves missing.
            ("upstream: {url: 'http://127.0.0.1', key: upstream-key-0123}\n" + client,
             "2 problems: upstream.key: unknown field; did you mean key_env or key_file?; upstream: set exactly one of key_env and key_file", Self.env),
            (Self.yaml("cache: {ttl: 60}\n" + client), "cache.ttl: unknown field; did you mean ttl_seconds?", Self.env),
            (Self.yaml("clients: [{name: a, key: plain-key, scopes: [algo]}]"), "2 problems: clients[0].key: unknown field; did you mean key_sha256?; clients[0].key_sha256: required field is missing", Self.env),
            (Self.yaml("clients: [{name: a, key_sha256: \"\(Self.hashA)\", scope: [algo]}]"), "2 problems: clients[0].scope: unknown field; did you mean scopes?; clients[0].scopes: required field is missing", Self.env),
            (Self.yaml("clients: [{name: a, key_sha256: \"\(Self.hashA)\", scopes: [algo], data-prefixes: [\"data://.my/a/\"]}]"),
             "clients[0].data-prefixes: unknown field; did you mean data_prefixes?", Self.env),
            (Self.yaml("server: {port: eighty}\n" + client), "server.port: expected a whole number", Self.env),
            (Self.yaml("server: {public_url: algogate.example.com}\n" + client), "server.public_url: must be an http:// or https:// URL with a host", Self.env),
            (Self.yaml("server: {public_url: \"https://algogate.example.com/base\"}\n" + client),
             "server.public_url: must be an origin only (scheme, host, optional port), with no path, query or credentials", Self.env),
            (Self.yaml("server: {public_url: \"https://user:pw@algogate.example.com\"}\n" + client),
             "server.public_url: must be an origin only (scheme, host, optional port), with no path, query or credentials", Self.env),
            (Self.yaml("limits: {max_request_bytes: 2000, max_buffered_bytes: 1999}\n" + client),
             "limits.max_buffered_bytes: must be at least limits.max_request_bytes (2000), or the largest input could never be read", Self.env),
            (Self.yaml("limits: {max_response_bytes: 3000, max_buffered_answer_bytes: 2999}\n" + client),
             "limits.max_buffered_answer_bytes: must be at least limits.max_response_bytes (3000), or the largest answer could never be held", Self.env),
            (Self.yaml("limits: {input_timeout_seconds: 0}\n" + client), "limits.input_timeout_seconds: must be from 1 to 3600", Self.env),
            (Self.yaml("limits: {upload_min_bytes_per_second: -1}\n" + client), "limits.upload_min_bytes_per_second: must be from 0 (no minimum) to 1073741824", Self.env),
            (Self.yaml("limits: {spool_max_bytes: -1}\n" + client), "limits.spool_max_bytes: must not be negative (0 turns the spool off)", Self.env),
            (Self.yaml("limits: {spool_max_bytes: 1.5}\n" + client), "limits.spool_max_bytes: expected a whole number", Self.env),
            (Self.yaml("clients: [{name: a, key_sha256: \"\(Self.hashA)\", scopes: [data:write], upload_min_bytes_per_second: 1073741825}]"),
             "clients[0].upload_min_bytes_per_second: must be from 0 (no minimum) to 1073741824", Self.env),
            (Self.yaml("cache: {fast_hits: sometimes}\n" + client), "cache.fast_hits: expected true or false", Self.env),
            ("upstream: {url: 'http://127.0.0.1', key_env: UP_KEY, abandoned_calls: stop}\n" + client, "upstream.abandoned_calls: unknown value 'stop'; use finish or cancel", Self.env),
            (Self.yaml("server: {metrics_access: closed}\n" + client), "server.metrics_access: unknown value 'closed'; use open or admin", Self.env),
            (Self.yaml("cache: {rules: [{algo: \"a/*\", scope: team}]}\n" + client), "cache.rules[0].scope: unknown value 'team'; use shared or client", Self.env),
            ("upstream: {url: 'https://user:hunter2@api.algorithmia.com', key_env: UP_KEY}\n" + client,
             "upstream.url: must not hold credentials (user:password@): the gateway authenticates with the key named by key_env or key_file", Self.env),
            (Self.yaml("cache: {rules: [{algo: \"*\", ttl_seconds: 5}, {algo: \"demo\", enabled: false}]}\n" + client),
             "cache.rules[1].algo: use owner/*, owner/name or owner/name/version, with * for a whole segment (e.g. owner/*/1.0.0)", Self.env),
            (Self.yaml("cache: {rules: [{algo: \"demo/*\", ttl_seconds: 5}, {algo: \"demo/Hello\", enabled: false}]}\n" + client),
             "cache.rules[1].algo: 'demo/Hello' never applies: cache.rules[0] ('demo/*') matches every call it would, and the first match wins; put the narrower rule first", Self.env),
            (Self.yaml("cache: {rules: [{algo: \"a/b/1.0.0\", ttl_seconds: 5}, {algo: \"a/b\", ttl_seconds: 9}, {algo: \"a/*/1.0.0\", enabled: false}, {algo: \"a/b/1.0.0\", enabled: false}]}\n" + client),
             "cache.rules[3].algo: 'a/b/1.0.0' never applies: cache.rules[0] ('a/b/1.0.0') matches every call it would, and the first match wins; put the narrower rule first", Self.env),
            (Self.yaml("cache: {rules: [{algo: \"*/*/1.0.0\", ttl_seconds: 5}, {algo: \"a/b\", ttl_seconds: 9}, {algo: \"a/*\", enabled: false}, {algo: \"*\", ttl_seconds: 1}, {algo: \"x/y/2.0.0\"}]}\n" + client),
             "cache.rules[4].algo: 'x/y/2.0.0' never applies: cache.rules[3] ('*') matches every call it would, and the first match wins; put the narrower rule first", Self.env),
            (Self.yaml("cache: {rules: [{algo: \"demo/Hello/0.1.0/x\", enabled: false}]}\n" + client),
             "cache.rules[0].algo: use owner/*, owner/name or owner/name/version, with * for a whole segment (e.g. owner/*/1.0.0)", Self.env),
            (Self.yaml("server: {send_timeout_seconds: 0}\n" + client), "server.send_timeout_seconds: must be from 1 to 3600", Self.env),
            (Self.yaml("clients: [{name: a, key_sha256: \"\(Self.hashA)\", scopes: [algo]}]")
                .replacingOccurrences(of: "key_env: UP_KEY", with: "key_env: UP_KEY\n  idle_connection_seconds: 0"),
             "upstream.idle_connection_seconds: must be from 1 to 3600", Self.env),
            (Self.yaml("clients: [{name: a, key_sha256: \"\(Self.hashA)\", scopes: [algo], colour: red}]"), "clients[0].colour: unknown field", Self.env),
            (Self.yaml("clients: [{name: a, key_sha256: \"\(Self.hashA)\", scopes: [algo], async_calls: sometimes}]"), "clients[0].async_calls: expected true or false", Self.env),
            (Self.yaml("clients: [{name: a, key_sha256: \"\(Self.hashA)\", scopes: [fly]}]"), "clients[0].scopes[0]: unknown scope 'fly'; use algo, data:read, data:write, manage, admin", Self.env),
            (Self.yaml("clients: [{name: a, key_sha256: \"\(Self.hashA)\", scopes: algo}]"), "clients[0].scopes: expected a list", Self.env),
            (Self.yaml("clients: [{name: {first: a}, key_sha256: \"\(Self.hashA)\", scopes: [algo]}]"), "clients[0].name: expected a single value, not a list or a mapping", Self.env),
            (Self.yaml("clients: {name: a}"), "clients: expected a list", Self.env),
            (Self.yaml("server: [8080]\nclients: [{name: a, key_sha256: \"\(Self.hashA)\", scopes: [algo]}]"), "server: expected a mapping", Self.env),
            (Self.yaml("clients: [{name: a, key_sha256: \"ABC\", scopes: [algo]}]"), "clients[0].key_sha256: must be 64 lowercase hex digits (sha256sum of the key)", Self.env),
            // In capitals (as PowerShell's Get-FileHash prints it), the hash would escape the check
            // for a hash used twice, which compares the text.
            (Self.yaml("clients: [{name: a, key_sha256: \"\(Self.hashA.uppercased())\", scopes: [algo]}]"), "clients[0].key_sha256: must be 64 lowercase hex digits (sha256sum of the key)", Self.env),
            (Self.yaml("clients: [{name: a, key_sha256: \"\(Self.hashA)\", scopes: [algo]}, {name: a, key_sha256: \"\(Self.hashB)\", scopes: [algo]}]"), "clients[1].name: duplicate client name 'a'", Self.env),
            (Self.yaml("clients: [{name: a, key_sha256: \"\(Self.hashA)\", scopes: [algo]}, {name: b, key_sha256: \"\(Self.hashA)\", scopes: [algo]}]"), "clients[1].key_sha256: the same key hash is used twice", Self.env),
            (Self.yaml("clients: [{name: a, key_sha256: \"\(Self.hashA)\", scopes: [algo], data_prefixes: [\"ftp://x/\"]}]"), "clients[0].data_prefixes[0]: unknown data connector 'ftp'; use data, s3, azureblob, gs or dropbox (optionally +label)", Self.env),
            (Self.yaml(client), "upstream.key_env: environment variable UP_KEY is not set", [:]),
            (Self.yaml(client), "upstream.key_env: the upstream key is empty or has spaces or non-ASCII characters", ["UP_KEY": "upstream key 0123"]),
            (Self.yaml(client), "upstream.key_env: give the key alone, without 'Simple': the gateway sends it as Authorization: Simple KEY", ["UP_KEY": "Simple upstream-key-0123"]),
            (Self.yaml(client), "upstream.key_env: the upstream key is 15 characters long, under 16: it would turn up in ordinary answers, which the gateway withholds wherever the key appears; use the account's API key", ["UP_KEY": "upstream-key-01"]),
            ("upstream: {url: http://x, key_env: UP_KEY}", "clients: required field is missing", Self.env),
            ("clients: []", "upstream: required field is missing", Self.env),
            (Self.yaml("clients: []"), "clients: list at least one client", Self.env),
            ("upstream: {url: 'ftp://x', key_env: UP_KEY}\n" + client, "upstream.url: must be an http:// or https:// URL with a host", Self.env),
            ("upstream: {url: 'https://api.algorithmia.com#v1', key_env: UP_KEY}\n" + client, "upstream.url: must not have a query or fragment", Self.env),
            ("upstream: {url: 'https://api.algorithmia.com', key_env: UP_KEY, timeout_seconds: 3001}\n" + client,
             "upstream.timeout_seconds: must be from 1 to 3000 (Algorithmia's maximum)", Self.env),
            (Self.yaml("compression: {types: [json]}\n" + client), "compression.types[0]: must be a media type such as text/* or application/json", Self.env),
            (Self.yaml("clients: [{name: a, key_sha256: \"\(Self.hashA)\", scopes: []}]"), "clients[0].scopes: list at least one scope", Self.env),
            (Self.yaml("clients: [{name: \"team/a\", key_sha256: \"\(Self.hashA)\", scopes: [algo]}]"), "clients[0].name: use letters, digits, '-', '_' and '.'", Self.env),
            (Self.yaml(client), "upstream.key_env: give the key alone, without 'Bearer': the gateway sends it as Authorization: Simple KEY", ["UP_KEY": "bearer upstream-key-0123"]),
            // A hint names the nearest field only, reads dashes as underscores, and is left out when
            // nothing is near.
            (Self.yaml("server: {sidle_timeout_seconds: 5}\n" + client), "server.sidle_timeout_seconds: unknown field; did you mean idle_timeout_seconds?", Self.env),
            (Self.yaml("server: {idle-timeout: 5}\n" + client), "server.idle-timeout: unknown field; did you mean idle_timeout_seconds?", Self.env),
            (Self.yaml("server: {foo: 5}\n" + client), "server.foo: unknown field", Self.env),
            ("upstream: {url: 'http://127.0.0.1', key_env: UP_KEY, key_file: /k}\n" + client, "upstream: set exactly one of key_env and key_file", Self.env),
            (Self.yaml("upstream_timeout: 1\n" + client).replacingOccurrences(of: "upstream_timeout: 1\n", with: "quota: {requests_per_minute: 0}\n"), "quota.requests_per_minute: must be positive", Self.env),
            (Self.yaml("clients: [{name: admin, key_sha256: \"\(Self.hashA)\", scopes: [algo]}]"),
             "clients[0].name: 'admin' names the operator (the admin key) in logs, metrics, usage and quotas; choose another name", Self.env),
            (Self.yaml("clients: [{name: a, key_sha256: \"\(Self.hashA)\", scopes: [algo], quota: {reserved_concurrent: -1}}]"),
             "clients[0].quota.reserved_concurrent: must be 0 or more", Self.env),
            (Self.yaml("clients: [{name: a, key_sha256: \"\(Self.hashA)\", scopes: [algo], quota: {slot_seconds_per_day: 0}}]"),
             "clients[0].quota.slot_seconds_per_day: must be positive", Self.env),
            (Self.yaml("clients: [{name: a, key_sha256: \"\(Self.hashA)\", scopes: [algo], quota: {slot_seconds_per_day: 1.5}}]"),
             "clients[0].quota.slot_seconds_per_day: expected a whole number", Self.env),
            (Self.yaml("upstream_timeout: 1\n" + client).replacingOccurrences(of: "upstream_timeout: 1\n", with: "quota: {slot_seconds_per_month: -5}\n"),
             "quota.slot_seconds_per_month: must be positive", Self.env),
            (Self.yaml("clients: [{name: a, key_sha256: \"\(Self.hashA)\", scopes: [algo], quota: {max_concurrent: 3, reserved_concurrent: 4}}]"),
             "clients[0].quota.reserved_concurrent: 4 is more than client 'a' may have under way (max_concurrent: 3), so it could never use them all", Self.env),
            (Self.yaml("quota: {max_concurrent: 3, reserved_concurrent: 4}\n" + client),
             "quota.reserved_concurrent: 4 is more than client 'a' may have under way (max_concurrent: 3), so it could never use them all", Self.env),
            ("upstream: {url: 'http://127.0.0.1:9000', key_env: UP_KEY, max_concurrency: 4}\nclients: [{name: a, key_sha256: \"\(Self.hashA)\", scopes: [algo], quota: {reserved_concurrent: 4}}]",
             "clients[0].quota.reserved_concurrent: 4 slots for client 'a' alone would leave none of upstream.max_concurrency's 4 slots for the others", Self.env),
            ("upstream: {url: 'http://127.0.0.1:9000', key_env: UP_KEY, max_concurrency: 4}\nquota: {reserved_concurrent: 2}\nclients: [{name: a, key_sha256: \"\(Self.hashA)\", scopes: [algo]}, {name: b, key_sha256: \"\(Self.hashB)\", scopes: [algo]}]",
             "clients[].quota.reserved_concurrent: the clients' reservations add up to 4 of upstream.max_concurrency's 4 slots; keep them below it, so the operator and clients without a reservation have a slot", Self.env),
        ]
        for (yaml, expected, environment) in cases {
            #expect(Self.refusal(yaml, environment: environment)?.description == expected, "\(expected)")
        }
    }

    /// A file with several mistakes is refused naming every one, in the order found (unknown
    /// fields and values that cannot be read as decoding meets them, then invalid values, then
    /// the files and variables it names), so an operator mends them in one go. A field keeps its
    /// first problem only, and a bound measured against a value already refused is not checked.
    @Test func everyMistakeIsNamedAtOnce() throws {
        let yaml = """
            server: {port: 70000, idel_timeout_seconds: 5, public_url: "ftp://algogate.example.com/base", drain_timeout_seconds: soon, metrics_access: closed}
            upstream:
              url: http://127.0.0.1:9000
              key_env: UP_KEY
              queue_timeout_seconds: 5000
              max_concurrency: 0
              circuit_breaker: {open_seconds: 0, max_open_seconds: 5}
            cache: {rules: [{algo: demo}], colour: blue}
            clients:
              - {name: a, key_sha256: "ABC", scopes: [algo, fly], quota: {reserved_concurrent: 90}}
              - {name: "team/b", key_sha256: "\(Self.hashB)", scopes: [algo], quota: {requests_per_minute: 0}}
            """
        let refusal = try #require(Self.refusal(yaml, environment: [:]))
        let expected = [
            "server.idel_timeout_seconds: unknown field; did you mean idle_timeout_seconds?",
            "server.drain_timeout_seconds: expected a whole number",
            "server.metrics_access: unknown value 'closed'; use open or admin",
            "cache.colour: unknown field",
            "clients[0].scopes[1]: unknown scope 'fly'; use algo, data:read, data:write, manage, admin",
            "server.port: must be from 0 to 65535",
            // Its second problem (a path) is not named.
            "server.public_url: must be an http:// or https:// URL with a host",
            // Nor is the idle timeout measured against the refused queue timeout, the maximum open
            // time against the refused open time, nor the reservation against the refused slots.
            "upstream.max_concurrency: must be from 1 to 10000",
            "upstream.queue_timeout_seconds: must be from 0 to 3600",
            "upstream.circuit_breaker.open_seconds: must be from 1 to 3600",
            "cache.rules[0].algo: use owner/*, owner/name or owner/name/version, with * for a whole segment (e.g. owner/*/1.0.0)",
            "clients[0].key_sha256: must be 64 lowercase hex digits (sha256sum of the key)",
            "clients[1].name: use letters, digits, '-', '_' and '.'",
            "clients[1].quota.requests_per_minute: must be positive",
            "upstream.key_env: environment variable UP_KEY is not set",
        ]
        #expect(refusal.problems.map(\.line) == expected)
        #expect(refusal.line == expected[0] && refusal.others.count == expected.count - 1)
        // On one line, for a log.
        #expect(refusal.description == "\(expected.count) problems: " + expected.joined(separator: "; "))

        // A required field missing or of the wrong shape ends decoding: the problems met before
        // it are named with it.
        #expect(Self.refusal(Self.yaml("server: {colour: red, port: eighty}\nclients: {name: a}"))?.problems.map(\.line)
                == ["server.colour: unknown field", "server.port: expected a whole number", "clients: expected a list"])
        // The files a configuration names are read even when its values are wrong, and the key's
        // file is named beside the TLS files; those found unreadable are not read again.
        let files = """
            server: {port: -1, tls: {cert_file: /nonexistent/cert.pem, key_file: /nonexistent/key.pem}}
            upstream: {url: "http://127.0.0.1:9000", key_file: /nonexistent/upstream.key}
            clients: [{name: a, key_sha256: "\(Self.hashA)", scopes: [algo]}]
            """
        #expect(Self.refusal(files)?.problems.map(\.line) == [
            "server.port: must be from 0 to 65535",
            "server.tls.cert_file: cannot read /nonexistent/cert.pem",
            "server.tls.key_file: cannot read /nonexistent/key.pem",
            "upstream.key_file: cannot read /nonexistent/upstream.key",
        ])
        // One client's reservation too large for the slots is named, not the sum it makes.
        #expect(Self.refusal("""
            upstream: {url: "http://127.0.0.1:9000", key_env: UP_KEY, max_concurrency: 4}
            clients:
              - {name: a, key_sha256: "\(Self.hashA)", scopes: [algo], quota: {reserved_concurrent: 1}}
              - {name: b, key_sha256: "\(Self.hashB)", scopes: [algo], quota: {reserved_concurrent: 4}}
            """)?.problems.map(\.line) == ["clients[1].quota.reserved_concurrent: 4 slots for client 'b' alone would leave none of upstream.max_concurrency's 4 slots for the others"])
    }

    /// A secret pasted where a setting wants the name of the variable or file holding it
    /// (`key_env: <the key>`), or as a field's name, is not quoted back: the refusal reaches
    /// standard error and logs. Names that read as names still are.
    @Test func aSecretPastedWhereANameBelongsIsNotShown() async throws {
        let pasted = "sim1aBcD2eFgH3iJkL4mNoP5qRsT"
        let yaml = """
            upstream:
              url: https://api.algorithmia.com
              key_env: \(pasted)
              proxy: {url: "http://proxy.internal:3128", auth_env: "proxy-user:hunter2"}
              \(pasted): x
            clients: [{name: a, key_sha256: "\(Self.hashA)", scopes: [algo]}]
            """
        let expected = [
            "upstream.<28 characters>: unknown field; its name is not shown, since one that long with digits in it may be a secret pasted in the wrong place",
            "upstream.key_env: the environment variable it names is not set; the name is not shown, since it is not in capitals, digits and '_' and may be the key itself: the setting names the variable that holds the key (ALGOGATE_UPSTREAM_KEY, say)",
            "upstream.proxy.auth_env: the environment variable it names is not set; the name is not shown, since it is not in capitals, digits and '_' and may be user:password itself: the setting names the variable that holds user:password (ALGOGATE_PROXY_AUTH, say)",
        ]
        #expect(Self.refusal(yaml, environment: [:])?.problems.map(\.line) == expected)
        let inFile = yaml.replacingOccurrences(of: "key_env: \(pasted)", with: "key_file: \(pasted)")
        #expect(Self.refusal(inFile, environment: [:])?.problems.map(\.line)[1]
                == "upstream.key_file: cannot read the file it names; the name is not shown, since it has no '/' or '.' and may be the key itself: key_file names the file that holds the key (/run/secrets/algogate-upstream-key, say)")
        // Names that read as names are shown: a variable in capitals, a path, a short field.
        #expect(Self.refusal(yaml.replacingOccurrences(of: "key_env: \(pasted)", with: "key_env: UPSTREAM_KEY_2")
                    .replacingOccurrences(of: "\(pasted): x", with: "retries2: x"), environment: ["PROXY": "u:p"])?.problems.map(\.line).prefix(2)
                == ["upstream.retries2: unknown field", "upstream.key_env: environment variable UPSTREAM_KEY_2 is not set"])
        #expect(Self.refusal(inFile.replacingOccurrences(of: "key_file: \(pasted)", with: "key_file: /nonexistent/key"), environment: [:])?
                    .problems.map(\.line)[1] == "upstream.key_file: cannot read /nonexistent/key")

        // check-config prints none of it.
        try await withTemporaryDirectory("pasted") { directory in
            let file = directory.appendingPathComponent("pasted.yaml")
            try yaml.write(to: file, atomically: true, encoding: .utf8)
            let check = try await ChildProcess.run(arguments: ["check-config", "--config", file.path], environment: [:])
            #expect(check.termination == .exited(1))
            #expect(check.log.contains("3 problems:") && !check.log.contains(pasted) && !check.log.contains("hunter2"), "\(check.log)")
        }
    }

    /// A reservation in the top-level quota applies to every client that does not set its own
    /// (0 opts out); `check-config` prints what each client keeps.
    @Test func checkConfigPrintsTheReservedSlots() async throws {
        try await withTemporaryDirectory("reserved") { directory in
            let file = directory.appendingPathComponent("reserved.yaml")
            let yaml = Self.yaml("""
                quota: {reserved_concurrent: 2}
                clients: [{name: x, key_sha256: "\(Self.hashA)", scopes: [algo]},
                          {name: y, key_sha256: "\(Self.hashB)", scopes: [algo], quota: {reserved_concurrent: 5}},
                          {name: z, key_sha256: "\(String(repeating: "c", count: 64))", scopes: [algo], quota: {reserved_concurrent: 0}}]
                """)
            try yaml.write(to: file, atomically: true, encoding: .utf8)
            let loaded = try ConfigLoader.load(yaml: yaml, environment: Self.env)
            #expect(try ClientRegistry(config: loaded.config).reservations == ["x": 2, "y": 5])
            let check = try await ChildProcess.run(arguments: ["check-config", "--config", file.path], environment: Self.env)
            #expect(check.termination == .exited(0))
            #expect(check.log.contains("upstream slots reserved (quota.reserved_concurrent): x 2, y 5; 7 of 80\n"))
        }
    }

    /// The OK line names up to eleven clients; of more, the first ten and how many others, so a
    /// file of thousands of teams prints a line that can be read.
    @Test func checkConfigNamesManyClientsInShort() async throws {
        try await withTemporaryDirectory("many") { directory in
            func clients(_ count: Int) -> String {
                (0..<count).map { index in
                    let hash = String(repeating: String(index, radix: 16), count: 64 / String(index, radix: 16).count)
                    return "  - {name: team-\(index), key_sha256: \"\(hash)\", scopes: [algo]}"
                }.joined(separator: "\n")
            }
            let eleven = directory.appendingPathComponent("eleven.yaml")
            try Self.yaml("clients:\n" + clients(11)).write(to: eleven, atomically: true, encoding: .utf8)
            let all = try await ChildProcess.run(arguments: ["check-config", "--config", eleven.path], environment: Self.env)
            #expect(all.termination == .exited(0))
            #expect(all.log.contains("11 client(s): team-0, team-1, team-2, team-3, team-4, team-5, team-6, team-7, team-8, team-9, team-10\n"), "\(all.log)")

            let twelve = directory.appendingPathComponent("twelve.yaml")
            try Self.yaml("clients:\n" + clients(12)).write(to: twelve, atomically: true, encoding: .utf8)
            let short = try await ChildProcess.run(arguments: ["check-config", "--config", twelve.path], environment: Self.env)
            #expect(short.termination == .exited(0))
            #expect(short.log.contains("12 client(s): team-0, team-1, team-2, team-3, team-4, team-5, team-6, team-7, team-8, team-9 and 2 more\n"), "\(short.log)")
        }
    }

    /// The upstream client's read timeout is set from `upstream.timeout_seconds` at start: a
    /// reload that raises it says a restart is needed; one that lowers it does not.
    @Test func aReloadThatRaisesTheUpstreamTimeoutAsksForARestart() throws {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("reload-\(UUID().uuidString).yaml").path
        defer { try? FileManager.default.removeItem(atPath: path) }
        func write(timeout: Int, idle: Int = 50) throws {
            try Self.yaml("clients: [{name: a, key_sha256: \"\(Self.hashA)\", scopes: [algo]}]")
                .replacingOccurrences(of: "key_env: UP_KEY", with: "key_env: UP_KEY\n  timeout_seconds: \(timeout)\n  idle_connection_seconds: \(idle)")
                .write(toFile: path, atomically: true, encoding: .utf8)
        }
        try write(timeout: 300)
        let state = try GatewayState(try ConfigLoader.load(path: path, environment: Self.env))
        let logs = LogCapture()
        let reloader = ConfigReloader(path: path, state: state, logger: logs.logger, environment: { Self.env })
        try write(timeout: 200)
        #expect(reloader.reload())
        #expect(state.snapshot.config.upstream.timeoutSeconds == 200)
        #expect(logs.all.last?.contains(#"needs_restart=none"#) == true, "\(logs.all)")
        try write(timeout: 600)
        #expect(reloader.reload())
        #expect(state.snapshot.config.upstream.timeoutSeconds == 600)
        #expect(logs.all.last?.hasSuffix("needs_restart=upstream.timeout_seconds (raised) trigger=SIGHUP") == true, "\(logs.all)")
        // The pool's idle timeout is the upstream client's too.
        try write(timeout: 200, idle: 20)
        #expect(reloader.reload())
        #expect(logs.all.last?.hasSuffix("needs_restart=upstream connection settings trigger=SIGHUP") == true, "\(logs.all)")
    }

    /// `serve --watch` loads a changed file once it has held still for the settle time: a file
    /// still being written in place (an editor, or `cp` over it) is not loaded half written and
    /// refused, and the whole one is loaded once.
    @Test func aFileStillBeingWrittenIsLoadedOnceWhole() async throws {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("watch-\(UUID().uuidString).yaml").path
        defer { try? FileManager.default.removeItem(atPath: path) }
        try Self.yaml("clients: [{name: a, key_sha256: \"\(Self.hashA)\", scopes: [algo]}]").write(toFile: path, atomically: true, encoding: .utf8)
        let state = try GatewayState(try ConfigLoader.load(path: path, environment: Self.env))
        let logs = LogCapture()
        let reloader = ConfigReloader(path: path, state: state, logger: logs.logger, settle: .seconds(3), environment: { Self.env })
        let watch = Task { await reloader.watch(every: .milliseconds(50)) }
        defer { watch.cancel() }
        let whole = Self.yaml("clients: [{name: a, key_sha256: \"\(Self.hashA)\", scopes: [algo]}, {name: b, key_sha256: \"\(Self.hashB)\", scopes: [algo]}]")
        // Written in three goes, each before the watch has seen the one before hold still.
        try String(whole.dropLast(40)).write(toFile: path, atomically: false, encoding: .utf8)
        try await Task.sleep(for: .seconds(1))
        try String(whole.dropLast(10)).write(toFile: path, atomically: false, encoding: .utf8)
        try await Task.sleep(for: .seconds(3))
        try whole.write(toFile: path, atomically: false, encoding: .utf8)
        #expect(await eventually(within: .seconds(30)) { state.snapshot.config.clients.count == 2 }, "\(logs.all)")
        #expect(!logs.all.contains { $0.contains("reload refused") }, "\(logs.all)")
        #expect(logs.all.filter { $0.contains("configuration reloaded") }.count == 1, "\(logs.all)")
    }

    /// `upstream.max_concurrency` raised applies at the next start, lowered at once. A reload that raises it and reserves
    /// slots that only the raised figure has room for is refused, since the running gateway would
    /// keep every slot it has for the reservations; and what needs a restart is said against the
    /// start, so a later reload still says it.
    @Test func reservationsMustFitTheSlotsInForceOnReload() throws {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("reload-\(UUID().uuidString).yaml").path
        defer { try? FileManager.default.removeItem(atPath: path) }
        func write(slots: Int, reserved: Int, timeout: Int = 300) throws {
            try Self.yaml("""
                clients:
                  - {name: a, key_sha256: "\(Self.hashA)", scopes: [algo], quota: {reserved_concurrent: \(reserved)}}
                  - {name: b, key_sha256: "\(Self.hashB)", scopes: [algo]}
                """)
                .replacingOccurrences(of: "key_env: UP_KEY", with: "key_env: UP_KEY\n  max_concurrency: \(slots)\n  timeout_seconds: \(timeout)")
                .write(toFile: path, atomically: true, encoding: .utf8)
        }
        try write(slots: 4, reserved: 0)
        let state = try GatewayState(try ConfigLoader.load(path: path, environment: Self.env))
        let logs = LogCapture()
        let reloader = ConfigReloader(path: path, state: state, logger: logs.logger, environment: { Self.env })

        try write(slots: 80, reserved: 4)
        #expect(!reloader.reload())
        #expect(state.snapshot.registry.reservations.isEmpty)
        #expect(logs.all.last == "error reload refused: configuration kept as it was reason=clients[0].quota.reserved_concurrent: 4 slots for client 'a' alone would leave none of the 4 upstream slots in force (upstream.max_concurrency's 80 applies from the next start) for the others trigger=SIGHUP", "\(logs.all)")
        // With more mistakes, the refusal's one line names them all.
        try (String(contentsOfFile: path, encoding: .utf8) + "\nserver: {port: 70000, colour: red}\n").write(toFile: path, atomically: true, encoding: .utf8)
        #expect(!reloader.reload())
        #expect(logs.all.last == "error reload refused: configuration kept as it was reason=3 problems: server.colour: unknown field; server.port: must be from 0 to 65535; clients[0].quota.reserved_concurrent: 4 slots for client 'a' alone would leave none of the 4 upstream slots in force (upstream.max_concurrency's 80 applies from the next start) for the others trigger=SIGHUP", "\(logs.all)")

        try write(slots: 80, reserved: 3)
        #expect(reloader.reload())
        #expect(state.snapshot.registry.reservations == ["a": 3])
        #expect(logs.all.last?.hasSuffix("needs_restart=upstream.max_concurrency (raised) trigger=SIGHUP") == true, "\(logs.all)")
        // Another change later: max_concurrency still runs as it started.
        try write(slots: 80, reserved: 3, timeout: 200)
        #expect(reloader.reload())
        #expect(logs.all.last?.hasSuffix("needs_restart=upstream.max_concurrency (raised) trigger=SIGHUP") == true, "\(logs.all)")
        // Lowered, the slots apply at once: nothing waits for a restart, and the reservations
        // must fit the lowered figure.
        try write(slots: 2, reserved: 2)
        #expect(!reloader.reload())
        #expect(logs.all.last == "error reload refused: configuration kept as it was reason=clients[0].quota.reserved_concurrent: 2 slots for client 'a' alone would leave none of upstream.max_concurrency's 2 slots for the others trigger=SIGHUP", "\(logs.all)")
        try write(slots: 2, reserved: 1)
        #expect(reloader.reload())
        #expect(state.snapshot.registry.reservations == ["a": 1] && state.snapshot.config.upstream.maxConcurrency == 2)
        #expect(logs.all.last?.contains("needs_restart=none") == true, "\(logs.all)")
        // The file as it started: nothing needs a restart any more.
        try write(slots: 4, reserved: 3)
        #expect(reloader.reload())
        #expect(logs.all.last?.contains("needs_restart=none") == true, "\(logs.all)")
        // A fresh start with the raised figure takes the reservations it refused.
        try write(slots: 80, reserved: 4)
        #expect(try ClientRegistry(config: ConfigLoader.load(path: path, environment: Self.env).config).reservations == ["a": 4])
    }

    /// An input bound under twice the largest input keeps no room for other clients' inputs: said
    /// where there are other clients, not for a lone one.
    @Test func anInputBoundWithNoRoomForOtherClientsIsNamed() throws {
        let note = "limits.max_buffered_bytes (1500000) is under twice limits.max_request_bytes (1000000): one client's algorithm inputs can hold all of it, with no room kept for the other clients' (see the README's Memory)"
        let limits = "limits: {max_request_bytes: 1000000, max_buffered_bytes: 1500000}"
        let two = try ConfigLoader.load(yaml: Self.yaml("""
            \(limits)
            clients: [{name: a, key_sha256: "\(Self.hashA)", scopes: [algo]}, {name: b, key_sha256: "\(Self.hashB)", scopes: [algo]}]
            """), environment: Self.env)
        #expect(ConfigLoader.notes(two.config) == [note])
        let one = try ConfigLoader.load(yaml: Self.yaml("""
            \(limits)
            clients: [{name: a, key_sha256: "\(Self.hashA)", scopes: [algo]}]
            """), environment: Self.env)
        #expect(ConfigLoader.notes(one.config).isEmpty)
        let roomy = try ConfigLoader.load(yaml: Self.yaml("""
            limits: {max_request_bytes: 1000000, max_buffered_bytes: 2000000}
            clients: [{name: a, key_sha256: "\(Self.hashA)", scopes: [algo]}, {name: b, key_sha256: "\(Self.hashB)", scopes: [algo]}]
            """), environment: Self.env)
        #expect(ConfigLoader.notes(roomy.config).isEmpty)
    }

    /// Settings that load but cannot take effect are named by check-config, and logged as
    /// warnings on a reload (and at start, as the other notes are): a concurrency cap above the
    /// account's, an upload rate for a client that cannot upload, rules for a cache that is off, a
    /// cache too small for any answer.
    @Test func settingsWithoutEffectAreNamed() async throws {
        try await withTemporaryDirectory("cfg") { directory in
            let config = directory.appendingPathComponent("ineffective.yaml")
            func write(_ body: String) throws {
                try Self.yaml("""
                  max_concurrency: 40
                cache: {path: "\(directory.path)/state.sqlite", \(body)}
                quota: {max_concurrent: 41}
                clients:
                  - {name: a, key_sha256: "\(Self.hashA)", scopes: [algo], quota: {max_concurrent: 40}, upload_min_bytes_per_second: 0}
                  - {name: b, key_sha256: "\(Self.hashB)", scopes: [algo, data:write], quota: {max_concurrent: 80}, upload_min_bytes_per_second: 0}
                """).write(to: config, atomically: true, encoding: .utf8)
            }
            let above = { (field: String, cap: Int) -> String in
                "\(field) (\(cap)) is above upstream.max_concurrency (40): it never binds, as no client can have more than the account's 40 calls under way"
            }
            try write("max_bytes: 400")
            let checked = try await ChildProcess.run(arguments: ["check-config", "--config", config.path], environment: Self.env)
            #expect(checked.termination == .exited(0))
            let notes: [String] = [
                above("quota.max_concurrent", 41),
                "clients[0].upload_min_bytes_per_second applies to nothing: client 'a' has no scope that uploads (data:write, manage, admin)",
                above("clients[1].quota.max_concurrent", 80),
                "cache.max_bytes (400) holds no answer: each entry takes 400 bytes beside its body; to turn the cache off, set cache.enabled: false",
            ]
            let printed: [String] = checked.log.split(separator: "\n").filter { $0.hasPrefix("note: ") }.map { String($0.dropFirst(6)) }
            #expect(printed == notes, "\(checked.log)")

            // A reload says so too.
            let state = try GatewayState(try ConfigLoader.load(path: config.path, environment: Self.env))
            let logs = LogCapture()
            let reloader = ConfigReloader(path: config.path, state: state, logger: logs.logger, environment: { Self.env })
            try write("enabled: false, rules: [{algo: 'a/b', ttl_seconds: 5}]")
            #expect(reloader.reload())
            let warnings = logs.all.filter { $0.hasPrefix("warning ") }
            #expect(warnings.contains { $0.contains("cache.rules apply to nothing: cache.enabled is false") }, "\(logs.all)")
            #expect(warnings.contains { $0.contains(above("clients[1].quota.max_concurrent", 80)) }, "\(logs.all)")
            #expect(!warnings.contains { $0.contains("cache.max_bytes") }, "\(logs.all)")

            // A cap at the account's size, and a sound cache, say nothing.
            try Self.yaml("""
            cache: {path: "\(directory.path)/state.sqlite", max_bytes: 401}
            quota: {max_concurrent: 80}
            clients: [{name: a, key_sha256: "\(Self.hashA)", scopes: [algo]}]
            """).write(to: config, atomically: true, encoding: .utf8)
            let quiet = try await ChildProcess.run(arguments: ["check-config", "--config", config.path], environment: Self.env)
            #expect(quiet.termination == .exited(0))
            #expect(!quiet.log.contains("note: "), "\(quiet.log)")
        }
    }

    /// YAML that does not parse is refused with where and why, as Yams reports it, but none of
    /// the file's text: a key pasted where it does not belong must not reach a log.
    @Test func yamlThatDoesNotParseIsRefusedWithItsLineAndColumnOnly() {
        let cases = [
            ("upstream: {url: http://x, key_env: UP_KEY}\n\tclients: []\n",
             "not valid YAML: line 2, column 1: found character that cannot start any token (while scanning for the next token at line 2, column 1)"),
            ("upstream: {url: http://x, key_env: UP_KEY\nclients: []\n",
             "not valid YAML: line 2, column 8: did not find expected ',' or '}' (while parsing a flow mapping at line 1, column 11)"),
            ("upstream:\n  url: http://x\n   key_env: secret-pasted-here\n",
             "not valid YAML: line 3, column 11: mapping values are not allowed in this context"),
            ("upstream: {url: \"http://x, key_env: secret-pasted-here\n",
             "not valid YAML: line 2, column 1: found unexpected end of stream (while scanning a quoted scalar at line 1, column 17)"),
            ("upstream: {url: http://x, key_env: secret-pasted-here}\nupstream: {url: http://y}\nclients: []\n",
             "not valid YAML: the same key twice in one mapping: upstream (the mapping at line 1, column 1)"),
        ]
        for (yaml, expected) in cases {
            #expect(Self.refusal(yaml)?.description == expected)
        }
    }

    /// The server-held key goes in every upstream request: plain http beyond loopback is refused
    /// unless the operator says the network is trusted.
    @Test func aPlainHTTPUpstreamBeyondLoopbackNeedsConsent() throws {
        let client = "clients: [{name: a, key_sha256: \"\(Self.hashA)\", scopes: [algo]}]"
        func upstream(_ url: String, _ extra: String = "") -> String { "upstream: {url: '\(url)', key_env: UP_KEY\(extra)}\n" + client }
        #expect(Self.refusal(upstream("http://algorithmia.internal:8080"))?.description
                == "upstream.url: plain http would send the server-held key unencrypted to algorithmia.internal; use https://, or set upstream.allow_plain_http: true on a network you trust")
        #expect(Self.refusal(upstream("http://10.0.0.7"))?.description.hasPrefix("upstream.url: plain http would send") == true)
        #expect(Self.refusal(upstream("http://127.0.0.1.example.com"))?.description.hasPrefix("upstream.url: plain http would send") == true)
        for allowed in [upstream("http://algorithmia.internal:8080", ", allow_plain_http: true"), upstream("https://algorithmia.internal"),
                        upstream("http://localhost:9000"), upstream("http://127.0.0.2:9000"), upstream("http://[::1]:9000")] {
            #expect(Self.refusal(allowed) == nil, "\(allowed)")
        }
        let loaded = try ConfigLoader.load(yaml: upstream("http://sim.internal", ", allow_plain_http: true"), environment: Self.env)
        #expect(loaded.config.upstream.allowPlainHTTP)
    }

    /// Which proxy variables would have applied to the upstream, had the gateway read them.
    @Test func proxyVariablesTheGatewayDoesNotReadAreNamed() throws {
        func ignored(_ url: String, proxy: String = "", _ environment: [String: String]) throws -> [String] {
            let loaded = try ConfigLoader.load(yaml: """
                upstream: {url: "\(url)", key_env: UP_KEY\(proxy)}
                clients: [{name: a, key_sha256: "\(Self.hashA)", scopes: [algo]}]
                """, environment: ["UP_KEY": "upstream-key-0123"])
            return ConfigLoader.ignoredProxyVariables(loaded.config, environment: environment)
        }
        let upstream = "https://api.algorithmia.com"
        #expect(try ignored(upstream, ["https_proxy": "http://p:3128", "HTTP_PROXY": "http://p:3128", "ALL_PROXY": ""]) == ["https_proxy", "HTTP_PROXY"])
        #expect(try ignored(upstream, [:]) == [])
        #expect(try ignored("http://127.0.0.1:9000", ["HTTPS_PROXY": "http://p:3128"]) == [], "loopback never goes through a proxy")
        #expect(try ignored(upstream, proxy: ", proxy: {url: \"http://p:3128\"}", ["HTTPS_PROXY": "http://p:3128"]) == [], "upstream.proxy decides")
        for noProxy in ["*", "api.algorithmia.com", ".algorithmia.com", "algorithmia.com", "other, ALGORITHMIA.COM:443"] {
            #expect(try ignored(upstream, ["HTTPS_PROXY": "http://p:3128", "no_proxy": noProxy]) == [], "\(noProxy)")
        }
        for noProxy in ["gorithmia.com", "api.algorithmia.co", ""] {
            #expect(try ignored(upstream, ["HTTPS_PROXY": "http://p:3128", "NO_PROXY": noProxy]) == ["HTTPS_PROXY"], "\(noProxy)")
        }
    }

    /// A data prefix that reads otherwise than it is written (a dot segment, a repeated slash, a
    /// backslash: folded as in a request's path) is most likely a typo. It still loads, as it did
    /// before, and check-config names what is enforced; percent-encoding, a trailing slash and the
    /// connector's case are not such a difference.
    @Test func dataPrefixesReadOtherwiseThanWrittenAreNamed() async throws {
        try await withTemporaryDirectory("cfg") { directory in
            let config = directory.appendingPathComponent("prefixes.yaml")
            try """
            upstream: {url: http://127.0.0.1:9, key_env: UP_KEY}
            cache: {path: "\(directory.path)/state.sqlite"}
            clients:
              - name: a
                key_sha256: "\(Self.hashA)"
                scopes: [algo, data:read]
                data_prefixes: ["data://.my/team-a/../x/", "data://.my/ok/", "data://.my/my%20dir/", "S3://bucket/k", "s3://bucket//c/", "s3://bucket/d\\\\e/"]
            """.write(to: config, atomically: true, encoding: .utf8)
            let checked = try await ChildProcess.run(arguments: ["check-config", "--config", config.path], environment: ["UP_KEY": "upstream-key-0123"])
            #expect(checked.termination == .exited(0))
            let notes = checked.log.split(separator: "\n").filter { $0.hasPrefix("note: clients[0].data_prefixes") }.map(String.init)
            let tail = "': a '.' or '..' segment, a repeated slash or a backslash in it is folded, as in a request's path"
            #expect(notes == [
                "note: clients[0].data_prefixes[0] 'data://.my/team-a/../x/' is read as 'data://.my/x/" + tail,
                "note: clients[0].data_prefixes[4] 's3://bucket//c/' is read as 's3://bucket/c/" + tail,
                #"note: clients[0].data_prefixes[5] 's3://bucket/d\e/' is read as 's3://bucket/d/e/"# + tail,
            ], "\(checked.log)")
        }
    }

    /// An algorithm runs with the account's key, so a client with `algo` and no `data_prefixes`
    /// reaches every path through one, whatever its data scopes. Where other clients are kept to
    /// prefixes, check-config and serve name such clients (without refusing them).
    @Test func clientsWhoseAlgorithmCallsReachEveryPathAreNamed() async throws {
        let note = "with the algo scope and no data_prefixes (nor a data scope), algorithms called by b, d run with the account's key and can read and write every path, other teams' included; data_prefixes keep a client's calls to its own files"
        try await withTemporaryDirectory("cfg") { directory in
            func mixed(cachePath: String) -> String {
                """
                upstream: {url: http://127.0.0.1:9, key_env: UP_KEY}
                cache: {path: "\(cachePath)"}
                clients:
                  - {name: a, key_sha256: "\(Self.hashA)", scopes: [algo, data:read], data_prefixes: ["data://.my/a/"]}
                  - {name: b, key_sha256: "\(Self.hashB)", scopes: [algo]}
                  - {name: c, key_sha256: "\(String(repeating: "c", count: 64))", scopes: [algo, data:read]}
                  - {name: d, key_sha256: "\(String(repeating: "d", count: 64))", scopes: [algo, manage]}
                  - {name: e, key_sha256: "\(String(repeating: "e", count: 64))", scopes: [algo], data_prefixes: ["data://.my/e/"]}
                """
            }
            let good = directory.appendingPathComponent("good.yaml")
            try mixed(cachePath: directory.path + "/state.sqlite").write(to: good, atomically: true, encoding: .utf8)
            let ok = try await ChildProcess.run(arguments: ["check-config", "--config", good.path], environment: ["UP_KEY": "upstream-key-0123"])
            #expect(ok.termination == .exited(0))
            #expect(ok.log.contains("note: " + note), "\(ok.log)")
            // serve warns at start (here one that then cannot open its state file: a directory).
            let unopenable = directory.appendingPathComponent("unopenable.yaml")
            try mixed(cachePath: directory.path).write(to: unopenable, atomically: true, encoding: .utf8)
            let serving = try await ChildProcess.run(arguments: ["serve", "--config", unopenable.path, "--log-format", "text"], environment: ["UP_KEY": "upstream-key-0123"])
            #expect(serving.termination == .exited(1))
            #expect(serving.log.contains(" warning algogate: " + note), "\(serving.log)")
            // With no client kept to prefixes, nothing is said: every team reaches every path.
            let open = directory.appendingPathComponent("open.yaml")
            try """
            upstream: {url: http://127.0.0.1:9, key_env: UP_KEY}
            cache: {path: "\(directory.path)/state.sqlite"}
            clients: [{name: b, key_sha256: "\(Self.hashB)", scopes: [algo]}]
            """.write(to: open, atomically: true, encoding: .utf8)
            let quiet = try await ChildProcess.run(arguments: ["check-config", "--config", open.path], environment: ["UP_KEY": "upstream-key-0123"])
            #expect(quiet.termination == .exited(0))
            #expect(!quiet.log.contains("data_prefixes"), "\(quiet.log)")
        }
    }

    @Test func checkConfigExitsZeroOrOneWithTheReason() async throws {
        try await withTemporaryDirectory("cfg") { directory in
            let good = directory.appendingPathComponent("good.yaml")
            try Self.yaml("clients: [{name: a, key_sha256: \"\(Self.hashA)\", scopes: [algo]}]").write(to: good, atomically: true, encoding: .utf8)
            let bad = directory.appendingPathComponent("bad.yaml")
            try Self.yaml("clients: [{name: a, key_sha256: \"\(Self.hashA)\", scopes: [algo], extra: 1}]").write(to: bad, atomically: true, encoding: .utf8)

            let ok = try await ChildProcess.run(arguments: ["check-config", "--config", good.path], environment: ["UP_KEY": "upstream-key-0123"])
            #expect(ok.termination == .exited(0))
            #expect(ok.log.contains("configuration OK"))
            let refused = try await ChildProcess.run(arguments: ["check-config", "--config", bad.path], environment: ["UP_KEY": "upstream-key-0123"])
            #expect(refused.termination == .exited(1))
            #expect(refused.log == "algogate: invalid configuration \(bad.path): clients[0].extra: unknown field\n")
            // A file that is not there.
            let missing = directory.appendingPathComponent("missing.yaml")
            let unread = try await ChildProcess.run(arguments: ["check-config", "--config", missing.path], environment: ["UP_KEY": "upstream-key-0123"])
            #expect(unread.termination == .exited(1))
            #expect(unread.log.hasPrefix("algogate: invalid configuration \(missing.path): cannot read config file \(missing.path): ") && unread.log.hasSuffix("\n")
                    && unread.log.split(separator: "\n").count == 1, "\(unread.log)")
            // Several mistakes: a line each, all in one run, a state file that cannot be had among them.
            let worse = directory.appendingPathComponent("worse.yaml")
            try Self.yaml("server: {port: 70000}\ncache: {path: \"\(directory.path)\"}\nclients: [{name: a, key_sha256: \"\(Self.hashA)\", scopes: [algo], extra: 1}]")
                .write(to: worse, atomically: true, encoding: .utf8)
            let refusedAll = try await ChildProcess.run(arguments: ["check-config", "--config", worse.path], environment: [:])
            #expect(refusedAll.termination == .exited(1))
            #expect(refusedAll.log == """
                algogate: invalid configuration \(worse.path): 4 problems:
                  clients[0].extra: unknown field
                  server.port: must be from 0 to 65535
                  cache.path: \(directory.path) is a directory, not a file
                  upstream.key_env: environment variable UP_KEY is not set

                """)
            // serve says the same (but for the state file, which it opens later), and puts one
            // line in its log, as for its other start-up failures.
            let served = try await ChildProcess.run(arguments: ["serve", "--config", worse.path, "--log-format", "json"], environment: [:])
            #expect(served.termination == .exited(1))
            #expect(served.log.hasPrefix("""
                algogate: invalid configuration \(worse.path): 3 problems:
                  clients[0].extra: unknown field
                  server.port: must be from 0 to 65535
                  upstream.key_env: environment variable UP_KEY is not set

                """), "\(served.log)")
            let logged = served.log.split(separator: "\n").filter { $0.hasPrefix("{") }
            try #require(logged.count == 1, "\(served.log)")
            let line = try #require(try JSONSerialization.jsonObject(with: Data(logged[0].utf8)) as? [String: Any])
            #expect(line["level"] as? String == "critical" && line["msg"] as? String == "cannot start: invalid configuration")
            #expect(line["config"] as? String == worse.path)
            #expect(line["error"] as? String == "3 problems: clients[0].extra: unknown field; server.port: must be from 0 to 65535; upstream.key_env: environment variable UP_KEY is not set")

            // Through a proxy: named, its credentials not.
            let proxied = directory.appendingPathComponent("proxied.yaml")
            try """
            upstream:
              url: https://api.algorithmia.com
              key_env: UP_KEY
              proxy: {url: "http://proxy.internal:3128", auth_env: PROXY_AUTH}
            clients: [{name: a, key_sha256: "\(Self.hashA)", scopes: [algo]}]
            """.write(to: proxied, atomically: true, encoding: .utf8)
            let viaProxy = try await ChildProcess.run(arguments: ["check-config", "--config", proxied.path],
                                                      environment: ["UP_KEY": "upstream-key-0123", "PROXY_AUTH": "egress:proxy-password-1"])
            #expect(viaProxy.termination == .exited(0))
            #expect(viaProxy.log.contains(
                "configuration OK: upstream https://api.algorithmia.com through proxy http://proxy.internal:3128 (with credentials), 1 client(s): a"))
            #expect(!viaProxy.log.contains("proxy-password-1"))

            // Proxy variables in the environment are not read; check-config says so, naming them
            // and not their values. Every one is set here, so what the test runner's own
            // environment holds does not count.
            let direct = directory.appendingPathComponent("direct.yaml")
            try """
            upstream: {url: https://api.algorithmia.com, key_env: UP_KEY}
            clients: [{name: a, key_sha256: "\(Self.hashA)", scopes: [algo]}]
            """.write(to: direct, atomically: true, encoding: .utf8)
            let proxyVariables = ["HTTPS_PROXY": "http://corp:proxy-password-2@proxy.corp:3128", "https_proxy": "", "HTTP_PROXY": "",
                                  "http_proxy": "", "ALL_PROXY": "", "all_proxy": "", "NO_PROXY": "localhost,.internal", "no_proxy": ""]
            let ignoring = try await ChildProcess.run(arguments: ["check-config", "--config", direct.path],
                                                      environment: proxyVariables.merging(["UP_KEY": "upstream-key-0123"]) { $1 })
            #expect(ignoring.termination == .exited(0))
            #expect(ignoring.log.contains("note: the environment sets HTTPS_PROXY, which algogate does not read: upstream connections go direct; to go through that proxy, set upstream.proxy.url"))
            #expect(!ignoring.log.contains("proxy-password-2"))
            let exempted = try await ChildProcess.run(arguments: ["check-config", "--config", direct.path],
                                                      environment: proxyVariables.merging(["UP_KEY": "upstream-key-0123", "NO_PROXY": ".algorithmia.com"]) { $1 })
            #expect(exempted.termination == .exited(0) && !exempted.log.contains("note:"))
            // serve logs it as a warning at start (here one that then cannot open its state file).
            let directServe = directory.appendingPathComponent("direct-serve.yaml")
            try """
            upstream: {url: https://api.algorithmia.com, key_env: UP_KEY}
            cache: {path: "\(directory.path)"}
            clients: [{name: a, key_sha256: "\(Self.hashA)", scopes: [algo]}]
            """.write(to: directServe, atomically: true, encoding: .utf8)
            let serving = try await ChildProcess.run(arguments: ["serve", "--config", directServe.path, "--log-format", "text"],
                                                     environment: proxyVariables.merging(["UP_KEY": "upstream-key-0123"]) { $1 })
            #expect(serving.termination == .exited(1))
            #expect(serving.log.contains(" warning algogate: the environment sets HTTPS_PROXY, which algogate does not read: upstream connections go direct; to go through that proxy, set upstream.proxy.url"), "\(serving.log)")
            #expect(!serving.log.contains("proxy-password-2"))

            // A state file that cannot be had: check-config says why without creating anything,
            // and serve refuses to start naming it (these tests run as root, so permissions
            // are not what fails here).
            let file = directory.appendingPathComponent("a-file")
            try Data("x".utf8).write(to: file)
            let notDatabase = directory.appendingPathComponent("not-a-database.sqlite")
            try Data("not a database at all".utf8).write(to: notDatabase)
            let folder = directory.appendingPathComponent("a-folder.sqlite")
            try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
            let cases = [
                (file.path + "/state.sqlite", "cannot create \(file.path)/state.sqlite: \(file.path) is not a directory",
                 "cannot create the directory \(file.path): A file with the same name already exists."),
                (notDatabase.path, "\(notDatabase.path) is not a SQLite database",
                 "cannot open \(notDatabase.path) as the gateway's SQLite file: file is not a database"),
                (folder.path, "\(folder.path) is a directory, not a file",
                 "cannot open \(folder.path) as the gateway's SQLite file: unable to open database file (the file and its directory must be readable and writable by this user)"),
            ]
            for (path, checked, served) in cases {
                let config = directory.appendingPathComponent("state.yaml")
                // Port 0: the outcome must not depend on 8080 being free.
                try Self.yaml("server: {port: 0}\ncache: {path: \"\(path)\"}\nclients: [{name: a, key_sha256: \"\(Self.hashA)\", scopes: [algo]}]")
                    .write(to: config, atomically: true, encoding: .utf8)
                let check = try await ChildProcess.run(arguments: ["check-config", "--config", config.path], environment: ["UP_KEY": "upstream-key-0123"])
                #expect(check.termination == .exited(1), "\(path)")
                #expect(check.log.contains("algogate: invalid configuration \(config.path): cache.path: \(checked)\n"), "\(check.log)")
                let serve = try await ChildProcess.run(arguments: ["serve", "--config", config.path], environment: ["UP_KEY": "upstream-key-0123"])
                #expect(serve.termination == .exited(1), "\(path)")
                #expect(serve.log.contains("algogate: cannot start with \(config.path): cache.path: \(served)\n"), "\(serve.log)")
            }
            // A missing file in missing directories is fine, and check-config creates neither.
            let fresh = directory.appendingPathComponent("new/dir/state.sqlite")
            let config = directory.appendingPathComponent("fresh.yaml")
            try Self.yaml("cache: {path: \"\(fresh.path)\"}\nclients: [{name: a, key_sha256: \"\(Self.hashA)\", scopes: [algo]}]")
                .write(to: config, atomically: true, encoding: .utf8)
            let freshCheck = try await ChildProcess.run(arguments: ["check-config", "--config", config.path], environment: ["UP_KEY": "upstream-key-0123"])
            #expect(freshCheck.termination == .exited(0))
            #expect(!FileManager.default.fileExists(atPath: directory.appendingPathComponent("new").path))
        }
    }
}
