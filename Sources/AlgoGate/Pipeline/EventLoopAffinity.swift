import Hummingbird
import NIOCore

/// Runs the rest of the pipeline with the client connection's event loop as the task's preferred
/// executor (SE-0417), so its awaits (reading the body, the cache look-up) resume on that loop's
/// thread. Jobs enqueued without a preference already go to NIO's loops (`Entry.swift`), but to
/// either loop at each hop; pinned to one, cache hits measured 4-5% faster, and pass-through 20%
/// to 30% (`Benchmarks/RESULTS.md`, twenty-first session), though each resumption then looks the
/// preference up under the task's lock (about 12 µs of a pass-through call's CPU).
///
/// The upstream exchange stays there too: the upstream client takes a pooled connection on the
/// current loop when it has one (`EventLoopGroup.any()`), so a call is read, forwarded and
/// answered on one thread. Measured side by side against running the exchange with
/// `globalConcurrentExecutor` as its preference (Dispatch's threads: NIO's take-over covers jobs
/// enqueued without a preference, not that executor): a quarter less CPU and 60 µs less latency
/// a call on one connection, 7% less CPU at half load, about 7% more at saturation, where a
/// gateway in front of an 80-slot account does not run.
struct EventLoopAffinityMiddleware: RouterMiddleware {
    typealias Context = GatewayRequestContext

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        try await withTaskExecutorPreference(EventLoopTaskExecutor(context.eventLoop)) {
            try await next(request, context)
        }
    }
}

/// An event loop as a `TaskExecutor`: jobs run on the loop's thread, in its queue.
final class EventLoopTaskExecutor: TaskExecutor {
    let eventLoop: any EventLoop

    init(_ eventLoop: any EventLoop) { self.eventLoop = eventLoop }

    func enqueue(_ job: consuming ExecutorJob) {
        let job = UnownedJob(job)
        eventLoop.execute { job.runSynchronously(on: self.asUnownedTaskExecutor()) }
    }
}
