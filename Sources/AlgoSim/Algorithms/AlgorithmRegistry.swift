import Foundation
import Synchronization

/// Every algorithm the simulator knows: the built-ins and those created through the management
/// API. One store serves both the algorithm API (resolving a version to run) and the management
/// API (records, versions, builds).
final class AlgorithmRegistry: Sendable {
    struct Version: Sendable {
        var semver: SemanticVersion
        var gitHash: String
        var releaseNotes: String
        var sampleInput: String
        var publishedAt: Date
        var algorithm: any SimAlgorithm
    }

    struct Build: Sendable {
        var id: String
        var commitSHA: String
        var startedAt: Date
        var semver: SemanticVersion?
    }

    /// One algorithm; `details`, `settings` and `versionInfo` are the JSON objects clients sent.
    struct Record: Sendable {
        var id: String
        var owner: String
        var name: String
        var details: Data
        var settings: Data
        var versionInfo: Data
        var createdAt: Date
        var versions: [Version] = []
        var builds: [Build] = []
        var latestHash: String?

        var newest: Version? { versions.max { $0.semver < $1.semver } }
    }

    private let records = Mutex<[String: Record]>([:])

    init() {
        let builtins: [(String, String, [String], any SimAlgorithm)] = [
            ("demo", "Hello", ["0.1.0", "0.1.1"], Hello()),
            ("nlp", "LDA", ["1.0.0"], LDA()),
            ("util", "Echo", ["1.0.0"], Echo()),
            ("test", "Sleep", ["1.0.0"], Sleep()),
            ("test", "Fail", ["1.0.0"], Fail()),
            ("test", "Big", ["1.0.0"], Big()),
        ]
        var all: [String: Record] = [:]
        for (owner, name, versions, algorithm) in builtins {
            var record = Record(
                id: Self.stableUUID("id:\(owner)/\(name)"), owner: owner, name: name,
                details: JSON.data(["label": name, "summary": "simulator built-in"]),
                settings: JSON.data(["language": "swift", "source_visibility": "closed"]),
                versionInfo: JSON.data([:]), createdAt: Date(timeIntervalSince1970: 1_700_000_000)
            )
            for text in versions {
                let semver = SemanticVersion(text)!
                record.versions.append(Version(
                    semver: semver, gitHash: Self.stableHash("\(owner)/\(name)/\(text)", length: 40),
                    releaseNotes: "", sampleInput: "", publishedAt: record.createdAt, algorithm: algorithm))
            }
            all["\(owner)/\(name)"] = record
        }
        records.withLock { $0 = all }
    }

    /// The version to run for a reference; nil when the algorithm or version is unknown.
    func resolve(owner: String, name: String, version: String?) -> Version? {
        records.withLock { records in
            guard let record = records["\(owner)/\(name)"] else { return nil }
            guard let version, version != "latest", version != "latestPrivate" else { return record.newest }
            if let exact = SemanticVersion(version) { return record.versions.first { $0.semver == exact } }
            if Self.isGitHash(version) { return record.versions.first { $0.gitHash == version.lowercased() } }
            return record.versions.filter { $0.semver.matches(partial: version) }.max { $0.semver < $1.semver }
        }
    }

    func record(owner: String, name: String) -> Record? {
        records.withLock { $0["\(owner)/\(name)"] }
    }

    /// The record with this id (the management API's `:algorithmId`).
    func record(id: String) -> Record? {
        records.withLock { $0.values.first { $0.id == id } }
    }

    /// Adds a record; false when one with that name already exists.
    func create(_ record: Record) -> Bool {
        records.withLock { records in
            let key = "\(record.owner)/\(record.name)"
            guard records[key] == nil else { return false }
            records[key] = record
            return true
        }
    }

    /// Removes a record; false when there is none.
    func delete(owner: String, name: String) -> Bool {
        records.withLock { $0.removeValue(forKey: "\(owner)/\(name)") != nil }
    }

    /// Applies `change` to an existing record and returns the result; nil when there is none.
    func update<T>(owner: String, name: String, _ change: (inout Record) throws -> T) rethrows -> T? {
        try records.withLock { records in
            let key = "\(owner)/\(name)"
            guard var record = records[key] else { return nil }
            let result = try change(&record)
            records[key] = record
            return result
        }
    }

    /// A UUID-shaped id (`8-4-4-4-12` hex, as Algorithmia's algorithm ids are) that is the same on every run.
    static func stableUUID(_ text: String) -> String {
        let hex = Array(stableHash(text, length: 32))
        return [0..<8, 8..<12, 12..<16, 16..<20, 20..<32].map { String(hex[$0]) }.joined(separator: "-")
    }

    static func isGitHash(_ text: String) -> Bool {
        text.count == 40 && text.allSatisfy(\.isHexDigit)
    }

    /// A deterministic hex string (FNV-1a, repeated) so built-ins keep their hashes across runs.
    static func stableHash(_ text: String, length: Int) -> String {
        var output = ""
        var round: UInt64 = 0
        while output.count < length {
            var hash: UInt64 = 0xcbf2_9ce4_8422_2325 &+ round
            for byte in text.utf8 { hash = (hash ^ UInt64(byte)) &* 0x0000_0100_0000_01b3 }
            output += String(hash, radix: 16).leftPadded(to: 16)
            round += 1
        }
        return String(output.prefix(length))
    }
}

extension String {
    func leftPadded(to length: Int) -> String {
        count >= length ? self : String(repeating: "0", count: length - count) + self
    }
}

extension JSON {
    static func data(_ value: Any) -> Data { Data(bytes(value)) }
    static func value(_ data: Data) -> Any { (try? JSONSerialization.jsonObject(with: data, options: [.fragmentsAllowed])) ?? [String: Any]() }
}
