import AlgoTestSupport
import CompressNIO
import Foundation
import Hummingbird
import Logging
import NIOCore
import Synchronization

/// An upstream in the test process whose `test/Sleep` calls wait for the test to open `release`
/// before they sleep the milliseconds in their input and answer; `arrived` opens when the first
/// comes in. `demo/Hello/0.1.0` answers at once. `test/Hold` (and `test/Hold/1.0.0`, which echo
/// their input) and `test/Large` (and `test/Large/1.0.0`: an answer of as many bytes as its input
/// names; `test/LargeGzip` and `test/LargeDeflate` send it compressed, `test/NoisyGzip` (and
/// `test/NoisyGzip/1.0.0`) sends `noisy`'s answer, which gzip shrinks by only a third, its body held back after 1 KiB until
/// `bodies` opens; `test/Chunked` sends `test/Large`'s
/// answer chunked, with no length) calls wait for `release` too, and count in `abandoned` when the
/// gateway closes their connection first.
///
/// `test/Boast` answers at once in Algorithmia's envelope, its `metadata.duration` the text of
/// its input (a claim of compute no call of milliseconds could have used).
///
/// `test/Timed/1.0.0` waits for `release` too (counted in `holds`), then answers at once as an
/// algorithm running its input's milliseconds would under the call's `timeout` option: Algorithmia's
/// timeout error when the timeout is shorter, else the result.
///
/// `test/Trickle` (and `test/Trickle/1.0.0`) sends `hello` chunked after a space every 200 ms for
/// the milliseconds its input names, at once.
///
/// For tests that must act while calls are held upstream (a signal, a reload, a queue filling up
/// behind them). Such tests once watched a simulator call of a few seconds instead, and failed
/// about one full run in ten: a loaded machine left the test's tasks unscheduled for seconds at a
/// time, so the window passed unseen. Here the state lasts until the test ends it.
final class HeldUpstream: Sendable {
    let arrived = Latch()
    let release = Latch()
    /// `test/NoisyGzip` sends its head and first bytes, then the rest once this opens.
    let bodies = Latch()
    private let sleepCalls = Atomic<Int>(0)
    /// The `test/Sleep` calls that have come in.
    var calls: Int { sleepCalls.load(ordering: .relaxed) }
    private let holdCalls = Atomic<Int>(0)
    private let abandonedCalls = Atomic<Int>(0)
    /// The `test/Hold` and `test/Large` calls that have come in, and those whose connection the
    /// gateway closed while they were held.
    var holds: Int { holdCalls.load(ordering: .relaxed) }
    var abandoned: Int { abandonedCalls.load(ordering: .relaxed) }
    fileprivate func abandon() { abandonedCalls.add(1, ordering: .relaxed) }

    static func answer(sleptMs: Int) -> String {
        #"{"result":{"slept_ms":\#(sleptMs)},"metadata":{"content_type":"json","duration":0.001}}"#
    }

    /// `test/Timed`'s answer when the call's `timeout` is shorter than its input's milliseconds.
    static func timedOut(seconds: Int) -> String {
        #"{"error":{"message":"algorithm timed out after \#(seconds) seconds","error_type":"AlgorithmTimeoutError"},"metadata":{"duration":\#(seconds)}}"#
    }

    static let hello = #"{"result":"Hello B","metadata":{"content_type":"text","duration":0.001}}"#

    /// `test/Large`'s answer of `size` bytes (at least 13).
    static func large(_ size: Int) -> String {
        #"{"result":""# + String(repeating: "x", count: size - 13) + #""}"#
    }

    /// `test/NoisyGzip`'s answer of `size` bytes (at least 13): letters from a fixed pseudo-random
    /// sequence, so that its gzip bytes are about three quarters of it.
    static func noisy(_ size: Int) -> String {
        var state: UInt64 = 0x9E37_79B9_7F4A_7C15
        let letters = (0..<(size - 13)).map { _ -> Character in
            state = state &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
            return Character(Unicode.Scalar(UInt8(ascii: "a") + UInt8((state >> 33) % 26)))
        }
        return #"{"result":""# + String(letters) + #""}"#
    }

    /// Runs `body` with the upstream and its port; held calls are let go when `body` ends, so
    /// that the server can shut down.
    static func run<Value: Sendable>(_ body: (HeldUpstream, Int) async throws -> Value) async throws -> Value {
        let upstream = HeldUpstream()
        let router = Router()
        router.post("/v1/algo/test/Sleep") { request, _ -> Response in
            let input = try await request.body.collect(upTo: 1024)
            upstream.sleepCalls.add(1, ordering: .relaxed)
            upstream.arrived.open()
            await upstream.release.wait()
            let milliseconds = Int(String(buffer: input)) ?? 0
            try await Task.sleep(for: .milliseconds(milliseconds))
            return Self.json(Self.answer(sleptMs: milliseconds))
        }
        // Held, then answered as an algorithm running its input's milliseconds would be under
        // the call's `timeout`: the timeout's error when that is shorter, else its result.
        router.post("/v1/algo/test/Timed/1.0.0") { request, _ -> Response in
            let input = String(buffer: try await request.body.collect(upTo: 1024))
            upstream.holdCalls.add(1, ordering: .relaxed)
            upstream.arrived.open()
            await upstream.release.wait()
            let milliseconds = Int(input) ?? 0
            let timeout = request.uri.queryParameters.get("timeout").flatMap { Int($0) } ?? 300
            guard milliseconds <= timeout * 1000 else { return Self.json(Self.timedOut(seconds: timeout)) }
            return Self.json(Self.answer(sleptMs: milliseconds))
        }
        /// A held call: counted, then answered with `answer(input)` once released.
        func held(_ answer: @escaping @Sendable (String) throws -> Response) -> @Sendable (Request, BasicRequestContext) async throws -> Response {
            { request, _ in
                let input = String(buffer: try await request.body.collect(upTo: 16 << 20))
                upstream.holdCalls.add(1, ordering: .relaxed)
                upstream.arrived.open()
                await upstream.release.wait()
                return try answer(input)
            }
        }
        // At once, in the envelope, claiming its input as the seconds the algorithm ran.
        router.post("/v1/algo/test/Boast") { request, _ -> Response in
            let claim = String(buffer: try await request.body.collect(upTo: 1024))
            return Self.json(#"{"result":"done","metadata":{"content_type":"text","duration":\#(claim)}}"#)
        }
        let echo = held { Self.json(#"{"result":\#($0),"metadata":{"content_type":"json","duration":0.001}}"#) }
        router.post("/v1/algo/test/Hold", use: echo)
        router.post("/v1/algo/test/Hold/1.0.0", use: echo)
        let large = held { Self.json(Self.large(Int($0) ?? 13)) }
        router.post("/v1/algo/test/Large", use: large)
        router.post("/v1/algo/test/Large/1.0.0", use: large)
        for (name, coding, algorithm) in [("LargeGzip", "gzip", CompressionAlgorithm.gzip()), ("LargeDeflate", "deflate", .zlib())] {
            router.post("/v1/algo/test/\(name)", use: held { input in
                Response(status: .ok, headers: [.contentType: "application/json", .contentEncoding: coding],
                         body: .init(byteBuffer: ByteBuffer(bytes: try CompressionTests.gzip(Array(Self.large(Int(input) ?? 13).utf8), algorithm))))
            })
        }
        router.post("/v1/algo/test/Chunked", use: held { input in
            let answer = ByteBuffer(string: Self.large(Int(input) ?? 13))
            // In parts of 16 KiB, with no Content-Length: sent chunked.
            return Response(status: .ok, headers: [.contentType: "application/json"], body: .init { writer in
                var rest = answer
                while let part = rest.readSlice(length: min(16_384, rest.readableBytes)), part.readableBytes > 0 {
                    try await writer.write(part)
                }
                try await writer.finish(nil)
            })
        })
        let noisyGzip = held { input in
            let body = ByteBuffer(bytes: try CompressionTests.gzip(Array(Self.noisy(Int(input) ?? 13).utf8), .gzip()))
            return Response(status: .ok, headers: [.contentType: "application/json", .contentEncoding: "gzip"],
                            body: .init(contentLength: body.readableBytes) { [upstream] writer in
                                try await writer.write(body.getSlice(at: body.readerIndex, length: 1024)!)
                                await upstream.bodies.wait()
                                try await writer.write(body.getSlice(at: body.readerIndex + 1024, length: body.readableBytes - 1024)!)
                                try await writer.finish(nil)
                            })
        }
        router.post("/v1/algo/test/NoisyGzip", use: noisyGzip)
        router.post("/v1/algo/test/NoisyGzip/1.0.0", use: noisyGzip)
        // Its head at once, then its body a byte at a time, one every 200 ms for as many
        // milliseconds as its input names, never silent long enough for a read timeout.
        let trickle = { @Sendable (request: Request, _: BasicRequestContext) async throws -> Response in
            let milliseconds = Int(String(buffer: try await request.body.collect(upTo: 1024))) ?? 0
            let answer = ByteBuffer(string: Self.hello)
            return Response(status: .ok, headers: [.contentType: "application/json"], body: .init { writer in
                let spaces = milliseconds / 200
                for _ in 0..<spaces {
                    try await writer.write(ByteBuffer(string: " "))
                    try await Task.sleep(for: .milliseconds(200))
                }
                try await writer.write(answer)
                try await writer.finish(nil)
            })
        }
        router.post("/v1/algo/test/Trickle", use: trickle)
        router.post("/v1/algo/test/Trickle/1.0.0", use: trickle)
        router.post("/v1/algo/demo/Hello/0.1.0") { _, _ in Self.json(Self.hello) }
        return try await LiveServer.run({ onServerRunning in
            Application(router: router, server: .http1(configuration: .init(additionalChannelHandlers: [ClosedWhileHeld(upstream)])),
                        configuration: .init(address: .hostname("127.0.0.1", port: 0)), onServerRunning: onServerRunning,
                        logger: { var logger = Logger(label: "held-upstream"); logger.logLevel = .warning; return logger }())
        }) { port in
            defer {
                upstream.release.open()
                upstream.bodies.open()
            }
            return try await body(upstream, port)
        }
    }

    private static func json(_ text: String) -> Response {
        Response(status: .ok, headers: [.contentType: "application/json"], body: .init(byteBuffer: ByteBuffer(string: text)))
    }
}

/// Counts a connection to the `HeldUpstream` that the gateway closes while calls are held (until
/// the test opens `release`): a held call's connection closes only when the gateway gives it up.
/// Hummingbird's handler is not told, since it is busy waiting.
private final class ClosedWhileHeld: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = NIOAny
    private let upstream: HeldUpstream
    private var counted = false

    init(_ upstream: HeldUpstream) { self.upstream = upstream }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if let event = event as? ChannelEvent, event == .inputClosed { count() }
        context.fireUserInboundEventTriggered(event)
    }

    func channelInactive(context: ChannelHandlerContext) {
        count()
        context.fireChannelInactive()
    }

    private func count() {
        guard !counted, !upstream.release.isOpen else { return }
        counted = true
        upstream.abandon()
    }
}
