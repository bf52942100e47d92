import AlgoGate
import AlgoTestSupport
import Foundation
import NIOCore
import NIOPosix
import Synchronization
import Testing

/// Client connections: `server.idle_timeout_seconds` closes idle keep-alive connections and
/// requests whose bytes stop arriving, and never a request that is being answered.
@Suite struct ConnectionTests {
    /// Two seconds: room for a loaded machine's scheduling between the server's clock and the test's.
    static let twoSeconds = "idle_timeout_seconds: 2"
    /// A configuration with nothing but what is required, for the validation tests.
    static let minimalYAML = """
        upstream: {url: "http://127.0.0.1:1", key_env: K}
        clients: [{name: a, key_sha256: "\(ClientRegistry.hash(of: Keys.teamA))", scopes: [algo]}]
        """
    static let noQueue = "queue_timeout_seconds: 0"  // the idle timeout must be above it

    /// A client that connects in the moment the port is checked before start (a load balancer's
    /// health check, a benchmark's wait loop) reaches the check's socket, not the server: it must
    /// be let go, so that it tries again, not held open unanswered.
    @Test func aConnectionMadeWhileThePortIsCheckedIsNotLeftOpen() async throws {
        let early = Mutex<RawConnection?>(nil)
        // A free port, found by binding one and letting it go: another test's process may take it
        // in between, and then another is tried.
        for attempt in 1...5 {
            let probe = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton).bind(host: "127.0.0.1", port: 0).get()
            let port = try #require(probe.localAddress?.port)
            try await probe.close()
            do {
                try await checkListenable(host: "127.0.0.1", port: port) {
                    let connection = try await RawConnection.connect(port: port, sending: "GET /healthz HTTP/1.1\r\nHost: gateway\r\n\r\n")
                    early.withLock { $0 = connection }
                    try await Task.sleep(for: .milliseconds(200))  // time for a server channel that reads to accept it
                }
                break
            } catch let error as IOError where error.errnoCode == EADDRINUSE && attempt < 5 && early.withLock({ $0 }) == nil {
                continue
            }
        }
        let connection = try #require(early.withLock { $0 })
        #expect(await connection.waitForClose(within: .seconds(30)), "the connection was left open")
        #expect(connection.text.isEmpty)
    }

    @Test func aConnectionThatSendsNothingIsClosedAfterTheIdleTimeout() async throws {
        try await GatewayHarness.run(serverYAML: Self.twoSeconds, upstreamYAML: Self.noQueue) { h in
            let silent = try await RawConnection.connect(port: h.gatewayPort)
            #expect(await silent.waitForClose(within: .seconds(30)))
            let open = try #require(silent.closedAt) - silent.openedAt
            #expect(open >= .seconds(1), "closed after \(open), well before the idle timeout")
            #expect(silent.text.isEmpty)
        }
    }

    @Test func aRequestWhoseHeadStopsArrivingIsClosedWithoutAnAnswer() async throws {
        try await GatewayHarness.run(serverYAML: Self.twoSeconds, upstreamYAML: Self.noQueue) { h in
            let slow = try await RawConnection.connect(port: h.gatewayPort, sending: "POST /v1/algo/demo/Hello/0.1.0 HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Simple \(Keys.teamB)\r\n")
            #expect(await slow.waitForClose(within: .seconds(30)))
            #expect(slow.text.isEmpty)
            #expect(h.simulator.stats.snapshot.algoCalls.isEmpty)
        }
    }

    /// A head sent a byte at a time (slowloris) does not keep its connection: the bytes reach the
    /// parser but no request, so the idle timeout runs from the connection's start, as nginx's
    /// `client_header_timeout` runs over a whole head.
    @Test func aHeadTrickledAByteAtATimeIsClosedAtTheIdleTimeout() async throws {
        try await GatewayHarness.run(serverYAML: Self.twoSeconds, upstreamYAML: Self.noQueue) { h in
            let head = "POST /v1/algo/demo/Hello/0.1.0 HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Simple \(Keys.teamB)\r\nX-Padding: \(String(repeating: "a", count: 200))"
            let slow = try await RawConnection.connect(port: h.gatewayPort)
            for byte in head {
                if slow.closedAt != nil { break }
                try? await slow.send(String(byte))
                try await Task.sleep(for: .milliseconds(100))
            }
            #expect(await slow.waitForClose(within: .seconds(30)))
            let held = try #require(slow.closedAt) - slow.openedAt
            // Closed while bytes were still arriving (the whole head takes over 20 s to send),
            // within the 2 s idle timeout and the loaded machine's slack (8.4 s once, beside
            // five CPU hogs).
            #expect(held < .seconds(15), "\(held)")
            #expect(slow.text.isEmpty)
            #expect(h.simulator.stats.snapshot.algoCalls.isEmpty)
        }
    }

    @Test func anIdleKeepAliveConnectionIsClosedAfterItsAnswer() async throws {
        try await GatewayHarness.run(serverYAML: Self.twoSeconds, upstreamYAML: Self.noQueue) { h in
            // Kept open after its answer, then closed as idle: timed on the connection's event
            // loop (a test task stalled past the 2 s timeout once found it already closed). A
            // close with the answer comes within a millisecond of it; the idle close came only
            // 0.65 s after the answer once, on a machine loaded several times over (the answer
            // late, the idle timer perhaps running from before it), so the bound is well below.
            // The test process's event loops, which the gateway shares, were once held up past
            // the idle timeout in a full run: the answer and the idle close 2 s later were then
            // read together, 78 µs apart. A close that came with its answer comes well within
            // the idle timeout of the request; one that came after it is that stall, and the
            // call is made again.
            // A machine stalled for the idle timeout before the gateway read the request closes
            // the connection unanswered, as it should: that attempt is made again too.
            for attempt in 1...3 {
                let client = try await RawConnection.connect(port: h.gatewayPort, sending: "GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
                _ = await eventually { client.text.hasSuffix(#"{"status":"ok"}"#) || client.closedAt != nil }
                if attempt < 3, client.receivedCount == 0, let closed = client.closedAt, closed - client.openedAt >= .seconds(2) { continue }
                #expect(client.text.hasSuffix(#"{"status":"ok"}"#))
                #expect(client.text.hasPrefix("HTTP/1.1 200 OK\r\n"))
                #expect(await client.waitForClose(within: .seconds(30)))
                let answered = try #require(client.lastReceivedAt), closed = try #require(client.closedAt)
                if closed - answered >= .milliseconds(200) { return }
                if closed - client.openedAt < .seconds(2) || attempt == 3 {
                    Issue.record("closed \(closed - answered) after its answer, \(closed - client.openedAt) after it was asked: not kept open as idle")
                    return
                }
            }
        }
    }

    @Test func anAnswerTakingLongerThanTheIdleTimeoutIsNotCut() async throws {
        try await GatewayHarness.run(serverYAML: Self.twoSeconds, upstreamYAML: Self.noQueue) { h in
            let body = "3500"  // the simulator's test/Sleep runs this many milliseconds
            let call = """
                POST /v1/algo/test/Sleep/1.0.0 HTTP/1.1\r
                Host: 127.0.0.1\r
                Authorization: Simple \(Keys.teamB)\r
                Content-Type: application/json\r
                Content-Length: \(body.utf8.count)\r
                \r
                \(body)
                """
            // A machine stalled for the idle timeout before the gateway read the request closes
            // the connection unanswered, as it should; the call then never reached the upstream,
            // and is made again. A call that reached it and was cut is the failure.
            var client = try await RawConnection.connect(port: h.gatewayPort, sending: call)
            for _ in 1..<3 {
                _ = await eventually { client.text.contains(#""result""#) || client.closedAt != nil }
                guard client.receivedCount == 0, client.closedAt != nil, h.simulator.stats.snapshot.algoCalls["test/Sleep"] == nil else { break }
                client = try await RawConnection.connect(port: h.gatewayPort, sending: call)
            }
            #expect(await eventually { client.text.contains(#""result""#) })
            #expect(client.text.hasPrefix("HTTP/1.1 200 OK\r\n"))
            #expect(!client.text.contains("error"))
            let answered = ContinuousClock.now
            #expect(answered - client.openedAt >= .milliseconds(3400))
            #expect(await client.waitForClose(within: .seconds(30)), "and once answered, it idles out")
        }
    }

    /// HTTP/1.0 without keep-alive, and `Connection: close`: the answer says so and the connection
    /// closes at once, not after the idle timeout (the default 75 s here).
    @Test(arguments: ["GET /healthz HTTP/1.0\r\n\r\n", "GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"])
    func aRequestThatDoesNotPersistIsAnsweredAndClosed(request: String) async throws {
        try await GatewayHarness.run { h in
            let started = ContinuousClock.now
            let client = try await RawConnection.connect(port: h.gatewayPort, sending: request)
            // Far below the idle timeout (75 s), and beyond what a loaded machine stalls for (once
            // in CI this answer had not come within 5 s while the whole suite ran).
            #expect(await client.waitForClose(within: .seconds(20)), "not closed \(ContinuousClock.now - started) after the connect")
            let answers = RawResponse.parse(client.text)
            #expect(answers.map(\.statusLine) == ["HTTP/1.1 200 OK"], "\(ContinuousClock.now - started) after the connect")
            #expect(answers.first?.headers["connection"] == "close")
            #expect(answers.first?.body == #"{"status":"ok"}"#)
        }
    }

    @Test func anHTTP10KeepAliveConnectionIsToldItIsKeptAndServesTheNextRequest() async throws {
        try await GatewayHarness.run { h in
            let client = try await RawConnection.connect(port: h.gatewayPort, sending: "GET /healthz HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
            #expect(await eventually { RawResponse.parse(client.text).count == 1 })
            #expect(RawResponse.parse(client.text).first?.headers["connection"] == "keep-alive")
            #expect(client.closedAt == nil)
            try await client.send("GET /readyz HTTP/1.0\r\n\r\n")
            #expect(await client.waitForClose(within: .seconds(30)))
            let answers = RawResponse.parse(client.text)
            #expect(answers.map(\.statusLine) == ["HTTP/1.1 200 OK", "HTTP/1.1 200 OK"])
            #expect(answers.last?.headers["connection"] == "close")
        }
    }

    @Test func anHTTP11ConnectionPersistsWithoutSayingSo() async throws {
        try await GatewayHarness.run { h in
            let client = try await RawConnection.connect(port: h.gatewayPort, sending: "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            #expect(await eventually { RawResponse.parse(client.text).count == 1 })
            #expect(RawResponse.parse(client.text).first?.headers["connection"] == nil)
            try await Task.sleep(for: .milliseconds(300))
            #expect(client.closedAt == nil)
            await client.close()
        }
    }

    /// Beyond `server.max_connections`, a new connection waits in the listen backlog, unanswered,
    /// until an open one closes; then it is served.
    @Test func connectionsBeyondTheMaximumWaitForOneToClose() async throws {
        try await GatewayHarness.run(serverYAML: "max_connections: 2") { h in
            let first = try await RawConnection.connect(port: h.gatewayPort)
            let second = try await RawConnection.connect(port: h.gatewayPort)
            for open in [first, second] {
                try await open.send("GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
                #expect(await eventually { RawResponse.parse(open.text).count == 1 })
            }
            let third = try await RawConnection.connect(port: h.gatewayPort, sending: "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            try await Task.sleep(for: .milliseconds(500))
            #expect(third.text.isEmpty, "not accepted while two are open")
            await first.close()
            #expect(await eventually { RawResponse.parse(third.text).count == 1 })
            #expect(RawResponse.parse(third.text).first?.statusLine == "HTTP/1.1 200 OK")
            await second.close()
            await third.close()
        }
    }

    @Test func theConnectionLimitIsValidated() throws {
        let base = Self.minimalYAML
        #expect(try ConfigLoader.load(yaml: base, environment: ["K": "upstream-key-0123"]).config.server.maxConnections == 10_000)
        #expect(throws: ConfigError(field: "server.max_connections", message: "must be from 1 to 1000000")) {
            try ConfigLoader.load(yaml: base + "\nserver: {max_connections: 0}", environment: ["K": "upstream-key-0123"])
        }
    }

    /// The listening socket gets the configured backlog: `ss` reports a listener's backlog as its
    /// Send-Q. The default is above Hummingbird's 256, which 500 connections opened at once
    /// overflowed (the kernel's ListenOverflows counter rose by hundreds a run of
    /// `fiveHundredCallsFromThreeClientsStayWithinEveryCap`; none with 1,024).
    @Test(arguments: [("", 1024), ("listen_backlog: 77", 77)])
    func theListeningSocketHasTheConfiguredBacklog(serverYAML: String, backlog: Int) async throws {
        try await GatewayHarness.run(serverYAML: serverYAML) { h in
            let ss = try await ChildProcess.run(executable: URL(fileURLWithPath: "/usr/bin/ss"), arguments: ["-ltnH", "sport = :\(h.gatewayPort)"])
            let fields = ss.log.split(whereSeparator: \.isWhitespace)
            #expect(fields.count >= 3 && fields[0] == "LISTEN", "ss printed: \(ss.log)")
            #expect(fields.count >= 3 && fields[2] == "\(backlog)", "ss printed: \(ss.log)")
        }
    }

    @Test func theListenBacklogIsValidated() throws {
        let base = Self.minimalYAML
        #expect(try ConfigLoader.load(yaml: base, environment: ["K": "upstream-key-0123"]).config.server.listenBacklog == 1024)
        #expect(try ConfigLoader.load(yaml: base + "\nserver: {listen_backlog: 4096}", environment: ["K": "upstream-key-0123"]).config.server.listenBacklog == 4096)
        for bad in ["0", "65536", "-1"] {
            #expect(throws: ConfigError(field: "server.listen_backlog", message: "must be from 1 to 65535")) {
                try ConfigLoader.load(yaml: base + "\nserver: {listen_backlog: \(bad)}", environment: ["K": "upstream-key-0123"])
            }
        }
    }

    @Test func theIdleTimeoutIsValidatedAndDefaultsAboveCommonLoadBalancers() throws {
        let base = Self.minimalYAML
        #expect(try ConfigLoader.load(yaml: base, environment: ["K": "upstream-key-0123"]).config.server.idleTimeoutSeconds == 75)
        #expect(try ConfigLoader.load(yaml: base + "\nserver: {idle_timeout_seconds: 45}", environment: ["K": "upstream-key-0123"]).config.server.idleTimeoutSeconds == 45)
        for bad in ["0", "3601"] {
            #expect(throws: ConfigError(field: "server.idle_timeout_seconds", message: "must be from 1 to 3600")) {
                try ConfigLoader.load(yaml: base + "\nserver: {idle_timeout_seconds: \(bad)}", environment: ["K": "upstream-key-0123"])
            }
        }
        #expect(throws: ConfigError(field: "server.idle_timeout_seconds", message: "must be above upstream.queue_timeout_seconds (30), or an upload waiting for an upstream slot is cut")) {
            try ConfigLoader.load(yaml: base + "\nserver: {idle_timeout_seconds: 30}", environment: ["K": "upstream-key-0123"])
        }
    }
}
