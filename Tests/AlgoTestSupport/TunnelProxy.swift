import Foundation
import NIOCore
import NIOPosix
import Synchronization

/// A forward proxy in the test process that opens `CONNECT` tunnels, as an egress proxy (Squid,
/// say) does, and records each `CONNECT`'s target and `Proxy-Authorization`. With `requiring`, a
/// `CONNECT` without exactly that `Proxy-Authorization` gets a 407 and its connection is closed.
/// Any other method gets a 405: the gateway must tunnel, never send its requests to the proxy.
public final class TunnelProxy: Sendable {
    public struct Connect: Sendable, Equatable {
        public let target: String
        public let authorization: String?
        public init(target: String, authorization: String?) {
            self.target = target
            self.authorization = authorization
        }
    }

    public let port: Int
    private let channel: any Channel
    private let record: Recorder

    final class Recorder: Sendable {
        let requiring: String?
        private let connects = Mutex<[Connect]>([])
        private let refused = Mutex<[String]>([])
        private let bytes = Atomic<Int>(0)
        /// The first MiB relayed, both ways, for tests that check what the proxy could read.
        private let seen = Mutex<[UInt8]>([])
        init(requiring: String?) { self.requiring = requiring }
        func add(_ connect: Connect) { connects.withLock { $0.append(connect) } }
        func refuse(_ requestLine: String) { refused.withLock { $0.append(requestLine) } }
        func relayed(_ buffer: ByteBuffer) {
            bytes.add(buffer.readableBytes, ordering: .relaxed)
            seen.withLock { seen in
                guard seen.count < 1 << 20 else { return }
                seen += buffer.readableBytesView.prefix((1 << 20) - seen.count)
            }
        }
        func saw(_ text: String) -> Bool {
            let needle = Array(text.utf8)
            return seen.withLock { seen in
                guard !needle.isEmpty, seen.count >= needle.count else { return false }
                return (0...(seen.count - needle.count)).contains { seen[$0..<($0 + needle.count)].elementsEqual(needle) }
            }
        }
        var all: [Connect] { connects.withLock { $0 } }
        var refusals: [String] { refused.withLock { $0 } }
        var relayedBytes: Int { bytes.load(ordering: .relaxed) }
    }

    /// Every `CONNECT` received, in order, those refused with a 407 included.
    public var connects: [Connect] { record.all }
    /// Request lines answered with a 405 (anything but `CONNECT`).
    public var refusedRequests: [String] { record.refusals }
    /// Bytes passed through tunnels, both ways.
    public var relayedBytes: Int { record.relayedBytes }
    /// Whether `text` was in the first MiB passed through tunnels (what the proxy could read).
    public func relayed(_ text: String) -> Bool { record.saw(text) }

    private init(channel: any Channel, port: Int, record: Recorder) {
        self.channel = channel
        self.port = port
        self.record = record
    }

    public static func start(requiring authorization: String? = nil) async throws -> TunnelProxy {
        let record = Recorder(requiring: authorization)
        let channel = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .childChannelInitializer { child in
                child.eventLoop.makeCompletedFuture {
                    try child.pipeline.syncOperations.addHandler(ConnectHandler(record: record))
                }
            }
            .bind(host: "127.0.0.1", port: 0).get()
        return TunnelProxy(channel: channel, port: channel.localAddress?.port ?? 0, record: record)
    }

    public func stop() async {
        try? await channel.close().get()
    }

    /// Reads the `CONNECT` head, then connects to its target and relays bytes both ways.
    private final class ConnectHandler: ChannelInboundHandler, RemovableChannelHandler {
        typealias InboundIn = ByteBuffer
        typealias OutboundOut = ByteBuffer
        let record: Recorder
        var head = ByteBuffer()
        var done = false
        init(record: Recorder) { self.record = record }

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            var buffer = unwrapInboundIn(data)
            guard !done else { return }
            head.writeBuffer(&buffer)
            let text = String(buffer: head)
            guard let end = text.range(of: "\r\n\r\n") else { return }
            done = true
            let lines = text[..<end.lowerBound].components(separatedBy: "\r\n")
            let parts = lines[0].split(separator: " ")
            let authorization = lines.dropFirst().first { $0.lowercased().hasPrefix("proxy-authorization:") }
                .map { String($0.dropFirst("proxy-authorization:".count)).trimmingCharacters(in: .whitespaces) }
            guard parts.count == 3, parts[0] == "CONNECT", let colon = parts[1].lastIndex(of: ":"),
                  let port = Int(parts[1][parts[1].index(after: colon)...]) else {
                record.refuse(lines[0])
                return reply("HTTP/1.1 405 Method Not Allowed\r\nContent-Length: 0\r\nConnection: close\r\n\r\n", closing: true, context: context)
            }
            let target = String(parts[1])
            record.add(Connect(target: target, authorization: authorization))
            if let required = record.requiring, authorization != required {
                return reply("HTTP/1.1 407 Proxy Authentication Required\r\nProxy-Authenticate: Basic realm=\"test\"\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                             closing: true, context: context)
            }
            let host = String(parts[1][..<colon]).trimmingCharacters(in: CharacterSet(charactersIn: "[]"))
            let client = context.channel
            let record = record
            let connected = ClientBootstrap(group: context.eventLoop)
                .channelInitializer { upstream in
                    upstream.eventLoop.makeCompletedFuture {
                        try upstream.pipeline.syncOperations.addHandler(Relay(partner: client, record: record))
                    }
                }
                .connect(host: host, port: port)
            connected.assumeIsolated().whenComplete { result in
                switch result {
                case .failure:
                    self.reply("HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\nConnection: close\r\n\r\n", closing: true, context: context)
                case .success(let upstream):
                    let established = context.channel.allocator.buffer(string: "HTTP/1.1 200 Connection established\r\n\r\n")
                    context.writeAndFlush(self.wrapOutboundOut(established), promise: nil)
                    let pipeline = context.pipeline.syncOperations
                    try? pipeline.addHandler(Relay(partner: upstream, record: record))
                    pipeline.removeHandler(context: context, promise: nil)
                }
            }
        }

        private func reply(_ text: String, closing: Bool, context: ChannelHandlerContext) {
            let channel = context.channel
            context.writeAndFlush(wrapOutboundOut(context.channel.allocator.buffer(string: text))).whenComplete { _ in
                if closing { channel.close(promise: nil) }
            }
        }
    }

    /// Writes what one side of a tunnel reads to the other, and closes the other when it closes.
    private final class Relay: ChannelInboundHandler {
        typealias InboundIn = ByteBuffer
        let partner: any Channel
        let record: Recorder
        init(partner: any Channel, record: Recorder) {
            self.partner = partner
            self.record = record
        }

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            let buffer = unwrapInboundIn(data)
            record.relayed(buffer)
            partner.writeAndFlush(buffer, promise: nil)
        }

        func channelInactive(context: ChannelHandlerContext) {
            partner.close(promise: nil)
            context.fireChannelInactive()
        }
    }
}
