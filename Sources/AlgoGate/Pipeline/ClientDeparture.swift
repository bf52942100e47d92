import NIOCore
import Synchronization

/// Tells an algorithm call waiting on the upstream that its client has gone, so the upstream call
/// is cancelled rather than left holding one of the account's slots for as long as the algorithm
/// runs (up to `upstream.timeout_seconds`) for an answer nobody will read.
///
/// One per client connection, owned by its `ConnectionPersistenceHandler`, which calls `depart()`
/// when the connection's input ends (or the connection closes) while a request that has arrived
/// whole is still owed its answer. A client that closes its socket is seen that way: the gateway
/// reads the end of its input, and learns no more until it writes. So a client that only
/// half-closes after its request is taken as gone too, as nginx takes it (its 499).
///
/// Only calls whose answer would be thrown away are cancelled (`RequestFacts.keepsAnswer`): an
/// answer the cache will store, or that collapsed waiters share, is still fetched, for the retry
/// that usually follows.
final class ClientDeparture: Sendable {
    private struct State {
        var departed = false
        /// The call waiting for the client to go, and which wait it is (see `wait()`).
        var waiter: CheckedContinuation<Void, Never>?
        var waits = 0
    }
    private let state = Mutex(State())

    /// The client has gone: the call in flight, if any, is told, and every later one at once.
    func depart() {
        let waiter = state.withLock { state in
            state.departed = true
            defer { state.waiter = nil }
            return state.waiter
        }
        waiter?.resume()
    }

    var hasDeparted: Bool { state.withLock { $0.departed } }

    /// Returns once the client has gone, or the calling task is cancelled.
    func wait() async {
        let wait = state.withLock { state in
            state.waits += 1
            return state.waits
        }
        await withTaskCancellationHandler {
            await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
                let now = state.withLock { state in
                    // A cancellation that came first found no waiter to resume.
                    if state.departed || Task.isCancelled { return true }
                    state.waiter = continuation
                    return false
                }
                if now { continuation.resume() }
            }
        } onCancel: {
            let waiter = state.withLock { state in
                guard state.waits == wait else { return nil as CheckedContinuation<Void, Never>? }
                defer { state.waiter = nil }
                return state.waiter
            }
            waiter?.resume()
        }
    }

    /// Runs `operation` (the wait for an upstream slot, then the exchange), cancelling it when the
    /// client goes first; then throws `GatewayError.clientClosedRequest`, which only the log line
    /// and metrics see.
    func cancellingOnDeparture<Value: Sendable>(_ operation: @escaping @Sendable () async throws -> Value) async throws -> Value {
        if hasDeparted { throw GatewayError.clientClosedRequest }
        return try await withThrowingTaskGroup(of: Value?.self) { group in
            group.addTask { try await operation() }
            group.addTask {
                await self.wait()
                return nil
            }
            defer { group.cancelAll() }
            // The first to finish decides: the answer, its failure, or the client's departure. A
            // wait ended by this task's own cancellation leaves the answer (or its failure) to it.
            while let outcome = try await group.next() {
                if let value = outcome { return value }
                if hasDeparted { throw GatewayError.clientClosedRequest }
            }
            throw CancellationError()
        }
    }

    /// The departure of the client on `channel`, when its pipeline has one (it always does in the
    /// gateway; a test that builds its own channel may not).
    static func of(_ channel: any Channel) async -> ClientDeparture? {
        if channel.eventLoop.inEventLoop {
            return try? channel.pipeline.syncOperations.handler(type: ConnectionPersistenceHandler.self).departure
        }
        return try? await channel.eventLoop.submit {
            try channel.pipeline.syncOperations.handler(type: ConnectionPersistenceHandler.self).departure
        }.get()
    }
}
