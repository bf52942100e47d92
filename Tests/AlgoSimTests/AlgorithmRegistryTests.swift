@testable import AlgoSim
import Testing

/// Which version a reference runs. The built-ins' versions answer alike, so which one a partial
/// version picks shows here rather than over HTTP (`AlgoAPITests` covers the answers).
@Suite struct AlgorithmRegistryTests {
    @Test func aPartialVersionRunsTheNewestItAdmits() throws {
        let registry = AlgorithmRegistry()
        func resolved(_ version: String?) -> String? {
            registry.resolve(owner: "demo", name: "Hello", version: version)?.semver.description
        }
        for newest in [nil, "latest", "latestPrivate", "0", "0.1", "0.*", "0.1.*"] {
            #expect(resolved(newest) == "0.1.1", "\(newest ?? "none")")
        }
        #expect(resolved("0.1.0") == "0.1.0")
        for none in ["0.2", "0.2.*", "1", "1.*", "0.1.2", "0.1.x", "", "0.1.0.0"] {
            #expect(resolved(none) == nil, "\(none)")
        }
        let hash = try #require(registry.record(owner: "demo", name: "Hello")?.versions.first { $0.semver == SemanticVersion(0, 1, 0) }?.gitHash)
        #expect(resolved(hash) == "0.1.0")
        #expect(resolved(hash.uppercased()) == "0.1.0")
    }
}
