#ifndef C_ALGOGATE_SYSTEM_H
#define C_ALGOGATE_SYSTEM_H

// What Swift cannot call itself: prctl(2) is variadic.

#if defined(__linux__)
#include <sys/prctl.h>

/// Marks the calling process not dumpable (PR_SET_DUMPABLE 0): the kernel writes no core file of
/// it, and no other process of its user may read its memory or environment (ptrace,
/// /proc/PID/mem, /proc/PID/environ), which hold the upstream key. 0 on success, -1 and errno.
static inline int algogate_set_not_dumpable(void) {
    return prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);
}
#endif

#endif
