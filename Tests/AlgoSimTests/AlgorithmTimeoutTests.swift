@testable import AlgoSim
import Dispatch
import Testing

/// The simulator's timeout rule, below HTTP: the envelope and status are covered by
/// `AlgoAPITests.reportsAlgorithmErrorsAndTimeoutsInTheEnvelope`.
@Suite struct AlgorithmTimeoutTests {
    /// Keeps going after it is cancelled, as an algorithm written in another language does: it
    /// waits on a Dispatch timer, which cancellation does not reach.
    struct Stubborn: SimAlgorithm {
        let milliseconds: Int
        func run(_ input: AlgoInput, _ run: AlgoRun) async throws -> AlgoOutput {
            await withCheckedContinuation { continuation in
                DispatchQueue.global().asyncAfter(deadline: .now() + .milliseconds(milliseconds)) { continuation.resume() }
            }
            return .text("finished")
        }
    }

    @Test func aRunThatEndsAfterItsTimeIsATimeoutEvenIfItIgnoresCancellation() async throws {
        let failure = await #expect(throws: AlgoFailure.self) {
            _ = try await AlgoRoutes.run(Stubborn(milliseconds: 1500), .text(""), AlgoRun(), timeoutSeconds: 1)
        }
        #expect(failure?.errorType == "AlgorithmTimeoutError")
        #expect(failure?.message == "algorithm timed out after 1 seconds")
    }

    @Test func aRunWithinItsTimeAnswers() async throws {
        let output = try await AlgoRoutes.run(Stubborn(milliseconds: 10), .text(""), AlgoRun(), timeoutSeconds: 30)
        guard case .text(let text) = output else { Issue.record("expected a text output, got \(output)"); return }
        #expect(text == "finished")
    }
}
