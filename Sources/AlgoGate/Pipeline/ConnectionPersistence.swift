import NIOCore
import NIOHTTP1
import NIOHTTPTypesHTTP1

/// Whether a connection persists after an answer, as the request asked (RFC 9112 §9.3).
///
/// Hummingbird's HTTP types carry no protocol version, so it treats an HTTP/1.0 request as a
/// persistent HTTP/1.1 one: a 1.0 client that reads its answer until the connection closes
/// (ApacheBench, older probes) then waits for the idle timeout. This handler sits before the codec
/// that drops the version. An answer to a request that does not persist (HTTP/1.0 without
/// `keep-alive`, or `Connection: close`) says `Connection: close` and the connection is closed
/// once it has been written; an HTTP/1.0 request that asked for `keep-alive` is told it is kept.
///
/// A request answered before its body has all arrived (an upload the upstream refused at once, an
/// input over the size limit) has the rest of its body read and dropped, so the connection can
/// serve the next request. That drain is bounded: a body still arriving `linger` after its answer
/// was written has its connection closed, as nginx's `lingering_time` does.
///
/// Knowing which requests are still owed an answer, it also tells the connection's
/// `ClientDeparture` when the client goes before one of them is answered, whether or not its body
/// had all arrived; and it bounds how long the body of the request being answered may take to
/// arrive, when asked to (`boundArrival(on:by:)`).
final class ConnectionPersistenceHandler: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias InboundOut = HTTPServerRequestPart
    typealias OutboundIn = HTTPServerResponsePart
    typealias OutboundOut = HTTPServerResponsePart

    private struct Exchange {
        let http10: Bool
        let keepAlive: Bool
        /// A CONNECT (always refused: `GatewayError.unsupported`).
        let connect: Bool
        /// Requests are numbered as they arrive.
        let number: Int
    }
    /// Requests read and not yet answered, oldest first (a client may pipeline).
    private var exchanges: [Exchange] = []
    /// How many requests have arrived, and how many of them whole (their body's end read).
    private var arrived = 0
    private var ended = 0
    /// Body bytes of the last request to arrive, so far.
    private var bodyBytes = 0
    private let linger: TimeAmount
    private var lingering: Scheduled<Void>?
    /// The deadline by which the body of request `number` must have arrived whole, if one was set.
    private var arrival: (number: Int, timer: Scheduled<Void>)?
    private var context: ChannelHandlerContext?
    /// Told when the client goes while a request it sent whole is owed its answer.
    let departure = ClientDeparture()

    init(linger: TimeAmount) {
        self.linger = linger
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let head):
            arrived += 1
            bodyBytes = 0
            // After a CONNECT the parser reads nothing more (what follows would be a tunnel's
            // bytes), so the connection ends with its answer.
            let connect = head.method == .CONNECT
            exchanges.append(Exchange(http10: head.version == .http1_0, keepAlive: head.isKeepAlive && !connect, connect: connect, number: arrived))
            // HTTP/1.0 makes `Host` optional and 1.1 requires it (`HostField`); past the codec
            // the two look alike, so a 1.0 request without one is given the empty value.
            if head.version == .http1_0, !head.headers.contains(name: "Host") {
                var head = head
                head.headers.add(name: "Host", value: "")
                context.fireChannelRead(wrapInboundOut(.head(head)))
                return
            }
        case .end:
            ended += 1
            // The answered request's body has all arrived: the drain is over.
            if ended == arrived {
                lingering?.cancel()
                lingering = nil
            }
            if let arrival, ended >= arrival.number { stopArrivalBound() }
        case .body(let part):
            bodyBytes += part.readableBytes
        }
        context.fireChannelRead(data)
    }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        lingering?.cancel()
        stopArrivalBound()
        self.context = nil
    }

    /// Gives the body of the request being answered (the oldest unanswered: Hummingbird answers a
    /// connection's requests one at a time, in order) until `deadline` to arrive whole. If it has
    /// not, its reader is given `InputArrivalTimeout` in place of the rest. The connection's input
    /// ends with that error, so Hummingbird closes the connection once the answer is written: it
    /// can read no other request from it. Nothing is set for a body that has all arrived.
    private func boundArrival(by deadline: NIODeadline) {
        guard let context, let number = exchanges.first?.number, ended < number else { return }
        stopArrivalBound()
        let timer = context.eventLoop.assumeIsolated().scheduleTask(deadline: deadline) { [weak self] in
            guard let self, self.arrival?.number == number else { return }
            self.arrival = nil
            // While its body has not ended, no later request has arrived: the last one is this one.
            self.refuseBody(InputArrivalTimeout(received: self.bodyBytes))
        }
        arrival = (number, timer)
    }

    /// Gives the reader of the body of the request being answered `error` in place of the rest (the
    /// arrival bound's, and `UploadRelay`'s minimum rate's); nothing is done once that body has all
    /// arrived. On the channel's event loop.
    static func refuseBody(on channel: any Channel, _ error: any Error) {
        (try? channel.pipeline.syncOperations.handler(type: ConnectionPersistenceHandler.self))?.refuseBody(error)
    }

    private func refuseBody(_ error: any Error) {
        guard let context, let number = exchanges.first?.number, ended < number else { return }
        stopArrivalBound()
        context.fireErrorCaught(error)
    }

    private func stopArrivalBound() {
        arrival?.timer.cancel()
        arrival = nil
    }

    /// `boundArrival(by:)` for the request being answered on `channel`.
    static func boundArrival(on channel: any Channel, by deadline: NIODeadline) async {
        _ = await of(channel) { $0.boundArrival(by: deadline) }
    }

    /// `body` run with the handler of `channel`'s pipeline, on the channel's event loop (from
    /// another thread, by a hop there); nil when the pipeline has none (it always has in the
    /// gateway; a test that builds its own channel may not).
    static func of<Value: Sendable>(_ channel: any Channel, _ body: @escaping @Sendable (ConnectionPersistenceHandler) -> Value) async -> Value? {
        if channel.eventLoop.inEventLoop {
            return (try? channel.pipeline.syncOperations.handler(type: ConnectionPersistenceHandler.self)).map(body)
        }
        return try? await channel.eventLoop.submit {
            body(try channel.pipeline.syncOperations.handler(type: ConnectionPersistenceHandler.self))
        }.get()
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if let event = event as? ChannelEvent, event == .inputClosed { departIfOwed() }
        context.fireUserInboundEventTriggered(event)
    }

    func channelInactive(context: ChannelHandlerContext) {
        departIfOwed()
        context.fireChannelInactive()
    }

    /// The client's input ended while a request of its is unanswered: the client has gone without
    /// it. So it has when that request's body had not all arrived: the body can never end now, and
    /// a request waiting for an upstream slot (a streamed upload reads nothing meanwhile) leaves
    /// the queue at once, rather than waiting for a slot only to be sent upstream cut short.
    private func departIfOwed() {
        guard !exchanges.isEmpty else { return }
        departure.depart()
    }

    /// After an answer to request `number` is written while its body is still arriving: closes the
    /// connection if it is still arriving `linger` later.
    private func bound(drainOf number: Int, context: ChannelHandlerContext) {
        guard ended < number, lingering == nil else { return }
        lingering = context.eventLoop.assumeIsolated().scheduleTask(in: linger) { [weak self] in
            guard let self, self.ended < number else { return }
            self.lingering = nil
            context.close(promise: nil)
        }
    }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        switch unwrapOutboundIn(data) {
        case .head(var head) where head.status.code >= 200:
            guard let exchange = exchanges.first else { break }
            if !exchange.keepAlive {
                head.headers.replaceOrAdd(name: "Connection", value: "close")
            } else if exchange.http10 {
                head.headers.replaceOrAdd(name: "Connection", value: "keep-alive")
            }
            context.write(wrapOutboundOut(.head(head)), promise: promise)
            return
        case .body(let part) where exchanges.first?.connect == true:
            // NIO's encoder frames every answer to a CONNECT as bodyless, the refusals too, and
            // fails a body written through it, so the envelope is written past it, as a body that
            // ends when the connection closes (RFC 9112 §6.3: a response to a CONNECT other than
            // 2xx is framed as any other). Without it the client got headers with no framing and
            // waited for the idle timeout.
            guard case .byteBuffer = part, let encoder = try? context.pipeline.syncOperations.context(handlerType: HTTPResponseEncoder.self) else { break }
            encoder.write(NIOAny(part), promise: promise)
            return
        case .end:
            guard !exchanges.isEmpty else { break }
            let exchange = exchanges.removeFirst()
            if arrival?.number == exchange.number { stopArrivalBound() }
            if !exchange.keepAlive {
                let written = promise ?? context.eventLoop.makePromise()
                context.writeAndFlush(data, promise: written)
                written.futureResult.assumeIsolated().whenComplete { _ in context.close(promise: nil) }
                return
            }
            bound(drainOf: exchange.number, context: context)
        default:
            break
        }
        context.write(data, promise: promise)
    }
}

/// Puts a `ConnectionPersistenceHandler` in front of Hummingbird's HTTP codec. Hummingbird adds
/// extra handlers only behind that codec, where the version is already gone; this one moves its
/// handler to the right place and leaves the pipeline.
final class ConnectionPersistenceInstaller: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = NIOAny
    let linger: TimeAmount

    /// `linger`: how long the rest of an early-answered request's body is read before the
    /// connection is closed (`server.idle_timeout_seconds`).
    init(linger: TimeAmount) {
        self.linger = linger
    }

    func handlerAdded(context: ChannelHandlerContext) {
        let pipeline = context.pipeline.syncOperations
        if let codec = try? pipeline.handler(type: HTTP1ToHTTPServerCodec.self) {
            try? pipeline.addHandler(ConnectionPersistenceHandler(linger: linger), position: .before(codec))
        }
        pipeline.removeHandler(context: context, promise: nil)
    }
}

/// What the reader of an algorithm input is given when the input has not arrived whole by its
/// deadline (`limits.input_timeout_seconds`), with how many of its bytes had; the call is answered
/// 408 and its connection closed.
struct InputArrivalTimeout: Error {
    let received: Int
}
