import NIOPosix

/// Runs CPU work over a whole body (compressing, inflating, hashing, parsing or scanning it) on
/// NIO's blocking thread pool once the body is large enough to matter, rather than on the event
/// loop the request runs on (`EventLoopAffinityMiddleware`). A loop serves every connection given
/// to it, cache hits answered on it included, and none of them is read or answered while such
/// work runs: gzip at level 6 takes about 20 ms a megabyte here, so one 15 MB answer would stall
/// them for a third of a second. Beside two clients sending 4 MB inputs
/// (`Benchmarks/largebodies.sh`), paced hits' p99 was 268 ms with this work on the loops and is
/// 5.5 ms with it here (1.4 ms with no large calls beside them).
///
/// Below `offLoopBytes` the hop to the pool and back (tens of microseconds) would cost more than
/// it spares, so the work runs where the caller is.
enum BodyWork {
    /// Bodies from this size are worked on off the event loops: about a millisecond of gzip.
    static let offLoopBytes = 64 * 1024

    /// `work`'s result, computed on the thread pool when `size` (the bytes it reads) is at least
    /// `offLoopBytes`, in place otherwise. Errors pass through as `work` threw them.
    static func run<T: Sendable>(over size: Int, _ work: @escaping @Sendable () throws -> T) async throws -> T {
        guard size >= offLoopBytes else { return try work() }
        return try await NIOThreadPool.singleton.runIfActive(work)
    }
}
