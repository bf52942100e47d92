import HTTPTypes
import Hummingbird
import NIOCore
import NIOHTTPTypes

/// `Expect: 100-continue` (RFC 9110 §10.1.1): the client sends its head and waits for a
/// `100 Continue` before its body. curl does this for uploads over 1 MiB and otherwise waits a
/// whole second before sending anyway; Hummingbird never sends the 100.
///
/// The gateway tells the client to go on when the pipeline first reads the body. A request refused
/// from its head alone (401, 403, a 413 by its Content-Length, a data upload's 429; an algorithm
/// call's quota is checked after its input is read) is answered without the body ever being sent. The `Expect` field itself is not forwarded (`HeaderPolicy`).
struct ExpectContinueMiddleware: RouterMiddleware {
    typealias Context = GatewayRequestContext

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        guard let expectation = request.headers[.expect], expectation.lowercased() == "100-continue" else {
            return try await next(request, context)
        }
        var request = request
        request.body = RequestBody(asyncSequence: ContinueOnFirstRead(base: request.body, channel: context.channel))
        return try await next(request, context)
    }
}

/// A request body that asks the connection for a `100 Continue` before its first read.
struct ContinueOnFirstRead: AsyncSequence, Sendable {
    typealias Element = ByteBuffer
    let base: RequestBody
    let channel: any Channel

    struct AsyncIterator: AsyncIteratorProtocol {
        var base: RequestBody.AsyncIterator
        let channel: any Channel
        var continued = false

        mutating func next() async throws -> ByteBuffer? {
            if !continued {
                continued = true
                // If the connection is gone, reading the body says so.
                try? await channel.triggerUserOutboundEvent(ContinueHandler.SendContinue()).get()
            }
            return try await base.next()
        }
    }

    func makeAsyncIterator() -> AsyncIterator {
        AsyncIterator(base: base.makeAsyncIterator(), channel: channel)
    }
}

/// Writes the interim `100 Continue` when `ExpectContinueMiddleware` asks. It sits between the
/// HTTP codec and Hummingbird's connection handling, so the interim answer goes straight to the
/// codec and Hummingbird's view of the exchange (one head, a body, an end) is untouched.
final class ContinueHandler: ChannelOutboundHandler, RemovableChannelHandler {
    typealias OutboundIn = HTTPResponsePart
    typealias OutboundOut = HTTPResponsePart

    struct SendContinue: Sendable {}

    func triggerUserOutboundEvent(context: ChannelHandlerContext, event: Any, promise: EventLoopPromise<Void>?) {
        guard event is SendContinue else {
            context.triggerUserOutboundEvent(event, promise: promise)
            return
        }
        context.writeAndFlush(wrapOutboundOut(.head(HTTPResponse(status: .continue))), promise: promise)
    }
}
