@testable import AlgoGate
import AlgoTestSupport
import Foundation
import HTTPTypes
import Hummingbird
import Logging
import NIOCore
import Synchronization
import Testing

/// The gateway changes an answer's content coding (it asks the upstream for gzip and inflates it,
/// then compresses for the client as the client prefers), so what names the upstream's bytes must
/// not reach the client unchanged: a range, a strong validator, a digest. Checked against an
/// upstream that serves ranges, validators and digests as a storage service does.
@Suite struct RepresentationTests {
    /// The file the upstream serves: JSON, compressible, over `compression.min_bytes`.
    static let document = Array((#"{"rows":["# + (0..<300).map { #""row \#($0)""# }.joined(separator: ",") + "]}").utf8)

    /// Serves `/v1/data/.my/team-a/doc.json` as a server that ranges over whichever coding it
    /// sends: gzip (ETag `"v1-gzip"`) when asked for it, else plain (ETag `"v1"`), with
    /// `Accept-Ranges`, `Content-MD5` and, for `Range: bytes=A-B`, a 206 of those bytes. And
    /// `/v1/data/.my/team-a/fixed.json`, plain, marked `Cache-Control: no-transform`. Records the
    /// `Accept-Encoding` of each request.
    static func withUpstream(_ body: (Int, Seen) async throws -> Void) async throws {
        let seen = Seen()
        let gzipped = try CompressionTests.gzip(document)
        let router = Router()
        @Sendable func serveDocument(_ request: Request) -> Response {
            let accept = request.headers[.acceptEncoding] ?? ""
            seen.values.withLock { $0.append(accept) }
            let gzip = accept.contains("gzip")
            let bytes = gzip ? gzipped : document
            var headers: HTTPFields = [.contentType: "application/json", .eTag: gzip ? #""v1-gzip""# : #""v1""#,
                                       .acceptRanges: "bytes", HTTPField.Name("Content-MD5")!: gzip ? "gzip-md5" : "plain-md5"]
            if gzip { headers[.contentEncoding] = "gzip" }
            if let range = request.headers[.range], range.hasPrefix("bytes="),
               case let ends = range.dropFirst(6).split(separator: "-").compactMap({ Int($0) }), ends.count == 2 {
                guard ends[0] <= ends[1], ends[0] < bytes.count else {
                    return Response(status: .rangeNotSatisfiable, headers: [.contentRange: "bytes */\(bytes.count)"])
                }
                let last = min(ends[1], bytes.count - 1)
                headers[.contentRange] = "bytes \(ends[0])-\(last)/\(bytes.count)"
                return Response(status: .partialContent, headers: headers, body: .init(byteBuffer: ByteBuffer(bytes: bytes[ends[0]...last])))
            }
            return Response(status: .ok, headers: headers, body: .init(byteBuffer: ByteBuffer(bytes: bytes)))
        }
        // A HEAD answer is the GET's without its body, its Content-Length that of the coding sent.
        router.get("/v1/data/.my/team-a/doc.json") { request, _ in serveDocument(request) }
        router.head("/v1/data/.my/team-a/doc.json") { request, _ in serveDocument(request) }
        router.get("/v1/data/.my/team-a/fixed.json") { _, _ -> Response in
            Response(status: .ok, headers: [.contentType: "application/json", .eTag: #""fixed""#, .acceptRanges: "bytes",
                                            .cacheControl: "private, No-Transform"],
                     body: .init(byteBuffer: ByteBuffer(bytes: document)))
        }
        try await LiveServer.run({ onRunning in
            Application(router: router, configuration: .init(address: .hostname("127.0.0.1", port: 0)), onServerRunning: onRunning,
                        logger: { var logger = Logger(label: "ranging-upstream"); logger.logLevel = .warning; return logger }())
        }) { port in
            try await body(port, seen)
        }
    }

    /// Whether two bodies are the same (compared here so that a failure does not print them).
    static func same(_ got: [UInt8], _ expected: [UInt8]) -> Bool { got == expected }

    final class Seen: Sendable {
        let values = Mutex<[String]>([])
    }

    /// A range is asked of the upstream's plain bytes and sent as it came, never compressed: its
    /// `Content-Range` names plain bytes, and the gateway could not inflate a slice of gzip.
    @Test func aRangeIsServedFromThePlainBytesAndSentAsItCame() async throws {
        try await Self.withUpstream { port, seen in
            try await GatewayHarness.run(upstreamURL: { _ in "http://127.0.0.1:\(port)" }) { h in
                let part = try await h.gateway.send(.GET, "/v1/data/.my/team-a/doc.json",
                                                    headers: simple(Keys.teamA) + [("Accept-Encoding", "gzip"), ("Range", "bytes=10-2009")])
                #expect(part.status == 206)
                #expect(Self.same(part.bytes, Array(Self.document[10...2009])))
                #expect(part.header("Content-Range") == "bytes 10-2009/\(Self.document.count)")
                #expect(part.header("Content-Encoding") == nil)
                #expect(part.header("Content-Length") == "2000")
                // Untouched, so still strong: If-Range can use it.
                #expect(part.header("ETag") == #""v1""#)
                #expect(part.header("Accept-Ranges") == "bytes")
                #expect(part.header("Content-MD5") == "plain-md5")
                #expect(seen.values.withLock { $0 } == ["identity"])
            }
        }
    }

    /// An answer whose coding the gateway changed has a weak ETag and no digest of the upstream's
    /// bytes; one it compressed for the client says nothing of ranges, which are served plain.
    @Test func anAnswerWhoseCodingChangedHasAWeakValidatorAndNoDigest() async throws {
        try await Self.withUpstream { port, seen in
            try await GatewayHarness.run(upstreamURL: { _ in "http://127.0.0.1:\(port)" }) { h in
                // Inflated from the upstream's gzip, then compressed anew for the client.
                let compressed = try await h.gateway.send(.GET, "/v1/data/.my/team-a/doc.json",
                                                          headers: simple(Keys.teamA) + [("Accept-Encoding", "gzip")])
                #expect(compressed.status == 200)
                #expect(compressed.header("Content-Encoding") == "gzip")
                #expect(Self.same(try CompressionTests.gunzip(compressed.bytes), Self.document))
                #expect(compressed.header("ETag") == #"W/"v1-gzip""#)
                #expect(compressed.header("Accept-Ranges") == nil)
                #expect(compressed.header("Content-MD5") == nil)
                #expect(compressed.header("Vary") == "Accept-Encoding")

                // Inflated for a client that takes no coding: ranges stay, since they are served plain.
                let plain = try await h.gateway.send(.GET, "/v1/data/.my/team-a/doc.json", headers: simple(Keys.teamA))
                #expect(plain.status == 200)
                #expect(plain.header("Content-Encoding") == nil)
                #expect(Self.same(plain.bytes, Self.document))
                #expect(plain.header("ETag") == #"W/"v1-gzip""#)
                #expect(plain.header("Accept-Ranges") == "bytes")
                #expect(plain.header("Content-MD5") == nil)
                #expect(seen.values.withLock { $0 } == ["gzip", "gzip"])
            }
        }
    }

    /// A HEAD asks the upstream for plain bytes, so that the size it reports is the plain size a
    /// GET gets (of a gzip answer, which the gateway inflates, it would have none to report).
    @Test func aHeadReportsThePlainSize() async throws {
        try await Self.withUpstream { port, seen in
            try await GatewayHarness.run(upstreamURL: { _ in "http://127.0.0.1:\(port)" }) { h in
                for accept in [[], [("Accept-Encoding", "gzip")]] {
                    let head = try await h.gateway.send(.HEAD, "/v1/data/.my/team-a/doc.json", headers: simple(Keys.teamA) + accept)
                    #expect(head.status == 200)
                    #expect(head.header("Content-Length") == String(Self.document.count))
                    #expect(head.header("Content-Encoding") == nil)
                    #expect(head.header("ETag") == #""v1""#)
                    #expect(head.body.readableBytes == 0)
                }
                #expect(seen.values.withLock { $0 } == ["identity", "identity"])
            }
        }
    }

    /// An answer the upstream marked `no-transform` is not compressed for the client (RFC 9110 §7.7),
    /// and keeps its strong validator.
    @Test func anAnswerMarkedNoTransformIsNotCompressed() async throws {
        try await Self.withUpstream { port, _ in
            try await GatewayHarness.run(upstreamURL: { _ in "http://127.0.0.1:\(port)" }) { h in
                let fixed = try await h.gateway.send(.GET, "/v1/data/.my/team-a/fixed.json",
                                                     headers: simple(Keys.teamA) + [("Accept-Encoding", "gzip, deflate")])
                #expect(fixed.status == 200)
                #expect(fixed.header("Content-Encoding") == nil)
                #expect(Self.same(fixed.bytes, Self.document))
                #expect(fixed.header("ETag") == #""fixed""#)
                #expect(fixed.header("Accept-Ranges") == "bytes")
            }
        }
    }
}
