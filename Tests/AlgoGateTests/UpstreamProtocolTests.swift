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

/// The gateway speaks HTTP/1.1 to the upstream, also when the upstream offers HTTP/2 in its TLS
/// handshake (ALPN), as a load balancer in front of an API often does: its connection pool,
/// sized by `upstream.max_concurrency`, its replay of a request whose pooled connection was lost,
/// and `abandoned_calls: cancel` closing a call's connection all work per connection, and a
/// connection that fails takes one call with it, not every call multiplexed on it.
@Suite struct UpstreamProtocolTests {
    // A client that took h2 here would fail its calls and keep its connection at shutdown.
    @Test(.timeLimit(.minutes(1))) func anUpstreamOfferingHTTP2IsSpokenToInHTTP11() async throws {
        try await withTemporaryDirectory("alpn") { directory in
            let certificate = try await SelfSignedCertificate(in: directory, name: "upstream")
            let upstream = try await ALPNUpstream.start(certificate: certificate)
            try await GatewayHarness.run(upstreamYAML: "ca_file: \"\(certificate.certPath)\"\n  timeout_seconds: 5",
                                         upstreamURL: { _ in "https://127.0.0.1:\(upstream.port)" }) { h in
                for input in ["one", "two"] {
                    let reply = try await h.gateway.send(.POST, "/v1/algo/demo/Hello", headers: simple(Keys.teamB) + textType, text: input)
                    #expect(reply.status == 200, "\(reply.text)")
                    #expect(reply.text == ALPNUpstream.answer)
                }
            }
            // Both calls went over one pooled HTTP/1.1 connection, as the handshake settled it.
            #expect(upstream.negotiated == ["http/1.1"])
            await upstream.stop()
        }
    }
}

/// A TLS upstream that offers `h2` before `http/1.1`, records what each handshake settled on, and
/// answers every HTTP/1.1 request with one algorithm answer. A client that chose `h2` gets no
/// answer: its connection preface is not HTTP/1.1.
final class ALPNUpstream: Sendable {
    static let answer = #"{"metadata":{"content_type":"text","duration":0.001},"result":"Hello"}"#
    let port: Int
    private let channel: any Channel
    private let recorder: Recorder

    var negotiated: [String] { recorder.protocols.withLock { $0 } }

    private init(channel: any Channel, port: Int, recorder: Recorder) {
        self.channel = channel
        self.port = port
        self.recorder = recorder
    }

    static func start(certificate: SelfSignedCertificate) async throws -> ALPNUpstream {
        var tls = TLSConfiguration.makeServerConfiguration(
            certificateChain: try NIOSSLCertificate.fromPEMFile(certificate.certPath).map { .certificate($0) },
            privateKey: .privateKey(try NIOSSLPrivateKey(file: certificate.keyPath, format: .pem)))
        tls.applicationProtocols = ["h2", "http/1.1"]
        let context = try NIOSSLContext(configuration: tls)
        let recorder = Recorder()
        let channel = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .childChannelInitializer { child in
                child.eventLoop.makeCompletedFuture {
                    try child.pipeline.syncOperations.addHandler(NIOSSLServerHandler(context: context))
                    try child.pipeline.syncOperations.addHandler(recorder)
                    try child.pipeline.syncOperations.configureHTTPServerPipeline()
                    try child.pipeline.syncOperations.addHandler(Answer())
                }
            }
            .bind(host: "127.0.0.1", port: 0).get()
        return ALPNUpstream(channel: channel, port: channel.localAddress?.port ?? 0, recorder: recorder)
    }

    func stop() async {
        try? await channel.close().get()
    }

    private final class Recorder: ChannelInboundHandler, Sendable {
        typealias InboundIn = ByteBuffer
        let protocols = Mutex<[String]>([])

        func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
            if case .handshakeCompleted(let negotiated) = event as? TLSUserEvent {
                protocols.withLock { $0.append(negotiated ?? "none") }
            }
            context.fireUserInboundEventTriggered(event)
        }
    }

    private final class Answer: ChannelInboundHandler, Sendable {
        typealias InboundIn = HTTPServerRequestPart
        typealias OutboundOut = HTTPServerResponsePart

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            guard case .end = unwrapInboundIn(data) else { return }
            var head = HTTPResponseHead(version: .http1_1, status: .ok)
            head.headers.add(name: "Content-Type", value: "application/json")
            head.headers.add(name: "Content-Length", value: String(ALPNUpstream.answer.utf8.count))
            context.write(wrapOutboundOut(.head(head)), promise: nil)
            context.write(wrapOutboundOut(.body(.byteBuffer(context.channel.allocator.buffer(string: ALPNUpstream.answer)))), promise: nil)
            context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: nil)
        }
    }
}
