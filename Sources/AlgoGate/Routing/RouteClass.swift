import HTTPTypes

/// What a request is, by its path, and so which scope it needs.
///
/// | path                              | class  | scope                                         |
/// |-----------------------------------|--------|-----------------------------------------------|
/// | `/v1/algo/**`                     | algo   | `algo`                                        |
/// | `/v1/data/**`, `/v1/connector/**` | data   | `data:read` (GET, HEAD), else `data:write`    |
/// | `/v1/algorithms/**`               | manage | `manage`                                      |
/// | any other `/v1/**`                | admin  | `admin`                                       |
public enum RouteClass: Sendable, Equatable {
    case algo(AlgoRef)
    case data(DataURI, viaConnectorForm: Bool)
    case manage
    case admin

    public var name: String {
        switch self {
        case .algo: "algo"
        case .data: "data"
        case .manage: "manage"
        case .admin: "admin"
        }
    }

    /// Classifies a `/v1/...` path; nil for paths outside `/v1/` (the gateway's own routes or 404).
    static func classify(path: String) throws -> RouteClass? {
        if let rest = path.dropPrefix("/v1/algo/") {
            guard let ref = AlgoRef(path: rest) else {
                throw GatewayError.notFound("no algorithm at \(path): use /v1/algo/{owner}/{name}[/{version}]")
            }
            return .algo(ref)
        }
        if path == "/v1/data" { return .data(DataURI(connector: "data", segments: []), viaConnectorForm: false) }
        if let rest = path.dropPrefix("/v1/data/") {
            return .data(try DataURI.parse(dataPath: rest), viaConnectorForm: false)
        }
        if let rest = path.dropPrefix("/v1/connector/") {
            return .data(try DataURI.parse(connectorPath: rest), viaConnectorForm: true)
        }
        if path == "/v1/algorithms" || path.hasPrefix("/v1/algorithms/") { return .manage }
        if path.hasPrefix("/v1/") { return .admin }
        return nil
    }

    func requiredScope(for method: HTTPRequest.Method) -> Scope {
        switch self {
        case .algo: .algo
        case .data: (method == .get || method == .head) ? .dataRead : .dataWrite
        case .manage: .manage
        case .admin: .admin
        }
    }
}

extension String {
    /// The rest after `prefix`, or nil. Counted in UTF-8 bytes rather than characters: this runs
    /// on every request, and the ASCII prefixes it is given end on a character boundary.
    func dropPrefix(_ prefix: String) -> Substring? {
        hasPrefix(prefix) ? self[utf8.index(startIndex, offsetBy: prefix.utf8.count)...] : nil
    }
}
