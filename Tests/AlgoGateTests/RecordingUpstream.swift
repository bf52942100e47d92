@testable import AlgoGate
import AlgoTestSupport
import Foundation
import HTTPTypes
import Hummingbird
import Logging
import Synchronization

/// An upstream that records every request it receives, exactly as it arrived, and answers 200
/// `{}` (with the fields a request's `X-Test-Answer-Fields` asks for), behind a gateway in
/// `GatewayHarness`'s standard configuration: for property tests of what crosses the gateway.
enum RecordingUpstream {
    /// What the upstream received: method, raw request target, header fields as sent (name as
    /// written, value), body.
    struct Received: Sendable { let method: String; let target: String; let headers: [[String]]; let body: String }

    final class Recorder: Sendable {
        let received = Mutex<[Received]>([])
        var count: Int { received.withLock { $0.count } }
        /// What arrived after the first `index` requests.
        func since(_ index: Int) -> [Received] { received.withLock { Array($0[index...]) } }
    }

    struct Responder: HTTPResponder {
        typealias Context = BasicRequestContext
        let recorder: Recorder
        func respond(to request: Request, context: Context) async throws -> Response {
            let body = String(buffer: try await request.body.collect(upTo: 1 << 20))
            let headers = request.headers.map { [$0.name.rawName, $0.value] }
            recorder.received.withLock { $0.append(Received(method: request.method.rawValue, target: request.head.path ?? "", headers: headers, body: body)) }
            // `X-Test-Answer-Fields` (a JSON array of [name, value]): fields to answer with.
            var fields: HTTPFields = [.contentType: "application/json"]
            if let asked = request.headers[HTTPField.Name("X-Test-Answer-Fields")!],
               let pairs = try? JSONSerialization.jsonObject(with: Data(asked.utf8)) as? [[String]] {
                for pair in pairs { fields.append(HTTPField(name: HTTPField.Name(pair[0])!, value: pair[1])) }
            }
            return Response(status: .ok, headers: fields, body: .init(byteBuffer: ByteBuffer(string: "{}")))
        }
    }

    /// Runs `body` with the recorder and a gateway in front of it (`clientsYAML` and `upstreamYAML`
    /// as `GatewayHarness`'s).
    static func run(clientsYAML: String? = nil, upstreamYAML: String = "", _ body: (Recorder, GatewayHarness) async throws -> Void) async throws {
        let recorder = Recorder()
        try await LiveServer.run({ onRunning in
            Application(responder: Responder(recorder: recorder), configuration: .init(address: .hostname("127.0.0.1", port: 0)),
                        onServerRunning: onRunning, logger: { var logger = Logger(label: "recording-upstream"); logger.logLevel = .warning; return logger }())
        }) { port in
            try await GatewayHarness.run(upstreamYAML: upstreamYAML, upstreamURL: { _ in "http://127.0.0.1:\(port)" }, clientsYAML: clientsYAML) { h in
                try await body(recorder, h)
            }
        }
    }
}

/// Requests sent byte for byte on keep-alive connections, one at a time, a new connection every
/// 20 answers (so that reading the answers back stays cheap) or when the server closes one.
struct KeepAliveClient {
    let port: Int
    private var connection: RawConnection?
    private var answered = 0

    init(port: Int) { self.port = port }

    /// The answer to `request`, or nil when none came within 30 s (the connection is then let go;
    /// 10 s was too short in a whole-suite run beside five CPU hogs).
    mutating func exchange(_ request: String) async throws -> RawResponse? {
        if answered == 20 { await close() }
        let connection: RawConnection
        if let open = self.connection {
            connection = open
        } else {
            connection = try await RawConnection.connect(port: port)
            self.connection = connection
        }
        try await connection.send(request)
        let deadline = ContinuousClock.now + .seconds(30)
        // The text is parsed again only once more of it has come, not every millisecond: the
        // property tests' CPU fell by a tenth to a quarter (15 s against 17 to 21 for two suites).
        var parsed = -1
        while ContinuousClock.now < deadline {
            let received = connection.receivedCount
            if received != parsed {
                parsed = received
                let responses = RawResponse.parse(connection.text)
                if responses.count > answered {
                    let response = responses[answered]
                    answered += 1
                    if connection.closedAt != nil { await close() }
                    return response
                }
            }
            if connection.closedAt != nil, connection.receivedCount == parsed { break }
            try await Task.sleep(for: .milliseconds(1))
        }
        await close()
        return nil
    }

    mutating func close() async {
        await connection?.close()
        connection = nil
        answered = 0
    }
}
