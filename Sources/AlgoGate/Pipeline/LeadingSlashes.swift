import HTTPTypes
import NIOCore
import NIOHTTPTypes

/// `//v1/algo/...` is read as `/v1/algo/...`. A client whose base address ends with a slash
/// (`ALGORITHMIA_API=http://algogate:8080/`) sends every path with two: the official clients
/// append their paths to the address as it is. Only the leading run of slashes is merged, on the
/// connection before anything reads the request, so hits on the event loop, the pipeline's
/// checks, the log and the upstream all see the one path; slashes further in are the path's own
/// (a data URI's `s3://` keeps its two).
final class LeadingSlashesHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPRequestPart
    typealias InboundOut = HTTPRequestPart

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        if case .head(var head) = unwrapInboundIn(data), let path = head.path, path.hasPrefix("//") {
            head.path = "/" + path.drop { $0 == "/" }
            context.fireChannelRead(wrapInboundOut(.head(head)))
            return
        }
        context.fireChannelRead(data)
    }
}
