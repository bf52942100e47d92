@testable import AlgoGate
import AlgoTestSupport
import Foundation
import Testing
import Yams

/// `deploy/openapi.yaml`, the document of the gateway's own endpoints, against a live gateway:
/// schemathesis (fetched by `Tests/fetch-tools.sh`) sends the requests the document allows and
/// many it does not (wrong types, missing or extra parameters, methods it does not list), and
/// every answer must be one the document describes: status, content type, fields, headers, and
/// never a 5xx. Deterministic generation, so a run repeats.
@Suite struct OpenAPITests {
    static let document = DeployTests.root.appendingPathComponent("deploy/openapi.yaml")

    static func schemathesis(_ arguments: [String]) async throws -> ChildProcess.Outcome {
        let tool = DeployTests.root.appendingPathComponent(".build/tools/schemathesis/bin/schemathesis")
        guard FileManager.default.isExecutableFile(atPath: tool.path) else {
            throw MonitoringTests.MonitoringTestError("\(tool.path) is missing: run bash Tests/fetch-tools.sh (Tests/run.sh does)")
        }
        let arguments = ["run", document.path, "--checks", "all",
                         // Mutually exclusive parameters (usage's days and month) cannot be said in OpenAPI 3.0.
                         "--exclude-checks", "positive_data_acceptance",
                         "--max-examples", "40", "--generation-deterministic"] + arguments
        // Run in a directory of its own: it leaves `.hypothesis` and `.schemathesis` where it runs.
        let work = FileManager.default.temporaryDirectory.appendingPathComponent("schemathesis-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: work, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: work) }
        return try await ChildProcess.run(executable: URL(fileURLWithPath: "/bin/sh"),
                                          arguments: ["-c", #"cd "$0" && exec "$@""#, work.path, tool.path] + arguments,
                                          environment: ["NO_COLOR": "1"])
    }

    @Test(.timeLimit(.minutes(3))) func everyAnswerIsOneTheDocumentDescribes() async throws {
        // Every route of the gateway's own is in the document, with its methods.
        let paths = try DeployTests.yaml("deploy/openapi.yaml")["paths"] as? [String: [String: Any]] ?? [:]
        let documented: [String: Set<String>] = paths.mapValues { Set($0.keys.map { $0.uppercased() }) }
        var routed: [String: Set<String>] = [:]
        for (path, methods) in ErrorMiddleware.gatewayEndpoints {
            routed[path] = Set(methods.map(\.rawValue).filter { $0 != "HEAD" })
        }
        #expect(documented == routed)

        try await GatewayHarness.run { h in
            // Something to report: a cached answer, usage.
            #expect(try await h.gateway.send(.POST, "/v1/algo/demo/Hello/0.1.0", headers: simple(Keys.teamB) + textType, text: "HAL").status == 200)
            let url = "http://127.0.0.1:\(h.gatewayPort)"
            let asAdmin = try await Self.schemathesis(["--url", url, "--header", "Authorization: Simple \(Keys.admin)", "--exclude-path", "/_gateway/me"])
            #expect(asAdmin.termination == .exited(0), "\(asAdmin.log.suffix(4000))")
            #expect(asAdmin.log.contains("Tested: 7"), "\(asAdmin.log.suffix(2000))")
            let asClient = try await Self.schemathesis(["--url", url, "--header", "Authorization: Simple \(Keys.teamA)", "--include-path", "/_gateway/me"])
            #expect(asClient.termination == .exited(0), "\(asClient.log.suffix(4000))")
            #expect(asClient.log.contains("Tested: 1"), "\(asClient.log.suffix(2000))")
            // No 5xx reached the log either.
            #expect(!h.logs.all.contains { $0.contains("status=5") }, "\(h.logs.all.filter { $0.contains("status=5") }.prefix(3))")
        }
    }
}
