@testable import AlgoGate
import AlgoTestSupport
import AsyncHTTPClient
import Foundation
import Logging
import Testing

/// The log's last guard: whatever a line would quote, it never holds an upstream key.
@Suite struct LogRedactionTests {
    @Test func everyOccurrenceIsReplacedAndOtherLinesAreLeftAlone() {
        let redactor = LogRedactor()
        redactor.add(Secret("sim-K3Y"))
        let line = Array("sim-K3Y said sim-K3Ysim-K3Y, not sim-K3 or K3Y: sim-K3Y\n".utf8)
        #expect(String(decoding: redactor.redact(line), as: UTF8.self)
            == "[redacted] said [redacted][redacted], not sim-K3 or K3Y: [redacted]\n")
        let clean = Array("nothing to see\n".utf8)
        #expect(redactor.redact(clean) == clean)
        // Keys are kept: a second is searched for too, and adding one again changes nothing.
        redactor.add(Secret("other-KEY"))
        redactor.add(Secret("sim-K3Y"))
        #expect(String(decoding: redactor.redact(Array("other-KEY and sim-K3Y".utf8)), as: UTF8.self) == "[redacted] and [redacted]")
    }

    /// A key holding a quote or a backslash is written escaped in a JSON line, and quoted in a
    /// text one: found in either form.
    @Test func aKeyIsFoundAsEachLineFormatWritesIt() async throws {
        let key = #"k"ey\with-QUOTE"#
        for format in LogLineFormat.allCases {
            try await withTemporaryDirectory("redaction") { directory in
                let file = directory.appendingPathComponent("log")
                try #require(FileManager.default.createFile(atPath: file.path, contents: nil))
                let redactor = LogRedactor()
                redactor.add(Secret(key))
                let descriptor = open(file.path, O_WRONLY)
                defer { close(descriptor) }
                let writer = LogWriter(fileDescriptor: descriptor) { _ in [] }
                let logger = Logger(label: "t") { LineLogHandler(label: $0, format: format, writer: writer, redactor: redactor) }
                logger.warning("failed: \(key)", metadata: ["cause": .string("Authorization: Simple \(key)"), "plain": "kept"])
                #expect(writer.finish(timeout: .seconds(10)))
                let written = try String(contentsOf: file, encoding: .utf8)
                #expect(written.components(separatedBy: "[redacted]").count == 3, "\(format): \(written)")
                #expect(!written.contains(#"k\"ey\\with-QUOTE"#) && !written.contains(key), "\(format): \(written)")
                #expect(written.contains("kept"))
            }
        }
    }

    /// `GatewayState` tells the redactor of the key it starts with and of each one a reload
    /// brings, before requests can use it.
    @Test func theGatewayStateHandsOnEveryUpstreamKey() throws {
        func loaded(_ key: String) throws -> ConfigLoader.Loaded {
            try ConfigLoader.load(yaml: """
                upstream: {url: "http://127.0.0.1:1", key_env: K}
                clients: [{name: a, key_sha256: "\(ClientRegistry.hash(of: Keys.teamA))", scopes: [algo]}]
                """, environment: ["K": key])
        }
        let redactor = LogRedactor()
        let state = try GatewayState(try loaded("first-upstream-KEY"), redactor: redactor)
        #expect(redactor.redact(Array("first-upstream-KEY second-upstream-KEY".utf8)) == Array("[redacted] second-upstream-KEY".utf8))
        try state.replace(with: try loaded("second-upstream-KEY"))
        #expect(redactor.redact(Array("first-upstream-KEY second-upstream-KEY".utf8)) == Array("[redacted] [redacted]".utf8))
    }

    /// End to end through `algogate serve`: the request line quotes what the client sent (its
    /// path, its `X-Forwarded-For`), so a client holding the key could write it into the log, and
    /// after a reload reads a new key from `key_file`, that one is covered as well.
    @Test func aServedGatewaysLogNeverHoldsAnUpstreamKey() async throws {
        let first = Keys.upstream
        let second = "rotated-\(UUID().uuidString)"
        let pair = try await ProcessHarness { simPort, gatewayPort, work in
            let keyFile = work.appendingPathComponent("upstream.key")
            try? first.write(to: keyFile, atomically: true, encoding: .utf8)
            return ProcessHarness.standardYAML(simPort: simPort, gatewayPort: gatewayPort, work: work)
                .replacingOccurrences(of: "key_env: \(ProcessHarness.keyVariable)", with: "key_file: \"\(keyFile.path)\"")
        }
        defer { pair.stop() }
        let http = TestHTTP(port: pair.gatewayPort)
        // Outside team-a's prefix: refused here, so the upstream (whose 404 would quote the path,
        // and be withheld for it) is not asked.
        let quoting = try await http.send(.GET, "/v1/data/.my/team-b/\(first)",
                                          headers: simple(Keys.teamA) + [("X-Request-ID", "quote-1"), ("X-Forwarded-For", first)])
        #expect(quoting.status == 403)
        #expect(await eventually { pair.gateway.log.contains("quote-1") })

        try second.write(to: pair.work.appendingPathComponent("upstream.key"), atomically: true, encoding: .utf8)
        pair.gateway.signal(SIGHUP)
        #expect(await eventually { pair.gateway.log.contains("configuration reloaded") })
        _ = try await http.send(.GET, "/v1/data/.my/team-b/\(second)/\(first)", headers: simple(Keys.teamA) + [("X-Request-ID", "quote-2")])
        #expect(await eventually { pair.gateway.log.contains("quote-2") })

        let lines = pair.gateway.log.split(separator: "\n").filter { $0.contains("quote-") }
        #expect(lines.count == 2)
        #expect(lines.first?.contains(#""path":"/v1/data/.my/team-b/[redacted]""#) == true, "\(lines)")
        #expect(lines.first?.contains(#""forwarded_for":"[redacted]""#) == true, "\(lines)")
        #expect(lines.last?.contains(#""path":"/v1/data/.my/team-b/[redacted]/[redacted]""#) == true, "\(lines)")
        #expect(!pair.gateway.log.contains(first) && !pair.gateway.log.contains(second))
    }
}
