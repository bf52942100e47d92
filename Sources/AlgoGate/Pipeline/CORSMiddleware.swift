import HTTPTypes
import Hummingbird

/// Lets browser-side JavaScript (Algorithmia's browser client, a team's dashboard) call the
/// gateway from the web pages that `clients[].cors_origins` list, by the Fetch standard's CORS
/// protocol.
///
/// - A preflight (`OPTIONS` with `Origin` and `Access-Control-Request-Method`) carries no key, so
///   it is answered for the origins of every client together: 204 with the methods, the headers
///   the page asked for and a ten-minute `Access-Control-Max-Age`; for any other origin, a 403
///   with no CORS fields, and the browser sends nothing more.
/// - Any other request from one of those origins gets `Access-Control-Allow-Origin` (the origin
///   itself, never `*`: the page sends a key), `Vary: Origin`, and the gateway's own fields made
///   readable to the page, errors included, so the page can read why a call failed. Whether the
///   key presented may be used from that page is `AuthenticationMiddleware`'s check.
struct CORSMiddleware: RouterMiddleware {
    typealias Context = GatewayRequestContext
    /// Every client's `cors_origins` together (`ClientRegistry.browserOrigins`).
    let origins: @Sendable () -> BrowserOrigins

    static let allowedMethods = "GET, HEAD, POST, PUT, PATCH, DELETE"
    static let exposedFields = "X-Request-ID, Cache-Status, X-Cache, RateLimit, RateLimit-Policy, Retry-After, X-Error-Message"
    static let maxAgeSeconds = "600"
    /// Longer lists of requested headers are not echoed (the preflight then fails in the browser).
    static let maxRequestedHeaders = 1024

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        guard let origin = request.headers[.origin] else { return try await next(request, context) }
        if Self.isPreflight(request.head) { return try preflight(request, origin: origin, context: context) }
        let allowed = origins().permits(origin)
        let response = try await next(request, context)
        return allowed ? Self.exposed(response, to: origin) : response
    }

    /// The answer to a preflight. Not inlined into `handle` (see `CacheMiddleware.handle`).
    @inline(never)
    private func preflight(_ request: Request, origin: String, context: Context) throws -> Response {
        guard origins().permits(origin) else {
            return try ErrorMiddleware.render(GatewayError.forbidden(
                "the web page at \(origin) may not call the gateway: no client's cors_origins list it"), request: request, context: context)
        }
        var fields = HTTPFields()
        Self.allow(origin, in: &fields)
        fields[.accessControlAllowMethods] = Self.allowedMethods
        if let requested = request.headers[.accessControlRequestHeaders], Self.isFieldNameList(requested) {
            fields[.accessControlAllowHeaders] = requested
        }
        fields[.accessControlMaxAge] = Self.maxAgeSeconds
        fields.append(HTTPField(name: .vary, value: "Access-Control-Request-Method, Access-Control-Request-Headers"))
        return Response(status: .noContent, headers: fields)
    }

    /// `response` made readable to the page at `origin`.
    @inline(never)
    private static func exposed(_ response: Response, to origin: String) -> Response {
        var response = response
        allow(origin, in: &response.headers)
        response.headers[.accessControlExposeHeaders] = exposedFields
        return response
    }

    /// A browser's preflight: `OPTIONS` naming the method it asks for.
    static func isPreflight(_ head: HTTPRequest) -> Bool {
        head.method == .options && head.headerFields[.accessControlRequestMethod] != nil
    }

    static func allow(_ origin: String, in fields: inout HTTPFields) {
        fields[.accessControlAllowOrigin] = origin
        fields.append(HTTPField(name: .vary, value: "Origin"))
    }

    /// `Access-Control-Request-Headers` as browsers send it: field names, comma-separated.
    static func isFieldNameList(_ text: String) -> Bool {
        text.utf8.count <= maxRequestedHeaders && text.split(separator: ",").allSatisfy { name in
            let name = name.trimmingCharacters(in: .whitespaces)
            return !name.isEmpty && HTTPField.Name(name) != nil
        }
    }
}
