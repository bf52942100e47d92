import AlgoTestSupport
import AsyncHTTPClient
import CompressNIO
import Foundation
import GRDB
import HTTPTypes
import Hummingbird
import Logging
import NIOCore
import Synchronization
import Testing
@testable import AlgoGate

@Suite struct CompressionTests {
    static func gunzip(_ bytes: [UInt8], _ algorithm: CompressionAlgorithm = .gzip()) throws -> [UInt8] {
        var buffer = ByteBuffer(bytes: bytes)
        return Array(try buffer.decompress(with: algorithm).readableBytesView)
    }

    static func gzip(_ bytes: [UInt8], _ algorithm: CompressionAlgorithm = .gzip()) throws -> [UInt8] {
        var buffer = ByteBuffer(bytes: bytes)
        return Array(try buffer.compress(with: algorithm).readableBytesView)
    }

    static var bigJSON: [String: Any] { ["rows": (0..<400).map { ["id": $0, "name": "row \($0)", "tags": ["a", "b", "c"]] }] }

    @Test func answersRoundTripCompressedAndIdentical() async throws {
        try await GatewayHarness.run { h in
            let plain = try await h.gateway.send(.POST, "/v1/algo/util/Echo/1.0.0", headers: simple(Keys.teamB) + [("Cache-Control", "no-store")], json: Self.bigJSON)
            #expect(plain.header("Content-Encoding") == nil)
            #expect(plain.header("Vary") == "Accept-Encoding")
            let gzip = try await h.gateway.send(.POST, "/v1/algo/util/Echo/1.0.0", headers: simple(Keys.teamB) + [("Accept-Encoding", "gzip"), ("Cache-Control", "no-store")], json: Self.bigJSON)
            #expect(gzip.header("Content-Encoding") == "gzip")
            #expect(gzip.header("Vary") == "Accept-Encoding")
            #expect(gzip.body.readableBytes < plain.body.readableBytes / 4)
            #expect(canonicalJSON((try JSONSerialization.jsonObject(with: Data(try Self.gunzip(gzip.bytes))) as? [String: Any])?["result"]) == canonicalJSON(plain.object["result"]))

            let text = String(repeating: "the quick brown fox jumps over the lazy dog\n", count: 200)
            let deflate = try await h.gateway.send(.POST, "/v1/algo/util/Echo/1.0.0?output=raw", headers: simple(Keys.teamB) + textType + [("Accept-Encoding", "br;q=1, deflate;q=0.9, gzip;q=0.5")], text: text)
            #expect(deflate.header("Content-Encoding") == "deflate")
            #expect(try Self.gunzip(deflate.bytes, .zlib()) == Array(text.utf8))

            let binary = (0..<8192).map { UInt8(truncatingIfNeeded: $0 &* 7) }
            let raw = try await h.gateway.send(.POST, "/v1/algo/util/Echo/1.0.0?output=raw", headers: simple(Keys.teamB) + [("Content-Type", "application/octet-stream"), ("Accept-Encoding", "gzip")], body: binary)
            #expect(raw.header("Content-Encoding") == nil)  // not a compressible type
            #expect(raw.bytes == binary)
            let wrapped = try await h.gateway.send(.POST, "/v1/algo/util/Echo/1.0.0", headers: simple(Keys.teamB) + [("Content-Type", "application/octet-stream"), ("Accept-Encoding", "gzip")], body: binary)
            #expect(wrapped.header("Content-Encoding") == "gzip")  // base64 in JSON is
            let result = (try JSONSerialization.jsonObject(with: Data(try Self.gunzip(wrapped.bytes))) as? [String: Any])?["result"] as? String
            #expect(Data(base64Encoded: result ?? "") == Data(binary))
        }
    }

    @Test func smallBodiesAndRefusedCodingsStayPlain() async throws {
        try await GatewayHarness.run { h in
            let small = try await h.gateway.send(.POST, "/v1/algo/demo/Hello/0.1.0", headers: simple(Keys.teamB) + textType + [("Accept-Encoding", "gzip")], text: "HAL")
            #expect(small.header("Content-Encoding") == nil)
            #expect(small.object["result"] as? String == "Hello HAL")
            for accept in ["gzip;q=0", "gzip;q=0, deflate;q=0", "*;q=0", "identity", "br", "gzip;q=0.5, identity", "*, gzip;q=0.2, deflate;q=0.2"] {
                let reply = try await h.gateway.send(.POST, "/v1/algo/test/Big/1.0.0", headers: simple(Keys.teamB) + jsonType + [("Accept-Encoding", accept)], text: "5000")
                #expect(reply.header("Content-Encoding") == nil, "\(accept)")
                #expect((reply.object["result"] as? String)?.count == 5000, "\(accept)")
            }
        }
        #expect(ContentCoding.preferred(acceptEncoding: ["gzip;q=0, deflate"]) == .deflate)
        #expect(ContentCoding.preferred(acceptEncoding: ["deflate;q=0.5, gzip;q=0.8"]) == .gzip)
        #expect(ContentCoding.preferred(acceptEncoding: ["deflate, gzip"]) == .gzip)
        #expect(ContentCoding.preferred(acceptEncoding: ["*"]) == .gzip)
        #expect(ContentCoding.preferred(acceptEncoding: ["*;q=0.1, gzip;q=0"]) == .deflate)
        #expect(ContentCoding.preferred(acceptEncoding: ["gzip;q=0.000"]) == nil)
        // identity preferred, by name or through `*`, is honoured; unnamed, it is no rival.
        #expect(ContentCoding.preferred(acceptEncoding: ["gzip;q=0.5, identity;q=1"]) == nil)
        #expect(ContentCoding.preferred(acceptEncoding: ["gzip;q=0.5", "identity;q=0.6"]) == nil)
        #expect(ContentCoding.preferred(acceptEncoding: ["*;q=0.5, gzip;q=0.3, deflate;q=0.3"]) == nil)
        #expect(ContentCoding.preferred(acceptEncoding: ["*;q=0.5, gzip;q=0.3"]) == .deflate)
        #expect(ContentCoding.preferred(acceptEncoding: ["gzip;q=0.5, identity;q=0.5"]) == .gzip)
        #expect(ContentCoding.preferred(acceptEncoding: ["gzip;q=0.5"]) == .gzip)
        #expect(ContentCoding.preferred(acceptEncoding: ["deflate;q=0.4, identity;q=0.2"]) == .deflate)
        #expect(ContentCoding.preferred(acceptEncoding: ["identity;q=0"]) == nil)
    }

    /// `compression.min_bytes` (1,024 by default) is the first size compressed: an answer one byte
    /// shorter is sent plain.
    @Test func compressionStartsAtMinBytesExactly() async throws {
        try await GatewayHarness.run { h in
            for (size, coded) in [(1023, false), (1024, true)] {
                let text = String(repeating: "a", count: size)
                let reply = try await h.gateway.send(.POST, "/v1/algo/util/Echo/1.0.0?output=raw",
                                                     headers: simple(Keys.teamB) + textType + [("Accept-Encoding", "gzip"), ("Cache-Control", "no-store")], text: text)
                #expect(reply.status == 200)
                #expect(reply.header("Content-Encoding") == (coded ? "gzip" : nil), "\(size) bytes")
                #expect((coded ? try Self.gunzip(reply.bytes) : reply.bytes) == Array(text.utf8), "\(size) bytes")
            }
        }
    }

    @Test func compressedInputsAreInflatedBeforeKeyingAndForwarding() async throws {
        try await GatewayHarness.run { h in
            let input = Array(try JSONSerialization.data(withJSONObject: Self.bigJSON))
            let plain = try await h.gateway.send(.POST, "/v1/algo/util/Echo/1.0.0", headers: simple(Keys.teamB) + jsonType, body: input)
            #expect(plain.header("X-Cache") == "MISS")
            // `x-gzip` is gzip (RFC 9110 §8.4.1.3), and coding names are read in any case.
            for (encoding, algorithm) in [("gzip", CompressionAlgorithm.gzip()), ("deflate", .zlib()), ("x-gzip", .gzip()), ("GZip", .gzip())] {
                let reply = try await h.gateway.send(.POST, "/v1/algo/util/Echo/1.0.0", headers: simple(Keys.teamB) + jsonType + [("Content-Encoding", encoding)], body: try Self.gzip(input, algorithm))
                #expect(reply.status == 200, "\(encoding)")
                #expect(reply.header("X-Cache") == "HIT", "\(encoding): the key is over the inflated input")
                #expect(canonicalJSON(reply.object["result"]) == canonicalJSON(Self.bigJSON))
            }
            let fresh = ["fresh": String(repeating: "z", count: 3000)]
            let compressed = try await h.gateway.send(.POST, "/v1/algo/util/Echo/1.0.0", headers: simple(Keys.teamB) + jsonType + [("Content-Encoding", "gzip")],
                                                      body: try Self.gzip(Array(try JSONSerialization.data(withJSONObject: fresh))))
            #expect(canonicalJSON(compressed.object["result"]) == canonicalJSON(fresh))
            #expect(h.simulator.stats.snapshot.algoCalls["util/Echo/1.0.0"] == 2)
            #expect(h.simulator.stats.snapshot.headerNames.contains("content-encoding") == false)
        }
    }

    @Test func corruptAndUnsupportedEncodingsAreRefused() async throws {
        try await GatewayHarness.run { h in
            let corrupt = try await h.gateway.send(.POST, "/v1/algo/util/Echo/1.0.0", headers: simple(Keys.teamB) + jsonType + [("Content-Encoding", "gzip")], body: Array("not gzip at all".utf8))
            #expect(corrupt.status == 400)
            #expect(corrupt.text == #"{"error":{"error_type":"InputError","message":"algorithm input is not valid gzip data"}}"#)
            let truncated = try await h.gateway.send(.POST, "/v1/algo/util/Echo/1.0.0", headers: simple(Keys.teamB) + jsonType + [("Content-Encoding", "gzip")],
                                                     body: Array(try Self.gzip(Array(String(repeating: "{}", count: 5000).utf8)).prefix(20)))
            #expect(truncated.status == 400)
            // A deflate body is checked by its Adler-32 trailer: one that is wrong, and one cut off
            // just before it (the DEFLATE data itself whole), are refused.
            let zlib = try Self.gzip(Array(String(repeating: "{}", count: 5000).utf8), .zlib())
            var wrongChecksum = zlib
            wrongChecksum[wrongChecksum.count - 1] ^= 0x01
            for body in [wrongChecksum, Array(zlib.dropLast(4))] {
                let refused = try await h.gateway.send(.POST, "/v1/algo/util/Echo/1.0.0", headers: simple(Keys.teamB) + jsonType + [("Content-Encoding", "deflate")], body: body)
                #expect(refused.status == 400)
                #expect(envelope(refused).message == "algorithm input is not valid deflate data")
            }
            let brotli = try await h.gateway.send(.POST, "/v1/algo/util/Echo/1.0.0", headers: simple(Keys.teamB) + jsonType + [("Content-Encoding", "br")], body: [1, 2, 3])
            #expect(brotli.status == 415)
            #expect(envelope(brotli).message == "Content-Encoding 'br' is not supported; use gzip or deflate")
            // Two codings, even two the gateway reads alone, are refused rather than half undone:
            // inflating the first and forwarding the rest would send the upstream gzip as the input.
            let twice = try Self.gzip(try Self.gzip(Array("twice".utf8)))
            for stacked in ["gzip, gzip", "deflate,gzip"] {
                let refused = try await h.gateway.send(.POST, "/v1/algo/util/Echo/1.0.0", headers: simple(Keys.teamB) + textType + [("Content-Encoding", stacked)], body: twice)
                #expect(refused.status == 415, "\(stacked)")
                #expect(envelope(refused).message == "stacked Content-Encoding '\(stacked)' is not supported; use one of gzip, deflate", "\(stacked)")
            }
            #expect(h.simulator.stats.snapshot.algoCalls.isEmpty)
        }
    }

    /// A gzip body of several members (`cat a.gz b.gz`, bgzip's blocks) is their contents in
    /// turn, as gunzip, Python and Go read it. The gateway once read the first member alone: with
    /// a second member of the same size (each ends with its size, and the body's last one was
    /// checked) it answered, and cached, the first member's call; otherwise it refused valid gzip.
    @Test func aGzipBodyOfSeveralMembersIsTheirContentsInTurn() async throws {
        try await GatewayHarness.run { h in
            let first = Array("hello world 1234567".utf8), second = Array(" and a second line".utf8)
            let alone = try await h.gateway.send(.POST, "/v1/algo/util/Echo/1.0.0", headers: simple(Keys.teamB) + textType + [("Content-Encoding", "gzip")],
                                                 body: try Self.gzip(first))
            #expect(alone.object["result"] as? String == "hello world 1234567")
            for (name, tail) in [("same size", Array("data://.my/team-b/x".utf8)), ("another size", second)] {
                let both = try await h.gateway.send(.POST, "/v1/algo/util/Echo/1.0.0", headers: simple(Keys.teamB) + textType + [("Content-Encoding", "gzip")],
                                                    body: try Self.gzip(first) + Self.gzip(tail))
                #expect(both.status == 200, "\(name)")
                #expect(both.object["result"] as? String == String(decoding: first + tail, as: UTF8.self), "\(name)")
                #expect(both.header("X-Cache") == "MISS", "\(name): not the first member's stored answer")
            }
            // A team kept to prefixes has every member checked.
            let hidden = try await h.gateway.send(.POST, "/v1/algo/util/Echo/1.0.0", headers: simple(Keys.teamA) + jsonType + [("Content-Encoding", "gzip")],
                                                  body: try Self.gzip(Array(#"["data://.my/team-a/x", "#.utf8)) + Self.gzip(Array(#""data://.my/team-b/y"]"#.utf8)))
            #expect(hidden.status == 403)
            #expect(envelope(hidden).message == "algorithm input references data://.my/team-b/y, outside client 'team-a' data prefixes (data://.my/team-a/, s3://bucket/team-a/)")
            // After a member, only another member: anything else is corrupt, as is a second zlib
            // stream after a deflate body's one.
            for (encoding, body) in [("gzip", try Self.gzip(first) + Array("trailing garbage".utf8)),
                                     ("gzip", try Self.gzip(first) + Self.gzip(second).prefix(12)),
                                     ("deflate", try Self.gzip(first, .zlib()) + Self.gzip(second, .zlib())),
                                     // An empty stream's checksum is where a second one's count starts.
                                     ("deflate", try Self.gzip([], .zlib()) + Self.gzip(second, .zlib()))] {
                let refused = try await h.gateway.send(.POST, "/v1/algo/util/Echo/1.0.0", headers: simple(Keys.teamB) + textType + [("Content-Encoding", encoding)], body: body)
                #expect(refused.status == 400, "\(encoding)")
                #expect(envelope(refused).message == "algorithm input is not valid \(encoding) data", "\(encoding)")
            }
            #expect(h.simulator.stats.snapshot.algoCalls["util/Echo/1.0.0"] == 3)

            // A data upload streams: members end wherever the body's parts do, or between them.
            _ = try await h.gateway.send(.POST, "/v1/data/.my", headers: simple(Keys.teamA), json: ["name": "team-a"])
            let lines = (0..<3).map { Array(String(repeating: "member \($0) line\n", count: 20_000).utf8) }
            let put = try await h.gateway.send(.PUT, "/v1/data/.my/team-a/joined.txt", headers: simple(Keys.teamA) + [("Content-Encoding", "gzip")],
                                               body: try lines.flatMap { try Self.gzip($0) })
            #expect(put.status == 200)
            let direct = try await h.sim.send(.GET, "/v1/data/.my/team-a/joined.txt", headers: simple(Keys.upstream))
            #expect(firstDifference(direct.bytes, lines.flatMap { $0 }) == nil)
        }
    }

    /// Inflating as the body streams, with the members cut between parts at every place: each
    /// split reads as the whole does.
    @Test func membersInflateAlikeWhereverTheBodyIsCut() async throws {
        let parts = [Array("first member".utf8), [], Array(String(repeating: "second ", count: 50).utf8)]
        let body = try parts.flatMap { try Self.gzip($0) }
        let whole = parts.flatMap { $0 }
        #expect(Array(try Inflater.inflateAll(ByteBuffer(bytes: body), coding: .gzip, limit: 1 << 20).readableBytesView) == whole)
        for cut in 0...body.count {
            let pieces = [Array(body[..<cut]), Array(body[cut...])].map { ByteBuffer(bytes: $0) }
            let stream = AsyncStream<ByteBuffer> { continuation in
                for piece in pieces { continuation.yield(piece) }
                continuation.finish()
            }
            var inflated: [UInt8] = []
            for try await piece in InflatingSequence(base: stream, coding: .gzip, limit: 1 << 20, corrupt: Forwarder.corruptUpload) { inflated += piece.readableBytesView }
            #expect(inflated == whole, "cut at \(cut)")
        }
        // Past the limit across members, whatever each member says.
        #expect(throws: Inflater.LimitExceeded.self) { try Inflater.inflateAll(ByteBuffer(bytes: body), coding: .gzip, limit: whole.count - 1) }
    }

    @Test func theUpstreamIsAskedForGzipAndItsAnswersAreInflated() async throws {
        try await GatewayHarness.run { h in
            let reply = try await h.gateway.send(.POST, "/v1/algo/test/Big/1.0.0", headers: simple(Keys.teamB) + jsonType, text: "50000")
            #expect(reply.header("Content-Encoding") == nil)
            #expect((reply.object["result"] as? String)?.count == 50000)
            #expect(h.simulator.stats.snapshot.gzipResponses == 1)
        }
        // The bound applies to the inflated size.
        try await GatewayHarness.run(extraYAML: "limits: {max_response_bytes: 20000}") { h in
            let reply = try await h.gateway.send(.POST, "/v1/algo/test/Big/1.0.0", headers: simple(Keys.teamB) + jsonType, text: "50000")
            #expect(reply.status == 502)
            #expect(h.simulator.stats.snapshot.gzipResponses == 1)
        }
    }

    @Test func gzipCacheHitsAreTheStoredBytes() async throws {
        try await withTemporaryDirectory("gzhit") { directory in
            let path = directory.appendingPathComponent("cache.sqlite").path
            try await GatewayHarness.run(cachePath: path) { h in
                let headers = simple(Keys.teamB) + jsonType + [("Accept-Encoding", "gzip")]
                let miss = try await h.gateway.send(.POST, "/v1/algo/test/Big/1.0.0", headers: headers, text: "40000")
                #expect(miss.header("Cache-Status") == "algogate; fwd=miss; stored")
                #expect(miss.header("Content-Encoding") == "gzip")
                #expect(miss.header("Vary") == "Accept-Encoding")
                #expect(miss.header("Content-Length") == String(miss.bytes.count))
                let hit = try await h.gateway.send(.POST, "/v1/algo/test/Big/1.0.0", headers: headers, text: "40000")
                #expect(hit.header("X-Cache") == "HIT")
                #expect(hit.header("Content-Encoding") == "gzip")
                #expect(hit.header("Content-Length") == String(hit.bytes.count))
                // The call that stored the answer sent the bytes stored, as the hit does.
                #expect(miss.bytes == hit.bytes)
                let plainHit = try await h.gateway.send(.POST, "/v1/algo/test/Big/1.0.0", headers: simple(Keys.teamB) + jsonType, text: "40000")
                #expect(plainHit.header("Content-Encoding") == nil)
                #expect(try Self.gunzip(hit.bytes) == plainHit.bytes)
                let cache = try ResponseCache(path: path, settings: .init(maxBytes: 1 << 30, memoryBytes: 0, compressMinBytes: 1024))
                let stored = try await cache.pool.read { db in try CacheEntry.fetchAll(db) }
                #expect(stored.count == 1 && stored.first?.encoding == "gzip")
                #expect(stored.first.map { Array($0.body) } == hit.bytes)
            }
        }
    }

    /// Calls collapsed behind the one that stores the answer get the stored gzip bytes as well;
    /// an answer of a type the compression step leaves alone (binary, `output=raw`) is stored
    /// compressed but sent as it came, on the first call and its repeats alike.
    @Test func collapsedCallsGetTheStoredGzipAndBinaryAnswersStayPlain() async throws {
        let clock = TestClock()
        try await GatewayHarness.run(now: { clock.now }) { h in
            // 3 s, so that the five overlap even when a loaded machine is slow to send them.
            let headers = simple(Keys.teamB) + jsonType + [("Accept-Encoding", "gzip"), ("X-Sim-Fault", "delay=3000")]
            let replies = try await withThrowingTaskGroup(of: TestHTTP.Reply.self) { group in
                for _ in 0..<5 {
                    group.addTask { try await h.gateway.send(.POST, "/v1/algo/test/Big/1.0.0", headers: headers, text: "30000") }
                }
                return try await group.reduce(into: []) { $0.append($1) }
            }
            #expect(h.simulator.stats.snapshot.algoCalls == ["test/Big/1.0.0": 1])
            // A call that a loaded machine sends after the leader has stored the answer is a hit.
            let statuses = replies.map { $0.header("Cache-Status") ?? "" }
            #expect(statuses.filter { $0 == "algogate; fwd=miss; stored" }.count == 1)
            #expect(statuses.filter { $0 == "algogate; fwd=miss; collapsed" || $0.hasPrefix("algogate; hit") }.count == 4)
            #expect(statuses.contains("algogate; fwd=miss; collapsed"))
            for reply in replies {
                #expect(reply.header("Content-Encoding") == "gzip")
                #expect(reply.header("Content-Length") == String(reply.bytes.count))
                #expect(reply.bytes == replies[0].bytes)
            }
            #expect(((try JSONSerialization.jsonObject(with: Data(try Self.gunzip(replies[0].bytes))) as? [String: Any])?["result"] as? String)?.count == 30000)

            let binary = (0..<8192).map { UInt8(truncatingIfNeeded: $0 &* 7) }
            let binaryHeaders = simple(Keys.teamB) + [("Content-Type", "application/octet-stream"), ("Accept-Encoding", "gzip")]
            for expected in ["algogate; fwd=miss; stored", "algogate; hit; ttl=604800"] {
                let reply = try await h.gateway.send(.POST, "/v1/algo/util/Echo/1.0.0?output=raw", headers: binaryHeaders, body: binary)
                #expect(reply.header("Cache-Status") == expected)
                #expect(reply.header("Content-Encoding") == nil)
                #expect(reply.header("Content-Type") == "application/octet-stream")
                #expect(reply.bytes == binary)
            }
            let stored = try await h.app.storage.pool.read { db in try CacheEntry.filter(Column("algo") == "util/Echo/1.0.0").fetchAll(db) }
            #expect(stored.map(\.encoding) == ["gzip"])
        }
    }

    @Test func compressedDataUploadsAreStoredInflated() async throws {
        try await GatewayHarness.run { h in
            _ = try await h.gateway.send(.POST, "/v1/data/.my", headers: simple(Keys.teamA), json: ["name": "team-a"])
            let text = Array(String(repeating: "line of data\n", count: 10_000).utf8)
            let put = try await h.gateway.send(.PUT, "/v1/data/.my/team-a/log.txt", headers: simple(Keys.teamA) + [("Content-Encoding", "gzip")], body: try Self.gzip(text))
            #expect(put.status == 200)
            let direct = try await h.sim.send(.GET, "/v1/data/.my/team-a/log.txt", headers: simple(Keys.upstream))
            #expect(firstDifference(direct.bytes, text) == nil)
            let corrupt = try await h.gateway.send(.PUT, "/v1/data/.my/team-a/bad.txt", headers: simple(Keys.teamA) + [("Content-Encoding", "gzip")], body: Array("garbage".utf8))
            #expect(corrupt.status == 400)
            // Corrupt well into the body, once the upload streams upstream: garbage after a
            // member, and a member whose trailer does not match it, before another.
            var wrongSize = try Self.gzip(text)
            wrongSize[wrongSize.count - 1] ^= 0x01
            let megabyte = Array(String(repeating: "a longer line of data, and more\n", count: 40_000).utf8)
            for (name, body) in [("garbage", try Self.gzip(text) + Array(repeating: 0x55, count: 200_000)), ("wrong size", wrongSize + (try Self.gzip(text))),
                                 ("garbage after a megabyte", try Self.gzip(megabyte) + Array(repeating: 0x55, count: 1000)),
                                 ("a megabyte cut short", Array(try Self.gzip(megabyte).dropLast(4))),
                                 ("a megabyte with a wrong size", try { var bytes = try Self.gzip(megabyte); bytes[bytes.count - 1] ^= 1; return bytes }())] {
                let refused = try await h.gateway.send(.PUT, "/v1/data/.my/team-a/bad.txt", headers: simple(Keys.teamA) + [("Content-Encoding", "gzip")], body: body)
                #expect(refused.status == 400, "\(name)")
                #expect(refused.text == #"{"error":{"error_type":"InputError","message":"the request body is not valid compressed data for its Content-Encoding"}}"#, "\(name)")
                // What went upstream was never finished, so the upstream stored none of it.
                let stored = try await h.sim.send(.GET, "/v1/data/.my/team-a/bad.txt", headers: simple(Keys.upstream))
                #expect(stored.status == 404, "\(name)")
            }
            // The upstream was sent the plain bytes, and told nothing else.
            #expect(h.simulator.stats.snapshot.headerNames.contains("content-encoding") == false)
        }
    }

    /// With `min_bytes: 0` every compressible answer is compressed for a client that takes gzip,
    /// but for those without a body to code: a HEAD's answer (its length is the plain one) and a
    /// 304. An upstream `Vary` that names `Accept-Encoding` already is not added to.
    @Test func answersWithoutABodyAreNeverCodedAndVaryIsSaidOnce() async throws {
        let json = #"{"items":[\#((0..<200).map { "\"item \($0)\"" }.joined(separator: ","))]}"#
        let router = Router()
        router.get("/v1/algorithms/team-a/Listed") { _, _ -> Response in
            Response(status: .ok, headers: [.contentType: "application/json", .vary: "Accept-Encoding"], body: .init(byteBuffer: ByteBuffer(string: json)))
        }
        router.head("/v1/algorithms/team-a/Listed") { _, _ -> Response in
            Response(status: .ok, headers: [.contentType: "application/json", .contentLength: String(json.utf8.count)])
        }
        router.get("/v1/algorithms/team-a/Unchanged") { _, _ -> Response in
            Response(status: .notModified, headers: [.contentType: "application/json", .eTag: #""v1""#])
        }
        try await LiveServer.run({ onRunning in
            Application(router: router, configuration: .init(address: .hostname("127.0.0.1", port: 0)), onServerRunning: onRunning,
                        logger: { var logger = Logger(label: "bodiless-upstream"); logger.logLevel = .warning; return logger }())
        }) { port in
            try await GatewayHarness.run(extraYAML: "compression: {min_bytes: 0}", upstreamURL: { _ in "http://127.0.0.1:\(port)" }) { h in
                let gzip = simple(Keys.teamA) + [("Accept-Encoding", "gzip")]
                let coded = try await h.gateway.send(.GET, "/v1/algorithms/team-a/Listed", headers: gzip)
                #expect(coded.status == 200)
                #expect(coded.header("Content-Encoding") == "gzip")
                #expect(try Self.gunzip(coded.bytes) == Array(json.utf8))
                let varied: [String] = coded.headers["Vary"]
                let tokens: [String] = varied.flatMap { $0.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces).lowercased() } }
                #expect(tokens.filter { $0 == "accept-encoding" }.count == 1, "\(varied)")

                let head = try await h.gateway.send(.HEAD, "/v1/algorithms/team-a/Listed", headers: gzip)
                #expect(head.status == 200)
                #expect(head.header("Content-Encoding") == nil)
                #expect(head.header("Content-Length") == String(json.utf8.count))
                #expect(head.bytes.isEmpty)

                let unchanged = try await h.gateway.send(.GET, "/v1/algorithms/team-a/Unchanged", headers: gzip + [("If-None-Match", #""v1""#)])
                #expect(unchanged.status == 304)
                #expect(unchanged.header("Content-Encoding") == nil)
                #expect(unchanged.bytes.isEmpty)
            }
        }
    }

    /// An upstream answer that says it is gzip and is not: an algorithm's answer, a management
    /// answer and a download corrupt from their first bytes are each a 502 that says so (the
    /// algorithm's is not cached); a download found truncated once it has begun can only be cut
    /// short, without its last chunk; an empty gzip is an empty answer; a 304 that names gzip
    /// has nothing to inflate.
    @Test func corruptGzipAnswersFromTheUpstreamAreA502() async throws {
        let algoCalls = Atomic<Int>(0)
        let text = (0..<40_000).map { "line \($0) of a long file\n" }.joined()
        let whole = try Self.gzip(Array(text.utf8))
        let gzipped: HTTPFields = [.contentType: "application/octet-stream", .contentEncoding: "gzip"]
        let router = Router()
        router.post("/v1/algo/test/Corrupt/1.0.0") { _, _ -> Response in
            algoCalls.add(1, ordering: .relaxed)
            return Response(status: .ok, headers: [.contentType: "application/json", .contentEncoding: "gzip"],
                            body: .init(byteBuffer: ByteBuffer(string: "not gzip at all")))
        }
        router.get("/v1/algorithms/team-a/Corrupt") { _, _ -> Response in
            Response(status: .ok, headers: [.contentType: "application/json", .contentEncoding: "gzip"],
                     body: .init(byteBuffer: ByteBuffer(string: "not gzip at all")))
        }
        router.get("/v1/data/.my/team-a/corrupt.bin") { _, _ -> Response in
            Response(status: .ok, headers: gzipped, body: .init(byteBuffer: ByteBuffer(string: "not gzip at all")))
        }
        router.get("/v1/data/.my/team-a/cut.bin") { _, _ -> Response in
            Response(status: .ok, headers: gzipped, body: .init(byteBuffer: ByteBuffer(bytes: whole[..<(whole.count / 2)])))
        }
        router.get("/v1/data/.my/team-a/empty.bin") { _, _ -> Response in
            Response(status: .ok, headers: gzipped, body: .init(byteBuffer: ByteBuffer(bytes: try Self.gzip([]))))
        }
        router.get("/v1/data/.my/team-a/whole.bin") { _, _ -> Response in
            Response(status: .ok, headers: gzipped, body: .init(byteBuffer: ByteBuffer(bytes: whole)))
        }
        // A 304 may name the coding its 200 would have had: it has no body to inflate.
        router.get("/v1/data/.my/team-a/unchanged.bin") { _, _ -> Response in
            Response(status: .notModified, headers: [.contentEncoding: "gzip", .eTag: #""v1""#])
        }
        try await LiveServer.run({ onRunning in
            Application(router: router, configuration: .init(address: .hostname("127.0.0.1", port: 0)), onServerRunning: onRunning,
                        logger: { var logger = Logger(label: "corrupt-upstream"); logger.logLevel = .warning; return logger }())
        }) { port in
            try await GatewayHarness.run(upstreamURL: { _ in "http://127.0.0.1:\(port)" }) { h in
                let envelope = #"{"error":{"error_type":"UpstreamError","message":"the upstream sent a corrupt gzip body"}}"#
                for _ in 0..<2 {
                    let call = try await h.gateway.send(.POST, "/v1/algo/test/Corrupt/1.0.0", headers: simple(Keys.teamB) + jsonType, text: "1")
                    #expect(call.status == 502)
                    #expect(call.text == envelope)
                }
                #expect(algoCalls.load(ordering: .relaxed) == 2)

                let management = try await h.gateway.send(.GET, "/v1/algorithms/team-a/Corrupt", headers: simple(Keys.teamA))
                #expect(management.status == 502)
                #expect(management.text == envelope)

                let download = try await h.gateway.send(.GET, "/v1/data/.my/team-a/corrupt.bin", headers: simple(Keys.teamA))
                #expect(download.status == 502)
                #expect(download.text == envelope)

                let empty = try await h.gateway.send(.GET, "/v1/data/.my/team-a/empty.bin", headers: simple(Keys.teamA))
                #expect(empty.status == 200)
                #expect(empty.header("Content-Length") == "0")
                #expect(empty.header("Content-Encoding") == nil)
                #expect(empty.bytes.isEmpty)

                // Its fields as its 200's are sent: no coding, the tag weak.
                let unchanged = try await h.gateway.send(.GET, "/v1/data/.my/team-a/unchanged.bin", headers: simple(Keys.teamA) + [("If-None-Match", #"W/"v1""#)])
                #expect(unchanged.status == 304)
                #expect(unchanged.header("ETag") == #"W/"v1""#)
                #expect(unchanged.header("Content-Encoding") == nil)
                #expect(unchanged.bytes.isEmpty)

                let plain = try await h.gateway.send(.GET, "/v1/data/.my/team-a/whole.bin", headers: simple(Keys.teamA))
                #expect(plain.status == 200)
                #expect(plain.header("Content-Encoding") == nil)
                #expect(firstDifference(plain.bytes, text.utf8) == nil)

                // Begun as a 200, it cannot become a 502: the gateway ends the connection with the
                // body unfinished, so no client takes it for the whole file.
                let request = "GET /v1/data/.my/team-a/cut.bin HTTP/1.1\r\nHost: gw\r\nAuthorization: Simple \(Keys.teamA)\r\nX-Request-ID: gzip-cut-1\r\n\r\n"
                let cut = try await RawConnection.connect(port: h.gatewayPort, sending: request)
                #expect(await cut.waitForClose(within: .seconds(30)))
                let answer = cut.text
                #expect(answer.hasPrefix("HTTP/1.1 200 OK\r\n"))
                #expect(answer.lowercased().contains("\r\ntransfer-encoding: chunked\r\n"))
                #expect(answer.contains("line 100 of a long file\n"))
                #expect(!answer.hasSuffix("\r\n0\r\n\r\n"))
                #expect(!answer.contains("line 39999 of a long file"))
                // Its log line says the upstream's stream broke, and how.
                let line = await FailureLogTests.line(h, "gzip-cut-1")
                #expect(line.hasPrefix("warning request "), "\(line)")
                #expect(FailureLogTests.field(line, "cut") == "upstream")
                #expect(FailureLogTests.field(line, "cause")?.hasPrefix("the upstream sent a corrupt gzip body") == true, "\(line)")
                // No upstream slot is left held by an answer refused or cut short.
                #expect(await eventually { h.app.gate.inFlight == 0 })
            }
        }
    }
}
