import AsyncHTTPClient
import Foundation
import Hummingbird
import Logging
import NIOCore
@_exported import NIOHTTP1
import ServiceLifecycle

/// Runs applications on ephemeral loopback ports for the duration of a test body.
public enum LiveServer {
    /// Starts the application built by `make` (which must pass the given callback on as its
    /// `onServerRunning`), waits until it listens, runs `body` with its port, then shuts it down.
    public static func run<App: ApplicationProtocol, Value: Sendable>(
        _ make: (@escaping @Sendable (any Channel) async -> Void) -> App,
        _ body: (Int) async throws -> Value
    ) async throws -> Value {
        let (ports, continuation) = AsyncStream.makeStream(of: Int.self)
        let app = make { channel in
            continuation.yield(channel.localAddress?.port ?? 0)
            continuation.finish()
        }
        let group = ServiceGroup(configuration: .init(services: [app], logger: Logger(label: "test")))
        return try await withThrowingTaskGroup(of: Void.self) { tasks in
            tasks.addTask { try await group.run() }
            var iterator = ports.makeAsyncIterator()
            guard let port = await iterator.next() else { throw CancellationError() }
            do {
                let value = try await body(port)
                await group.triggerGracefulShutdown()
                try await tasks.waitForAll()
                return value
            } catch {
                await group.triggerGracefulShutdown()
                tasks.cancelAll()
                throw error
            }
        }
    }
}

/// A test's HTTP calls: plain AsyncHTTPClient, bodies collected (tests assert on them whole).
public struct TestHTTP: Sendable {
    public struct Reply: Sendable {
        public let status: Int
        public let headers: HTTPHeaders
        public let body: ByteBuffer

        public var text: String { String(buffer: body) }
        public var bytes: [UInt8] { Array(body.readableBytesView) }
        public var json: Any? { try? JSONSerialization.jsonObject(with: Data(body.readableBytesView), options: [.fragmentsAllowed]) }
        public var object: [String: Any] { json as? [String: Any] ?? [:] }
        public func header(_ name: String) -> String? { headers.first(name: name) }
    }

    public let client: HTTPClient
    public let base: String
    public let port: Int

    /// A client that sends only the headers a test gives it and never decompresses, so tests see
    /// the bytes on the wire (`HTTPClient.shared` asks for and inflates gzip by itself). Up to 32
    /// connections per server, so a test's concurrent calls reach the gateway together rather than
    /// queueing in the client's pool, where a loaded machine's slow answers ran into the pool's
    /// wait limit (the connect timeout, 30 s here).
    public static let plainClient = HTTPClient(
        eventLoopGroupProvider: .singleton,
        configuration: .init(
            redirectConfiguration: .disallow,
            timeout: .init(connect: .seconds(30)),
            connectionPool: .init(idleTimeout: .seconds(60), concurrentHTTP1ConnectionsPerHostSoftLimit: 32),
            decompression: .disabled))

    public init(port: Int, client: HTTPClient = TestHTTP.plainClient) {
        self.client = client
        self.base = "http://127.0.0.1:\(port)"
        self.port = port
    }

    public func send(
        _ method: HTTPMethod = .GET,
        _ path: String,
        headers: [(String, String)] = [],
        body: [UInt8]? = nil,
        timeout: TimeAmount = .seconds(60)
    ) async throws -> Reply {
        var request = HTTPClientRequest(url: base + path)
        request.method = method
        for (name, value) in headers { request.headers.add(name: name, value: value) }
        if let body { request.body = .bytes(ByteBuffer(bytes: body)) }
        let response = try await client.execute(request, timeout: timeout)
        let collected = try await response.body.collect(upTo: 256 << 20)
        return Reply(status: Int(response.status.code), headers: response.headers, body: collected)
    }

    public func send(_ method: HTTPMethod = .GET, _ path: String, headers: [(String, String)] = [], text: String) async throws -> Reply {
        try await send(method, path, headers: headers, body: Array(text.utf8))
    }

    public func send(_ method: HTTPMethod = .GET, _ path: String, headers: [(String, String)] = [], json: Any) async throws -> Reply {
        let data = try JSONSerialization.data(withJSONObject: json, options: [.fragmentsAllowed])
        return try await send(method, path, headers: headers + [("Content-Type", "application/json")], body: Array(data))
    }
}

/// Canonical JSON text (sorted keys) so tests can compare whole bodies exactly.
public func canonicalJSON(_ value: Any?) -> String {
    guard let value, let data = try? JSONSerialization.data(withJSONObject: value, options: [.sortedKeys, .fragmentsAllowed, .withoutEscapingSlashes]) else { return "<not json>" }
    return String(decoding: data, as: UTF8.self)
}

/// Canonical form of a JSON literal written in a test.
public func canonicalJSON(literal: String) -> String {
    canonicalJSON(try? JSONSerialization.jsonObject(with: Data(literal.utf8), options: [.fragmentsAllowed]))
}
