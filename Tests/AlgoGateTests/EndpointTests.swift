import AlgoTestSupport
import NIOHTTP1
import Testing
@testable import AlgoGate

/// The gateway's own endpoints: the right methods answer, any other is a 405 that names them.
@Suite struct EndpointTests {
    @Test func otherMethodsOnTheGatewaysOwnEndpointsAre405WithAllow() async throws {
        try await GatewayHarness.run { h in
            for (path, methods) in ErrorMiddleware.gatewayEndpoints.sorted(by: { $0.key < $1.key }) {
                // The table agrees with the routes: each listed method is served.
                let key = path == "/_gateway/me" ? Keys.teamA : Keys.admin
                let allowed = methods.map(\.rawValue)
                for method in allowed {
                    let served = try await h.gateway.send(HTTPMethod(rawValue: method), path, headers: simple(key))
                    #expect(served.status == 200, "\(method) \(path)")
                }
                for method in [HTTPMethod.POST, .PUT, .PATCH] where !allowed.contains(method.rawValue) {
                    let refused = try await h.gateway.send(method, path, headers: simple(key))
                    #expect(refused.status == 405, "\(method) \(path)")
                    #expect(refused.header("Allow") == allowed.joined(separator: ", "))
                    #expect(refused.text == #"{"error":{"error_type":"InputError","message":"\#(path) takes \#(allowed.joined(separator: " or ")), not \#(method.rawValue)"}}"#)
                }
            }
            let unknown = try await h.gateway.send(.GET, "/_admin/nothing", headers: simple(Keys.admin))
            #expect(unknown.status == 404)
            #expect(unknown.text == #"{"error":{"error_type":"EntityNotFoundError","message":"no such endpoint: /_admin/nothing"}}"#)
        }
    }
}
