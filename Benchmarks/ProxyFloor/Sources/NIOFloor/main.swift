import Foundation
import NIOCore
import NIOHTTP1
import NIOPosix

// Any request read whole, sent upstream with a fixed key on the client connection's own upstream
// connection (opened on the same event loop at its first request, kept alive), the answer passed
// back part by part. No auth, limits, logging or Swift concurrency: SwiftNIO's own cost.
// Env: UPSTREAM (http://HOST:PORT), UPSTREAM_KEY, PORT.
let environment = ProcessInfo.processInfo.environment
let upstreamURL = URL(string: environment["UPSTREAM"] ?? "http://127.0.0.1:9000")!
let upstreamHost = upstreamURL.host ?? "127.0.0.1"
let upstreamPort = upstreamURL.port ?? 80
let authorization = "Simple " + (environment["UPSTREAM_KEY"] ?? "")
let port = Int(environment["PORT"] ?? "") ?? 19021

/// The answer's parts, written to the client connection as they arrive.
final class UpstreamHandler: ChannelInboundHandler {
    typealias InboundIn = HTTPClientResponsePart
    let client: Channel

    init(client: Channel) { self.client = client }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let head):
            var headers = HTTPHeaders()
            for (name, value) in head.headers {
                switch name.lowercased() {
                case "connection", "keep-alive", "transfer-encoding": continue
                default: headers.add(name: name, value: value)
                }
            }
            client.write(HTTPServerResponsePart.head(.init(version: .http1_1, status: head.status, headers: headers)), promise: nil)
        case .body(let bytes):
            client.write(HTTPServerResponsePart.body(.byteBuffer(bytes)), promise: nil)
        case .end:
            client.writeAndFlush(HTTPServerResponsePart.end(nil), promise: nil)
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        client.close(promise: nil)
    }
}

final class ClientHandler: ChannelInboundHandler {
    typealias InboundIn = HTTPServerRequestPart

    private var head: HTTPRequestHead?
    private var body: ByteBuffer?
    private var upstream: Channel?
    private var waiting: [HTTPClientRequestPart] = []
    private var connecting = false

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let head):
            self.head = head
            body = nil
        case .body(var bytes):
            if body == nil { body = bytes } else { body!.writeBuffer(&bytes) }
        case .end:
            guard let head else { return }
            var headers = HTTPHeaders()
            headers.add(name: "Host", value: "\(upstreamHost):\(upstreamPort)")
            headers.add(name: "Authorization", value: authorization)
            if let type = head.headers.first(name: "content-type") { headers.add(name: "Content-Type", value: type) }
            headers.add(name: "Content-Length", value: String(body?.readableBytes ?? 0))
            let parts: [HTTPClientRequestPart] = [
                .head(.init(version: .http1_1, method: head.method, uri: head.uri, headers: headers)),
                .body(.byteBuffer(body ?? ByteBuffer())), .end(nil),
            ]
            send(parts, context: context)
        }
    }

    private func send(_ parts: [HTTPClientRequestPart], context: ChannelHandlerContext) {
        if let upstream {
            for part in parts { upstream.write(part, promise: nil) }
            upstream.flush()
            return
        }
        waiting = parts
        guard !connecting else { return }
        connecting = true
        let client = context.channel
        ClientBootstrap(group: context.eventLoop)
            .channelOption(.socketOption(.tcp_nodelay), value: 1)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHTTPClientHandlers()
                    try channel.pipeline.syncOperations.addHandler(UpstreamHandler(client: client))
                }
            }
            .connect(host: upstreamHost, port: upstreamPort)
            .assumeIsolated()
            .whenComplete { result in
                self.connecting = false
                switch result {
                case .success(let channel):
                    self.upstream = channel
                    let parts = self.waiting
                    self.waiting = []
                    self.send(parts, context: context)
                case .failure:
                    context.close(promise: nil)
                }
            }
    }

    func channelInactive(context: ChannelHandlerContext) {
        upstream?.close(promise: nil)
        upstream = nil
    }
}

let group = MultiThreadedEventLoopGroup.singleton
let server = try ServerBootstrap(group: group)
    .serverChannelOption(.backlog, value: 1024)
    .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
    .childChannelOption(.socketOption(.tcp_nodelay), value: 1)
    .childChannelInitializer { channel in
        channel.eventLoop.makeCompletedFuture {
            try channel.pipeline.syncOperations.configureHTTPServerPipeline(withErrorHandling: true)
            try channel.pipeline.syncOperations.addHandler(ClientHandler())
        }
    }
    .bind(host: "127.0.0.1", port: port)
    .wait()
print("NIOFloor on 127.0.0.1:\(port), upstream \(upstreamHost):\(upstreamPort)")
try server.closeFuture.wait()
