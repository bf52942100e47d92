import HummingbirdCore
import HummingbirdTLS
import Logging
import NIOCore
import NIOSSL

/// The HTTPS server's child channel with `PlainRequestOnTLSPortHandler` in front of TLS.
struct TLSPortChannel<Base: ServerChildChannel>: ServerChildChannel {
    typealias Value = Base.Value
    let base: TLSChannel<Base>
    let logger: Logger
    let metrics: GatewayMetrics
    let serverName: String

    func setup(channel: any Channel, logger: Logger) -> EventLoopFuture<Value> {
        channel.eventLoop.makeCompletedFuture {
            try channel.pipeline.syncOperations.addHandler(
                PlainRequestOnTLSPortHandler(logger: self.logger, metrics: self.metrics, serverName: self.serverName))
        }.flatMap {
            self.base.setup(channel: channel, logger: logger)
        }
    }

    func handle(value: Value, logger: Logger) async {
        await base.handle(value: value, logger: logger)
    }
}

/// A client whose address says `http://` where the gateway serves HTTPS sends its request in
/// the clear, which the TLS handshake can only drop: the client saw an empty reply, and the
/// gateway logged nothing. Looking at a connection's first byte (a TLS handshake record begins
/// 0x16, a request line with a method's capital letters), this answers such a request in plain
/// HTTP with the error envelope saying to use `https://`, logs and counts it as a malformed
/// request, and closes the connection; any other connection it leaves to TLS at once.
final class PlainRequestOnTLSPortHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    static let message = "this port serves HTTPS: the request came in plain HTTP; use https:// in the client's address (ALGORITHMIA_API)"

    private let logger: Logger
    private let metrics: GatewayMetrics
    private let serverName: String

    init(logger: Logger, metrics: GatewayMetrics, serverName: String) {
        self.logger = logger
        self.metrics = metrics
        self.serverName = serverName
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let bytes = unwrapInboundIn(data)
        guard let first = bytes.getInteger(at: bytes.readerIndex, as: UInt8.self), (UInt8(ascii: "A")...UInt8(ascii: "Z")).contains(first) else {
            context.fireChannelRead(data)
            context.pipeline.syncOperations.removeHandler(context: context, promise: nil)
            return
        }
        let error = GatewayError.badRequest(Self.message)
        let body = error.body
        let requestID = RequestIDs.next()
        var head = "HTTP/1.1 400 Bad Request\r\nContent-Type: application/json\r\nContent-Length: \(body.readableBytes)\r\n"
        head += "Connection: close\r\nX-Request-ID: \(requestID)\r\nServer: \(serverName)\r\nDate: \(HTTPDate.now())\r\n\r\n"
        var answer = context.channel.allocator.buffer(capacity: head.utf8.count + body.readableBytes)
        answer.writeString(head)
        answer.writeImmutableBuffer(body)
        let loopBound = NIOLoopBound(context, eventLoop: context.eventLoop)
        context.writeAndFlush(wrapOutboundOut(answer)).whenComplete { _ in loopBound.value.close(promise: nil) }

        let status = error.status.code
        metrics.request(client: "-", route: "malformed", status: status)
        logger.info("request", metadata: [
            "request_id": .string(requestID), "client": "-", "route": "malformed", "method": "-", "path": "-",
            "status": .number(status), "bytes_out": .number(body.readableBytes),
            "remote": .string(PeerAddresses.remote(of: context.channel)?.ipAddress ?? "-"),
            "error": .string("a plain HTTP request on the HTTPS port"),
        ])
    }
}
