import AsyncHTTPClient
import Foundation
import Hummingbird
import NIOCore
import NIOHTTP1
import NIOPosix

// POST /v1/algo/... read whole, sent upstream with a fixed key, answer read whole and returned.
// No auth, scopes, limits, cache, quota, logging or metrics: what the stack costs by itself.
// CLIENT=ahc (default): the upstream call through AsyncHTTPClient, as the gateway makes it.
// CLIENT=nio: through the barest keep-alive client SwiftNIO makes (below), on the client
// connection's event loop: what replacing AsyncHTTPClient alone would buy.
// CLIENT=ahc-delegate: AsyncHTTPClient's future-based API (a delegate gathering the answer), with
// AHC_PREFERENCE=both (default: delegate and connection on the client connection's loop),
// delegate or indifferent.
// Env: UPSTREAM (e.g. http://127.0.0.1:9000), UPSTREAM_KEY, PORT, CLIENT, AHC_PREFERENCE.
let environment = ProcessInfo.processInfo.environment
let upstream = environment["UPSTREAM"] ?? "http://127.0.0.1:9000"
let authorization = "Simple " + (environment["UPSTREAM_KEY"] ?? "")
let port = Int(environment["PORT"] ?? "") ?? 19020
let useNIO = environment["CLIENT"] == "nio"
let useDelegate = environment["CLIENT"] == "ahc-delegate"

var configuration = HTTPClient.Configuration()
configuration.redirectConfiguration = .disallow
configuration.decompression = .disabled
configuration.tracing.tracer = nil
configuration.connectionPool = .init(idleTimeout: .seconds(60), concurrentHTTP1ConnectionsPerHostSoftLimit: 80)
let client = HTTPClient(eventLoopGroupProvider: .singleton, configuration: configuration)
let upstreamURL = URL(string: upstream)!
let pools = LoopPools(host: upstreamURL.host ?? "127.0.0.1", port: upstreamURL.port ?? 80)

struct FloorContext: RequestContext {
    var coreContext: CoreRequestContextStorage
    let channel: any Channel
    init(source: ApplicationRequestContextSource) {
        coreContext = .init(source: source)
        channel = source.channel
    }
}

let router = Router(context: FloorContext.self)
router.post("/v1/algo/**") { request, context -> Response in
    let input = try await request.body.collect(upTo: 10 << 20)
    let contentType = request.headers[.contentType] ?? "application/json"
    if useNIO {
        let (head, body) = try await pools.exchange(path: request.uri.path, contentType: contentType,
                                                    body: input, on: context.channel.eventLoop)
        return Response(status: .init(code: Int(head.status.code)),
                        headers: [.contentType: head.headers.first(name: "content-type") ?? "application/json"],
                        body: .init(byteBuffer: body))
    }
    if useDelegate {
        // AsyncHTTPClient's future-based API: the answer gathered by a delegate on the client
        // connection's event loop, one hop back to the handler.
        let loop = context.channel.eventLoop
        var forwarded = try HTTPClient.Request(url: upstream + request.uri.path, method: .POST)
        forwarded.headers.add(name: "Authorization", value: authorization)
        forwarded.headers.add(name: "Content-Type", value: contentType)
        forwarded.body = .byteBuffer(input)
        let answer = try await client.execute(request: forwarded, delegate: ResponseAccumulator(request: forwarded),
                                              eventLoop: preference(loop), deadline: .now() + .seconds(30)).futureResult.get()
        return Response(status: .init(code: Int(answer.status.code)),
                        headers: [.contentType: answer.headers.first(name: "content-type") ?? "application/json"],
                        body: .init(byteBuffer: answer.body ?? ByteBuffer()))
    }
    var forwarded = HTTPClientRequest(url: upstream + request.uri.path)
    forwarded.method = .POST
    forwarded.headers.add(name: "Authorization", value: authorization)
    forwarded.headers.add(name: "Content-Type", value: contentType)
    forwarded.body = .bytes(input)
    let answer = try await client.execute(forwarded, timeout: .seconds(30))
    let body = try await answer.body.collect(upTo: 15 << 20)
    return Response(status: .init(code: Int(answer.status.code)),
                    headers: [.contentType: answer.headers.first(name: "content-type") ?? "application/json"],
                    body: .init(byteBuffer: body))
}
let app = Application(router: router, configuration: .init(address: .hostname("127.0.0.1", port: port)))
try await app.runService()
try await client.shutdown()

func preference(_ loop: any EventLoop) -> HTTPClient.EventLoopPreference {
    switch environment["AHC_PREFERENCE"] {
    case "delegate": .delegate(on: loop)
    case "indifferent": .indifferent
    default: .delegateAndChannel(on: loop)
    }
}

/// One pool of idle keep-alive upstream connections per event loop, each used on its loop only.
final class LoopPools: Sendable {
    let host: String
    let port: Int
    private let pools: [ObjectIdentifier: Pool]

    init(host: String, port: Int) {
        self.host = host
        self.port = port
        var pools: [ObjectIdentifier: Pool] = [:]
        for loop in MultiThreadedEventLoopGroup.singleton.makeIterator() {
            pools[ObjectIdentifier(loop)] = Pool()
        }
        self.pools = pools
    }

    func exchange(path: String, contentType: String, body: ByteBuffer,
                  on loop: any EventLoop) async throws -> (HTTPResponseHead, ByteBuffer) {
        let pool = pools[ObjectIdentifier(loop)]!
        let (host, port) = (host, port)
        return try await loop.flatSubmit {
            var headers = HTTPHeaders()
            headers.add(name: "Host", value: "\(host):\(port)")
            headers.add(name: "Authorization", value: authorization)
            headers.add(name: "Content-Type", value: contentType)
            headers.add(name: "Content-Length", value: String(body.readableBytes))
            let head = HTTPRequestHead(version: .http1_1, method: .POST, uri: path, headers: headers)
            return pool.exchange(head: head, body: body, host: host, port: port, on: loop)
        }.get()
    }

    /// Used on its own event loop only (`exchange` submits to it).
    final class Pool: @unchecked Sendable {
        var idle: [(any Channel, Exchange)] = []

        func exchange(head: HTTPRequestHead, body: ByteBuffer, host: String, port: Int,
                      on loop: any EventLoop) -> EventLoopFuture<(HTTPResponseHead, ByteBuffer)> {
            let promise = loop.makePromise(of: (HTTPResponseHead, ByteBuffer).self)
            let send = { (channel: any Channel, handler: Exchange) in
                handler.promise = promise
                handler.onDone = { [unowned self] in self.idle.append((channel, handler)) }
                channel.write(HTTPClientRequestPart.head(head), promise: nil)
                channel.write(HTTPClientRequestPart.body(.byteBuffer(body)), promise: nil)
                channel.writeAndFlush(HTTPClientRequestPart.end(nil), promise: nil)
            }
            while let (channel, _) = idle.last, !channel.isActive { idle.removeLast() }  // closed while idle
            if let (channel, handler) = idle.popLast() {
                send(channel, handler)
            } else {
                ClientBootstrap(group: loop)
                    .channelOption(.socketOption(.tcp_nodelay), value: 1)
                    .channelInitializer { channel in
                        channel.eventLoop.makeCompletedFuture {
                            try channel.pipeline.syncOperations.addHTTPClientHandlers()
                        }
                    }
                    .connect(host: host, port: port)
                    .assumeIsolated()
                    .whenComplete { result in
                        switch result {
                        case .success(let channel):
                            let handler = Exchange()
                            try! channel.pipeline.syncOperations.addHandler(handler)
                            send(channel, handler)
                        case .failure(let error):
                            promise.fail(error)
                        }
                    }
            }
            return promise.futureResult
        }
    }

    /// Reads one answer whole, completes the exchange's promise, then goes back to the pool.
    final class Exchange: ChannelInboundHandler {
        typealias InboundIn = HTTPClientResponsePart
        var promise: EventLoopPromise<(HTTPResponseHead, ByteBuffer)>?
        var onDone: (() -> Void)?
        private var head: HTTPResponseHead?
        private var body = ByteBuffer()

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            switch unwrapInboundIn(data) {
            case .head(let head):
                self.head = head
                body.clear()
            case .body(var bytes):
                body.writeBuffer(&bytes)
            case .end:
                let promise = self.promise, answer = (head!, body)
                self.promise = nil
                body = ByteBuffer()
                onDone?()
                promise?.succeed(answer)
            }
        }

        func channelInactive(context: ChannelHandlerContext) {
            promise?.fail(ChannelError.ioOnClosedChannel)
            promise = nil
        }
    }
}
