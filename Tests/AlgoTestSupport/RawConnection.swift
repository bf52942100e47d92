import Foundation
import NIOCore
import NIOPosix
import Synchronization

/// A bare TCP connection, for tests of what a server does with the bytes (or the silence) a client
/// sends, below what an HTTP client lets a test express: it sends raw text, keeps whatever arrives
/// and notes when the server closes the connection.
public final class RawConnection: Sendable {
    private let channel: any Channel
    private let box: Received

    /// What the server sent, when its last bytes arrived, and when it closed: times taken on the
    /// connection's event loop as each arrives, however late the test's task looks.
    final class Received: Sendable {
        let bytes = Mutex<[UInt8]>([])
        let lastReceivedAt = Mutex<ContinuousClock.Instant?>(nil)
        let closedAt = Mutex<ContinuousClock.Instant?>(nil)
    }

    private final class Collector: ChannelInboundHandler {
        typealias InboundIn = ByteBuffer
        let box: Received
        init(_ box: Received) { self.box = box }
        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            let buffer = unwrapInboundIn(data)
            box.bytes.withLock { $0.append(contentsOf: buffer.readableBytesView) }
            box.lastReceivedAt.withLock { $0 = .now }
        }
        func channelInactive(context: ChannelHandlerContext) {
            box.closedAt.withLock { $0 = .now }
            context.fireChannelInactive()
        }
    }

    /// When the connection was opened.
    public let openedAt: ContinuousClock.Instant

    private init(channel: any Channel, box: Received, openedAt: ContinuousClock.Instant) {
        self.channel = channel
        self.box = box
        self.openedAt = openedAt
    }

    /// Connects; `first`, when given, is sent as soon as the connection is up, from the event
    /// loop, so that a server's idle timeout never sees a pause a loaded machine put between the
    /// connect and the test's first send.
    ///
    /// With `reading: false` nothing is read until `startReading()`, and the socket's receive
    /// buffer is kept small: a client too slow to take what the server sends.
    public static func connect(port: Int, host: String = "127.0.0.1", sending first: String? = nil,
                               reading: Bool = true) async throws -> RawConnection {
        // Taken before connecting, so never later than the server's accept however late this task
        // resumes on a loaded machine: times measured from it are upper bounds of the server's.
        let started = ContinuousClock.now
        let box = Received()
        var bootstrap = ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
        if !reading {
            bootstrap = bootstrap.channelOption(.autoRead, value: false)
                .channelOption(.socketOption(.so_rcvbuf), value: 4096)
        }
        let channel = try await bootstrap
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture { try channel.pipeline.syncOperations.addHandler(Collector(box)) }
            }
            .connect(host: host, port: port)
            .flatMap { channel in
                guard let first else { return channel.eventLoop.makeSucceededFuture(channel) }
                return channel.writeAndFlush(channel.allocator.buffer(string: first)).map { channel }.flatMapError { error in
                    channel.close(promise: nil)
                    return channel.eventLoop.makeFailedFuture(error)
                }
            }
            .get()
        return RawConnection(channel: channel, box: box, openedAt: started)
    }

    public func send(_ text: String) async throws {
        try await channel.writeAndFlush(channel.allocator.buffer(string: text)).get()
    }

    /// Reads from now on (after `connect(reading: false)`), with a receive buffer of the usual
    /// size again: through the small one, what a server has queued for a slow client comes 4 KiB
    /// a round trip (12 MB in about 0.17 s alone, against 0.065 s; in a loaded whole-suite run,
    /// not within 30 s).
    public func startReading() async throws {
        try await channel.setOption(.socketOption(.so_rcvbuf), value: 1 << 20).get()
        try await channel.setOption(.autoRead, value: true).get()
        channel.read()
    }

    /// Everything received so far, as text.
    /// (Decoded under the lock: a copy of the array taken out would make every append meanwhile
    /// copy all the bytes received, megabytes, on the connection's event loop.)
    public var text: String { box.bytes.withLock { String(decoding: $0, as: UTF8.self) } }

    /// Everything received so far, as it came (binary answers: `text` would replace what is not UTF-8).
    public var bytes: [UInt8] { box.bytes.withLock { $0 } }

    /// How many bytes have been received so far: cheap to poll, where `text` copies them all.
    public var receivedCount: Int { box.bytes.withLock { $0.count } }

    /// When the server closed the connection (nil while it is open).
    public var closedAt: ContinuousClock.Instant? { box.closedAt.withLock { $0 } }

    /// When the server's last bytes so far arrived (nil before any).
    public var lastReceivedAt: ContinuousClock.Instant? { box.lastReceivedAt.withLock { $0 } }

    /// Waits until the server closes the connection or `limit` passes; says whether it closed.
    public func waitForClose(within limit: Duration) async -> Bool {
        let deadline = ContinuousClock.now + limit
        while closedAt == nil, ContinuousClock.now < deadline {
            try? await Task.sleep(for: .milliseconds(20))
        }
        return closedAt != nil
    }

    /// Ends the client's side of the connection (a TCP half-close); what the server sends still arrives.
    public func shutdownOutput() async throws {
        try await channel.close(mode: .output).get()
    }

    /// Aborts the connection: the server gets a reset (RST), not an orderly close.
    public func reset() async throws {
        guard let socket = channel as? any SocketOptionProvider else { throw ChannelError.operationUnsupported }
        try await socket.setSoLinger(linger(l_onoff: 1, l_linger: 0)).get()
        try await channel.close().get()
    }

    public func close() async {
        try? await channel.close().get()
    }
}

/// One HTTP/1.1 response read off a raw connection's text.
public struct RawResponse: Sendable, Equatable {
    /// The status line, e.g. `HTTP/1.1 404 Not Found`.
    public let statusLine: String
    /// Header fields, names lowercased (a repeated field keeps its last value).
    public let headers: [String: String]
    public let body: String

    /// The complete responses at the start of `text`, in order, interim ones (1xx) included; each
    /// final one needs a Content-Length.
    public static func parse(_ text: String) -> [RawResponse] {
        var responses: [RawResponse] = []
        var rest = Substring(text)
        while let end = rest.range(of: "\r\n\r\n") {
            let lines = rest[..<end.lowerBound].components(separatedBy: "\r\n")
            var headers: [String: String] = [:]
            for line in lines.dropFirst() {
                guard let colon = line.firstIndex(of: ":") else { continue }
                headers[line[..<colon].lowercased()] = line[line.index(after: colon)...].trimmingCharacters(in: .whitespaces)
            }
            let bodyStart = rest[end.upperBound...]
            // An interim answer (1xx) has no body.
            let interim = lines[0].split(separator: " ").dropFirst().first?.hasPrefix("1") == true
            guard let length = interim ? 0 : headers["content-length"].flatMap(Int.init), bodyStart.utf8.count >= length else { break }
            let bodyEnd = bodyStart.utf8.index(bodyStart.startIndex, offsetBy: length)
            responses.append(RawResponse(statusLine: lines[0], headers: headers, body: String(bodyStart[..<bodyEnd])))
            rest = bodyStart[bodyEnd...]
        }
        return responses
    }
}

/// A TCP server on an ephemeral loopback port that answers whatever arrives with fixed bytes and
/// closes: an upstream that speaks broken HTTP, or stops part-way. With `trickle`, it sends those
/// bytes every `interval` after the reply instead of closing, until the other side does: an
/// upstream whose answer is still coming.
public final class CannedServer: Sendable {
    public let port: Int
    private let channel: any Channel

    private final class Answer: ChannelInboundHandler, Sendable {
        typealias InboundIn = ByteBuffer
        let reply: String
        let trickle: (bytes: String, interval: TimeAmount)?
        init(_ reply: String, trickle: (bytes: String, interval: TimeAmount)?) {
            self.reply = reply
            self.trickle = trickle
        }
        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            let bound = NIOLoopBound(context, eventLoop: context.eventLoop)
            context.writeAndFlush(NIOAny(context.channel.allocator.buffer(string: reply))).whenComplete { _ in
                guard let trickle = self.trickle else { return bound.value.close(promise: nil) }
                let channel = bound.value.channel
                channel.eventLoop.scheduleRepeatedAsyncTask(initialDelay: trickle.interval, delay: trickle.interval) { task in
                    guard channel.isActive else {
                        task.cancel()
                        return channel.eventLoop.makeSucceededVoidFuture()
                    }
                    return channel.writeAndFlush(channel.allocator.buffer(string: trickle.bytes)).recover { _ in task.cancel() }
                }
            }
        }
    }

    private init(channel: any Channel, port: Int) {
        self.channel = channel
        self.port = port
    }

    public static func start(reply: String, trickle: String? = nil, every interval: TimeAmount = .milliseconds(10)) async throws -> CannedServer {
        let channel = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .childChannelInitializer { child in
                child.eventLoop.makeCompletedFuture {
                    try child.pipeline.syncOperations.addHandler(Answer(reply, trickle: trickle.map { ($0, interval) }))
                }
            }
            .bind(host: "127.0.0.1", port: 0).get()
        return CannedServer(channel: channel, port: channel.localAddress?.port ?? 0)
    }

    public func stop() async {
        try? await channel.close().get()
    }
}
