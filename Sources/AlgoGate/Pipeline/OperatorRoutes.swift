import Foundation
import Hummingbird
import NIOCore

/// `/_admin/...`: the operator's endpoints, for the admin key only.
///
/// - `GET /_admin/cache`: entries, bytes, hits, misses, hit ratio, top algorithms.
/// - `DELETE /_admin/cache[?algo=owner/name[/version]]`: purge one version, one algorithm, or all.
struct OperatorRoutes: Sendable {
    let cache: ResponseCache?

    func register(on router: Router<GatewayRequestContext>) {
        router.get("/_admin/cache") { _, context -> Response in
            let cache = try requireCache(context)
            return try Self.json(try await cache.stats())
        }
        router.delete("/_admin/cache") { request, context -> Response in
            let cache = try requireCache(context)
            let algo = request.uri.queryParameters.get("algo")
            if let algo, !Self.isAlgoPattern(algo) {
                throw GatewayError.badRequest("algo must be owner/name or owner/name/version")
            }
            let purged = try await cache.purge(algo: algo)
            return Response(status: .ok, headers: [.contentType: "application/json"],
                            body: .init(byteBuffer: ByteBuffer(string: #"{"purged":\#(purged)}"#)))
        }
    }

    private func requireCache(_ context: GatewayRequestContext) throws -> ResponseCache {
        guard context.client?.isOperator == true else {
            throw GatewayError.forbidden("operator endpoints need the admin key")
        }
        guard let cache else { throw GatewayError.notFound("the cache is disabled (cache.enabled: false)") }
        return cache
    }

    static func isAlgoPattern(_ text: String) -> Bool {
        let parts = text.split(separator: "/", omittingEmptySubsequences: false)
        return (2...3).contains(parts.count) && parts.allSatisfy { !$0.isEmpty && !$0.contains("%") }
    }

    static func json(_ value: some Encodable) throws -> Response {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        return Response(status: .ok, headers: [.contentType: "application/json"],
                        body: .init(byteBuffer: ByteBuffer(bytes: try encoder.encode(value))))
    }
}
