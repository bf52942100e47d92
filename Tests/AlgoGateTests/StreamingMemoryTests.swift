import AlgoGate
import AlgoTestSupport
import AsyncHTTPClient
import Foundation
import NIOCore
import Testing

/// Gateway and simulator run as their own processes so the gateway's resident memory can be read.
@Suite struct StreamingMemoryTests {
    @Test func aOneGigabyteUploadAndDownloadStreamThroughInBoundedMemory() async throws {
        let work = FileManager.default.temporaryDirectory.appendingPathComponent("gwmem-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: work, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: work) }
        let simPort = ChildProcess.freePort()
        let gatewayPort = ChildProcess.freePort()
        let sim = try ChildProcess(arguments: ["sim", "--port", "\(simPort)", "--key", Keys.upstream, "--data-dir", work.appendingPathComponent("data").path])
        defer { sim.stop() }
        let config = work.appendingPathComponent("gateway.yaml")
        try """
        server: {host: 127.0.0.1, port: \(gatewayPort)}
        upstream: {url: "http://127.0.0.1:\(simPort)", key_env: MEM_UPSTREAM_KEY}
        \(GatewayHarness.clientsYAML())
        """.write(to: config, atomically: true, encoding: .utf8)
        let gateway = try ChildProcess(arguments: ["serve", "--config", config.path], environment: ["MEM_UPSTREAM_KEY": Keys.upstream])
        defer { gateway.stop() }
        try await ChildProcess.waitForHTTP("http://127.0.0.1:\(simPort)/__sim/health")
        try await ChildProcess.waitForHTTP("http://127.0.0.1:\(gatewayPort)/healthz")
        let base = "http://127.0.0.1:\(gatewayPort)"
        let auth = "Simple \(Keys.teamA)"

        var mkdir = HTTPClientRequest(url: base + "/v1/data/.my")
        mkdir.method = .POST
        mkdir.headers.add(name: "Authorization", value: auth)
        mkdir.body = .bytes(ByteBuffer(string: #"{"name":"team-a"}"#))
        #expect(try await HTTPClient.shared.execute(mkdir, timeout: .seconds(10)).status.code == 200)
        let startRSS = gateway.residentBytes ?? 0

        let size = 1 << 30
        var put = HTTPClientRequest(url: base + "/v1/data/.my/team-a/huge.bin")
        put.method = .PUT
        put.headers.add(name: "Authorization", value: auth)
        put.body = .stream(RepeatedChunks(chunk: ByteBuffer(repeating: 0x5a, count: 1 << 20), count: size >> 20), length: .known(Int64(size)))
        let putResponse = try await HTTPClient.shared.execute(put, timeout: .seconds(600))
        #expect(putResponse.status.code == 200)
        _ = try await putResponse.body.collect(upTo: 1 << 16)

        var get = HTTPClientRequest(url: base + "/v1/data/.my/team-a/huge.bin")
        get.headers.add(name: "Authorization", value: auth)
        let getResponse = try await HTTPClient.shared.execute(get, timeout: .seconds(600))
        #expect(getResponse.headers.first(name: "Content-Length") == "\(size)")
        var received = 0
        for try await part in getResponse.body { received += part.readableBytes }
        #expect(received == size)

        let peak = gateway.peakResidentBytes ?? .max
        print("gateway: 1 GiB PUT then GET through the gateway; RSS before \(startRSS >> 20) MiB, peak \(peak >> 20) MiB (bound: 100 MiB)")
        #expect(peak < 100 << 20)
    }
}
