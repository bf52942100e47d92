import Foundation
import Hummingbird
import NIOCore

/// The part of the algorithm management API (`/v1/algorithms/...`) the official clients' create →
/// update → compile → publish flow uses. A published version becomes callable; it echoes its input.
/// Errors use the management API's own envelope `{"id","code","message"}`.
struct ManagementRoutes: Sendable {
    let registry: AlgorithmRegistry
    /// Origin of `self_link`s: the address the client used, so links work behind a gateway too.
    private var baseURL = ""

    init(registry: AlgorithmRegistry) { self.registry = registry }

    func handle(_ request: Request, context: SimRequestContext, path: Substring) async throws -> Response {
        var routes = self
        routes.baseURL = "http://" + (request.head.authority ?? "localhost")
        return try await routes.dispatch(request, path: path)
    }

    private func dispatch(_ request: Request, path: Substring) async throws -> Response {
        let segments = path.split(separator: "/").map(String.init)
        switch (request.method, segments.count) {
        case (.post, 1):
            return try await create(request, owner: segments[0])
        case (.get, 2):
            return json(algorithmObject(try record(segments)))
        case (.put, 2):
            return try await update(request, segments)
        case (.delete, 2):
            // "An empty response upon success" (Algorithmia's API reference).
            guard registry.delete(owner: segments[0], name: segments[1]) else { throw Self.error(.notFound, "No such algorithm: \(segments[0])/\(segments[1])") }
            return Response(status: .noContent)
        case (.get, 4) where segments[2] == "scm" && segments[3] == "status":
            _ = try record(segments)
            return json(["scm_connection_status": "active"])
        case (.post, 3) where segments[2] == "compile":
            return try compile(segments)
        case (.post, 3) where segments[2] == "versions" || segments[2] == "version":
            // `version` as the Java client posts it (`publishAlgo`), `versions` as the API reference does.
            return try await publish(request, segments)
        case (.post, 2) where segments[1] == "version":
            // Publishing by the algorithm's id (the API reference's `/v1/algorithms/:algorithmId/version`).
            guard let record = registry.record(id: segments[0]) else { throw Self.error(.notFound, "No such algorithm: \(segments[0])") }
            return try await publish(request, [record.owner, record.name])
        case (.get, 3) where segments[2] == "versions":
            let record = try record(segments)
            let versions = record.versions.sorted { $0.semver > $1.semver }.map { versionObject(record, $0) }
            return json(["marker": NSNull(), "next_link": NSNull(), "results": versions])
        case (.get, 4) where segments[2] == "versions":
            let record = try record(segments)
            guard let version = record.versions.first(where: { $0.gitHash == segments[3] || $0.semver.description == segments[3] }) else {
                throw Self.error(.notFound, "No such version: \(segments[3])")
            }
            return json(versionObject(record, version))
        case (.get, 3) where segments[2] == "builds":
            let record = try record(segments)
            return json(["marker": NSNull(), "next_link": NSNull(), "results": record.builds.reversed().map(buildObject)])
        case (.get, 4) where segments[2] == "builds":
            return json(buildObject(try build(segments)))
        case (.get, 5) where segments[2] == "builds" && segments[4] == "logs":
            let build = try build(segments)
            return json(["logs": "Building \(segments[0])/\(segments[1]) at \(build.commitSHA)\nBuild succeeded\n"])
        case (.get, 3) where segments[2] == "errors":
            _ = try record(segments)
            return json([Any]())
        default:
            throw Self.error(.notFound, "No such management endpoint: \(request.method) /v1/algorithms/\(path)")
        }
    }

    static func error(_ status: HTTPResponse.Status, _ message: String) -> SimError {
        SimError(status, message, envelope: .management)
    }

    private func record(_ segments: [String]) throws -> AlgorithmRegistry.Record {
        guard let record = registry.record(owner: segments[0], name: segments[1]) else {
            throw Self.error(.notFound, "No such algorithm: \(segments[0])/\(segments[1])")
        }
        return record
    }

    private func build(_ segments: [String]) throws -> AlgorithmRegistry.Build {
        guard let build = try record(segments).builds.first(where: { $0.id == segments[3] }) else {
            throw Self.error(.notFound, "No such build: \(segments[3])")
        }
        return build
    }

    private func body(_ request: Request) async throws -> [String: Any] {
        let buffer = try await request.body.collect(upTo: 1 << 20)
        guard let object = JSON.object(buffer) else { throw Self.error(.badRequest, "request body must be a JSON object") }
        return object
    }

    private func create(_ request: Request, owner: String) async throws -> Response {
        let object = try await body(request)
        guard let name = object["name"] as? String, !name.isEmpty,
              name.allSatisfy({ $0.isLetter || $0.isNumber || $0 == "_" }) else {
            throw Self.error(.badRequest, "name is required: letters, digits and underscores")
        }
        guard let details = object["details"] as? [String: Any], let settings = object["settings"] as? [String: Any] else {
            throw Self.error(.badRequest, "details and settings are required objects")
        }
        let record = AlgorithmRegistry.Record(
            id: UUID().uuidString.lowercased(), owner: owner, name: name,
            details: JSON.data(details), settings: JSON.data(settings),
            versionInfo: JSON.data(object["version_info"] as? [String: Any] ?? [:]), createdAt: Date()
        )
        guard registry.create(record) else { throw Self.error(.conflict, "Algorithm \(owner)/\(name) already exists") }
        return json(algorithmObject(record))
    }

    private func update(_ request: Request, _ segments: [String]) async throws -> Response {
        let object = try await body(request)
        let updated = registry.update(owner: segments[0], name: segments[1]) { record in
            // Clients send `{}` for parts they leave alone.
            if let details = object["details"] as? [String: Any], !details.isEmpty { record.details = JSON.data(details) }
            if let settings = object["settings"] as? [String: Any], !settings.isEmpty { record.settings = JSON.data(settings) }
            if let info = object["version_info"] as? [String: Any], !info.isEmpty { record.versionInfo = JSON.data(info) }
            return record
        }
        guard let updated else { throw Self.error(.notFound, "No such algorithm: \(segments[0])/\(segments[1])") }
        return json(algorithmObject(updated))
    }

    private func compile(_ segments: [String]) throws -> Response {
        let updated = registry.update(owner: segments[0], name: segments[1]) { record in
            let sha = AlgorithmRegistry.stableHash("\(record.id)/\(record.builds.count)", length: 40)
            record.builds.append(.init(id: UUID().uuidString.lowercased(), commitSHA: sha, startedAt: Date(), semver: nil))
            record.latestHash = sha
            return record
        }
        guard let updated else { throw Self.error(.notFound, "No such algorithm: \(segments[0])/\(segments[1])") }
        return json(algorithmObject(updated))
    }

    private func publish(_ request: Request, _ segments: [String]) async throws -> Response {
        let object = try await body(request)
        let info = object["version_info"] as? [String: Any] ?? [:]
        // `version_type` as the API reference and the Java client write it, `type` as the Python
        // client's own README does.
        let kind = info["version_type"] as? String ?? info["type"] as? String ?? "minor"
        let published: (AlgorithmRegistry.Record, AlgorithmRegistry.Version)?? = try registry.update(owner: segments[0], name: segments[1]) { record in
            let current = record.newest?.semver ?? SemanticVersion(0, 0, 0)
            guard let next = current.bumped(kind) else {
                throw Self.error(.badRequest, "version_info.version_type must be major, minor or patch")
            }
            let hash = record.latestHash ?? AlgorithmRegistry.stableHash("\(record.id)/\(next)", length: 40)
            let version = AlgorithmRegistry.Version(
                semver: next, gitHash: hash,
                releaseNotes: info["release_notes"] as? String ?? "",
                sampleInput: info["sample_input"] as? String ?? "",
                publishedAt: Date(), algorithm: Echo())
            record.versions.append(version)
            record.builds.append(.init(id: UUID().uuidString.lowercased(), commitSHA: hash, startedAt: Date(), semver: next))
            record.latestHash = nil
            return (record, version)
        }
        guard let published = published ?? nil else { throw Self.error(.notFound, "No such algorithm: \(segments[0])/\(segments[1])") }
        return json(versionObject(published.0, published.1))
    }

    private func algorithmObject(_ record: AlgorithmRegistry.Record) -> [String: Any] {
        var object: [String: Any] = [
            "id": record.id, "name": record.name,
            "details": JSON.value(record.details), "settings": JSON.value(record.settings),
            "resource_type": "algorithm",
            "self_link": "\(baseURL)/v1/algorithms/\(record.owner)/\(record.name)",
        ]
        var info = JSON.value(record.versionInfo) as? [String: Any] ?? [:]
        if let hash = record.latestHash ?? record.newest?.gitHash { info["git_hash"] = hash }
        object["version_info"] = info
        return object
    }

    private func versionObject(_ record: AlgorithmRegistry.Record, _ version: AlgorithmRegistry.Version) -> [String: Any] {
        [
            "id": record.id, "name": record.name,
            "details": JSON.value(record.details), "settings": JSON.value(record.settings),
            "version_info": [
                "semantic_version": version.semver.description, "git_hash": version.gitHash,
                "release_notes": version.releaseNotes, "sample_input": version.sampleInput,
            ],
            "resource_type": "algorithm",
            "self_link": "\(baseURL)/v1/algorithms/\(record.owner)/\(record.name)/versions/\(version.gitHash)",
        ]
    }

    private func buildObject(_ build: AlgorithmRegistry.Build) -> [String: Any] {
        var object: [String: Any] = [
            "build_id": build.id, "commit_sha": build.commitSHA, "status": "succeeded",
            "started_at": DataRoutes.timestamp(build.startedAt), "finished_at": DataRoutes.timestamp(build.startedAt),
            "resource_type": "algorithm_build",
        ]
        if let semver = build.semver { object["version_info"] = ["semantic_version": semver.description] }
        return object
    }

    private func json(_ object: Any) -> Response { AlgoRoutes.json(object) }
}
