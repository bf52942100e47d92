import AlgoGate
import AlgoTestSupport
import Foundation
import NIOCore
import NIOHTTP1
import NIOPosix
import NIOSSL
import NIOTLS
import Synchronization
import Testing

/// How the gateway holds its upstream connections.
@Suite struct UpstreamConnectionTests {
    /// HTTP/1.1, also when the upstream offers HTTP/2 in its TLS handshake (ALPN), as a load
    /// balancer in front of an API often does: the connection pool, sized by
    /// `upstream.max_concurrency`, the replay of a request whose pooled connection was lost, and
    /// `abandoned_calls: cancel` closing a call's connection all work per connection, and a
    /// connection that fails takes one call with it, not every call multiplexed on it.
    // A client that took h2 here would fail its calls and keep its connection at shutdown.
    @Test(.timeLimit(.minutes(1))) func anUpstreamOfferingHTTP2IsSpokenToInHTTP11() async throws {
        try await withTemporaryDirectory("alpn") { directory in
            let certificate = try await SelfSignedCertificate(in: directory, name: "upstream")
            let upstream = try await FixedAnswerUpstream.start(certificate: certificate)
            try await GatewayHarness.run(upstreamYAML: "ca_file: \"\(certificate.certPath)\"\n  timeout_seconds: 5",
                                         upstreamURL: { _ in "https://127.0.0.1:\(upstream.port)" }) { h in
                for input in ["one", "two"] {
                    let reply = try await h.gateway.send(.POST, "/v1/algo/demo/Hello", headers: simple(Keys.teamB) + textType, text: input)
                    #expect(reply.status == 200, "\(reply.text)")
                    #expect(reply.text == FixedAnswerUpstream.answer)
                }
            }
            // Both calls went over one pooled HTTP/1.1 connection, as the handshake settled it.
            #expect(upstream.negotiated == ["http/1.1"])
            await upstream.stop()
        }
    }

    /// A pooled connection left idle for `upstream.idle_connection_seconds` is closed by the
    /// gateway (so that it, not a load balancer with a longer idle timeout, closes it, and no call
    /// goes out on a connection closing under it); the next call opens a new one.
    @Test func anIdlePooledConnectionIsClosedByTheGatewayAtItsIdleTimeout() async throws {
        let upstream = try await FixedAnswerUpstream.start()
        try await GatewayHarness.run(upstreamYAML: "idle_connection_seconds: 1",
                                     upstreamURL: { _ in "http://127.0.0.1:\(upstream.port)" }) { h in
            let first = try await h.gateway.send(.POST, "/v1/algo/demo/Hello", headers: simple(Keys.teamB) + textType, text: "one")
            #expect(first.status == 200)
            #expect(upstream.connections.opened == 1)
            // The upstream never closes a connection itself: a close is the gateway's, a second
            // after the gateway had the answer, so a second at least after the upstream sent it.
            #expect(await eventually { upstream.connections.closed == 1 })
            let idle = try #require(upstream.lastIdle)
            #expect(idle >= .milliseconds(950), "closed after \(idle) idle")
            let second = try await h.gateway.send(.POST, "/v1/algo/demo/Hello", headers: simple(Keys.teamB) + textType, text: "two")
            #expect(second.status == 200)
            #expect(second.text == FixedAnswerUpstream.answer)
            #expect(upstream.connections.opened == 2)
        }
        await upstream.stop()
        // Left to the default (50 s), a connection idle for 2 s stays open.
        let patient = try await FixedAnswerUpstream.start()
        try await GatewayHarness.run(upstreamURL: { _ in "http://127.0.0.1:\(patient.port)" }) { h in
            #expect(try await h.gateway.send(.POST, "/v1/algo/demo/Hello", headers: simple(Keys.teamB) + textType, text: "one").status == 200)
            try await Task.sleep(for: .seconds(2))
            #expect(patient.connections == (opened: 1, closed: 0))
        }
        await patient.stop()
    }
}

/// An upstream that answers every HTTP/1.1 request with one algorithm answer and never closes a
/// connection itself, counting the connections opened and closed. With a certificate, it speaks
/// TLS and offers `h2` before `http/1.1`, recording what each handshake settled on; a client that
/// chose `h2` gets no answer, its connection preface not being HTTP/1.1.
final class FixedAnswerUpstream: Sendable {
    static let answer = #"{"metadata":{"content_type":"text","duration":0.001},"result":"Hello"}"#
    let port: Int
    private let channel: any Channel
    private let recorder: Recorder

    /// The ALPN protocol each TLS handshake settled on.
    var negotiated: [String] { recorder.state.withLock { $0.protocols } }
    var connections: (opened: Int, closed: Int) { recorder.state.withLock { ($0.opened, $0.closed) } }
    /// How long the last connection to close had been idle since its last answer was sent.
    var lastIdle: Duration? { recorder.state.withLock { $0.lastIdle } }

    private init(channel: any Channel, port: Int, recorder: Recorder) {
        self.channel = channel
        self.port = port
        self.recorder = recorder
    }

    static func start(certificate: SelfSignedCertificate? = nil) async throws -> FixedAnswerUpstream {
        let context = try certificate.map { certificate in
            var tls = TLSConfiguration.makeServerConfiguration(
                certificateChain: try NIOSSLCertificate.fromPEMFile(certificate.certPath).map { .certificate($0) },
                privateKey: .privateKey(try NIOSSLPrivateKey(file: certificate.keyPath, format: .pem)))
            tls.applicationProtocols = ["h2", "http/1.1"]
            return try NIOSSLContext(configuration: tls)
        }
        let recorder = Recorder()
        let channel = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .childChannelInitializer { child in
                child.eventLoop.makeCompletedFuture {
                    if let context { try child.pipeline.syncOperations.addHandler(NIOSSLServerHandler(context: context)) }
                    try child.pipeline.syncOperations.addHandler(recorder)
                    try child.pipeline.syncOperations.configureHTTPServerPipeline()
                    try child.pipeline.syncOperations.addHandler(Answer(recorder))
                }
            }
            .bind(host: "127.0.0.1", port: 0).get()
        return FixedAnswerUpstream(channel: channel, port: channel.localAddress?.port ?? 0, recorder: recorder)
    }

    func stop() async {
        try? await channel.close().get()
    }

    private final class Recorder: ChannelInboundHandler, Sendable {
        typealias InboundIn = ByteBuffer
        struct State {
            var protocols: [String] = [], opened = 0, closed = 0, lastIdle: Duration?
            var answered: [ObjectIdentifier: ContinuousClock.Instant] = [:]
        }
        let state = Mutex(State())

        func channelActive(context: ChannelHandlerContext) {
            state.withLock { $0.opened += 1 }
            context.fireChannelActive()
        }

        func channelInactive(context: ChannelHandlerContext) {
            let now = ContinuousClock.now
            state.withLock { state in
                state.closed += 1
                state.lastIdle = state.answered.removeValue(forKey: ObjectIdentifier(context.channel)).map { now - $0 }
            }
            context.fireChannelInactive()
        }

        func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
            if case .handshakeCompleted(let negotiated) = event as? TLSUserEvent {
                state.withLock { $0.protocols.append(negotiated ?? "none") }
            }
            context.fireUserInboundEventTriggered(event)
        }

        func answered(on channel: any Channel) {
            let now = ContinuousClock.now
            state.withLock { $0.answered[ObjectIdentifier(channel)] = now }
        }
    }

    private final class Answer: ChannelInboundHandler, Sendable {
        typealias InboundIn = HTTPServerRequestPart
        typealias OutboundOut = HTTPServerResponsePart
        let recorder: Recorder
        init(_ recorder: Recorder) { self.recorder = recorder }

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            guard case .end = unwrapInboundIn(data) else { return }
            var head = HTTPResponseHead(version: .http1_1, status: .ok)
            head.headers.add(name: "Content-Type", value: "application/json")
            head.headers.add(name: "Content-Length", value: String(FixedAnswerUpstream.answer.utf8.count))
            context.write(wrapOutboundOut(.head(head)), promise: nil)
            context.write(wrapOutboundOut(.body(.byteBuffer(context.channel.allocator.buffer(string: FixedAnswerUpstream.answer)))), promise: nil)
            context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: nil)
            recorder.answered(on: context.channel)
        }
    }
}
