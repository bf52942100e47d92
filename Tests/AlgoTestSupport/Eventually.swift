/// Polls `condition` every 10 ms until it holds or `timeout` has passed, and says whether it held.
/// For effects that land just after a response (log lines, usage bytes, a call reaching the
/// upstream): a fixed sleep is too short on a loaded CI runner and needlessly long elsewhere.
public func eventually(within timeout: Duration = .seconds(10), _ condition: () async throws -> Bool) async rethrows -> Bool {
    let deadline = ContinuousClock.now + timeout
    while true {
        if try await condition() { return true }
        if ContinuousClock.now >= deadline { return false }
        try? await Task.sleep(for: .milliseconds(10))
    }
}
