import Foundation

/// A data-API location: a connector (`data`, `s3`, `dropbox+label`, …) and path segments.
struct DataPath: Sendable, Equatable {
    var connector: String
    var segments: [String]

    /// The URI clients see, e.g. `data://.my/dir/file` or `s3://bucket/key`.
    var uri: String { "\(connector)://" + segments.joined(separator: "/") }

    var parent: DataPath? {
        segments.isEmpty ? nil : DataPath(connector: connector, segments: Array(segments.dropLast()))
    }

    func appending(_ name: String) -> DataPath { DataPath(connector: connector, segments: segments + [name]) }

    /// Parses the part after `/v1/data/` (which may itself be `s3://bucket/key`, as the Python
    /// client sends) or after `/v1/connector/`.
    static func parse(dataPath raw: Substring) throws -> DataPath {
        if let range = raw.range(of: "://") {
            return try make(connector: String(raw[..<range.lowerBound]), rest: raw[range.upperBound...])
        }
        return try make(connector: "data", rest: raw)
    }

    static func parse(connectorPath raw: Substring) throws -> DataPath {
        let connector = raw.prefix { $0 != "/" }
        return try make(connector: String(connector), rest: raw.dropFirst(connector.count).drop { $0 == "/" })
    }

    static let connectors: Set<String> = ["data", "s3", "azureblob", "gs", "dropbox"]

    private static func make(connector: String, rest: Substring) throws -> DataPath {
        let base = connector.split(separator: "+", maxSplits: 1).first.map(String.init) ?? ""
        guard connectors.contains(base.lowercased()),
              connector.allSatisfy({ $0.isLetter || $0.isNumber || $0 == "+" || $0 == "-" || $0 == "_" }) else {
            throw SimError.badRequest("unknown connector '\(connector)'")
        }
        var segments: [String] = []
        for piece in rest.split(separator: "/", omittingEmptySubsequences: false) {
            guard let decoded = String(piece).removingPercentEncoding else {
                throw SimError.badRequest("invalid percent-encoding in path")
            }
            if decoded.isEmpty { continue }
            guard decoded != ".", decoded != "..", !decoded.contains("/"), !decoded.contains("\\"),
                  !decoded.hasPrefix(DataStore.reservedPrefix), !decoded.contains("\0") else {
                throw SimError.badRequest("invalid path segment '\(decoded)'")
            }
            segments.append(decoded)
        }
        // The type in any case, the label as written (the gateway holds labels that differ in
        // case to be two connectors, and so does the simulator).
        return DataPath(connector: base.lowercased() + connector.dropFirst(base.count), segments: segments)
    }
}
