import Crypto
import Foundation
import HTTPTypes
import NIOCore

/// Decides, per algorithm call, whether and how the cache takes part: pinned versions only,
/// per-algorithm rules, and the client's `Cache-Control` (RFC 9111).
struct CachePolicy: Sendable {
    /// What the cache does for one request.
    struct Decision: Sendable, Equatable {
        /// Look for a stored answer (false for `no-cache`, `no-store`, non-cacheable calls).
        var lookup: Bool
        /// Store a fresh successful answer (false for `no-store`, non-cacheable calls).
        var store: Bool
        /// `only-if-cached`: answer 504 rather than go upstream on a miss.
        var onlyIfCached: Bool
        /// `max-age` and `min-fresh`: the stored answers this request takes.
        var freshness: RequestFreshness = .any
        var ttlSeconds: Int
        /// The key, when the call is cacheable at all.
        var key: String?
        /// `owner/name/version`, for stats and purges.
        var algo: String
        /// Why the cache was not consulted, as RFC 9211's `fwd` parameter.
        var bypassReason: String?
    }

    let config: GatewayConfig.Cache
    /// The upstream answering, as `origin(of:)` gives it: nil for Algorithmia's own.
    let origin: String?

    init(config: GatewayConfig.Cache, origin: String?) {
        self.config = config
        self.origin = origin
    }

    /// The upstream a configuration's answers come from, as it goes into the key: scheme and host
    /// in lowercase, the port unless it is the scheme's own, the path without a trailing slash.
    /// Nil for `https://api.algorithmia.com`, whose entries keep the keys they had before the
    /// origin was part of them. Entries answered by another upstream (the simulator, an enterprise
    /// cluster, a staging account) are never served for this one, when `upstream.url` changes on
    /// a reload or under a cache file kept across a restart.
    static func origin(of url: String) -> String? {
        guard let components = URLComponents(string: url), let scheme = components.scheme?.lowercased(), let host = components.host?.lowercased() else {
            return url
        }
        let defaultPort = ["https": 443, "http": 80][scheme]
        let port = components.port.flatMap { $0 == defaultPort ? nil : ":\($0)" } ?? ""
        let origin = "\(scheme)://\(host)\(port)\(components.percentEncodedPath.trimmingSuffix("/"))"
        return origin == "https://api.algorithmia.com" ? nil : origin
    }

    func decide(ref: AlgoRef, query: String?, headers: HTTPFields, body: ByteBuffer, client: String) -> Decision {
        // A query the gateway would refuse (`AlgoOptions.parse`) is never cached.
        let options = try? AlgoOptions.parse(query)
        let directives = Self.cacheControl(headers)
        let algo = ref.description
        var decision = Decision(lookup: false, store: false, onlyIfCached: directives.contains("only-if-cached"),
                                ttlSeconds: config.ttlSeconds, key: nil, algo: algo, bypassReason: "uri-miss")
        // A call by id is not cached: its id does not say which algorithm it is, for the rules, a
        // purge or the stats.
        guard config.enabled, !ref.byID, let version = ref.version, Self.isPinned(version), let options, options.isCacheable else { return decision }
        let rule = config.rules.first { $0.matches(algo) }
        if rule?.enabled == false { return decision }
        decision.ttlSeconds = rule?.ttlSeconds ?? config.ttlSeconds
        let scope = rule?.scope ?? config.scope
        decision.key = Self.key(ref: ref, output: options.outputKey, stdout: options.stdoutKey,
                                contentType: headers.value(.contentType) ?? "", body: body, client: scope == .client ? client : nil,
                                origin: origin)
        decision.bypassReason = nil
        decision.lookup = true
        decision.store = true
        if directives.contains("max-age") || directives.contains("min-fresh") { decision.freshness = RequestFreshness(headers) }
        if directives.contains("no-store") {
            decision.lookup = false
            decision.store = false
            decision.bypassReason = "request"
        } else if directives.contains("no-cache") {
            decision.lookup = false
            decision.bypassReason = "request"
        }
        return decision
    }

    /// A full semantic version `X.Y.Z` or a 40-hex build hash: the only versions whose answers
    /// cannot change. `latest`, `latestPrivate`, `1.2` and `1.2.*` move as versions are published.
    static func isPinned(_ version: String) -> Bool {
        let bytes = version.utf8
        let isDigit = { (byte: UInt8) in byte >= UInt8(ascii: "0") && byte <= UInt8(ascii: "9") }
        // X.Y.Z: three non-empty runs of digits, two dots (scanned, no arrays: this runs per call).
        var dots = 0, run = 0, semantic = true
        for byte in bytes {
            if byte == UInt8(ascii: ".") {
                if run == 0 { semantic = false; break }
                dots += 1
                run = 0
            } else if isDigit(byte) {
                run += 1
            } else {
                semantic = false
                break
            }
        }
        if semantic, dots == 2, run > 0 { return true }
        return bytes.count == 40 && bytes.allSatisfy { isDigit($0) || (UInt8(ascii: "a")...UInt8(ascii: "f")).contains($0 | 0x20) }
    }

    /// SHA-256 over everything that can change the answer; the `timeout` option is not part of it.
    /// Each field is followed by a zero byte, then comes the body. The fields are gathered first
    /// and hashed in one update: the same bytes, so the same key, as one update each.
    static func key(ref: AlgoRef, output: String, stdout: String, contentType: String, body: ByteBuffer, client: String?,
                    origin: String? = nil) -> String {
        var fields: [UInt8] = []
        fields.reserveCapacity(256)
        func add(_ field: some StringProtocol, lowercasing: Bool = false) {
            // (Lowercased only when it would change: ASCII capitals, or anything beyond ASCII.)
            if lowercasing && field.utf8.contains(where: { (0x41...0x5a).contains($0) || $0 >= 0x80 }) {
                fields.append(contentsOf: field.lowercased().utf8)
            } else {
                fields.append(contentsOf: field.utf8)
            }
            fields.append(0)
        }
        // The upstream, within the first field so the fields keep their number: an origin (no zero byte
        // in a URL) cannot make a key that another input makes for Algorithmia's.
        add(origin.map { "v1 " + $0 } ?? "v1"); add(ref.owner); add(ref.name); add(ref.version ?? ""); add(output); add(stdout)
        // A charset other than UTF-8's makes entries of its own: an upstream that reads the body
        // in it may answer the same bytes otherwise.
        if let charset = DataReferences.otherCharset(of: contentType) {
            add(contentType.mediaType + ";charset=" + charset, lowercasing: true)
        } else {
            add(contentType.mediaType, lowercasing: true)
        }
        add(client ?? "*")
        var hasher = SHA256()
        fields.withUnsafeBytes { hasher.update(bufferPointer: $0) }
        body.withUnsafeReadableBytes { hasher.update(bufferPointer: $0) }
        return Formatting.hex(hasher.finalize())
    }

    /// A request's `Cache-Control` directives, by name in lowercase (with `Pragma: no-cache`).
    static func cacheControl(_ headers: HTTPFields) -> Set<String> {
        var directives: Set<String> = []
        for value in headers[values: .cacheControl] {
            for directive in value.split(separator: ",") {
                // The name is what comes before the first `=`: nothing, for `=no-store`.
                directives.insert((directive.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false).first?.trimmedSpaces ?? "").lowercased())
            }
        }
        // `Pragma: no-cache` is the HTTP/1.0 spelling some clients still send; beside a
        // `Cache-Control`, which says what it means, it is ignored (RFC 9111 §5.4).
        if directives.isEmpty, headers[values: .pragma].contains(where: { $0.lowercased().contains("no-cache") }) { directives.insert("no-cache") }
        return directives
    }
}

/// The bounds a request's `Cache-Control` puts on the stored answers it takes (RFC 9111
/// §5.2.1): `max-age=N`, an answer at most N seconds old (as its `Age` field counts them);
/// `min-fresh=N`, one still fresh N seconds from now. A stored answer outside them is not a hit:
/// the call goes upstream, and its answer replaces the stored one. A value that is not a number
/// of seconds counts as 0 (a client that asks for fresher answers gets them, not older ones);
/// given twice, the stricter counts. `max-stale` asks for nothing more than the gateway gives:
/// it never answers with an expired entry but under `cache.stale_if_error_seconds`.
struct RequestFreshness: Sendable, Equatable {
    var maxAge: Int?
    var minFresh: Int?

    static let any = RequestFreshness()

    init(maxAge: Int? = nil, minFresh: Int? = nil) {
        self.maxAge = maxAge
        self.minFresh = minFresh
    }

    init(_ headers: HTTPFields) {
        for value in headers[values: .cacheControl] {
            for directive in value.split(separator: ",") {
                let parts = directive.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
                guard let name = parts.first?.trimmedSpaces.lowercased(), name == "max-age" || name == "min-fresh" else { continue }
                var text = parts.count > 1 ? parts[1].trimmedSpaces : ""
                if text.count >= 2, text.hasPrefix("\""), text.hasSuffix("\"") { text = text.dropFirst().dropLast() }
                // delta-seconds (RFC 9111 §1.2.2): digits; a number past what fits is 2^31.
                var seconds = 0
                if text.utf8.allSatisfy({ (0x30...0x39).contains($0) }) {
                    for digit in text.utf8 { seconds = min(seconds * 10 + Int(digit - 0x30), 1 << 31) }
                }
                if name == "max-age" { maxAge = min(maxAge ?? .max, seconds) } else { minFresh = max(minFresh ?? 0, seconds) }
            }
        }
    }

    /// Whether an answer stored at `createdAt`, fresh until `expiresAt`, is one this request takes at `now`.
    func accepts(createdAt: Double, expiresAt: Double, now: Double) -> Bool {
        if let maxAge, max(0, Int(now - createdAt)) > maxAge { return false }
        if let minFresh, expiresAt - now < Double(minFresh) { return false }
        return true
    }
}

extension HTTPField.Name {
    static let pragma = HTTPField.Name("Pragma")!
}

extension String {
    /// A `Content-Type` value's media type: what comes before any `;`, without the spaces around
    /// it, case as sent. Found by bytes when the value is ASCII, as it nearly always is (this runs
    /// per call); by characters otherwise, which is what both ways mean on ASCII.
    var mediaType: Substring {
        let bytes = utf8
        if bytes.allSatisfy({ $0 < 0x80 }) {
            return (bytes.firstIndex(of: UInt8(ascii: ";")).map { self[..<$0] } ?? self[...]).trimmedSpaces
        }
        return (firstIndex(of: ";").map { self[..<$0] } ?? self[...]).trimmedSpaces
    }
}

extension Substring {
    /// Without leading and trailing spaces and tabs (HTTP's optional whitespace), no Foundation.
    var trimmedSpaces: Substring {
        // Nothing to trim, known from the bytes alone (a character is a space or a tab only when
        // it is that one byte): the usual case, without walking characters.
        let isBlank = { (byte: UInt8) in byte == UInt8(ascii: " ") || byte == UInt8(ascii: "\t") }
        guard let first = utf8.first, let last = utf8.last, isBlank(first) || isBlank(last) else { return self }
        var text = self
        while let first = text.first, first == " " || first == "\t" { text.removeFirst() }
        while let last = text.last, last == " " || last == "\t" { text.removeLast() }
        return text
    }
}
