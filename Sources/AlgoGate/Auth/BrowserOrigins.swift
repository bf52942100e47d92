import Foundation

/// The web origins a client's key may be used from in a browser (`clients[].cors_origins`), as
/// Algorithmia's keys can be restricted to some sites for browser-side JavaScript: each an origin
/// (`https://dash.example.com`, `http://localhost:3000`) or `*` for any. Empty: the key is not for
/// browsers, and a request that carries an `Origin` is refused.
public struct BrowserOrigins: Sendable, Equatable {
    public private(set) var any = false
    public private(set) var origins: Set<String> = []

    public static let none = BrowserOrigins()

    public init() {}

    /// Parses configured entries; throws the message for the first that is not `*` or an origin.
    public init(parsing entries: [String]) throws(GatewayError) {
        for entry in entries {
            if entry == "*" {
                any = true
            } else if let origin = Self.serialized(entry) {
                origins.insert(origin)
            } else {
                throw .badRequest("'\(entry)' is not an origin: write scheme://host[:port] (http or https, no path), or * for any")
            }
        }
    }

    public var isEmpty: Bool { !any && origins.isEmpty }

    /// Whether a request whose `Origin` field is `origin` may use the key. The field is compared as
    /// an origin serializes (RFC 6454 §6.2: scheme and host in lowercase, no default port), so
    /// `https://Dash.example.com:443` is `https://dash.example.com`; `null` (a sandboxed page, a
    /// file) matches `*` alone.
    public func permits(_ origin: String) -> Bool {
        any || (Self.serialized(origin).map(origins.contains) ?? false)
    }

    /// Every origin of `lists` together: what a preflight, which carries no key, is answered for.
    public static func union(_ lists: [BrowserOrigins]) -> BrowserOrigins {
        var all = BrowserOrigins()
        for list in lists {
            all.any = all.any || list.any
            all.origins.formUnion(list.origins)
        }
        return all
    }

    /// `text` as an origin serializes, or nil when it is not an http or https origin.
    static func serialized(_ text: String) -> String? {
        guard let components = URLComponents(string: text), let scheme = components.scheme?.lowercased(),
              scheme == "http" || scheme == "https", let host = components.host?.lowercased(), !host.isEmpty,
              components.path.isEmpty || components.path == "/", components.query == nil, components.fragment == nil,
              components.user == nil, components.password == nil else { return nil }
        let defaultPort = scheme == "https" ? 443 : 80
        let port = components.port.flatMap { $0 == defaultPort ? nil : $0 }
        let bracketed = host.contains(":") && !host.hasPrefix("[") ? "[\(host)]" : host
        return "\(scheme)://\(bracketed)" + (port.map { ":\($0)" } ?? "")
    }
}
