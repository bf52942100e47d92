import Foundation
import HTTPTypes
import Hummingbird
import NIOCore

/// Classifies `/v1` requests, checks the client's scope for the route class, keeps data paths
/// inside the client's `data_prefixes` (a directory create is checked for the directory it makes),
/// algorithm calls and management inside its `algorithms` (a create is checked for the
/// algorithm it makes), and asynchronous calls (`output=void`) out when its `async_calls` is false.
struct AuthorizationMiddleware: RouterMiddleware {
    typealias Context = GatewayRequestContext
    /// Directory- and algorithm-create bodies are small JSON objects; anything larger is not one.
    static let maxCreateBody = 64 * 1024

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        switch try Self.grant(request, context: context) {
        case .granted:
            return try await next(request, context)
        case .directoryCreate(let uri, let prefixes, let client):
            return try await next(try await Self.checkDirectoryCreate(request, in: uri, prefixes: prefixes, client: client), context)
        case .management(let algorithms, let client):
            var request = request
            try await Self.checkManagement(&request, client: client, algorithms: algorithms)
            return try await next(request, context)
        }
    }

    /// What is left to check once the request's head has been: the two checks that read the
    /// body have their own functions, so that the frame of `handle`, held while the request
    /// waits, holds none of this (see `CacheMiddleware.handle`).
    enum Grant {
        case granted
        /// A POST to a data directory of a client with `data_prefixes`: the directory it makes.
        case directoryCreate(DataURI, prefixes: [DataURI], client: String)
        /// A management request of a client limited to some algorithms.
        case management(algorithms: [AlgorithmPattern], client: String)
    }

    /// Why a team's request is taken for the operator's: most often a mistaken address (a typo
    /// of a route, or a client whose `ALGORITHMIA_API` ends in `/v1`, so every path has it twice),
    /// which a bare "lacks the 'admin' scope" would have the team look for in its scopes.
    static func operatorPathHint(_ path: String) -> String {
        let twice = path.hasPrefix("/v1/v1/") || path == "/v1/v1"
            ? "; the path has /v1 twice: set the client's address (ALGORITHMIA_API) to the gateway's origin alone, without /v1" : ""
        return ": \(path) is not under /v1/algo/, /v1/data/, /v1/connector/ or /v1/algorithms/, the paths teams' scopes cover;"
            + " the rest of /v1 is the operator's" + twice
    }

    /// Classifies the request (setting `context.route`) and checks what its head shows: refused
    /// here, granted, or granted once its body has been checked.
    @inline(never)
    static func grant(_ request: Request, context: Context) throws -> Grant {
        guard let client = context.client, let route = try RouteClass.classify(path: request.uri.path) else { return .granted }
        context.route = route
        if let refusal = overrideRefusal(request.headers, query: request.uri.query, method: request.method) { throw refusal }
        let scope = route.requiredScope(for: request.method)
        guard client.scopes.contains(scope) else {
            let refusal = "client '\(client.name)' lacks the '\(scope.rawValue)' scope for \(request.method) \(route.name) requests"
            guard scope == .admin else { throw GatewayError.forbidden(refusal) }
            throw GatewayError.forbidden(refusal + Self.operatorPathHint(request.uri.path))
        }
        if case .data(let uri, _) = route, let prefixes = client.dataPrefixes {
            // Creating a directory is a POST to its parent: authorise the directory being made.
            if request.method == .post { return .directoryCreate(uri, prefixes: prefixes, client: client.name) }
            guard prefixes.contains(where: uri.isWithin) else {
                throw GatewayError.forbidden("client '\(client.name)' may not access \(uri): outside its data prefixes \(DataURI.naming(prefixes))")
            }
        }
        if let algorithms = client.algorithms {
            switch route {
            case .algo(let ref):
                if ref.byID {
                    throw GatewayError.forbidden("client '\(client.name)' may call only the algorithms it lists, by owner and name: \(ref.owner) is an algorithm's id, which does not say which algorithm it is")
                }
                guard algorithms.permits(owner: ref.owner, name: ref.name) else {
                    throw GatewayError.forbidden("client '\(client.name)' may not call \(ref.owner)/\(ref.name): not among its algorithms")
                }
            case .manage:
                return .management(algorithms: algorithms, client: client.name)
            case .data, .admin:
                break
            }
        }
        if case .algo = route, !client.asyncCalls, request.method == .post, (try? AlgoOptions.parse(request.uri.query))?.isAsync == true {
            throw GatewayError.forbidden("client '\(client.name)' may not make asynchronous calls (output=void): the upstream runs such a call's algorithm after it has answered, outside the client's share of the account's concurrency; call without output=void")
        }
        return .granted
    }

    /// A directory create (a POST to its parent, `uri`, with `{"name": ...}`), checked for the
    /// directory it makes; the request as it goes on, carrying the body that was checked.
    @inline(never)
    static func checkDirectoryCreate(_ request: Request, in uri: DataURI, prefixes: [DataURI], client: String) async throws -> Request {
        let body = try await request.body.collect(upTo: maxCreateBody)
        guard let object = JSON.object(body), let name = try createdName(in: object) else {
            throw GatewayError.badRequest("a POST to a data directory must be {\"name\": ..., \"acl\": ...}")
        }
        let target = try uri.appending(name)
        guard prefixes.contains(where: target.isWithin) else {
            throw GatewayError.forbidden("client '\(client)' may not access \(target): outside its data prefixes \(DataURI.naming(prefixes))")
        }
        return try carrying(object, request)
    }

    /// The 400 for a request carrying what some servers take for its method or its path instead of
    /// its own (`methodOverride`, `pathOverride`): its scope was granted for those. Nil when none.
    /// The pipeline and hits on the event loop both ask here, so they refuse the same requests.
    static func overrideRefusal(_ fields: HTTPFields, query: String?, method: HTTPRequest.Method) -> GatewayError? {
        if let override = methodOverride(fields, query: query) {
            return .badRequest("the request carries \(override), which some servers take for its method: the gateway grants a request by its own method (\(method)), so send the method itself")
        }
        if let field = pathOverride(fields) {
            return .badRequest("the request carries an \(field.rawName) field, which some servers take for its path: the gateway grants a request by its own path, so send the path itself")
        }
        return nil
    }

    /// Header fields some servers (and frameworks in front of them) take for the request's method.
    static let methodOverrideFields: [HTTPField.Name] = ["X-HTTP-Method-Override", "X-HTTP-Method", "X-Method-Override"].map { HTTPField.Name($0)! }

    /// What in a request's `fields` and `query` could give it another method upstream than the one
    /// its scope was checked for (a GET, read with `data:read`, that the upstream runs as a
    /// DELETE): a method-override field, or a `_method` query parameter (in any case,
    /// percent-encoded or not, see `ParameterName`). Nil when none.
    static func methodOverride(_ fields: HTTPFields, query: String?) -> String? {
        if let name = methodOverrideFields.first(where: { fields[$0] != nil }) { return "an \(name.rawName) field" }
        guard let query, query.contains("_") || query.contains("%") else { return nil }
        for pair in query.split(separator: "&") {
            let name = pair.prefix { $0 != "=" }
            if ParameterName.reading(name, among: methodParameter) != nil { return "a _method query parameter" }
        }
        return nil
    }

    private static let methodParameter = ["_method"]

    /// Header fields some servers (IIS's URL rewriting, frameworks that trust it) route by instead
    /// of the request's own path: `/v1/algo/...` granted with `algo` would be read as the path
    /// the field names, another team's data, say.
    static let pathOverrideFields: [HTTPField.Name] = ["X-Original-URL", "X-Rewrite-URL"].map { HTTPField.Name($0)! }

    /// The first of `pathOverrideFields` that `fields` holds, if any.
    static func pathOverride(_ fields: HTTPFields) -> HTTPField.Name? {
        pathOverrideFields.first { fields[$0] != nil }
    }

    /// The `name` a create body gives, nil when it gives none as a string. A body with another key
    /// some server could read as `name` (`Name`, `NAME`, `%6Eame`, see `ParameterName`) is
    /// refused: a JSON reader that matches keys in any case (Jackson's
    /// `ACCEPT_CASE_INSENSITIVE_PROPERTIES`) could take that one, not the name checked.
    static func createdName(in object: [String: Any]) throws(GatewayError) -> String? {
        if let other = object.keys.sorted().first(where: { $0 != "name" && ParameterName.reading(Substring($0), among: nameKey) != nil }) {
            throw GatewayError.badRequest("the body has a \"\(other)\" key beside \"name\", which some servers read as the name: give the name once, as \"name\"")
        }
        return object["name"] as? String
    }

    private static let nameKey = ["name"]

    /// `request` with the create body the gateway checked, `object`, encoded anew as its body: the
    /// upstream reads the name that was checked. Parsers differ on a key written twice
    /// (`{"name": "/team-b", "name": "x"}`): Foundation, as most, keeps the last, some keep the
    /// first, so the bytes as sent could name another directory or algorithm upstream.
    static func carrying(_ object: [String: Any], _ request: Request) throws -> Request {
        let data = try JSONSerialization.data(withJSONObject: object, options: [.sortedKeys, .withoutEscapingSlashes])
        var head = request.head
        head.headerFields[.contentLength] = String(data.count)
        head.headerFields[.transferEncoding] = nil
        return Request(head: head, body: .init(buffer: ByteBuffer(bytes: data)))
    }

    /// A management request of a client limited to some algorithms: `/v1/algorithms/{owner}/{name}/...`
    /// must name one of them; creating one (a POST to `/v1/algorithms/{owner}` with its `name` in
    /// the body) must make one of them; other owner-wide requests need `owner/*`. Paths whose
    /// segments are not plain names cannot be checked and are refused.
    @inline(never)
    static func checkManagement(_ request: inout Request, client: String, algorithms: [AlgorithmPattern]) async throws {
        // Split on the `/` scalar, not on `Character`s (see `DataURI`).
        var segments = (request.uri.path.dropPrefix("/v1/algorithms/") ?? "").unicodeScalars
            .split(separator: "/", omittingEmptySubsequences: false).map(Substring.init)
        if segments.last == "" { segments.removeLast() }
        guard segments.allSatisfy(AlgorithmPattern.isName) else {
            throw GatewayError.badRequest("\(request.uri.path) cannot be checked against client '\(client)''s algorithms: use plain names, without encoded characters or dot segments")
        }
        switch segments.count {
        case 0:
            throw GatewayError.forbidden("client '\(client)' may only manage its own algorithms: name one in the path")
        case 1 where request.method == .post:
            let body = try await request.body.collect(upTo: maxCreateBody)
            guard let object = JSON.object(body), let name = try createdName(in: object) else {
                throw GatewayError.badRequest("a POST to /v1/algorithms/\(segments[0]) must be a JSON object with the new algorithm's \"name\"")
            }
            guard algorithms.permits(owner: segments[0], name: name) else {
                throw GatewayError.forbidden("client '\(client)' may not create \(segments[0])/\(name): not among its algorithms")
            }
            request = try carrying(object, request)
        case 1:
            guard algorithms.contains(where: { $0.coversOwner(segments[0]) }) else {
                throw GatewayError.forbidden("client '\(client)' may not manage every algorithm of \(segments[0]): its algorithms do not include \(segments[0])/*")
            }
        default:
            guard algorithms.permits(owner: segments[0], name: segments[1]) else {
                throw GatewayError.forbidden("client '\(client)' may not manage \(segments[0])/\(segments[1]): not among its algorithms")
            }
        }
    }
}
