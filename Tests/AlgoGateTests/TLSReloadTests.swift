import AlgoGate
import AlgoTestSupport
import AsyncHTTPClient
import Foundation
import NIOSSL
import Synchronization
import Testing

/// `server.tls`: the certificate and key are checked when the configuration loads, and read
/// anew at each reload, so a renewed certificate is presented without a restart. The upstream's
/// CA bundle (`upstream.ca_file`) is checked as the configuration loads too.
@Suite struct TLSReloadTests {

    @Test func certificateFilesThatCannotWorkAreRefusedNamingTheField() async throws {
        try await withTemporaryDirectory("tls-files") { directory in
            let a = try await SelfSignedCertificate(in: directory, name: "a"), b = try await SelfSignedCertificate(in: directory, name: "b")
            func file(_ name: String, _ content: String) throws -> String {
                let path = directory.appendingPathComponent(name).path
                try content.write(toFile: path, atomically: true, encoding: .utf8)
                return path
            }
            let (certA, keyA, keyB) = (try file("a.pem", a.cert), try file("a-key.pem", a.key), try file("b-key.pem", b.key))
            let junk = try file("junk.pem", "not a certificate\n")
            let cases = [
                (junk, keyA, "server.tls.cert_file: \(junk) holds no PEM certificate"),
                (keyA, keyA, "server.tls.cert_file: \(keyA) holds no PEM certificate"),
                (certA, junk, "server.tls.key_file: \(junk) holds no PEM private key (an encrypted key is not read)"),
                (certA, certA, "server.tls.key_file: \(certA) holds no PEM private key (an encrypted key is not read)"),
                (certA, keyB, "server.tls.key_file: the key in \(keyB) does not belong to the certificate in \(certA)"),
            ]
            for (cert, key, expected) in cases {
                let yaml = ConfigTests.yaml("clients: [{name: a, key_sha256: \"\(ConfigTests.hashA)\", scopes: [algo]}]")
                    .replacingOccurrences(of: "upstream:", with: "server: {tls: {cert_file: \"\(cert)\", key_file: \"\(key)\"}}\nupstream:")
                #expect(ConfigTests.refusal(yaml)?.description == expected)
            }
            let good = ConfigTests.yaml("clients: [{name: a, key_sha256: \"\(ConfigTests.hashA)\", scopes: [algo]}]")
                .replacingOccurrences(of: "upstream:", with: "server: {tls: {cert_file: \"\(certA)\", key_file: \"\(keyA)\"}}\nupstream:")
            #expect(ConfigTests.refusal(good) == nil)

            // The upstream's CA bundle: a file that is not PEM would fail every upstream call.
            for (caFile, expected) in [(junk, "upstream.ca_file: \(junk) holds no PEM certificate"), (keyA, "upstream.ca_file: \(keyA) holds no PEM certificate")] {
                let yaml = ConfigTests.yaml("clients: [{name: a, key_sha256: \"\(ConfigTests.hashA)\", scopes: [algo]}]")
                    .replacingOccurrences(of: "key_env: UP_KEY", with: "key_env: UP_KEY\n  ca_file: \"\(caFile)\"")
                #expect(ConfigTests.refusal(yaml)?.description == expected)
            }
            #expect(ConfigTests.refusal(ConfigTests.yaml("clients: [{name: a, key_sha256: \"\(ConfigTests.hashA)\", scopes: [algo]}]")
                .replacingOccurrences(of: "key_env: UP_KEY", with: "key_env: UP_KEY\n  ca_file: \"\(certA)\"")) == nil)
        }
    }

    /// Whether an HTTPS request on a new connection succeeds for a client that trusts only the
    /// certificate in `trusting`: a new client each time, so no pooled connection is reused. A
    /// refused handshake is tried again until `timeout` runs out (the client's connection pool
    /// does that), so where one is expected the timeout is short.
    static func handshakes(port: Int, trusting cert: String, timeout: Duration = .seconds(5)) async -> Bool {
        var tls = TLSConfiguration.makeClientConfiguration()
        guard let roots = try? NIOSSLCertificate.fromPEMBytes(Array(cert.utf8)) else { return false }
        tls.trustRoots = .certificates(roots)
        let client = HTTPClient(eventLoopGroupProvider: .singleton, configuration: .init(tlsConfiguration: tls))
        let response = try? await client.execute(HTTPClientRequest(url: "https://127.0.0.1:\(port)/healthz"), timeout: .init(timeout))
        try? await client.shutdown()
        return response?.status == .ok
    }

    /// A renewed certificate in the mounted Secret (cert-manager's renewal, say): presented from
    /// the next handshake on, with `--watch`, no signal and no restart; a pair that does not
    /// match is refused and the one before stays.
    @Test func aRenewedCertificateIsPresentedFromTheNextHandshake() async throws {
        try await withTemporaryDirectory("tls-reload") { certs in
            let a = try await SelfSignedCertificate(in: certs, name: "a"), b = try await SelfSignedCertificate(in: certs, name: "b")
            let holder = Mutex<MountedVolume?>(nil)
            let pair = try await ProcessHarness(serveArguments: ["--watch", "1"], writeConfig: { yaml, work in
                let secret = try MountedVolume(in: work, name: "tls", files: ["tls.crt": a.cert, "tls.key": a.key])
                holder.withLock { $0 = secret }
                let file = work.appendingPathComponent("gateway.yaml")
                try yaml.write(to: file, atomically: true, encoding: .utf8)
                return file
            }) { simPort, gatewayPort, work in
                ProcessHarness.standardYAML(simPort: simPort, gatewayPort: gatewayPort, work: work,
                                            server: "tls: {cert_file: \"\(work.path)/tls/tls.crt\", key_file: \"\(work.path)/tls/tls.key\"}")
            }
            defer { pair.stop() }
            let secret = try #require(holder.withLock { $0 })
            let port = pair.gatewayPort
            #expect(await eventually { await Self.handshakes(port: port, trusting: a.cert) }, "the first certificate is served")
            #expect(await Self.handshakes(port: port, trusting: b.cert, timeout: .seconds(1)) == false)

            try secret.update(["tls.crt": b.cert, "tls.key": b.key])
            #expect(await eventually(within: .seconds(20)) { await Self.handshakes(port: port, trusting: b.cert) }, "the renewed certificate is served")
            #expect(await Self.handshakes(port: port, trusting: a.cert, timeout: .seconds(1)) == false)
            #expect(await eventually { pair.gateway.log.contains(#""msg":"configuration reloaded","clients":3,"needs_restart":"none","trigger":"file changed""#) },
                    "\(pair.gateway.log)")

            // A certificate without its key: refused, and the one in place stays.
            try secret.update(["tls.crt": a.cert, "tls.key": b.key])
            #expect(await eventually(within: .seconds(20)) { pair.gateway.log.contains("reload refused") }, "the mismatch is refused")
            #expect(pair.gateway.log.contains("server.tls.key_file: the key in \(secret.path("tls.key")) does not belong to the certificate in \(secret.path("tls.crt"))"),
                    "\(pair.gateway.log)")
            #expect(await Self.handshakes(port: port, trusting: b.cert))
            #expect(!pair.gateway.log.contains("PRIVATE KEY"), "a log line holds the key")
        }
    }
}

extension TLSReloadTests {
    /// The certificate may move (a Secret mounted elsewhere, a file renamed): a reload reads it
    /// where the configuration now names it, and needs no restart; turning TLS off does.
    @Test func certificateFilesNamedElsewhereNeedNoRestart() async throws {
        try await withTemporaryDirectory("tls-moved") { certs in
            let a = try await SelfSignedCertificate(in: certs, name: "a"), b = try await SelfSignedCertificate(in: certs, name: "b")
            let path = certs.appendingPathComponent("gateway.yaml").path
            func write(_ server: String) throws {
                try ConfigTests.yaml("server: \(server)\nclients: [{name: a, key_sha256: \"\(ConfigTests.hashA)\", scopes: [algo]}]")
                    .write(toFile: path, atomically: true, encoding: .utf8)
            }
            try write("{tls: {cert_file: \"\(a.certPath)\", key_file: \"\(a.keyPath)\"}}")
            let state = try GatewayState(try ConfigLoader.load(path: path, environment: ConfigTests.env))
            let logs = LogCapture()
            let reloader = ConfigReloader(path: path, state: state, logger: logs.logger, environment: { ConfigTests.env })
            #expect(state.tls?.serverConfiguration().certificateChain == (try NIOSSLCertificate.fromPEMFile(a.certPath)).map { .certificate($0) })
            try write("{tls: {cert_file: \"\(b.certPath)\", key_file: \"\(b.keyPath)\"}}")
            #expect(reloader.reload())
            #expect(state.snapshot.config.server.tls?.certFile == b.certPath)
            #expect(state.tls?.serverConfiguration().certificateChain == (try NIOSSLCertificate.fromPEMFile(b.certPath)).map { .certificate($0) },
                    "b's certificate is the one served")
            #expect(logs.all.last?.hasSuffix("needs_restart=none trigger=SIGHUP") == true, "\(logs.all)")
            try write("{port: 8080}")
            #expect(reloader.reload())
            #expect(logs.all.last?.hasSuffix("needs_restart=server trigger=SIGHUP") == true, "\(logs.all)")
        }
    }

    /// A client whose address says http:// where the gateway serves HTTPS: its plain request is
    /// answered in plain HTTP saying to use https:// (the TLS handshake alone dropped it: an empty
    /// reply, and nothing logged), logged and counted as malformed; TLS clients are served as ever.
    @Test func aPlainRequestOnTheHTTPSPortIsToldToUseHTTPS() async throws {
        try await withTemporaryDirectory("tls-plain") { directory in
            let certificate = try await SelfSignedCertificate(in: directory, name: "gw")
            try await GatewayHarness.run(serverYAML: "tls: {cert_file: \"\(certificate.certPath)\", key_file: \"\(certificate.keyPath)\"}") { h in
                let plain = try await RawConnection.connect(port: h.gatewayPort, sending:
                    "GET /_gateway/me HTTP/1.1\r\nHost: gateway\r\nAuthorization: Simple \(Keys.teamA)\r\n\r\n")
                #expect(await plain.waitForClose(within: .seconds(30)), "the connection stayed open")
                let answer = try #require(RawResponse.parse(plain.text).first, "no answer: \(plain.text.debugDescription)")
                #expect(answer.statusLine == "HTTP/1.1 400 Bad Request")
                #expect(answer.body == #"{"error":{"error_type":"InputError","message":"this port serves HTTPS: the request came in plain HTTP; use https:// in the client's address (ALGORITHMIA_API)"}}"#)
                #expect(answer.headers["content-type"] == "application/json")
                #expect(answer.headers["connection"] == "close")
                #expect(answer.headers["server"]?.hasPrefix("algogate/") == true)
                #expect(answer.headers["date"]?.hasSuffix(" GMT") == true)
                let requestID = try #require(answer.headers["x-request-id"])

                let line = try #require(await ClientDepartureTests.firstLine(in: h) { $0.contains("route=malformed") })
                #expect(line == "info request bytes_out=\(answer.body.utf8.count) client=- error=a plain HTTP request on the HTTPS port method=- path=- remote=127.0.0.1 request_id=\(requestID) route=malformed status=400")
                #expect(!line.contains(Keys.teamA))
                #expect(h.simulator.stats.snapshot.totalRequests == 0)

                // A TLS client on the same port is served, and sees the refusal counted. (Its first
                // handshake once took over 5 s under a full run's load: allowed 30.)
                #expect(await Self.handshakes(port: h.gatewayPort, trusting: certificate.cert, timeout: .seconds(30)))
                var tls = TLSConfiguration.makeClientConfiguration()
                tls.trustRoots = .certificates(try NIOSSLCertificate.fromPEMBytes(Array(certificate.cert.utf8)))
                let client = HTTPClient(eventLoopGroupProvider: .singleton, configuration: .init(tlsConfiguration: tls))
                let metrics = try await client.execute(HTTPClientRequest(url: "https://127.0.0.1:\(h.gatewayPort)/metrics"), timeout: .seconds(10))
                let text = String(buffer: try await metrics.body.collect(upTo: 1 << 20))
                try await client.shutdown()
                #expect(metricSample(text, #"algogate_requests_total{client="-",route="malformed",status="400"}"#) == 1)
            }
        }
    }
}

/// A fresh self-signed certificate for 127.0.0.1 and localhost (EC P-256, a day long), made with
/// openssl: its files `NAME.crt` and `NAME.key` in `directory`, and their PEM text.
struct SelfSignedCertificate {
    let certPath: String
    let keyPath: String
    let cert: String
    let key: String

    init(in directory: URL, name: String) async throws {
        certPath = directory.appendingPathComponent("\(name).crt").path
        keyPath = directory.appendingPathComponent("\(name).key").path
        let openssl = try await ChildProcess.run(
            executable: URL(fileURLWithPath: "/usr/bin/env"),
            arguments: ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                        "-keyout", keyPath, "-out", certPath, "-days", "1", "-subj", "/CN=\(name)",
                        "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"])
        #expect(openssl.termination == .exited(0), "openssl: \(openssl.log)")
        cert = try String(contentsOfFile: certPath, encoding: .utf8)
        key = try String(contentsOfFile: keyPath, encoding: .utf8)
    }
}
