import HTTPTypes

/// What a request is, by its path, and so which scope it needs.
///
/// | path                              | class  | scope                                         |
/// |-----------------------------------|--------|-----------------------------------------------|
/// | `/v1/algo/**`, `/v1/web/algo/**`  | algo   | `algo`                                        |
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

    /// The reference after `/v1/algo/`, or after `/v1/web/algo/`: Algorithmia's endpoint for
    /// calls from web pages, which its browser client (`algorithmia.js` appends `/v1/web/algo` to
    /// the address it is given), its Google Sheets script and its demos call. The same call:
    /// checked as one, cached as one and forwarded upstream as `/v1/algo/...`, since the gateway
    /// applies the page's origin itself (`cors_origins`) and the server key need not be one for pages.
    static func algoReference(in path: String) -> Substring? {
        path.dropPrefix("/v1/algo/") ?? path.dropPrefix("/v1/web/algo/")
    }

    /// Classifies a `/v1/...` path; nil for paths outside `/v1/` (the gateway's own routes or 404).
    static func classify(path: String) throws -> RouteClass? {
        if let rest = algoReference(in: path) {
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
        if path == "/v1/algorithms" || path.dropPrefix("/v1/algorithms/") != nil {
            try checkPlainSegments(path)
            return .manage
        }
        if path.dropPrefix("/v1/") != nil {
            try checkPlainSegments(path)
            return .admin
        }
        return nil
    }

    /// Management and other `/v1` paths are forwarded as they came, so every server must read
    /// them as the route checked here: many resolve dot segments (nginx, percent-encoded ones
    /// too), so `/v1/algorithms/../data/.my/team-b/f`, a management call to the gateway, would
    /// be a read of another team's file to them. A segment that is `.` or `..`, or could be read
    /// as one or as holding a separator (`%2e%2e`, `..%2f`, `..;`, a backslash, fullwidth dots:
    /// `DataURI.ambiguity`), or that is percent-encoded twice, is refused. (Algorithm paths hold
    /// plain names only, `AlgoRef`; data paths are normalised and checked, `DataURI`.)
    static func checkPlainSegments(_ path: String) throws {
        // Plain ASCII names without dots, escapes or separators of other kinds: nothing to read twice.
        guard path.utf8.contains(where: { [UInt8(ascii: "."), UInt8(ascii: "%"), UInt8(ascii: "\\"), UInt8(ascii: ";")].contains($0) || $0 >= 0x80 })
        else { return }
        let refused = GatewayError.badRequest("the path \(path) has a segment that some servers resolve as '.' or '..' or read as holding a '/': send it resolved, without dot segments or encoded separators")
        for segment in DataURI.split(path, at: "/") {
            guard let decoded = try? DataURI.decodeOnce(String(segment)) else { throw refused }
            if DataURI.isDotSegment(decoded[...]) || decoded.utf8.contains(UInt8(ascii: "/")) || decoded.utf8.contains(UInt8(ascii: "\\"))
                || DataURI.ambiguity(of: decoded[...]) != nil {
                throw refused
            }
        }
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
    /// The rest after `prefix`, or nil. Matched and cut in UTF-8 bytes, not `Character`s: this runs
    /// on every request, and a combining mark after the prefix's last `/` (U+0301) would make the
    /// two one `Character`, hiding the prefix from `hasPrefix` where every other reader sees it.
    func dropPrefix(_ prefix: String) -> Substring? {
        utf8.starts(with: prefix.utf8) ? self[utf8.index(startIndex, offsetBy: prefix.utf8.count)...] : nil
    }
}
