import Hummingbird
import NIOCore

/// Classifies `/v1` requests, checks the client's scope for the route class, and keeps data paths
/// inside the client's `data_prefixes` (a directory create is checked for the directory it makes).
struct AuthorizationMiddleware: RouterMiddleware {
    typealias Context = GatewayRequestContext
    /// Directory-create bodies are tiny JSON objects; anything larger is not one.
    static let maxCreateBody = 64 * 1024

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        guard let client = context.client, let route = try RouteClass.classify(path: request.uri.path) else {
            return try await next(request, context)
        }
        context.route = route
        let scope = route.requiredScope(for: request.method)
        guard client.scopes.contains(scope) else {
            throw GatewayError.forbidden("client '\(client.name)' lacks the '\(scope.rawValue)' scope for \(request.method) \(route.name) requests")
        }
        var request = request
        if case .data(let uri, _) = route, let prefixes = client.dataPrefixes {
            var target = uri
            if request.method == .post {
                // Creating a directory is a POST to its parent: authorise the directory being made.
                let body = try await request.body.collect(upTo: Self.maxCreateBody)
                guard let name = (JSON.object(body))?["name"] as? String else {
                    throw GatewayError.badRequest("a POST to a data directory must be {\"name\": ..., \"acl\": ...}")
                }
                target = try uri.appending(name)
                request.body = .init(buffer: body)
            }
            guard prefixes.contains(where: target.isWithin) else {
                throw GatewayError.forbidden("client '\(client.name)' may not access \(target): outside its data prefixes")
            }
        }
        return try await next(request, context)
    }
}
