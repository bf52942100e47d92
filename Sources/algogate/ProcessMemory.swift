#if os(Linux)
import CAlgoGateSystem
#endif

/// The gateway's memory holds the upstream key (and its environment `upstream.key_env`'s
/// variable): `keepPrivate()` marks the process not dumpable, so the kernel writes no core file
/// of it, whatever the host's core settings, and only root may read its memory or environment
/// (ptrace, `/proc/PID/mem`, `/proc/PID/environ`, which become root's).
enum ProcessMemory {
    /// True once the process is not dumpable (or where there is no such setting).
    static func keepPrivate() -> Bool {
        #if os(Linux)
        return algogate_set_not_dumpable() == 0
        #else
        return true
        #endif
    }
}
