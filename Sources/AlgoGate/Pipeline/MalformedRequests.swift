import HTTPTypes
import Logging
import NIOCore
import NIOHTTP1
import NIOHTTPTypes

extension GatewayError {
    /// What a client is told when its request is not valid HTTP/1.1: NIO's parser refused it, in
    /// its head (the pipeline never saw it) or in its body (the step reading the body got the error).
    static func malformed(_ error: HTTPParserError) -> GatewayError {
        switch error {
        case .headerOverflow:
            return GatewayError(status: .init(code: 431, reasonPhrase: "Request Header Fields Too Large"), errorType: "RequestTooLarge",
                                message: "the request's header section is too large: at most \(MalformedRequestHandler.maxHeaderKiB) KiB and 1000 fields")
        case .paused:
            // llhttp stops there on HTTP/2's connection preface (`PRI * HTTP/2.0`).
            return .badRequest("HTTP/2 is not served: the gateway speaks HTTP/1.1, over TLS too; send the request as HTTP/1.1 (curl: without --http2-prior-knowledge)")
        case .invalidMethod:
            return .badRequest("the request's method is not one HTTP defines: the API takes GET, HEAD, POST, PUT, PATCH, DELETE and OPTIONS")
        case .invalidURL, .invalidCharactersUsed, .invalidConstant, .invalidVersion:
            // A space left in a path is the usual cause: the parser then meets the path's rest
            // where it expects the protocol version (`invalidConstant`).
            return .badRequest("the request line is not valid HTTP/1.1: it must read METHOD /path HTTP/1.1, with characters such as spaces percent-encoded in the path and query (a space is %20)")
        case .invalidHeaderToken, .lfExpected:
            return .badRequest("a header line is not valid HTTP/1.1: a field name is a token followed by ':', and every line ends in CRLF")
        case .invalidContentLength, .unexpectedContentLength:
            return .badRequest("the request's Content-Length is invalid, repeated with different values, or sent with Transfer-Encoding")
        case .invalidChunkSize:
            return .badRequest("the chunked request body is malformed: every chunk starts with its size in hexadecimal and CRLF")
        case .invalidEOFState:
            return .badRequest("the connection ended before the whole request arrived")
        default:
            // NIO reports some refusals only as `unknown`: a Content-Length beside a
            // Transfer-Encoding, and a Transfer-Encoding that does not end in chunked
            // (`chunked, gzip`; llhttp's HPE_INVALID_TRANSFER_ENCODING), among them.
            return .badRequest("the request is not valid HTTP/1.1: check its request line, header lines and body framing (a Content-Length beside a Transfer-Encoding is refused, and so is a Transfer-Encoding whose last coding is not chunked)")
        }
    }
}

/// Gives requests that NIO's HTTP parser refuses the gateway's error envelope, and logs and
/// counts them like any other request.
///
/// Such a request never reaches the pipeline: Hummingbird answers it itself with an empty 400 and
/// `Connection: close`. This handler, between the HTTP codec and Hummingbird, remembers the parser
/// error as it passes inbound, and when Hummingbird's empty 400 passes outbound after it, writes
/// in its place the envelope naming what was wrong (431 for an oversized header section), with an
/// `X-Request-ID`. The shape it replaces is Hummingbird's alone: the gateway's own answers always
/// carry a body and a Content-Type.
final class MalformedRequestHandler: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPRequestPart
    typealias InboundOut = HTTPRequestPart
    typealias OutboundIn = HTTPResponsePart
    typealias OutboundOut = HTTPResponsePart

    /// Hummingbird's default limit on a request's header section (`HTTP1Channel`'s decoder configuration).
    static let maxHeaderKiB = 80

    private let logger: Logger
    private let metrics: GatewayMetrics
    private let serverName: String
    private var parserError: HTTPParserError?
    /// The connection began with a TLS handshake (`TLSHandshakeOnPlainPortHandler`).
    private var tlsHandshake = false

    init(logger: Logger, metrics: GatewayMetrics, serverName: String) {
        self.logger = logger
        self.metrics = metrics
        self.serverName = serverName
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if event is TLSHandshakeOnPlainPortHandler.Seen { tlsHandshake = true }
        context.fireUserInboundEventTriggered(event)
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        if let error = error as? HTTPParserError { parserError = error }
        context.fireErrorCaught(error)
    }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        guard let parserError, case .head(let head) = unwrapOutboundIn(data), Self.isBareRefusal(head) else {
            context.write(data, promise: promise)
            return
        }
        self.parserError = nil
        let error = tlsHandshake ? GatewayError.badRequest(TLSHandshakeOnPlainPortHandler.message) : GatewayError.malformed(parserError)
        let body = error.body
        let requestID = RequestIDs.next()
        var fields = error.headers
        fields[.contentType] = "application/json"
        fields[.contentLength] = String(body.readableBytes)
        fields[.connection] = "close"
        fields[.requestID] = requestID
        fields[.server] = serverName
        fields[.date] = HTTPDate.now()
        context.write(wrapOutboundOut(.head(HTTPResponse(status: error.status, headerFields: fields))), promise: promise)
        context.write(wrapOutboundOut(.body(body)), promise: nil)
        // Hummingbird's `.end` follows.

        Self.record(error.status.code, bytesOut: body.readableBytes, requestID: requestID, cause: tlsHandshake ? "a TLS handshake on the plain-HTTP port" : parserError.debugDescription,
                    channel: context.channel, logger: logger, metrics: metrics)
    }

    /// Logs and counts a refused request that never reached the pipeline (this handler's, and
    /// `PlainRequestOnTLSPortHandler`'s): route `malformed`, no client, method or path, and
    /// `cause` as its `error`.
    static func record(_ status: Int, bytesOut: Int, requestID: String, cause: String, channel: any Channel, logger: Logger, metrics: GatewayMetrics) {
        metrics.request(client: "-", route: "malformed", status: status)
        logger.info("request", metadata: [
            "request_id": .string(requestID), "client": "-", "route": "malformed", "method": "-", "path": "-",
            "status": .number(status), "bytes_out": .number(bytesOut),
            "remote": .string(PeerAddresses.logged(PeerAddresses.remote(of: channel))), "error": .string(cause),
        ])
    }

    /// Hummingbird's answer to a parser error: 400 with `Connection: close`, `Content-Length: 0` and nothing else.
    static func isBareRefusal(_ head: HTTPResponse) -> Bool {
        head.status == .badRequest && head.headerFields.count == 2
            && head.headerFields[.connection] == "close" && head.headerFields[.contentLength] == "0"
    }
}
