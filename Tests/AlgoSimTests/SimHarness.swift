import AlgoSim
import AlgoTestSupport
import Foundation

let simKey = "sim-test-key"

/// Starts a simulator on an ephemeral port and hands the test a client for it.
func withSimulator<Value: Sendable>(
    pageSize: Int = 1000,
    fault: Fault? = nil,
    _ body: (TestHTTP, Simulator) async throws -> Value
) async throws -> Value {
    let directory = FileManager.default.temporaryDirectory.appendingPathComponent("simtest-\(UUID().uuidString)")
    defer { try? FileManager.default.removeItem(at: directory) }
    let simulator = try Simulator(configuration: SimConfiguration(
        apiKey: simKey, dataDirectory: directory, pageSize: pageSize, defaultFault: fault))
    return try await LiveServer.run({ simulator.application(onServerRunning: $0) }) { port in
        try await body(TestHTTP(port: port), simulator)
    }
}

let auth = [("Authorization", "Simple \(simKey)")]
let jsonType = [("Content-Type", "application/json")]
let textType = [("Content-Type", "text/plain")]
let binaryType = [("Content-Type", "application/octet-stream")]
