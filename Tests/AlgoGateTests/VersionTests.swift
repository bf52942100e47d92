import Testing
@testable import AlgoGate
@Test func versionIsSet() { #expect(!AlgoGateVersion.string.isEmpty) }
