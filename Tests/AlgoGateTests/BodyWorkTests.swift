import NIOCore
import NIOPosix
import Testing
@testable import AlgoGate

/// Work over a large body leaves the event loop the request runs on, so the loop's other
/// connections are not held up by it; work over a small one stays where it is.
@Suite struct BodyWorkTests {
    @Test func largeBodiesAreWorkedOnOffTheEventLoop() async throws {
        let loop = MultiThreadedEventLoopGroup.singleton.next()
        let (caller, small, large) = try await withTaskExecutorPreference(EventLoopTaskExecutor(loop)) {
            let caller = loop.inEventLoop
            let small = try await BodyWork.run(over: BodyWork.offLoopBytes - 1) { loop.inEventLoop }
            let large = try await BodyWork.run(over: BodyWork.offLoopBytes) {
                (onLoop: loop.inEventLoop, onAnyLoop: MultiThreadedEventLoopGroup.currentEventLoop != nil)
            }
            return (caller, small, large)
        }
        #expect(caller)
        #expect(small)
        #expect(!large.onLoop && !large.onAnyLoop)
    }

    @Test func errorsPassThroughAsThrown() async throws {
        let error = GatewayError.badRequest("the input is not valid gzip data")
        await #expect(throws: error) { try await BodyWork.run(over: 1 << 20) { () throws -> Int in throw error } }
        await #expect(throws: error) { try await BodyWork.run(over: 1) { () throws -> Int in throw error } }
    }
}
