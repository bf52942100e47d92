import Synchronization

/// Polls `condition` every 10 ms until it holds or `timeout` has passed, and says whether it held.
/// For effects that land just after a response (log lines, usage bytes, a call reaching the
/// upstream): a fixed sleep is too short on a loaded CI runner and needlessly long elsewhere.
/// Thirty seconds by default: the full suite on two cores has been seen to leave a test's tasks
/// unscheduled for several seconds at a time, and a condition that holds returns at once anyway.
/// A passing state (a call in flight) needs a test built not to miss it, not a longer wait.
public func eventually(within timeout: Duration = .seconds(30), _ condition: () async throws -> Bool) async rethrows -> Bool {
    let deadline = ContinuousClock.now + timeout
    while true {
        if try await condition() { return true }
        if ContinuousClock.now >= deadline { return false }
        try? await Task.sleep(for: .milliseconds(10))
    }
}

/// A one-way gate: `wait()` returns once `open()` has been called, at once if it has been.
/// For a test to hold a server's answer until it has checked what happens meanwhile.
public final class Latch: Sendable {
    private let state = Mutex<(open: Bool, waiters: [CheckedContinuation<Void, Never>])>((false, []))

    public init() {}

    public var isOpen: Bool { state.withLock { $0.open } }

    public func open() {
        let waiters = state.withLock { state in
            defer { state = (true, []) }
            return state.waiters
        }
        waiters.forEach { $0.resume() }
    }

    public func wait() async {
        await withCheckedContinuation { continuation in
            let resumeNow = state.withLock { state in
                if !state.open { state.waiters.append(continuation) }
                return state.open
            }
            if resumeNow { continuation.resume() }
        }
    }
}
