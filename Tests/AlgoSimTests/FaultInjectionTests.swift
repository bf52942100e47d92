import AlgoSim
import AlgoTestSupport
import Foundation
import Testing

@Suite struct FaultInjectionTests {
    @Test func aHeaderChoosesTheStatus() async throws {
        try await withSimulator { http, sim in
            let reply = try await http.send(.POST, "/v1/algo/demo/Hello/0.1.0", headers: auth + textType + [("X-Sim-Fault", "status=503")], text: "HAL")
            #expect(reply.status == 503)
            #expect(canonicalJSON(reply.json) == canonicalJSON(literal: #"{"error":{"message":"injected fault: status 503","error_type":"SystemError"}}"#))
            #expect(sim.stats.snapshot.algoCalls.isEmpty)
        }
    }

    @Test func aHeaderAddsLatency() async throws {
        try await withSimulator { http, _ in
            let started = ContinuousClock.now
            let reply = try await http.send(.POST, "/v1/algo/demo/Hello/0.1.0", headers: auth + textType + [("X-Sim-Fault", "delay=300")], text: "HAL")
            #expect(reply.status == 200)
            #expect(ContinuousClock.now - started >= .milliseconds(300))
        }
    }

    @Test func aHeaderDropsTheConnection() async throws {
        try await withSimulator { http, _ in
            await #expect(throws: (any Error).self) {
                _ = try await http.send(.POST, "/v1/algo/demo/Hello/0.1.0", headers: auth + textType + [("X-Sim-Fault", "drop")], text: "HAL")
            }
            let after = try await http.send(.POST, "/v1/algo/demo/Hello/0.1.0", headers: auth + textType, text: "HAL")
            #expect(after.status == 200)
        }
    }

    @Test func dropFirstDropsOnlyARequestIDsFirstAttempt() async throws {
        try await withSimulator { http, sim in
            let fault = [("X-Sim-Fault", "drop-first")]
            await #expect(throws: (any Error).self) {
                _ = try await http.send(.GET, "/v1/data/.my", headers: auth + fault + [("X-Request-ID", "r-1")])
            }
            for _ in 0..<2 {
                let again = try await http.send(.GET, "/v1/data/.my", headers: auth + fault + [("X-Request-ID", "r-1")])
                #expect(again.status == 200)
            }
            await #expect(throws: (any Error).self) {
                _ = try await http.send(.GET, "/v1/data/.my", headers: auth + fault + [("X-Request-ID", "r-2")])
            }
            // Without a request ID every attempt is a first one.
            for _ in 0..<2 {
                await #expect(throws: (any Error).self) { _ = try await http.send(.GET, "/v1/data/.my", headers: auth + fault) }
            }
            #expect(sim.stats.snapshot.requestsByClass["data"] == 6)
        }
    }

    @Test func aDefaultFaultAppliesToEveryRequestAndBadHeadersAre400() async throws {
        try await withSimulator(fault: Fault(status: 502)) { http, _ in
            let reply = try await http.send(.GET, "/v1/data/.my", headers: auth)
            #expect(reply.status == 502)
            let bad = try await http.send(.GET, "/v1/data/.my", headers: auth + [("X-Sim-Fault", "explode")])
            #expect(bad.status == 400)
            // The simulator's own endpoints are not the API: a test can still read and reset them.
            #expect(try await http.send(.GET, "/__sim/health").status == 200)
            let stats = try await http.send(.GET, "/__sim/stats")
            #expect(stats.status == 200)
            #expect(stats.object["totalRequests"] as? Int == 2)
            #expect(try await http.send(.POST, "/__sim/reset").status == 204)
        }
    }

    @Test func faultTermsParseAndPrint() {
        #expect(Fault(parsing: "delay=100,status=502,drop") == Fault(delayMilliseconds: 100, status: 502, dropConnection: true))
        #expect(Fault(parsing: "delay=100,status=502,drop")?.description == "delay=100,status=502,drop")
        #expect(Fault(parsing: "status=200") == nil)
        #expect(Fault(parsing: "drop=1") == nil)
        #expect(Fault(parsing: "drop-first,delay=5") == Fault(delayMilliseconds: 5, dropFirstAttempt: true))
        #expect(Fault(parsing: "drop-first,delay=5")?.description == "delay=5,drop-first")
    }
}
