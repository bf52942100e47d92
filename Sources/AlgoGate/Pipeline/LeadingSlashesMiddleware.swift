import Hummingbird

/// `//v1/algo/...` is read as `/v1/algo/...`. A client whose base address ends with a slash
/// (`ALGORITHMIA_API=http://algogate:8080/`) sends every path with two: the official clients
/// append their paths to the address as it is. Only the leading run of slashes is merged, before
/// routing, so the checks, the log and the upstream all see the one path; slashes further in are
/// the path's own (a data URI's `s3://` keeps its two).
struct LeadingSlashesMiddleware: RouterMiddleware {
    typealias Context = GatewayRequestContext

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        guard let target = request.head.path, target.hasPrefix("//") else { return try await next(request, context) }
        var head = request.head
        head.path = "/" + target.drop { $0 == "/" }
        return try await next(Request(head: head, body: request.body), context)
    }
}
