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
    /// client sends) or after `/v1/connector/`, percent-decoded once as a whole: the Java client
    /// has sent its paths encoded whole since 2015, separators too (`.my%2Fdir%2Ff`,
    /// `s3%3A%2F%2Fbucket%2Fkey`), so the API reads `%2F` as `/`. Its encoder (`URLEncoder`) writes
    /// a space as `+` and a `+` as `%2B`, and every other encoder that encodes `/` encodes `+` too,
    /// so in a path with an encoded `/` and no plain one a `+` is a space (as the gateway reads it).
    static func parse(dataPath raw: Substring) throws -> DataPath {
        let wholeEncoded = !raw.contains("/") && raw.range(of: "%2f", options: .caseInsensitive) != nil
        let path = try decoded(wholeEncoded ? Substring(raw.replacingOccurrences(of: "+", with: " ")) : raw)
        if let range = path.range(of: "://") {
            return try make(connector: String(path[..<range.lowerBound]), rest: path[range.upperBound...])
        }
        return try make(connector: "data", rest: path[...])
    }

    static func parse(connectorPath raw: Substring) throws -> DataPath {
        let path = try decoded(raw)
        let connector = path.prefix { $0 != "/" }
        return try make(connector: String(connector), rest: path.dropFirst(connector.count).drop { $0 == "/" })
    }

    private static func decoded(_ raw: Substring) throws -> String {
        guard let decoded = String(raw).removingPercentEncoding else {
            throw SimError.badRequest("invalid percent-encoding in path")
        }
        return decoded
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
            let segment = String(piece)
            if segment.isEmpty { continue }
            guard segment != ".", segment != "..", !segment.contains("\\"),
                  !segment.hasPrefix(DataStore.reservedPrefix), !segment.contains("\0") else {
                throw SimError.badRequest("invalid path segment '\(segment)'")
            }
            segments.append(segment)
        }
        // The type in any case, the label as written (the gateway holds labels that differ in
        // case to be two connectors, and so does the simulator).
        return DataPath(connector: base.lowercased() + connector.dropFirst(base.count), segments: segments)
    }
}
