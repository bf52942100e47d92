import AlgoGate
import AlgoTestSupport
import AsyncHTTPClient
import Foundation
import NIOCore
import NIOSSL
import Testing

@Suite struct OperationsTests {
    static func post(_ url: String, key: String, input: String, contentType: String = "application/json", client: HTTPClient = .shared,
                     timeout: TimeAmount = .seconds(30)) async throws -> (Int, String) {
        var request = HTTPClientRequest(url: url)
        request.method = .POST
        request.headers.add(name: "Authorization", value: "Simple \(key)")
        request.headers.add(name: "Content-Type", value: contentType)
        request.body = .bytes(ByteBuffer(string: input))
        let response = try await client.execute(request, timeout: timeout)
        return (Int(response.status.code), String(buffer: try await response.body.collect(upTo: 1 << 20)))
    }

    /// Whether a TCP connection to `port` is accepted.
    static func accepts(port: Int) async -> Bool {
        guard let connection = try? await RawConnection.connect(port: port) else { return false }
        await connection.close()
        return true
    }

    @Test func sigtermLetsAnInFlightCallFinishThenExitsZero() async throws {
        try await HeldUpstream.run { upstream, upstreamPort in
            let pair = try await ProcessHarness { ProcessHarness.standardYAML(simPort: upstreamPort, gatewayPort: $1, work: $2) }
            defer { pair.stop() }
            let slow = Task { try await Self.post(pair.gatewayURL + "/v1/algo/test/Sleep", key: Keys.teamB, input: "10", timeout: .seconds(120)) }
            try #require(await eventually { upstream.arrived.isOpen }, "the call never reached the upstream")
            pair.gateway.signal(SIGTERM)
            // The gateway stops taking connections while the call is still held upstream...
            #expect(await eventually { !(await Self.accepts(port: pair.gatewayPort)) }, "the gateway kept accepting connections")
            #expect(pair.gateway.isRunning)
            // ...and the call, answered now, still gets through before the gateway exits.
            upstream.release.open()
            let (status, body) = try await slow.value
            #expect(status == 200)
            #expect(body == HeldUpstream.answer(sleptMs: 10))
            await pair.gateway.exited()
            #expect(pair.gateway.termination == .exited(0))
            #expect(pair.gateway.log.contains("algogate stopped"))
            // The first line says what the run started with (before the configuration's notes).
            #expect(pair.gateway.log.split(separator: "\n").first?.contains(#""msg":"algogate starting""#) == true, "\(pair.gateway.log.prefix(600))")
            let config = pair.work.appendingPathComponent("gateway.yaml").path
            #expect(pair.gateway.log.contains(#""msg":"algogate starting","cache":"on","clients":3,"config":"\#(config)","max_concurrency":80,"state_file":"\#(pair.work.appendingPathComponent("cache.sqlite").path)","tls":"off","upstream":"http://127.0.0.1:\#(upstreamPort)","version":"\#(AlgoGateVersion.string)"}"#),
                    "\(pair.gateway.log.prefix(600))")
        }
    }

    /// A gateway that cannot listen (its port taken) says so in words naming the setting and exits
    /// 1, before any service starts: the port is tried first, so nothing is opened (no state file),
    /// and the service group never has to cancel what it started (that cancellation deadlocked now
    /// and then inside Hummingbird, leaving the process hanging).
    @Test func aPortInUseIsNamedBeforeAnythingStarts() async throws {
        let pair = try await ProcessHarness { ProcessHarness.standardYAML(simPort: $0, gatewayPort: $1, work: $2) }
        defer { pair.stop() }
        try await withTemporaryDirectory("port-taken") { directory in
            let config = directory.appendingPathComponent("second.yaml")
            try ProcessHarness.standardYAML(simPort: pair.simPort, gatewayPort: pair.gatewayPort, work: directory)
                .write(to: config, atomically: true, encoding: .utf8)
            let second = try await ChildProcess.run(arguments: ["serve", "--config", config.path],
                                                    environment: [ProcessHarness.keyVariable: Keys.upstream])
            #expect(second.termination == .exited(1))
            #expect(second.log.contains("algogate: cannot start with \(config.path): cannot listen on 127.0.0.1:\(pair.gatewayPort) (server.host, server.port): Address already in use\n"),
                    "\(second.log)")
            #expect(!FileManager.default.fileExists(atPath: directory.appendingPathComponent("cache.sqlite").path))
            // A host that does not resolve is named the same way (RFC 6761: .invalid never does).
            try ProcessHarness.standardYAML(simPort: pair.simPort, gatewayPort: 0, work: directory)
                .replacingOccurrences(of: "host: 127.0.0.1", with: "host: no-such-host.invalid")
                .write(to: config, atomically: true, encoding: .utf8)
            let unresolved = try await ChildProcess.run(arguments: ["serve", "--config", config.path],
                                                        environment: [ProcessHarness.keyVariable: Keys.upstream])
            #expect(unresolved.termination == .exited(1))
            #expect(unresolved.log.contains("algogate: cannot start with \(config.path): cannot listen on no-such-host.invalid:0 (server.host, server.port): no such host ("),
                    "\(unresolved.log)")
            #expect(!FileManager.default.fileExists(atPath: directory.appendingPathComponent("cache.sqlite").path))
            // The first gateway still answers.
            #expect(try await Self.post(pair.gatewayURL + "/v1/algo/demo/Hello/0.1.0", key: Keys.teamB, input: #""B""#).0 == 200)
        }
    }

    @Test func sighupAddsAClientWithoutDisturbingAnInFlightCall() async throws {
        let clientA = """
        clients:
          - {name: team-a, key_sha256: "\(ClientRegistry.hash(of: Keys.teamA))", scopes: [algo]}
        """
        try await HeldUpstream.run { upstream, upstreamPort in
            let pair = try await ProcessHarness { ProcessHarness.standardYAML(simPort: upstreamPort, gatewayPort: $1, work: $2, clients: clientA) }
            defer { pair.stop() }
            let before = try await Self.post(pair.gatewayURL + "/v1/algo/demo/Hello/0.1.0", key: Keys.teamB, input: #""B""#)
            #expect(before.0 == 401)

            let slow = Task { try await Self.post(pair.gatewayURL + "/v1/algo/test/Sleep", key: Keys.teamA, input: "10", timeout: .seconds(120)) }
            try #require(await eventually { upstream.arrived.isOpen }, "the call never reached the upstream")
            let bothClients = clientA + """

              - {name: team-b, key_sha256: "\(ClientRegistry.hash(of: Keys.teamB))", scopes: [algo]}
            """
            try ProcessHarness.standardYAML(simPort: upstreamPort, gatewayPort: 0, work: pair.work, clients: bothClients)
                .write(to: pair.configURL, atomically: true, encoding: .utf8)
            pair.gateway.signal(SIGHUP)
            #expect(try await eventually {
                try await Self.post(pair.gatewayURL + "/v1/algo/demo/Hello/0.1.0", key: Keys.teamB, input: #""B""#).0 == 200
            }, "team-b was never admitted")
            // The call held upstream all along is answered after the reload, on the old connection.
            upstream.release.open()
            let (slowStatus, slowBody) = try await slow.value
            #expect(slowStatus == 200)
            #expect(slowBody == HeldUpstream.answer(sleptMs: 10))
            #expect(pair.gateway.log.contains("configuration reloaded"))
            #expect(pair.gateway.log.contains(#""needs_restart":"none""#))

            // A change the running gateway cannot apply is named in the reload line; one it can
            // (`server.public_url`) is not.
            let cacheLine = #"cache: {path: "\#(pair.work.appendingPathComponent("cache.sqlite").path)"}"#
            let resized = ProcessHarness.standardYAML(simPort: upstreamPort, gatewayPort: 0, work: pair.work, clients: bothClients,
                                                      server: #"public_url: "https://algogate.example.com""#)
            #expect(resized.contains(cacheLine))
            try resized.replacingOccurrences(of: cacheLine, with: cacheLine.dropLast() + ", stale_if_error_seconds: 60}")
                .write(to: pair.configURL, atomically: true, encoding: .utf8)
            pair.gateway.signal(SIGHUP)
            #expect(await eventually { pair.gateway.log.contains(#""needs_restart":"cache.max_bytes/memory_bytes/stale_if_error_seconds""#) })
        }
    }

    /// `cache.fast_hits` applies on reload: hits go on, through the pipeline once it is off.
    @Test func fastHitsAreSwitchedOffOnReload() async throws {
        let pair = try await ProcessHarness { ProcessHarness.standardYAML(simPort: $0, gatewayPort: $1, work: $2) }
        defer { pair.stop() }
        func fastHits() async throws -> Double? {
            let response = try await HTTPClient.shared.execute(HTTPClientRequest(url: pair.gatewayURL + "/metrics"), timeout: .seconds(5))
            return metricSample(String(buffer: try await response.body.collect(upTo: 1 << 20)), "algogate_cache_fast_hits_total")
        }
        for _ in 0..<3 { #expect(try await Self.post(pair.gatewayURL + "/v1/algo/demo/Hello/0.1.0", key: Keys.teamB, input: #""F""#).0 == 200) }
        #expect(try await fastHits() == 2)
        let cacheLine = #"cache: {path: "\#(pair.work.appendingPathComponent("cache.sqlite").path)"}"#
        try ProcessHarness.standardYAML(simPort: pair.simPort, gatewayPort: 0, work: pair.work)
            .replacingOccurrences(of: cacheLine, with: cacheLine.dropLast() + ", fast_hits: false}")
            .write(to: pair.configURL, atomically: true, encoding: .utf8)
        pair.gateway.signal(SIGHUP)
        #expect(await eventually { pair.gateway.log.contains(#""needs_restart":"none""#) })
        for _ in 0..<3 { #expect(try await Self.post(pair.gatewayURL + "/v1/algo/demo/Hello/0.1.0", key: Keys.teamB, input: #""F""#).1.contains("Hello F")) }
        #expect(try await fastHits() == 2)
        // The pipeline counts a request once its answer has been sent, so possibly just after the
        // client has it.
        #expect(try await eventually {
            let stats = try await HTTPClient.shared.execute(HTTPClientRequest(url: pair.gatewayURL + "/metrics"), timeout: .seconds(5)).body.collect(upTo: 1 << 20)
            return metricSample(String(buffer: stats), #"algogate_cache_requests_total{result="hit"}"#) == 5
        })
    }

    @Test func aBadConfigOnSighupKeepsTheOldOneServing() async throws {
        let pair = try await ProcessHarness { ProcessHarness.standardYAML(simPort: $0, gatewayPort: $1, work: $2) }
        defer { pair.stop() }
        try "clients: [this is not: valid".write(to: pair.configURL, atomically: true, encoding: .utf8)
        pair.gateway.signal(SIGHUP)
        #expect(await eventually { pair.gateway.log.contains("reload refused: configuration kept as it was") })
        let after = try await Self.post(pair.gatewayURL + "/v1/algo/demo/Hello/0.1.0", key: Keys.teamB, input: #""still here""#)
        #expect(after.0 == 200)
        #expect(after.1.contains("Hello still here"))
        #expect(pair.gateway.log.contains("reload refused: configuration kept as it was"))
        #expect(pair.gateway.isRunning)
    }

    @Test func tlsRoundTripWithASelfSignedCertificate() async throws {
        try await withTemporaryDirectory("tls") { certs in
            let made = try await SelfSignedCertificate(in: certs, name: "127.0.0.1")
            let (cert, key) = (made.certPath, made.keyPath)

            let tlsPair = try await ProcessHarness {
                ProcessHarness.standardYAML(simPort: $0, gatewayPort: $1, work: $2, extra: "") .replacingOccurrences(
                    of: "server: {host: 127.0.0.1, port: \($1)}",
                    with: "server: {host: 127.0.0.1, port: \($1), tls: {cert_file: \"\(cert)\", key_file: \"\(key)\"}}")
            }
            defer { tlsPair.stop() }
            var tls = TLSConfiguration.makeClientConfiguration()
            tls.trustRoots = .file(cert)
            let url = "https://127.0.0.1:\(tlsPair.gatewayPort)"
            try await using(HTTPClient(eventLoopGroupProvider: .singleton, configuration: .init(tlsConfiguration: tls))) { client in
                var answered = false
                for _ in 0..<100 where !answered {
                    answered = (try? await client.execute(HTTPClientRequest(url: url + "/healthz"), timeout: .seconds(1))) != nil
                    if !answered { try await Task.sleep(for: .milliseconds(100)) }
                }
                let (status, body) = try await Self.post(url + "/v1/algo/demo/Hello/0.1.0", key: Keys.teamB, input: #""TLS""#, client: client)
                #expect(status == 200)
                #expect(body.contains("Hello TLS"))
                // The repeat is a hit, answered on the event loop behind TLS too.
                let (hitStatus, hitBody) = try await Self.post(url + "/v1/algo/demo/Hello/0.1.0", key: Keys.teamB, input: #""TLS""#, client: client)
                #expect(hitStatus == 200 && hitBody == body)
                let metrics = try await client.execute(HTTPClientRequest(url: url + "/metrics"), timeout: .seconds(5)).body.collect(upTo: 1 << 20)
                #expect(metricSample(String(buffer: metrics), "algogate_cache_fast_hits_total") == 1)
                // Plain HTTP to the TLS port is told to use https:// (TLSReloadTests has the details).
                let plain = try await HTTPClient.shared.execute(HTTPClientRequest(url: "http://127.0.0.1:\(tlsPair.gatewayPort)/healthz"), timeout: .seconds(5))
                #expect(plain.status == .badRequest)
                #expect(String(buffer: try await plain.body.collect(upTo: 1 << 16)).contains("use https:// in the client's address"))
            }

            // A second gateway whose upstream is the TLS one: verified against ca_file, refused without it.
            let teamBHash = ClientRegistry.hash(of: Keys.teamB)
            // The refusal waits out its connect timeout (AsyncHTTPClient tries again until then),
            // so that one is short; a tunnel, then a TLS handshake inside it, once took over 2 s
            // in a full run (a 502), so the calls that must succeed have 10.
            let front = { (caLine: String, connectTimeout: Int) in
                """
                server: {host: 127.0.0.1, port: 0}
                upstream:
                  url: "https://127.0.0.1:\(tlsPair.gatewayPort)"
                  key_env: FRONT_KEY
                  connect_timeout_seconds: \(connectTimeout)
                  \(caLine)
                cache: {enabled: false, path: "\(certs.appendingPathComponent("front.sqlite").path)"}
                clients: [{name: front, key_sha256: "\(teamBHash)", scopes: [algo]}]
                """
            }
            for (caLine, expected) in [("ca_file: \"\(cert)\"", 200), ("", 502)] {
                let loaded = try ConfigLoader.load(yaml: front(caLine, expected == 200 ? 10 : 2), environment: ["FRONT_KEY": Keys.teamB])
                let httpClient = HTTPClient(eventLoopGroupProvider: .singleton, configuration: Forwarder.clientConfiguration(loaded))
                let app = GatewayApp(state: try GatewayState(loaded), httpClient: httpClient, logger: LogCapture().logger,
                                     storage: try GatewayStorage.open(loaded.config))
                try await LiveServer.run({ try! app.application(onServerRunning: $0) }) { port in
                    let asked = ContinuousClock.now
                    let reply = try await TestHTTP(port: port).send(.POST, "/v1/algo/demo/Hello/0.1.0", headers: simple(Keys.teamB) + jsonType, text: #""chain""#)
                    #expect(reply.status == expected, "\(caLine.isEmpty ? "system roots" : "ca_file")")
                    if expected == 502 {
                        #expect(envelope(reply).message == "the upstream's TLS certificate could not be verified")
                        // As the README says: tried again until the connect timeout has passed.
                        #expect(ContinuousClock.now - asked >= .milliseconds(1_900))
                    } else {
                        #expect(reply.object["result"] as? String == "Hello chain")
                    }
                }
            }

            // Through an egress proxy: TLS to the upstream inside the proxy's tunnel, so the proxy
            // passes the call on without reading the key, the input or the answer.
            let proxy = try await TunnelProxy.start()
            let loaded = try ConfigLoader.load(yaml: front("ca_file: \"\(cert)\"\n  proxy: {url: \"http://127.0.0.1:\(proxy.port)\"}", 10),
                                               environment: ["FRONT_KEY": Keys.teamB])
            let proxiedClient = HTTPClient(eventLoopGroupProvider: .singleton, configuration: Forwarder.clientConfiguration(loaded))
            let proxied = GatewayApp(state: try GatewayState(loaded), httpClient: proxiedClient, logger: LogCapture().logger,
                                     storage: try GatewayStorage.open(loaded.config))
            try await LiveServer.run({ try! proxied.application(onServerRunning: $0) }) { port in
                let reply = try await TestHTTP(port: port).send(.POST, "/v1/algo/demo/Hello/0.1.0", headers: simple(Keys.teamB) + jsonType, text: #""tunnel""#)
                #expect(reply.status == 200, "\(reply.text)")
                #expect(reply.object["result"] as? String == "Hello tunnel")
            }
            #expect(proxy.connects == [TunnelProxy.Connect(target: "127.0.0.1:\(tlsPair.gatewayPort)", authorization: nil)])
            #expect(proxy.relayedBytes > 0)
            for plain in [Keys.teamB, "tunnel", "Hello", "/v1/algo"] { #expect(!proxy.relayed(plain), "\(plain) crossed the proxy in the clear") }
            await proxy.stop()
        }
    }
}
