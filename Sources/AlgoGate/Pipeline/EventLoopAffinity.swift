import Hummingbird
import NIOCore

/// Runs the rest of the pipeline on the event loop that owns the client's connection, as the
/// task's preferred executor (SE-0417). Without it, each await on I/O (reading the body, the
/// upstream's answer, writing the response) hands the request between the event loop and Swift's
/// global thread pool; with it, those resumptions stay on one thread.
struct EventLoopAffinityMiddleware: RouterMiddleware {
    typealias Context = GatewayRequestContext

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        guard let eventLoop = context.eventLoop else { return try await next(request, context) }
        return try await withTaskExecutorPreference(EventLoopTaskExecutor(eventLoop)) {
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
