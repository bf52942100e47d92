import AsyncHTTPClient
import Foundation
import Hummingbird

// POST /v1/algo/... read whole, sent upstream with a fixed key, answer read whole and returned.
// No auth, scopes, limits, cache, quota, logging or metrics: what the stack costs by itself.
// Env: UPSTREAM (e.g. http://127.0.0.1:9000), UPSTREAM_KEY, PORT.
let environment = ProcessInfo.processInfo.environment
let upstream = environment["UPSTREAM"] ?? "http://127.0.0.1:9000"
let authorization = "Simple " + (environment["UPSTREAM_KEY"] ?? "")
let port = Int(environment["PORT"] ?? "") ?? 19020

var configuration = HTTPClient.Configuration()
configuration.redirectConfiguration = .disallow
configuration.decompression = .disabled
configuration.tracing.tracer = nil
configuration.connectionPool = .init(idleTimeout: .seconds(60), concurrentHTTP1ConnectionsPerHostSoftLimit: 80)
let client = HTTPClient(eventLoopGroupProvider: .singleton, configuration: configuration)

let router = Router()
router.post("/v1/algo/**") { request, _ -> Response in
    let input = try await request.body.collect(upTo: 10 << 20)
    var forwarded = HTTPClientRequest(url: upstream + request.uri.path)
    forwarded.method = .POST
    forwarded.headers.add(name: "Authorization", value: authorization)
    forwarded.headers.add(name: "Content-Type", value: request.headers[.contentType] ?? "application/json")
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
