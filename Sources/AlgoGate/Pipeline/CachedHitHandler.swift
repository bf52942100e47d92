import HTTPTypes
import HummingbirdCore
import NIOCore
import NIOHTTPTypes

/// Sits behind Hummingbird's connection-state handler (which sees every request and answer, so
/// idle timeouts and graceful shutdown treat answered hits as any other), in front of the
/// pipeline. Holds each small algorithm call until its end and lets `CachedHits` answer it, or
/// hands it on whole; answers are written at the end of the event loop's turn (`pending`).
/// Answers keep the requests' order: a call is held only while every request handed on before it
/// has been answered.
///
/// A call is held only while it arrives: one not whole a second (`CachedHits.hold`) after the read
/// that began it goes on to the pipeline as far as it has come, and the rest follows it there. The
/// pipeline checks its key at once, holds room for the input under `limits.max_buffered_bytes`
/// and bounds its arrival by `limits.input_timeout_seconds`, so a trickled input held here,
/// before any key is checked, is neither held outside that room nor kept for as long as its
/// client likes (only the idle timeout between reads bounded it). A hit sent at a normal pace
/// arrives in the read that began it, and sets no timer.
final class CachedHitHandler: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPRequestPart
    typealias InboundOut = HTTPRequestPart
    typealias OutboundIn = HTTPResponsePart
    typealias OutboundOut = HTTPResponsePart

    private enum State {
        case idle
        /// A call that may be a hit, until its end arrives.
        case holding(HTTPRequest, ByteBuffer)
        /// A request handed on to the pipeline, until its end has been handed on.
        case passing
    }

    private let hits: CachedHits
    private var state = State.idle
    /// The peer's address as the log line writes it, formatted once per connection.
    private var remote: String?
    /// The key this connection last presented and the client it named.
    private var remembered: RememberedClient?
    /// Requests handed on to the pipeline whose answers have not ended yet.
    private var unanswered = 0
    /// Hits answered and not yet written. They are written once the event loop has read what its
    /// turn found on every connection, rather than each as it is answered: 36 to 40 µs of the
    /// gateway's CPU a hit against 46 to 53, 38,000 to 41,000 hits a second against 27,000 to
    /// 32,000 (`Benchmarks/RESULTS.md`, eighteenth session; the kernel's part, waking the clients'
    /// threads as answers arrive, is where a hit cost most beside bare Hummingbird's answer).
    /// Anything written or closed on the connection meanwhile goes after them.
    private var pending: [(head: HTTPResponse, body: ByteBuffer, lease: HotTier.Lease?)] = []
    private var sendScheduled = false
    /// When the call held now goes on to the pipeline if it has not ended by then; set once a read
    /// has ended with the call still arriving.
    private var holdBound: Scheduled<Void>?

    init(hits: CachedHits) { self.hits = hits }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch (unwrapInboundIn(data), state) {
        case (.head(let head), .idle) where unanswered == 0 && hits.mayAnswer(head):
            state = .holding(head, context.channel.allocator.buffer(capacity: 0))
        case (.head, _):
            unanswered += 1
            state = .passing
            context.fireChannelRead(data)
        case (.body(var part), .holding(let head, var body)):
            state = .passing  // lets go of the held buffer, so appending below does not copy it
            if body.readableBytes + part.readableBytes > CachedHits.maxInput {
                handOn(head, body, context: context)
                context.fireChannelRead(data)
            } else {
                body.writeBuffer(&part)
                state = .holding(head, body)
            }
        case (.end, .holding(let head, let body)):
            state = .idle
            stopHoldBound()
            let remote = self.remote ?? PeerAddresses.logged(PeerAddresses.remote(of: context.channel))
            self.remote = remote
            if let answer = hits.answer(head, body: body, remote: remote, remembered: &remembered) {
                pending.append(answer)
                if !sendScheduled {
                    sendScheduled = true
                    let loopBound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
                    context.eventLoop.execute {
                        let (handler, context) = loopBound.value
                        handler.sendScheduled = false
                        handler.sendPending(context: context)
                    }
                }
            } else {
                handOn(head, body, context: context)
                context.fireChannelRead(data)
            }
        case (.end, _):
            state = .idle
            context.fireChannelRead(data)
        case (.body, _):
            context.fireChannelRead(data)
        }
    }

    /// A read has ended with a call still arriving: it has until `CachedHits.hold` to end here.
    func channelReadComplete(context: ChannelHandlerContext) {
        if case .holding = state, holdBound == nil {
            holdBound = context.eventLoop.assumeIsolated().scheduleTask(in: hits.hold) { [weak self] in
                guard let self else { return }
                self.holdBound = nil
                guard case .holding(let head, let body) = self.state else { return }
                self.state = .passing
                self.handOn(head, body, context: context)
                // What is read is handed to the pipeline's reader at the end of a read.
                context.fireChannelReadComplete()
            }
        }
        context.fireChannelReadComplete()
    }

    private func stopHoldBound() {
        holdBound?.cancel()
        holdBound = nil
    }

    /// Writes the answers held for the end of the event loop's turn, in order, and flushes them.
    private func sendPending(context: ChannelHandlerContext) {
        guard !pending.isEmpty else { return }
        let answers = pending
        pending = []
        for answer in answers {
            context.write(wrapOutboundOut(.head(answer.head)), promise: nil)
            context.write(wrapOutboundOut(.body(answer.body)), promise: nil)
            if let lease = answer.lease {
                // Written once every byte before it has gone to the socket (or failed).
                let written = context.eventLoop.makePromise(of: Void.self)
                written.futureResult.whenComplete { _ in withExtendedLifetime(lease) {} }
                context.write(wrapOutboundOut(.end(nil)), promise: written)
            } else {
                context.write(wrapOutboundOut(.end(nil)), promise: nil)
            }
        }
        context.flush()
    }

    /// A request that goes wrong while held (a malformed chunk, the connection ending midway) is
    /// the pipeline's to answer, as it would have been had it never been held.
    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        sendPending(context: context)
        if case .holding(let head, let body) = state {
            handOn(head, body, context: context)
            state = .passing
        }
        stopHoldBound()
        context.fireErrorCaught(error)
    }

    private func handOn(_ head: HTTPRequest, _ body: ByteBuffer, context: ChannelHandlerContext) {
        stopHoldBound()
        unanswered += 1
        context.fireChannelRead(wrapInboundOut(.head(head)))
        if body.readableBytes > 0 { context.fireChannelRead(wrapInboundOut(.body(body))) }
    }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        sendPending(context: context)
        if case .end = unwrapOutboundIn(data) { unanswered -= 1 }
        context.write(data, promise: promise)
    }

    func close(context: ChannelHandlerContext, mode: CloseMode, promise: EventLoopPromise<Void>?) {
        sendPending(context: context)
        context.close(mode: mode, promise: promise)
    }

    /// The connection is gone: the answers not yet written have nowhere to go.
    func channelInactive(context: ChannelHandlerContext) {
        pending = []
        stopHoldBound()
        context.fireChannelInactive()
    }
}

/// Puts a `CachedHitHandler` behind Hummingbird's `HTTPConnectionStateHandler`, which is added
/// after the extra handlers Hummingbird takes, once the pipeline is complete, and leaves.
final class CachedHitInstaller: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = NIOAny
    let hits: CachedHits

    init(hits: CachedHits) { self.hits = hits }

    // Hummingbird's pipeline is complete by the time the connection is active; the first read
    // is the fallback should it ever come first.
    func channelActive(context: ChannelHandlerContext) {
        install(context)
        context.fireChannelActive()
        leave(context)
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        install(context)
        context.fireChannelRead(data)
        leave(context)
    }

    private func install(_ context: ChannelHandlerContext) {
        let pipeline = context.pipeline.syncOperations
        if let connectionState = try? pipeline.handler(type: HTTPConnectionStateHandler.self) {
            try? pipeline.addHandler(CachedHitHandler(hits: hits), position: .after(connectionState))
        }
    }

    private func leave(_ context: ChannelHandlerContext) {
        context.pipeline.syncOperations.removeHandler(context: context, promise: nil)
    }
}
