#if canImport(Glibc)
import Glibc
#endif

/// Large blocks go back to the system once freed.
///
/// glibc's allocator raises its mmap threshold to the size of each large block freed (up to
/// 32 MiB), and blocks under the threshold come from its heaps, which keep freed memory. So after
/// the first large answer, a burst of algorithm inputs and answers of a few MB leaves the process's
/// resident memory at the burst's peak, far above what `limits.max_buffered_bytes` and
/// `limits.max_buffered_answer_bytes` hold at once. A fixed threshold of 1 MiB maps every block of
/// that size or more on its own, and unmaps it when freed. Measured (`Benchmarks/answers.sh`, 24
/// slow clients of 15 MB answers under a 64 MiB bound): peak resident memory 194 MiB with glibc's
/// default, 134 to 143 MiB with this. `MALLOC_MMAP_THRESHOLD_` in the environment, when set,
/// decides instead.
enum LargeAllocations {
    static let threshold: Int32 = 1 << 20
    /// `M_MMAP_THRESHOLD` in glibc's `malloc.h`, which Swift's Glibc module does not bring in.
    static let mmapThresholdParameter: Int32 = -3

    static func returnToSystem() {
        #if canImport(Glibc)
        guard getenv("MALLOC_MMAP_THRESHOLD_") == nil,
              let mallopt = glibc("mallopt", as: (@convention(c) (Int32, Int32) -> Int32).self) else { return }
        _ = mallopt(mmapThresholdParameter, threshold)
        #endif
    }

    /// A function of glibc's allocator that Swift's Glibc module does not bring in (it is in
    /// `malloc.h`), by name; nil with another C library.
    static func glibc<Function>(_ name: String, as type: Function.Type) -> Function? {
        #if canImport(Glibc)
        guard let symbol = dlsym(UnsafeMutableRawPointer(bitPattern: 0), name) else { return nil }
        return unsafeBitCast(symbol, to: type)
        #else
        return nil
        #endif
    }
}
