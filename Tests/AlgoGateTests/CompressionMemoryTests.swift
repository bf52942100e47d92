import AlgoTestSupport
import AsyncHTTPClient
import CompressNIO
import Foundation
import NIOCore
import Testing

/// Memory bounds of compression, on a gateway running as its own process.
@Suite struct CompressionMemoryTests {
    /// `data://.my/team-a`, through the gateway.
    static func makeTeamADirectory(_ pair: ProcessHarness) async throws {
        var mkdir = HTTPClientRequest(url: pair.gatewayURL + "/v1/data/.my")
        mkdir.method = .POST
        mkdir.headers.add(name: "Authorization", value: "Simple \(Keys.teamA)")
        mkdir.body = .bytes(ByteBuffer(string: #"{"name":"team-a"}"#))
        #expect(try await TestHTTP.plainClient.execute(mkdir, timeout: .seconds(10)).status.code == 200)
    }

    /// `mebibytes` MiB of zeros as one gzip stream (about a thousandth of the size).
    static func gzippedZeros(mebibytes: Int) throws -> ByteBuffer {
        let compressor = ContentCodingForTests.gzip.compressor
        try compressor.startStream()
        var compressed = ByteBuffer()
        let zeros = ByteBuffer(repeating: 0, count: 1 << 20)
        for index in 0..<mebibytes {
            var chunk = zeros
            var out = try chunk.compressStream(with: compressor, flush: index == mebibytes - 1 ? .finish : .sync)
            compressed.writeBuffer(&out)
        }
        try compressor.finishStream()
        return compressed
    }

    @Test func aDecompressionBombIs413WithoutMemoryGrowth() async throws {
        let pair = try await ProcessHarness { ProcessHarness.standardYAML(simPort: $0, gatewayPort: $1, work: $2) }
        defer { pair.stop() }
        // 1 GiB of zeros, gzip-compressed to about 1 MiB, against the 10 MiB input limit.
        let bomb = try Self.gzippedZeros(mebibytes: 1024)
        let before = pair.gateway.residentBytes ?? 0
        for _ in 0..<3 {
            var request = HTTPClientRequest(url: pair.gatewayURL + "/v1/algo/util/Echo/1.0.0")
            request.method = .POST
            request.headers.add(name: "Authorization", value: "Simple \(Keys.teamB)")
            request.headers.add(name: "Content-Type", value: "application/octet-stream")
            request.headers.add(name: "Content-Encoding", value: "gzip")
            request.body = .bytes(bomb)
            let response = try await TestHTTP.plainClient.execute(request, timeout: .seconds(60))
            #expect(response.status.code == 413)
            let body = String(buffer: try await response.body.collect(upTo: 1 << 16))
            #expect(body == #"{"error":{"error_type":"RequestTooLarge","message":"algorithm input inflates past the 10485760-byte limit (limits.max_request_bytes)"}}"#)
        }
        let peak = pair.gateway.peakResidentBytes ?? .max
        print("compression: 3 gzip bombs (\(bomb.readableBytes >> 10) KiB -> 1 GiB each) refused; gateway RSS before \(before >> 20) MiB, peak \(peak >> 20) MiB")
        #expect(peak - before < 48 << 20)
    }

    @Test func a200MBDownloadIsCompressedOnTheFlyInBoundedMemory() async throws {
        let pair = try await ProcessHarness {
            ProcessHarness.standardYAML(simPort: $0, gatewayPort: $1, work: $2, extra: "compression: {types: [application/octet-stream]}")
        }
        defer { pair.stop() }
        try await Self.makeTeamADirectory(pair)

        let size = 200 << 20
        let line = ByteBuffer(string: String(repeating: "2026-11-24T02:17:34Z INFO request served in 1.23 ms\n", count: 20_000))
        var put = HTTPClientRequest(url: pair.gatewayURL + "/v1/data/.my/team-a/big.log")
        put.method = .PUT
        put.headers.add(name: "Authorization", value: "Simple \(Keys.teamA)")
        let chunks = size / line.readableBytes
        put.body = .stream(RepeatedChunks(chunk: line, count: chunks), length: .known(Int64(chunks * line.readableBytes)))
        #expect(try await TestHTTP.plainClient.execute(put, timeout: .seconds(300)).status.code == 200)
        let before = pair.gateway.residentBytes ?? 0

        var get = HTTPClientRequest(url: pair.gatewayURL + "/v1/data/.my/team-a/big.log")
        get.headers.add(name: "Authorization", value: "Simple \(Keys.teamA)")
        get.headers.add(name: "Accept-Encoding", value: "gzip")
        let response = try await TestHTTP.plainClient.execute(get, timeout: .seconds(300))
        #expect(response.headers.first(name: "Content-Encoding") == "gzip")
        #expect(response.headers.first(name: "Content-Length") == nil)
        let decompressor = ContentCodingForTests.gzip.decompressor
        try decompressor.startStream()
        var wire = 0
        var inflated = 0
        for try await part in response.body {
            wire += part.readableBytes
            var chunk = part
            inflated += try chunk.decompressStream(with: decompressor).readableBytes
        }
        try decompressor.finishStream()
        #expect(inflated == chunks * line.readableBytes)
        let peak = pair.gateway.peakResidentBytes ?? .max
        print("compression: \(inflated >> 20) MiB download sent as \(wire >> 10) KiB of gzip; gateway RSS before \(before >> 20) MiB, peak \(peak >> 20) MiB")
        #expect(peak < 100 << 20)
    }

    /// A data upload sent gzip-encoded is inflated as it streams, a bounded piece at a time: a
    /// compressed chunk of zeros inflates a thousandfold, and one chunk of it inflated whole would
    /// be tens of MiB held at once.
    @Test func aCompressedUploadThatInflatesAThousandfoldStreamsInBoundedMemory() async throws {
        let pair = try await ProcessHarness { ProcessHarness.standardYAML(simPort: $0, gatewayPort: $1, work: $2) }
        defer { pair.stop() }
        try await Self.makeTeamADirectory(pair)
        // 256 MiB of zeros, gzip-compressed to about 256 KiB: a few chunks as it arrives, each of
        // which inflates to tens of MiB.
        let compressed = try Self.gzippedZeros(mebibytes: 256)
        let before = pair.gateway.residentBytes ?? 0

        var put = HTTPClientRequest(url: pair.gatewayURL + "/v1/data/.my/team-a/zeros.bin")
        put.method = .PUT
        put.headers.add(name: "Authorization", value: "Simple \(Keys.teamA)")
        put.headers.add(name: "Content-Encoding", value: "gzip")
        put.body = .bytes(compressed)
        #expect(try await TestHTTP.plainClient.execute(put, timeout: .seconds(300)).status.code == 200)
        var head = HTTPClientRequest(url: pair.gatewayURL + "/v1/data/.my/team-a/zeros.bin")
        head.method = .HEAD
        head.headers.add(name: "Authorization", value: "Simple \(Keys.teamA)")
        let stored = try await TestHTTP.plainClient.execute(head, timeout: .seconds(10))
        #expect(stored.headers.first(name: "Content-Length") == String(256 << 20))
        let peak = pair.gateway.peakResidentBytes ?? .max
        print("compression: a \(compressed.readableBytes >> 10) KiB gzip upload stored as 256 MiB; gateway RSS before \(before >> 20) MiB, peak \(peak >> 20) MiB")
        #expect(peak - before < 48 << 20)
    }
}

enum ContentCodingForTests {
    static var gzip: CompressionAlgorithm { .gzip() }
}
