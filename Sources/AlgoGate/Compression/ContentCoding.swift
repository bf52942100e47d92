import CompressNIO
import HTTPTypes

/// The content codings algogate speaks: `gzip` and `deflate` (which HTTP defines as the zlib
/// format, RFC 9110 §8.4.1.2), both through the system zlib via compress-nio.
enum ContentCoding: String, Sendable, Equatable {
    case gzip, deflate

    func algorithm(level: Int32? = nil) -> CompressionAlgorithm {
        var configuration = ZlibConfiguration()
        if let level { configuration.compressionLevel = level }
        return switch self {
        case .gzip: .gzip(configuration: configuration)
        case .deflate: .zlib(configuration: configuration)
        }
    }

    /// The coding named by a `Content-Encoding` value; nil for `identity` or none.
    /// Throws for codings algogate cannot decode.
    static func of(contentEncoding value: String?) throws -> ContentCoding? {
        guard let value else { return nil }
        let codings = value.split(separator: ",").map { $0.trimmedSpaces.lowercased() }.filter { $0 != "identity" && !$0.isEmpty }
        guard !codings.isEmpty else { return nil }
        guard codings.count == 1 else {
            throw GatewayError(status: .unsupportedMediaType, errorType: "InputError", message: "stacked Content-Encoding '\(value)' is not supported; use one of gzip, deflate")
        }
        switch codings[0] {
        case "gzip", "x-gzip": return .gzip
        case "deflate": return .deflate
        default:
            throw GatewayError(status: .unsupportedMediaType, errorType: "InputError", message: "Content-Encoding '\(codings[0])' is not supported; use gzip or deflate")
        }
    }

    /// The coding to answer with for an `Accept-Encoding` header (RFC 9110 §12.5.3): the highest
    /// q-value among gzip and deflate, gzip on a tie; `*` stands for codings not named; `q=0`
    /// refuses. A client that gives `identity` (itself or through `*`) a higher q-value than that
    /// coding is answered uncompressed, as it prefers; identity unnamed is no rival. Nil means identity.
    static func preferred(acceptEncoding values: [String]) -> ContentCoding? {
        var weights: [String: Double] = [:]
        for value in values {
            for item in value.split(separator: ",") {
                let parts = item.split(separator: ";")
                guard let name = parts.first?.trimmedSpaces.lowercased(), !name.isEmpty else { continue }
                var q = 1.0
                for parameter in parts.dropFirst() {
                    let pair = parameter.split(separator: "=", maxSplits: 1).map { $0.trimmedSpaces.lowercased() }
                    if pair.count == 2, pair[0] == "q" { q = Double(pair[1]).map { min(max($0, 0), 1) } ?? 0 }
                }
                weights[name] = max(weights[name] ?? 0, q)
            }
        }
        func weight(_ coding: String) -> Double { weights[coding] ?? weights["*"] ?? 0 }
        let gzip = max(weight("gzip"), weights["x-gzip"] ?? 0)
        let deflate = weight("deflate")
        let (coding, best): (ContentCoding?, Double) = gzip > 0 && gzip >= deflate ? (.gzip, gzip) : deflate > 0 ? (.deflate, deflate) : (nil, 0)
        if let identity = weights["identity"] ?? weights["*"], identity > best { return nil }
        return coding
    }
}
