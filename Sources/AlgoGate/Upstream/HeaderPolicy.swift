import Foundation
import HTTPTypes

/// Which headers cross the gateway. Hop-by-hop headers (RFC 9110 §7.6.1: `Connection` and every
/// field it names, `Keep-Alive`, `Proxy-Connection`, `TE`, `Trailer`, `Transfer-Encoding`,
/// `Upgrade`) stay on their own connection; the client's credentials and cookies never go
/// upstream; framing headers are recomputed for the new message.
enum HeaderPolicy {
    static let hopByHop: Set<String> = [
        "connection", "keep-alive", "proxy-connection", "te", "trailer", "transfer-encoding", "upgrade",
    ]
    /// Dropped from requests on their way upstream, besides hop-by-hop and `Proxy-*` fields. The
    /// fields a load balancer in front adds about the client's network (its addresses, the host
    /// and scheme it reached) are the team's own: the upstream, another company's service, sees
    /// the gateway as the one caller, as with the key. The log line keeps `X-Forwarded-For`.
    static let requestOnly: Set<String> = [
        "authorization", "cookie", "host", "content-length", "x-request-id", "expect", "accept-encoding",
        "forwarded", "x-forwarded-for", "x-forwarded-host", "x-forwarded-proto", "x-forwarded-port", "x-real-ip",
    ]
    /// Dropped from upstream responses on their way back, besides hop-by-hop fields.
    static let responseOnly: Set<String> = ["content-length", "set-cookie", "x-request-id", "server", "date"]

    /// `head`: the request is a HEAD, which asks for plain bytes (below).
    static func upstreamRequest(_ fields: HTTPFields, requestID: String, key: Secret, head: Bool = false) -> [(String, String)] {
        let named = connectionTokens(fields)
        var out: [(String, String)] = []
        var ranged = false
        for field in fields {
            let name = field.name.canonicalName
            if hopByHop.contains(name) || named.contains(name) || requestOnly.contains(name) || name.hasPrefix("proxy-") { continue }
            if name == "range" { ranged = true }
            out.append((field.name.rawName, field.value))
        }
        out.append(("Authorization", "Simple " + key.revealed))
        // The gateway asks for gzip whatever the client accepts: it inflates, then compresses
        // for the client as the client prefers. But a range names bytes of the plain
        // representation (the gateway sends a partial answer as it came, and could not inflate a
        // slice of a gzip stream), so a request for one asks for the plain bytes; and so does a
        // HEAD, which has no bytes to save, so that its Content-Length is the plain size the
        // client will get (of a gzip answer the gateway would have to drop it).
        out.append(("Accept-Encoding", ranged || head ? "identity" : "gzip"))
        // RFC 9110 §7.6.3: a gateway names itself in the requests it forwards (a client's own
        // `Via`, end to end, goes before it).
        out.append(("Via", "1.1 algogate"))
        out.append(("X-Request-ID", requestID))
        return out
    }

    static func downstreamResponse(_ fields: [(name: String, value: String)]) -> HTTPFields {
        var connection: Set<String> = []
        for field in fields where field.name.lowercased() == "connection" {
            for token in field.value.split(separator: ",") { connection.insert(token.trimmingCharacters(in: .whitespaces).lowercased()) }
        }
        var out = HTTPFields()
        for field in fields {
            let name = field.name.lowercased()
            if hopByHop.contains(name) || connection.contains(name) || responseOnly.contains(name) { continue }
            if let fieldName = HTTPField.Name(field.name) { out.append(HTTPField(name: fieldName, value: field.value)) }
        }
        return out
    }

    /// Fields that describe an answer's bytes as the upstream sent them, and no longer hold once
    /// the gateway has changed its content coding (inflated the upstream's gzip, or compressed it
    /// for the client), as nginx's gzip and gunzip filters do: a strong `ETag` becomes weak
    /// (RFC 9110 §8.8.1: a strong validator names one exact representation, content coding
    /// included, so `If-Range` no longer matches and a resumed download starts again rather than
    /// splicing bytes of two codings), and digests of the bytes go (`Content-MD5`,
    /// `Content-Digest`, `Repr-Digest`: a client that checks them would reject a good answer).
    /// When the gateway compresses (`rangesStay` false), `Accept-Ranges` goes too: a range is
    /// served from the plain bytes, not from the gzip ones this answer holds.
    static func contentRecoded(_ headers: inout HTTPFields, rangesStay: Bool) {
        if let tag = headers.value(.eTag), !tag.hasPrefix("W/") { headers[.eTag] = "W/" + tag }
        for name in digestFields { headers[name] = nil }
        if !rangesStay { headers[.acceptRanges] = nil }
    }

    private static let digestFields = [HTTPField.Name("Content-MD5")!, HTTPField.Name("Content-Digest")!, HTTPField.Name("Repr-Digest")!]

    private static func connectionTokens(_ fields: HTTPFields) -> Set<String> {
        var tokens: Set<String> = []
        for value in fields[values: .connection] {
            for token in value.split(separator: ",") { tokens.insert(token.trimmingCharacters(in: .whitespaces).lowercased()) }
        }
        return tokens
    }
}

extension HTTPFields {
    /// A field's value, as the subscript gives it (repeated fields joined with ", "), without the
    /// array and join the subscript builds on every read: the pipeline reads a dozen fields a request.
    func value(_ name: HTTPField.Name) -> String? {
        var found: String?
        for field in self where field.name == name {
            guard found == nil else { return self[name] }
            found = field.value
        }
        return found
    }
}
