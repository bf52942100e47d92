import AlgoGate
import AlgoTestSupport
import AsyncHTTPClient
import Foundation
import NIOCore
import Testing

/// Gateway and simulator run as their own processes so the gateway's resident memory can be read.
@Suite struct StreamingMemoryTests {
    @Test func aOneGigabyteUploadAndDownloadStreamThroughInBoundedMemory() async throws {
        let pair = try await ProcessHarness { ProcessHarness.standardYAML(simPort: $0, gatewayPort: $1, work: $2) }
        defer { pair.stop() }
        let gateway = pair.gateway
        let base = pair.gatewayURL
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
