import NIOCore

/// Closes a client connection whose socket has stayed full for `server.send_timeout_seconds`: the
/// client has stopped reading its answer (a consumer that hung with its connection open, or one
/// that reads nothing on purpose), or reads it very slowly. Without it such a client keeps its
/// request open for ever, and with a streamed download its upstream slot, one of the account's and
/// one of its team's `max_concurrent`, with its answer's room in memory.
///
/// The socket is full when the channel is not writable: more than NIO's high-water mark is queued
/// beside what the kernel holds. The kernel takes more only once the client has read a good part
/// of what it holds already (megabytes, on a fast link), and then the queue drains and the channel
/// becomes writable again, which starts the wait anew; a client that reads nothing, or too little
/// for that, for the whole timeout is closed, as nginx's `send_timeout` does (the README gives
/// rates measured). Idle connections and answers still being
/// computed are the idle timeout's (`server.idle_timeout_seconds`) and the upstream's: nothing is
/// queued for them, so this never fires for them. The request's log line says `cut=client`, and
/// `algogate_client_send_timeouts_total` counts them.
final class SendTimeoutHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = NIOAny

    private let timeout: TimeAmount
    private let onTimeout: @Sendable () -> Void
    private var waiting: Scheduled<Void>?

    init(timeout: TimeAmount, onTimeout: @escaping @Sendable () -> Void) {
        self.timeout = timeout
        self.onTimeout = onTimeout
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        if context.channel.isWritable {
            waiting?.cancel()
            waiting = nil
        } else if waiting == nil {
            waiting = context.eventLoop.assumeIsolated().scheduleTask(in: timeout) { [weak self] in
                guard let self, self.waiting != nil else { return }
                self.waiting = nil
                self.onTimeout()
                context.close(promise: nil)
            }
        }
        context.fireChannelWritabilityChanged()
    }

    func channelInactive(context: ChannelHandlerContext) {
        waiting?.cancel()
        waiting = nil
        context.fireChannelInactive()
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        waiting?.cancel()
        waiting = nil
    }
}
