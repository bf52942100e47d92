import Foundation

/// Files and directories of the data API, kept on disk under the simulator's data directory:
/// `<root>/<connector>/<segments…>`. `.my` in `data://` URIs is the account's own user.
/// Directory permissions live in a hidden sidecar file in each directory.
struct DataStore: Sendable {
    static let reservedPrefix = ".__"
    static let aclFile = ".__acl.json"
    static let uploadPrefix = ".__upload-"
    /// New directories let the account's own algorithms read them, as Algorithmia does.
    static let defaultACL = ["read": ["algo://.my/*"]]

    let root: URL
    let username: String

    enum Kind { case file(size: Int64, modified: Date), directory }

    init(root: URL, username: String) throws {
        self.root = root
        self.username = username
        try FileManager.default.createDirectory(at: root.appendingPathComponent("data").appendingPathComponent(username), withIntermediateDirectories: true)
    }

    /// The on-disk location; `.my` resolves to the account's user.
    func url(_ path: DataPath) -> URL {
        var url = root.appendingPathComponent(path.connector)
        for (index, segment) in path.segments.enumerated() {
            url.appendPathComponent(index == 0 && path.connector == "data" && segment == ".my" ? username : segment)
        }
        return url
    }

    func kind(_ path: DataPath) -> Kind? {
        let url = url(path)
        guard let attributes = try? FileManager.default.attributesOfItem(atPath: url.path) else {
            // Connector roots other than data:// exist implicitly, as buckets do.
            return path.segments.isEmpty ? .directory : nil
        }
        if (attributes[.type] as? FileAttributeType) == .typeDirectory { return .directory }
        return .file(size: (attributes[.size] as? NSNumber)?.int64Value ?? 0,
                     modified: attributes[.modificationDate] as? Date ?? Date())
    }

    struct Listing {
        var folders: [String]
        var files: [(name: String, size: Int64, modified: Date)]
    }

    /// The directory's entries, folders first, each group sorted by name.
    func list(_ path: DataPath) throws -> Listing {
        let url = url(path)
        let names = (try? FileManager.default.contentsOfDirectory(atPath: url.path)) ?? []
        var listing = Listing(folders: [], files: [])
        if path.connector == "data" && path.segments.isEmpty {
            // The data root lists the account itself (the Python client reads its user name there).
            return Listing(folders: [username], files: [])
        }
        for name in names.sorted() where !name.hasPrefix(Self.reservedPrefix) {
            switch kind(path.appending(name)) {
            case .directory: listing.folders.append(name)
            case .file(let size, let modified): listing.files.append((name, size, modified))
            case nil: continue
            }
        }
        return listing
    }

    func createDirectory(_ path: DataPath, acl: [String: [String]]?) throws {
        try FileManager.default.createDirectory(at: url(path), withIntermediateDirectories: false)
        try setACL(path, acl ?? Self.defaultACL)
    }

    func acl(_ path: DataPath) -> [String: [String]] {
        guard let data = try? Data(contentsOf: url(path).appendingPathComponent(Self.aclFile)),
              let acl = try? JSONDecoder().decode([String: [String]].self, from: data) else { return Self.defaultACL }
        return acl
    }

    func setACL(_ path: DataPath, _ acl: [String: [String]]) throws {
        try JSONEncoder().encode(acl).write(to: url(path).appendingPathComponent(Self.aclFile), options: .atomic)
    }

    /// Where an upload is written before it is moved into place, so a reader never sees half a file.
    func uploadURL(for path: DataPath) -> URL {
        url(path).deletingLastPathComponent().appendingPathComponent(Self.uploadPrefix + UUID().uuidString)
    }

    /// Puts a finished upload in place: rename(2) replaces an existing file atomically, so a
    /// reader sees the old contents or the new, never neither. (Foundation's `replaceItemAt` on
    /// Linux failed every other overwrite and removed the file it was replacing.)
    func commitUpload(_ upload: URL, to path: DataPath) throws {
        guard rename(upload.path, url(path).path) == 0 else {
            throw POSIXError(POSIXErrorCode(rawValue: errno) ?? .EIO)
        }
    }

    /// Makes the parent directories of a path (for connectors whose folders are implicit).
    func ensureParents(_ path: DataPath) throws {
        try FileManager.default.createDirectory(at: url(path).deletingLastPathComponent(), withIntermediateDirectories: true)
    }

    /// Deletes a file or directory; returns how many files went with it.
    func delete(_ path: DataPath) throws -> Int {
        let url = url(path)
        var count = 1
        if case .directory = kind(path) {
            let enumerator = FileManager.default.enumerator(atPath: url.path)
            count = 0
            while let name = enumerator?.nextObject() as? String {
                if !(name as NSString).lastPathComponent.hasPrefix(Self.reservedPrefix),
                   (enumerator?.fileAttributes?[.type] as? FileAttributeType) != .typeDirectory { count += 1 }
            }
        }
        try FileManager.default.removeItem(at: url)
        return count
    }
}
