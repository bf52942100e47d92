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
        let key = { (output: String, stdout: Bool, contentType: String, client: String?) in
            CachePolicy.key(ref: pinned, output: output, stdout: stdout, contentType: contentType, body: body, client: client)
        }
        let json = ["v1", "demo", "Hello", "0.1.0", "default", "-", "application/json", "*"]
        #expect(key("default", false, "application/json", nil) == Self.expected(json, body: #"{"input":"HAL"}"#))
        // The media type alone, lowercased and without the spaces around it: parameters, case and
        // spacing do not make another entry.
        for contentType in ["Application/JSON", "application/json; charset=utf-8", "  application/json ;charset=UTF-8", "APPLICATION/JSON\t"] {
            #expect(key("default", false, contentType, nil) == Self.expected(json, body: #"{"input":"HAL"}"#), "\(contentType)")
        }
        #expect(key("default", false, "text/plain", nil) == Self.expected(["v1", "demo", "Hello", "0.1.0", "default", "-", "text/plain", "*"],
                                                                          body: #"{"input":"HAL"}"#))
        #expect(key("default", false, "", nil) == Self.expected(["v1", "demo", "Hello", "0.1.0", "default", "-", "", "*"], body: #"{"input":"HAL"}"#))
        #expect(key("raw", true, "application/json", "team-a")
            == Self.expected(["v1", "demo", "Hello", "0.1.0", "raw", "stdout", "application/json", "team-a"], body: #"{"input":"HAL"}"#))
        // Beyond ASCII, lowercased by characters.
        #expect(key("default", false, "Text/Ünicode", nil)
            == Self.expected(["v1", "demo", "Hello", "0.1.0", "default", "-", "text/ünicode", "*"], body: #"{"input":"HAL"}"#))
    }
}
