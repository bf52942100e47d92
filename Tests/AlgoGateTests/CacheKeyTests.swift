import NIOCore
import Testing
@testable import AlgoGate

/// The cache key's layout. Entries stored by one version of the gateway must be found by the
/// next (the file survives upgrades), so the bytes hashed are pinned here field by field rather
/// than compared with the implementation's own output.
@Suite struct CacheKeyTests {
    /// SHA-256 over each field followed by a zero byte, then the body.
    static func expected(_ fields: [String], body: String) -> String {
        ClientRegistry.hash(of: fields.map { $0 + "\0" }.joined() + body)
    }

    @Test func theKeyHashesEachFieldThenTheBody() throws {
        let pinned = try #require(AlgoRef(path: "demo/Hello/0.1.0"))
        let body = ByteBuffer(string: #"{"input":"HAL"}"#)
        let key = { (output: String, stdout: String, contentType: String, client: String?) in
            CachePolicy.key(ref: pinned, output: output, stdout: stdout, contentType: contentType, body: body, client: client)
        }
        let json = ["v1", "demo", "Hello", "0.1.0", "default", "-", "application/json", "*"]
        #expect(key("default", "-", "application/json", nil) == Self.expected(json, body: #"{"input":"HAL"}"#))
        // The media type alone, lowercased and without the spaces around it: parameters, case and
        // spacing do not make another entry.
        for contentType in ["Application/JSON", "application/json; charset=utf-8", "  application/json ;charset=UTF-8", "APPLICATION/JSON\t"] {
            #expect(key("default", "-", contentType, nil) == Self.expected(json, body: #"{"input":"HAL"}"#), "\(contentType)")
        }
        // A charset other than UTF-8's is its own entry: an upstream reading the body in it may
        // answer the same bytes otherwise.
        #expect(key("default", "-", "application/json; charset=utf-8; charset=latin1", nil)
            == Self.expected(["v1", "demo", "Hello", "0.1.0", "default", "-", "application/json;charset=utf-8, latin1", "*"], body: #"{"input":"HAL"}"#))
        for contentType in ["application/json; charset=latin1", "Application/JSON;CHARSET=\"Latin1\""] {
            #expect(key("default", "-", contentType, nil) == Self.expected(["v1", "demo", "Hello", "0.1.0", "default", "-", "application/json;charset=latin1", "*"],
                                                                           body: #"{"input":"HAL"}"#), "\(contentType)")
        }
        #expect(key("default", "-", "text/plain", nil) == Self.expected(["v1", "demo", "Hello", "0.1.0", "default", "-", "text/plain", "*"],
                                                                          body: #"{"input":"HAL"}"#))
        #expect(key("default", "-", "", nil) == Self.expected(["v1", "demo", "Hello", "0.1.0", "default", "-", "", "*"], body: #"{"input":"HAL"}"#))
        #expect(key("raw", "stdout", "application/json", "team-a")
            == Self.expected(["v1", "demo", "Hello", "0.1.0", "raw", "stdout", "application/json", "team-a"], body: #"{"input":"HAL"}"#))
        // Beyond ASCII, lowercased by characters.
        #expect(key("default", "-", "Text/Ünicode", nil)
            == Self.expected(["v1", "demo", "Hello", "0.1.0", "default", "-", "text/ünicode", "*"], body: #"{"input":"HAL"}"#))
    }

    /// The upstream is in the key, in its first field, except Algorithmia's own: entries stored
    /// against `https://api.algorithmia.com` keep their keys; any other upstream's are apart.
    @Test func theUpstreamOriginKeysItsOwnEntries() throws {
        let pinned = try #require(AlgoRef(path: "demo/Hello/0.1.0"))
        let key = { (url: String) in
            CachePolicy(config: GatewayConfig.Cache(), origin: CachePolicy.origin(of: url))
                .decide(ref: pinned, query: nil, headers: [.contentType: "text/plain"], body: ByteBuffer(string: "HAL"), client: "team-a").key
        }
        let fields = { (first: String) in Self.expected([first, "demo", "Hello", "0.1.0", "default", "-", "text/plain", "*"], body: "HAL") }
        for url in ["https://api.algorithmia.com", "https://api.algorithmia.com/", "HTTPS://API.Algorithmia.com:443", "https://api.algorithmia.com:443/"] {
            #expect(key(url) == fields("v1"), "\(url)")
        }
        #expect(key("http://127.0.0.1:9000") == fields("v1 http://127.0.0.1:9000"))
        #expect(key("http://127.0.0.1:9000/") == fields("v1 http://127.0.0.1:9000"))
        #expect(key("http://LOCALHOST:80") == fields("v1 http://localhost"))
        #expect(key("https://algorithmia.corp.example:8443/api") == fields("v1 https://algorithmia.corp.example:8443/api"))
        #expect(key("http://api.algorithmia.com") == fields("v1 http://api.algorithmia.com"))
        #expect(key("https://api.algorithmia.com:8443") == fields("v1 https://api.algorithmia.com:8443"))
    }

    /// The options reach the key as `AlgoOptions` reads them: absent and `default` output are one
    /// mode, absent and `false` stdout one flag, `true` and `false` in any case (the key's
    /// spellings since its first version); any other value is its own field, never folded into
    /// another that the upstream might read differently.
    @Test func theOptionsReachTheKeyAsGiven() throws {
        let pinned = try #require(AlgoRef(path: "demo/Hello/0.1.0"))
        let policy = CachePolicy(config: GatewayConfig.Cache(), origin: nil)
        let key = { (query: String?) in
            policy.decide(ref: pinned, query: query, headers: [.contentType: "text/plain"], body: ByteBuffer(string: "HAL"), client: "team-a").key
        }
        let fields = { (output: String, stdout: String) in
            Self.expected(["v1", "demo", "Hello", "0.1.0", output, stdout, "text/plain", "*"], body: "HAL")
        }
        #expect(key(nil) == fields("default", "-"))
        #expect(key("output=default&stdout=false&timeout=20&other=x") == fields("default", "-"))
        #expect(key("stdout=true") == fields("default", "stdout"))
        #expect(key("stdout=TRUE") == fields("default", "stdout"))
        #expect(key("timeout=300&stdout=False") == fields("default", "-"), "as the Python client sends its defaults")
        #expect(key("stdout=1") == fields("default", "stdout=1"))
        #expect(key("output=raw") == fields("raw", "-"))
        #expect(key("output=Raw") == fields("Raw", "-"))
        // Never cached: run for effect, as sudo, or a query the gateway refuses.
        for query in ["output=void", "output=VOID", "sudo=true", "sudo=1", "sudo=TRUE", "output=raw&output=default", "Output=raw", "output=%72aw"] {
            #expect(key(query) == nil, "\(query)")
        }
        #expect(key("sudo=false") == fields("default", "-"))
        #expect(key("sudo=False") == fields("default", "-"))
    }
}
