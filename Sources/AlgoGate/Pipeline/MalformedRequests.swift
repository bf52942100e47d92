import HTTPTypes
import Logging
import NIOCore
import NIOHTTP1
import NIOHTTPTypes

/// Transfer codings (RFC 9112 §6.1). NIO's parser decodes `chunked` and takes a list that ends
/// in it (`gzip, chunked`) as chunked, leaving the other codings undone: such a body would be read,
/// forwarded and cached in its coded bytes as if they were the input. So `chunked` alone is
/// accepted and any other list is refused with 501 (RFC 9112 §6.1: a server that receives a transfer
/// coding it does not understand SHOULD answer 501), as nginx refuses it, before any key is asked
/// for. A compressed body is sent with `Content-Encoding`.
enum TransferCoding {
    /// Whether a `Transfer-Encoding` value (repeated fields joined with ", ") is `chunked` and nothing else.
    static func isChunkedAlone(_ value: String) -> Bool {
        let codings = value.split(separator: ",", omittingEmptySubsequences: false)
        return codings.count == 1 && codings[0].trimmedSpaces.lowercased() == "chunked"
    }

    /// The refusal of a request whose `Transfer-Encoding` is not `chunked` alone; nil when it is, or has none.
    static func refusal(_ fields: HTTPFields) -> GatewayError? {
        guard let value = fields.value(.transferEncoding), !isChunkedAlone(value) else { return nil }
        return GatewayError(status: .notImplemented, errorType: "InputError",
                            message: "Transfer-Encoding '\(value)' is not supported: send the body with chunked alone, or with a Content-Length; a compressed body is sent with Content-Encoding: gzip")
    }
}

extension GatewayError {
    /// What a client is told when its request is not valid HTTP/1.1: NIO's parser refused it, in
    /// its head (the pipeline never saw it) or in its body (the step reading the body got the error).
    static func malformed(_ error: HTTPParserError) -> GatewayError {
        switch error {
        case .headerOverflow:
            return GatewayError(status: .init(code: 431, reasonPhrase: "Request Header Fields Too Large"), errorType: "RequestTooLarge",
                                message: "the request's header section is too large: at most \(MalformedRequestHandler.maxHeaderKiB) KiB and 1000 fields")
        case .invalidURL, .invalidCharactersUsed, .invalidConstant, .invalidVersion, .invalidMethod:
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
            // NIO reports some refusals only as `unknown`, a Content-Length beside a
            // Transfer-Encoding among them.
            return .badRequest("the request is not valid HTTP/1.1: check its request line, header lines and body framing (a Content-Length and a Transfer-Encoding together are refused)")
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

    init(logger: Logger, metrics: GatewayMetrics, serverName: String) {
        self.logger = logger
        self.metrics = metrics
        self.serverName = serverName
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
        let error = GatewayError.malformed(parserError)
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

        let status = error.status.code
        let remote = context.remoteAddress?.ipAddress ?? "-"
        metrics.request(client: "-", route: "malformed", status: status)
        logger.info("request", metadata: [
            "request_id": .string(requestID), "client": "-", "route": "malformed", "method": "-", "path": "-",
            "status": .number(status), "bytes_out": .number(body.readableBytes), "remote": .string(remote),
            "error": .string(parserError.debugDescription),
        ])
    }

    /// Hummingbird's answer to a parser error: 400 with `Connection: close`, `Content-Length: 0` and nothing else.
    static func isBareRefusal(_ head: HTTPResponse) -> Bool {
        head.status == .badRequest && head.headerFields.count == 2
            && head.headerFields[.connection] == "close" && head.headerFields[.contentLength] == "0"
    }
}
