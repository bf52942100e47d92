import HTTPTypes
import Hummingbird
import NIOCore

/// Points links in upstream answers that name the upstream at the gateway instead, as a reverse
/// proxy does (nginx's `proxy_redirect`): `Location` and `Content-Location` fields and `Link`
/// targets of data, connector and management answers, and the `self_link`/`next_link` URLs in management answers
/// (`/v1/algorithms/...`). Algorithm answers are the algorithm's output, cached and shared by
/// every client, and are left as they came.
///
/// A client following such a link would otherwise leave the gateway: it would send its own
/// algogate key to the upstream (where it means nothing, and where it does not belong), and get a
/// 401 instead of what it asked for.
///
/// Only links to the upstream's `/v1/` API under the configured `upstream.url` are changed; any
/// other URL (a signed storage URL, a documentation page) is left as it came.
struct LinkRewriter: Sendable {
    /// Management answers are read whole to be rewritten up to this size (after inflating them,
    /// whatever their framing); larger ones are rewritten as they stream (`Stream`).
    static let maxBodyBytes = 1 << 20

    private let upstreamPrefix: String
    private let gatewayPrefix: String
    /// The body forms: plain, and with JSON's optional `\/` escape.
    private let bodyNeedles: [(from: [UInt8], to: [UInt8])]

    /// A rewriter from `upstreamOrigin` (`upstream.url` without a trailing slash) to
    /// `gatewayOrigin`; nil when there is nothing to rewrite to.
    init?(upstreamOrigin: String, gatewayOrigin: String?) {
        guard let gatewayOrigin, gatewayOrigin != upstreamOrigin else { return nil }
        upstreamPrefix = upstreamOrigin + "/v1/"
        gatewayPrefix = gatewayOrigin + "/v1/"
        let escaped = { (text: String) in Array(text.replacingOccurrences(of: "/", with: #"\/"#).utf8) }
        bodyNeedles = [(Array(upstreamPrefix.utf8), Array(gatewayPrefix.utf8)), (escaped(upstreamPrefix), escaped(gatewayPrefix))]
    }

    /// The origin the client reached the gateway at: `server.public_url` when set; otherwise the
    /// request's `Host`, by the scheme a proxy in front reports (`X-Forwarded-Proto`) or the
    /// gateway's own. Nil when the request names no usable host.
    static func gatewayOrigin(publicURL: String?, tls: Bool, request: Request) -> String? {
        if let publicURL { return publicURL }
        guard let host = request.head.authority, isPlainHost(host) else { return nil }
        let forwarded = request.headers.value(.init("X-Forwarded-Proto")!)?.lowercased()
        let scheme = forwarded == "https" || forwarded == "http" ? forwarded! : (tls ? "https" : "http")
        return scheme + "://" + host
    }

    /// A host and optional port (names, IPv4, bracketed IPv6): nothing that could end a JSON
    /// string or a header value once written into one.
    static func isPlainHost(_ host: String) -> Bool {
        !host.isEmpty && host.utf8.count <= 255 && host.utf8.allSatisfy { byte in
            (byte >= 0x30 && byte <= 0x39) || (byte >= 0x41 && byte <= 0x5a) || (byte >= 0x61 && byte <= 0x7a)
                || byte == UInt8(ascii: ".") || byte == UInt8(ascii: "-") || byte == UInt8(ascii: ":")
                || byte == UInt8(ascii: "[") || byte == UInt8(ascii: "]")
        }
    }

    static let link = HTTPField.Name("Link")!

    /// `Location` and `Content-Location` pointed at the gateway when they name the upstream, and
    /// each target of a `Link` field (RFC 8288: `<URL>; rel="next"`) that does.
    /// Matched in bytes, as the body is: a combining mark after the prefix's last `/` would join
    /// it into one `Character` and hide the link from a `Character` search.
    func rewriteLinkFields(_ headers: inout HTTPFields) {
        for name in [HTTPField.Name.location, .contentLocation] {
            guard let value = headers[name], let rest = value.dropPrefix(upstreamPrefix) else { continue }
            headers[name] = gatewayPrefix + rest
        }
        let links = headers[fields: Self.link]
        let target = Array(("<" + upstreamPrefix).utf8)
        guard links.contains(where: { $0.value.utf8.firstRange(of: target) != nil }) else { return }
        let replacement = Array(("<" + gatewayPrefix).utf8)
        headers[fields: Self.link] = links.map { field in
            var value: [UInt8] = []
            var rest = Array(field.value.utf8)[...]
            while let range = rest.firstRange(of: target) {
                value += rest[..<range.lowerBound] + replacement
                rest = rest[range.upperBound...]
            }
            return HTTPField(name: Self.link, value: String(decoding: value + rest, as: UTF8.self))
        }
    }

    /// Whether the body of an answer with these fields (its coding already undone) has its links
    /// rewritten: a management answer in JSON.
    static func rewritesBody(path: String, headers: HTTPFields) -> Bool {
        guard path.hasPrefix("/v1/algorithms"), headers[.contentEncoding] == nil,
              let type = headers[.contentType]?.lowercased() else { return false }
        return type.hasPrefix("application/json")
    }

    /// `body` with every link to the upstream's API pointed at the gateway.
    func rewrite(_ body: ByteBuffer) -> ByteBuffer {
        let (done, _, changed) = rewrite(Array(body.readableBytesView), holdingBack: 0)
        return changed ? ByteBuffer(bytes: done) : body
    }

    /// `bytes` with every link to the upstream's API pointed at the gateway, but for the last
    /// `holdBack` bytes (those not part of a link found), which could begin a link that the bytes
    /// after them complete; and whether anything changed.
    func rewrite(_ bytes: [UInt8], holdingBack holdBack: Int) -> (done: [UInt8], held: ArraySlice<UInt8>, changed: Bool) {
        var done: [UInt8] = []
        done.reserveCapacity(bytes.count)
        var copied = 0
        var index = 0
        scan: while index < bytes.count {
            for (from, to) in bodyNeedles where bytes[index] == from[0] && index + from.count <= bytes.count
                && bytes[index..<index + from.count].elementsEqual(from) {
                done.append(contentsOf: bytes[copied..<index])
                done.append(contentsOf: to)
                index += from.count
                copied = index
                continue scan
            }
            index += 1
        }
        let kept = max(copied, bytes.count - holdBack)
        let changed = copied > 0
        done.append(contentsOf: bytes[copied..<kept])
        return (done, bytes[kept...], changed)
    }

    /// Rewrites an answer part by part as it streams, for one too large to read whole: after each
    /// part, the bytes that could begin a link cut between it and the next are held back until the
    /// next shows what they are.
    struct Stream {
        let rewriter: LinkRewriter
        private var held: [UInt8] = []
        private let holdBack: Int

        init(_ rewriter: LinkRewriter) {
            self.rewriter = rewriter
            holdBack = (rewriter.bodyNeedles.map(\.from.count).max() ?? 1) - 1
        }

        /// What of `part` (and of what was held back before it) can be sent now.
        mutating func pass(_ part: ByteBuffer) -> ByteBuffer? {
            var bytes = held
            bytes.append(contentsOf: part.readableBytesView)
            let (done, rest, _) = rewriter.rewrite(bytes, holdingBack: holdBack)
            held = Array(rest)
            return done.isEmpty ? nil : ByteBuffer(bytes: done)
        }

        /// What was held back, once the answer has ended.
        mutating func finish() -> ByteBuffer? {
            defer { held = [] }
            return held.isEmpty ? nil : ByteBuffer(bytes: held)
        }
    }
}

extension Optional where Wrapped == LinkRewriter.Stream {
    /// `part` as it can be sent now: rewritten when there is a rewriter, else as it is.
    mutating func passing(_ part: ByteBuffer) -> ByteBuffer? {
        guard self != nil else { return part }
        return self!.pass(part)
    }
}
