import NIOPosix
import ServiceLifecycle

/// Gives back to the system the memory a burst of requests freed.
///
/// glibc's allocator keeps what is freed in its heaps for reuse, and gives back only what lies at
/// the top of one, so resident memory stays at a burst's peak: after 3,000 requests at once the
/// gateway stayed at 179 MB (42 MB before them) for as long as it ran, which a pod's memory
/// graphs and a memory-driven autoscaler read as load. `malloc_trim(0)` gives back every free
/// page in the heaps; this runs it every `interval`, off the event loops (on NIO's thread pool),
/// as jemalloc and Go's runtime give back freed memory after some seconds of their own accord.
/// Measured (`Benchmarks/inflight.sh` prints memory 1 s and 12 s after the burst): a trim after
/// that burst took 9 ms and brought the gateway back to 44 MB; one with little to give back takes
/// 0.1 to 0.5 ms under load, during which threads that allocate wait for the allocator's lock;
/// trims every second did not move a paced load's p50 or p99 beyond the runs' spread. The peak
/// itself, which an out-of-memory kill depends on, is the same either way.
struct FreedMemory: Service {
    static let interval: Duration = .seconds(10)

    func run() async throws {
        guard let trim = Self.mallocTrim else { return }
        try? await cancelWhenGracefulShutdown {
            while true {
                try await Task.sleep(for: Self.interval)
                _ = try await NIOThreadPool.singleton.runIfActive { trim(0) }
            }
        }
    }

    static let mallocTrim = LargeAllocations.glibc("malloc_trim", as: (@convention(c) (Int) -> Int32).self)
}
