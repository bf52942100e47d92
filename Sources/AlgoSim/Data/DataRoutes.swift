import Foundation
import HTTPTypes
import Hummingbird
import NIOCore

/// The data API: `/v1/data/{path}` and `/v1/connector/{type}/{path}`. File bodies stream to and
/// from disk, so an upload or download of any size uses a bounded amount of memory.
struct DataRoutes: Sendable {
    let store: DataStore
    let pageSize: Int
    let fileIO = FileIO()

    func handle(_ request: Request, context: SimRequestContext, path: DataPath) async throws -> Response {
        switch request.method {
        case .get: return try await get(request, context: context, path: path)
        case .head: return try head(request, path)
        case .put: return try await put(request, context: context, path: path)
        case .post: return try await createDirectory(request, context: context, parent: path)
        case .patch: return try await updatePermissions(request, context: context, path: path)
        case .delete: return try delete(request, path: path)
        default: throw SimError.methodNotAllowed("method \(request.method) is not supported on data paths",
                                                 allow: [.get, .head, .put, .post, .patch, .delete])
        }
    }

    private func notFound(_ path: DataPath) -> SimError {
        SimError.notFound("\(path.uri) does not exist")
    }

    private func get(_ request: Request, context: SimRequestContext, path: DataPath) async throws -> Response {
        switch store.kind(path) {
        case nil: throw notFound(path)
        case .file(let size, _):
            let body = try await fileIO.loadFile(path: store.url(path).path, context: context)
            return Response(status: .ok, headers: [.contentType: Self.fileType(accepting: request), .contentLength: String(size), SimHeaders.dataType: "file"],
                            body: body)
        case .directory:
            var listing = try listing(request, path: path)
            listing.headers[SimHeaders.dataType] = "directory"
            return listing
        }
    }

    private func listing(_ request: Request, path: DataPath) throws -> Response {
        let listing = try store.list(path)
        // The marker is the offset of the next entry (folders first, then files), opaque to clients.
        let entries = listing.folders.count + listing.files.count
        var start = 0
        if let marker = request.uri.queryParameters.get("marker") {
            guard marker.hasPrefix("o-"), let offset = Int(marker.dropFirst(2)), (0...entries).contains(offset) else {
                throw SimError.badRequest("invalid marker '\(marker)'")
            }
            start = offset
        }
        let end = min(entries, start + pageSize)
        var folders: [[String: Any]] = []
        var files: [[String: Any]] = []
        for index in start..<end {
            if index < listing.folders.count {
                folders.append(["name": listing.folders[index]])
            } else {
                let file = listing.files[index - listing.folders.count]
                files.append(["filename": file.name, "size": file.size, "last_modified": Self.timestamp(file.modified)])
            }
        }
        // No `marker` on the last page, rather than a null one: the R client's iterator takes a
        // `marker` field to be a string, and its own tests, run against Algorithmia, list a
        // directory of two files with it.
        var object: [String: Any] = ["folders": folders, "files": files]
        if end < entries { object["marker"] = "o-\(end)" }
        if request.uri.queryParameters.get("acl") == "true" { object["acl"] = store.acl(path) }
        return AlgoRoutes.json(object)
    }

    private func head(_ request: Request, _ path: DataPath) throws -> Response {
        switch store.kind(path) {
        case nil: throw notFound(path)
        case .file(let size, let modified):
            return Response(status: .ok, headers: [
                .contentType: Self.fileType(accepting: request), .contentLength: String(size),
                .lastModified: Self.httpDate(modified), SimHeaders.dataType: "file",
            ])
        case .directory:
            return Response(status: .ok, headers: [SimHeaders.dataType: "directory"])
        }
    }

    private func put(_ request: Request, context: SimRequestContext, path: DataPath) async throws -> Response {
        guard !path.segments.isEmpty, let parent = path.parent else { throw SimError.badRequest("cannot write to a connector root") }
        if case .directory = store.kind(path) { throw SimError(.conflict, "\(path.uri) is a directory") }
        if path.connector == "data" {
            guard case .directory = store.kind(parent) else { throw SimError.notFound("directory \(parent.uri) does not exist") }
        } else {
            try store.ensureParents(path)
        }
        let upload = store.uploadURL(for: path)
        do {
            try await fileIO.writeFile(contents: request.body, path: upload.path, context: context)
            try store.commitUpload(upload, to: path)
        } catch {
            try? FileManager.default.removeItem(at: upload)
            throw error
        }
        return AlgoRoutes.json(["result": path.uri])
    }

    private func createDirectory(_ request: Request, context: SimRequestContext, parent: DataPath) async throws -> Response {
        let body = try await request.body.collect(upTo: 64 * 1024)
        guard let object = JSON.object(body), let name = object["name"] as? String else {
            throw SimError.badRequest("expected {\"name\": string, \"acl\": {\"read\": [...]}}")
        }
        let path = try DataPath.parse(dataPath: Substring(parent.uri + "/" + name))
        guard path.segments.count == parent.segments.count + 1 else { throw SimError.badRequest("invalid directory name '\(name)'") }
        guard case .directory = store.kind(parent) else { throw SimError.notFound("directory \(parent.uri) does not exist") }
        guard store.kind(path) == nil else { throw SimError(.conflict, "\(path.uri) already exists") }
        try store.createDirectory(path, acl: try Self.acl(from: object))
        return AlgoRoutes.json(["result": path.uri])
    }

    private func updatePermissions(_ request: Request, context: SimRequestContext, path: DataPath) async throws -> Response {
        guard case .directory = store.kind(path) else { throw notFound(path) }
        let body = try await request.body.collect(upTo: 64 * 1024)
        guard let object = JSON.object(body), let acl = try Self.acl(from: object) else {
            throw SimError.badRequest("expected {\"acl\": {\"read\": [...]}}")
        }
        try store.setACL(path, acl)
        return AlgoRoutes.json(["acl": acl])
    }

    private func delete(_ request: Request, path: DataPath) throws -> Response {
        guard !path.segments.isEmpty else { throw SimError.badRequest("cannot delete a connector root") }
        switch store.kind(path) {
        case nil: throw notFound(path)
        case .directory:
            let force = request.uri.queryParameters.get("force") == "true"
            if !force, !(try store.list(path)).isEmpty {
                throw SimError.badRequest("directory \(path.uri) is not empty; delete with force=true")
            }
        case .file: break
        }
        return AlgoRoutes.json(["result": ["deleted": try store.delete(path)]])
    }

    static func acl(from object: [String: Any]) throws -> [String: [String]]? {
        // `"acl": null` is no ACL: the C# client sends it so when it is given none.
        guard let acl = object["acl"], !(acl is NSNull) else { return nil }
        guard let dictionary = acl as? [String: Any], let read = dictionary["read"] as? [String],
              read.allSatisfy({ ["user://*", "algo://.my/*"].contains($0) }) else {
            throw SimError.badRequest("acl must be {\"read\": []}, {\"read\": [\"user://*\"]} or {\"read\": [\"algo://.my/*\"]}")
        }
        return ["read": read]
    }

    /// A file's type in a download: the one type the request's `Accept` names when that is
    /// `text/plain` or `application/json`, else `application/octet-stream`. The Node.js 0.3
    /// client's `getString` and `getJson` ask for those types alone and read the answer by its
    /// type (any other throws), while the R client labels every upload `application/json` and then
    /// parses a download as JSON when it is typed so, which a text file is not (its own tests read
    /// text put that way back as text from Algorithmia, so the API does not type a download by its
    /// upload); it and the other clients accept several types, or any.
    static func fileType(accepting request: Request) -> String {
        let accepted = request.headers[values: .accept].flatMap { $0.split(separator: ",") }
        if accepted.count == 1, let type = accepted.first?.split(separator: ";").first?.trimmingCharacters(in: .whitespaces).lowercased(),
           type == "text/plain" || type == "application/json" {
            return type
        }
        return "application/octet-stream"
    }

    /// Algorithmia's timestamp form: whole seconds, written with `.000Z`. The C# client parses it
    /// as `yyyy-MM-ddTHH:mm:ss.000Z` and the R client as `%Y-%m-%dT%H:%M:%S.000Z`, the `.000`
    /// written out (the C# client throws on other milliseconds, the R client reads NA); the
    /// Python client reads `%Y-%m-%dT%H:%M:%S.%fZ`.
    static func timestamp(_ date: Date) -> String {
        let whole = Date(timeIntervalSince1970: date.timeIntervalSince1970.rounded(.down))
        return whole.formatted(Date.ISO8601FormatStyle(includingFractionalSeconds: true, timeZone: .gmt))
    }

    /// An HTTP date (RFC 9110 §5.6.7), as `Last-Modified` must be written: `Sun, 06 Nov 1994 08:49:37 GMT`.
    static func httpDate(_ date: Date) -> String {
        let formatter = DateFormatter()
        formatter.locale = Locale(identifier: "en_US_POSIX")
        formatter.timeZone = TimeZone(identifier: "GMT")
        formatter.dateFormat = "EEE, dd MMM yyyy HH:mm:ss 'GMT'"
        return formatter.string(from: date)
    }
}

extension DataStore.Listing {
    var isEmpty: Bool { folders.isEmpty && files.isEmpty }
}

extension SimHeaders {
    /// `file` or `directory` on a GET or HEAD of either, as Algorithmia's API reference gives it;
    /// the Rust client refuses a file's answer without it.
    static let dataType = HTTPField.Name("X-Data-Type")!
}
