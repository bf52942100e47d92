@testable import AlgoGate
import AlgoTestSupport
import Foundation
import HTTPTypes
import Hummingbird
import Logging
import NIOCore
import Synchronization
import Testing

/// An upstream that hands the gateway's key back (a debugging echo server set as `upstream.url`,
/// a proxy's error page, an algorithm that prints what it was sent) never gets it to a client or
/// into the cache: the answer is withheld with a 502, or its stream cut before any byte of the key.
@Suite struct KeyEchoTests {
    @Test func anAlgorithmAnswerHoldingTheKeyIsWithheldAndNotCached() async throws {
        let upstream = EchoingUpstream()
        try await upstream.run { port in
            try await GatewayHarness.run(upstreamURL: { _ in "http://127.0.0.1:\(port)" }) { h in
                var replyIDs: [String] = []
                for path in ["/v1/algo/echo/Headers/1.0.0", "/v1/algo/echo/Headers/1.0.0?gzip=1", "/v1/algo/echo/Headers/1.0.0?pad=100000"] {
                    for _ in 0..<2 {
                        let reply = try await h.gateway.send(.POST, path, headers: simple(Keys.teamB) + jsonType, text: #""hi""#)
                        #expect(reply.status == 502, "\(path)")
                        replyIDs.append(reply.header("X-Request-ID") ?? "")
                        #expect(reply.text == #"{"error":{"error_type":"UpstreamError","message":"the upstream's answer contained the gateway's upstream key, so it was withheld"}}"#)
                    }
                }
                // Each call reached the upstream: nothing withheld was stored and answered again.
                #expect(upstream.algoCalls == 6)
                // The same upstream's clean answers are forwarded and cached as always.
                for expected in ["MISS", "HIT"] {
                    let clean = try await h.gateway.send(.POST, "/v1/algo/echo/Clean/1.0.0", headers: simple(Keys.teamB) + jsonType, text: #""hi""#)
                    #expect(clean.status == 200)
                    #expect(clean.text == EchoingUpstream.cleanAnswer)
                    #expect(clean.header("X-Cache") == expected)
                }
                #expect(upstream.algoCalls == 7)
                let withheld = h.logs.all.filter { $0.contains("the upstream's answer contained the upstream key") }
                #expect(withheld.count == 6)
                // Each names its request by the X-Request-ID its client got, and by nothing else.
                #expect(withheld == replyIDs.map { "error the upstream's answer contained the upstream key; withheld from the client request_id=\($0)" })
                for line in h.logs.all { #expect(!line.contains(Keys.upstream)) }
                let metrics = try await h.gateway.send(.GET, "/metrics").text
                #expect(metricSample(metrics, "algogate_upstream_key_withheld_total") == 6)
            }
        }
    }

    @Test func aResponseHeaderHoldingTheKeyIsWithheld() async throws {
        let upstream = EchoingUpstream()
        try await upstream.run { port in
            try await GatewayHarness.run(upstreamURL: { _ in "http://127.0.0.1:\(port)" }) { h in
                let data = try await h.gateway.send(.GET, "/v1/data/.my/team-a/header", headers: simple(Keys.teamA))
                #expect(data.status == 502)
                #expect(envelope(data).message == "the upstream's answer contained the gateway's upstream key, so it was withheld")
                #expect(data.header("X-Debug-Authorization") == nil)
                let algo = try await h.gateway.send(.POST, "/v1/algo/echo/Header/1.0.0", headers: simple(Keys.teamB) + jsonType, text: #""hi""#)
                #expect(algo.status == 502)
                #expect(algo.header("X-Debug-Authorization") == nil)
                #expect(envelope(algo).type == "UpstreamError")
            }
        }
    }

    /// The key split between two chunks of a streamed body: the first chunk is held until the
    /// second shows the split, so not even the key's first half reaches the client.
    @Test func aStreamHoldingTheKeyIsCutBeforeAnyOfIt() async throws {
        let upstream = EchoingUpstream()
        try await upstream.run { port in
            try await GatewayHarness.run(upstreamURL: { _ in "http://127.0.0.1:\(port)" }) { h in
                for path in ["/v1/data/.my/team-a/split", "/v1/data/.my/team-a/split?gzip=1"] {
                    let raw = try await RawConnection.connect(port: h.gatewayPort, sending:
                        "GET \(path) HTTP/1.1\r\nHost: x\r\nAuthorization: Simple \(Keys.teamA)\r\n\r\n")
                    #expect(await raw.waitForClose(within: .seconds(30)), "\(path)")
                    let text = raw.text
                    #expect(text.hasPrefix("HTTP/1.1 200 OK\r\n"), "\(path)")
                    // Not a byte of the chunk the key starts in was sent (compressed, that chunk is
                    // whatever the inflater made of the first piece), so neither half of the key was.
                    // (In the body: a request ID's hex may hold "aaaa" too, as one did once.)
                    let body = text.range(of: "\r\n\r\n").map { String(text[$0.upperBound...]) } ?? text
                    if !path.hasSuffix("gzip=1") { #expect(!body.contains("aaaa"), "\(path)") }
                    #expect(!text.contains(String(Keys.upstream.prefix(12))), "\(path)")
                    #expect(!text.contains(String(Keys.upstream.suffix(12))), "\(path)")
                    // Cut short: the chunked body never ends.
                    #expect(!text.hasSuffix("0\r\n\r\n"), "\(path)")
                }
                #expect(h.logs.all.filter { $0.contains("the upstream's answer contained the upstream key") }.count == 2)
                let metrics = try await h.gateway.send(.GET, "/metrics").text
                #expect(metricSample(metrics, "algogate_upstream_key_withheld_total") == 2)
                // A cut stream gives its upstream slot back, and is logged as the answer it was.
                #expect(try await eventually {
                    metricSample(try await h.gateway.send(.GET, "/metrics").text, "algogate_upstream_in_flight") == 0
                })
                #expect(h.logs.all.filter { $0.contains("path=/v1/data/.my/team-a/split") && $0.contains("status=200") }.count == 2)
            }
        }
    }

    /// Holding each chunk until the next arrives changes nothing in what is delivered: chunks
    /// shorter than the key, longer ones and single bytes arrive whole and in order.
    @Test func aCleanStreamInChunksOfEverySizeArrivesWhole() async throws {
        let upstream = EchoingUpstream()
        try await upstream.run { port in
            try await GatewayHarness.run(upstreamURL: { _ in "http://127.0.0.1:\(port)" }) { h in
                for path in ["/v1/data/.my/team-a/chunks", "/v1/data/.my/team-a/chunks?gzip=1"] {
                    let reply = try await h.gateway.send(.GET, path, headers: simple(Keys.teamA))
                    #expect(reply.status == 200, "\(path)")
                    #expect(reply.bytes == EchoingUpstream.chunks.flatMap { $0 }, "\(path)")
                }
            }
        }
    }

    /// Every way of splitting the key over two or three chunks is caught, before anything of the
    /// chunk it starts in is given back to be sent.
    @Test func theStreamCheckFindsTheKeyAcrossEverySplit() throws {
        let key = "k3y-0123456789abcdef"
        let keyGuard = KeyEchoGuard(key: Secret(key))
        let before = Array("x".utf8) + Array(repeating: UInt8(ascii: "."), count: 40)
        let whole = before + Array(key.utf8) + Array("tail".utf8)
        let start = before.count
        var splits = 0
        for first in 1..<whole.count {
            for second in first..<whole.count {
                let cuts = [0, first, second, whole.count]
                var stream = KeyEchoGuard.Stream(keyGuard)
                var sent: [UInt8] = []
                var caught = false
                for (from, to) in zip(cuts, cuts.dropFirst()) where from < to {
                    do {
                        if let ready = try stream.pass(ByteBuffer(bytes: whole[from..<to])) { sent += Array(ready.readableBytesView) }
                    } catch {
                        caught = true
                        break
                    }
                }
                #expect(caught, "cuts \(cuts)")
                // What was given back to be sent ends before the chunk the key starts in.
                let keyChunkStart = cuts.last { $0 <= start }!
                #expect(sent.count <= keyChunkStart, "cuts \(cuts)")
                splits += 1
            }
        }
        #expect(splits > 1000)
        // Without the key, everything comes back, in order.
        let clean = Array(repeating: UInt8(ascii: "k"), count: 100)
        for size in [1, 2, 7, 19, 20, 21, 64] {
            var stream = KeyEchoGuard.Stream(keyGuard)
            var sent: [UInt8] = []
            for from in stride(from: 0, to: clean.count, by: size) {
                if let ready = try stream.pass(ByteBuffer(bytes: clean[from..<min(from + size, clean.count)])) { sent += Array(ready.readableBytesView) }
            }
            if let last = stream.finish() { sent += Array(last.readableBytesView) }
            #expect(sent == clean, "chunks of \(size)")
        }
    }
}

/// An upstream that reflects the `Authorization` header it receives, in an algorithm's answer, a
/// response header or a streamed body split across chunks; with `?gzip=1`, gzip-compressed.
final class EchoingUpstream: Sendable {
    static let cleanAnswer = #"{"metadata":{"content_type":"json","duration":0.001},"result":"ok"}"#
    /// Chunks of every size around the key's, for the clean stream.
    static let chunks: [[UInt8]] = [1, 3, 5000, 2, 7, 40_000, 1, 30, 60].enumerated().map { index, size in
        (0..<size).map { UInt8(truncatingIfNeeded: index * 31 + $0) }
    }
    private let calls = Atomic<Int>(0)
    var algoCalls: Int { calls.load(ordering: .relaxed) }

    func run<Value: Sendable>(_ body: (Int) async throws -> Value) async throws -> Value {
        let router = Router()
        router.post("/v1/algo/echo/Headers/:version") { request, _ -> Response in
            self.calls.add(1, ordering: .relaxed)
            let auth = request.headers[.authorization] ?? ""
            // `?pad=N`: N bytes ahead of the key, for an answer large enough to be scanned off the loop.
            let padding = String(repeating: "p", count: request.uri.queryParameters.get("pad", as: Int.self) ?? 0)
            let text = #"{"metadata":{"content_type":"json","duration":0.001},"result":{"padding":"\#(padding)","authorization":"\#(auth)"}}"#
            return try Self.answer(ByteBuffer(string: text), request: request)
        }
        router.post("/v1/algo/echo/Clean/:version") { request, _ -> Response in
            self.calls.add(1, ordering: .relaxed)
            return try Self.answer(ByteBuffer(string: Self.cleanAnswer), request: request)
        }
        router.post("/v1/algo/echo/Header/:version") { request, _ -> Response in
            Response(status: .ok, headers: [.contentType: "application/json", HTTPField.Name("X-Debug-Authorization")!: request.headers[.authorization] ?? ""],
                     body: .init(byteBuffer: ByteBuffer(string: Self.cleanAnswer)))
        }
        router.get("/v1/data/.my/team-a/header") { request, _ -> Response in
            Response(status: .ok, headers: [HTTPField.Name("X-Debug-Authorization")!: request.headers[.authorization] ?? ""],
                     body: .init(byteBuffer: ByteBuffer(string: "x")))
        }
        router.get("/v1/data/.my/team-a/split") { request, _ -> Response in
            let auth = Array((request.headers[.authorization] ?? "").utf8)
            let whole = Array(repeating: UInt8(ascii: "a"), count: 1000) + auth + Array(repeating: UInt8(ascii: "b"), count: 1000)
            return Self.stream(whole, cuts: [1000 + auth.count / 2], request: request)
        }
        router.get("/v1/data/.my/team-a/chunks") { request, _ -> Response in
            var cuts: [Int] = []
            var offset = 0
            for chunk in Self.chunks.dropLast() { offset += chunk.count; cuts.append(offset) }
            return Self.stream(Self.chunks.flatMap { $0 }, cuts: cuts, request: request)
        }
        return try await LiveServer.run({ onRunning in
            Application(router: router, configuration: .init(address: .hostname("127.0.0.1", port: 0)), onServerRunning: onRunning,
                        logger: { var logger = Logger(label: "echoing-upstream"); logger.logLevel = .warning; return logger }())
        }, body)
    }

    private static func gzip(_ request: Request) -> Bool { request.uri.queryParameters["gzip"] == "1" }

    private static func answer(_ body: ByteBuffer, request: Request) throws -> Response {
        guard gzip(request) else { return Response(status: .ok, headers: [.contentType: "application/json"], body: .init(byteBuffer: body)) }
        return Response(status: .ok, headers: [.contentType: "application/json", .contentEncoding: "gzip"],
                        body: .init(byteBuffer: try Deflater.compress(body, coding: .gzip, level: 6)))
    }

    /// `bytes` sent in pieces cut at `cuts`, a pause between them so each arrives on its own; with
    /// gzip, the compressed bytes are cut in as many pieces instead.
    private static func stream(_ bytes: [UInt8], cuts: [Int], request: Request) -> Response {
        var payload = bytes
        var points = cuts
        var headers: HTTPFields = [.contentType: "application/octet-stream"]
        if gzip(request), let compressed = try? Deflater.compress(ByteBuffer(bytes: bytes), coding: .gzip, level: 1) {
            payload = Array(compressed.readableBytesView)
            points = (1...cuts.count).map { payload.count * $0 / (cuts.count + 1) }
            headers[.contentEncoding] = "gzip"
        }
        let pieces = zip([0] + points, points + [payload.count]).map { Array(payload[$0..<$1]) }
        return Response(status: .ok, headers: headers, body: ResponseBody { writer in
            for (index, piece) in pieces.enumerated() {
                if index > 0 { try await Task.sleep(for: .milliseconds(30)) }
                try await writer.write(ByteBuffer(bytes: piece))
            }
            try await writer.finish(nil)
        })
    }
}

@Suite struct KeyEchoSearchTests {
    /// The search looks for the key's rarest byte first, wherever it stands in the key; a match is
    /// found at the haystack's very start and end, and a near miss at either end is not one.
    @Test(arguments: ["Kabc", "abKc", "abcK", "abc", "a", "ab1-x"])
    func findsTheKeyWhereverItsAnchorStands(key: String) {
        let bytes = Array(key.utf8)
        let anchor = KeyEchoGuard.anchor(of: bytes)
        #expect(bytes[anchor] == (bytes.first { $0 >= 65 && $0 <= 90 } ?? bytes.first { $0 >= 48 && $0 <= 57 } ?? bytes.first { $0 == 45 } ?? bytes[0]))
        func find(_ text: [UInt8]) -> Bool {
            bytes.withUnsafeBytes { needle in text.withUnsafeBytes { KeyEchoGuard.find(needle, anchoredAt: anchor, in: $0) } }
        }
        let filler = Array("xx\(key.dropLast())yy".utf8)
        #expect(find(bytes))
        #expect(find(bytes + filler))
        #expect(find(filler + bytes))
        #expect(find(filler + bytes + filler))
        #expect(!find(filler))
        #expect(!find(Array(bytes.dropLast())))
        #expect(!find(Array(bytes.dropFirst()) + filler))
        #expect(!find(filler + Array(bytes.dropLast())))
        #expect(!find([]))
    }
}
