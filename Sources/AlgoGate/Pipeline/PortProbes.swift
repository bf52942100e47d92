import HummingbirdCore
import Logging
import NIOCore

/// A server's child channel with a handler in front of everything else, which sees the
/// connection's first bytes as they came (before TLS or the HTTP parser): a client that speaks
/// plain HTTP to the HTTPS port, or TLS to the plain one, because its address says the other.
struct ProbedChannel<Base: ServerChildChannel>: ServerChildChannel {
    typealias Value = Base.Value
    let base: Base
    let probe: @Sendable () -> any RemovableChannelHandler

    func setup(channel: any Channel, logger: Logger) -> EventLoopFuture<Value> {
        channel.eventLoop.makeCompletedFuture {
            try channel.pipeline.syncOperations.addHandler(probe())
        }.flatMap {
            self.base.setup(channel: channel, logger: logger)
        }
    }

    func handle(value: Value, logger: Logger) async {
        await base.handle(value: value, logger: logger)
    }
}

/// On the HTTPS port. A client whose address says `http://` sends its request in the clear,
/// which the TLS handshake can only drop: the client saw an empty reply, and the gateway logged
/// nothing. Looking at a connection's first byte (a TLS handshake record begins 0x16, a request
/// line with a method's capital letters), this answers such a request in plain HTTP with the
/// error envelope saying to use `https://`, logs and counts it as a malformed request, and closes
/// the connection; any other connection it leaves to TLS at once.
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

        MalformedRequestHandler.record(error.status.code, bytesOut: body.readableBytes, requestID: requestID, cause: "a plain HTTP request on the HTTPS port",
                                       channel: context.channel, logger: logger, metrics: metrics)
    }
}

/// On the plain-HTTP port: a connection that begins with a TLS handshake record (0x16, then
/// version 3.x), from a client whose address says `https://`. The HTTP parser refuses it as ever
/// (the client, expecting TLS, reads the answer as a wrong TLS version); this tells
/// `MalformedRequestHandler` first, so that the log line and the answer say what happened rather
/// than that the method is invalid.
final class TLSHandshakeOnPlainPortHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer

    /// The user event `MalformedRequestHandler` takes.
    struct Seen {}

    static let message = "this port serves plain HTTP: the client began a TLS handshake; use http:// in the client's address (ALGORITHMIA_API), or serve HTTPS with server.tls"

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let bytes = unwrapInboundIn(data)
        if bytes.getInteger(at: bytes.readerIndex, as: UInt8.self) == 0x16, bytes.getInteger(at: bytes.readerIndex + 1, as: UInt8.self) == 0x03 {
            context.fireUserInboundEventTriggered(Seen())
        }
        context.fireChannelRead(data)
        context.pipeline.syncOperations.removeHandler(context: context, promise: nil)
    }
}
