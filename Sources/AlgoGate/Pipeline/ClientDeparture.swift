import NIOCore
import Synchronization

/// Tells an algorithm call that its client has gone: one still waiting for an upstream slot is
/// given up, and one already sent upstream too when `upstream.abandoned_calls` is `cancel`,
/// rather than left holding one of the account's slots for as long as the algorithm runs (up to
/// `upstream.timeout_seconds`) for an answer nobody will read. With `finish` (the default) a sent
/// call stops watching (`CallWatch.runToEnd()`) and keeps its slot until the upstream answers, so
/// the account never runs more than `max_concurrency` calls if the upstream runs on an algorithm
/// whose caller went.
///
/// One per client connection, owned by its `ConnectionPersistenceHandler`, which calls `depart()`
/// when the connection's input ends (or the connection closes) while a request is still owed its
/// answer, arrived whole or not (one cut short can never end). A client that closes its socket is
/// seen that way: the gateway reads the end of its input, and learns no more until it writes. So
/// a client that only half-closes after its request is taken as gone too, as nginx takes it (its
/// 499).
///
/// Only calls whose answer would be thrown away are cancelled (`RequestFacts.keepsAnswer`): an
/// answer the cache will store, or that collapsed waiters share, is still fetched, for the retry
/// that usually follows.
///
/// The same watch gives a call up when its deadline passes (`CallWatch`), whatever it is waiting
/// on then: the forwarder bounds an algorithm call's whole exchange by its timeout that way.
final class ClientDeparture: Sendable {
    private struct State {
        var departed = false
        /// The call waiting for the client to go, and which wait it is (see `wait()`).
        var waiter: CheckedContinuation<Void, Never>?
        var waits = 0
        /// The call under way (`watching`): its number, whether its client's going gives it up,
        /// and the timeout it has run out of (`CallWatch.expire`), if it has.
        var calls = 0
        var watchesDeparture = true
        var expired: GatewayError?
    }
    private let state = Mutex(State())

    /// The client has gone: the call in flight, if any, is told, and every later one at once.
    func depart() {
        let waiter = state.withLock { state in
            state.departed = true
            guard state.watchesDeparture else { return nil as CheckedContinuation<Void, Never>? }
            defer { state.waiter = nil }
            return state.waiter
        }
        waiter?.resume()
    }

    var hasDeparted: Bool { state.withLock { $0.departed } }

    /// Returns once the call under way is over for the client's sake: its client has gone (when
    /// that gives it up) or its time has run out; or once the calling task is cancelled.
    func wait() async {
        let wait = state.withLock { state in
            state.waits += 1
            return state.waits
        }
        await withTaskCancellationHandler {
            await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
                let now = state.withLock { state in
                    // A cancellation, departure or expiry that came first found no waiter to resume.
                    if (state.departed && state.watchesDeparture) || state.expired != nil || Task.isCancelled { return true }
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

    /// The call under way has run out of time: it is given up with `failure`. A call that has
    /// ended meanwhile (its number is not `call`) is left alone.
    fileprivate func expire(call: Int, with failure: GatewayError) {
        let waiter = state.withLock { state in
            guard state.calls == call else { return nil as CheckedContinuation<Void, Never>? }
            state.expired = failure
            defer { state.waiter = nil }
            return state.waiter
        }
        waiter?.resume()
    }

    /// The call under way (if its number is `call`) is no longer given up when its client goes:
    /// it has been sent upstream, and runs to its end (`upstream.abandoned_calls: finish`).
    fileprivate func ignoreDepartures(call: Int) {
        state.withLock { state in
            if state.calls == call { state.watchesDeparture = false }
        }
    }

    /// Runs `operation` (the wait for an upstream slot, then the exchange), cancelling it when the
    /// client goes first, if `departures` (a call whose answer is kept, for the cache or
    /// collapsed waiters, is not given up when its client goes) and until the operation says
    /// otherwise (`CallWatch.runToEnd()`), and when the deadline it sets on its `CallWatch`
    /// passes first. Then throws `GatewayError.clientClosedRequest`, which only the log line and
    /// metrics see, or the failure the deadline was set with.
    @inline(never)  // its frame is held while the call waits: kept to what it needs (see `CacheMiddleware.handle`)
    func watching<Value: Sendable>(departures: Bool, _ operation: @escaping @Sendable (CallWatch?) async throws -> Value) async throws -> Value {
        if departures, hasDeparted { try Self.refuseDeparted() }
        let call = state.withLock { state in
            state.calls += 1
            state.watchesDeparture = departures
            state.expired = nil
            return state.calls
        }
        let watch = CallWatch(departure: self, call: call)
        return try await withThrowingTaskGroup(of: Value?.self) { group in
            group.addTask { try await operation(watch) }
            group.addTask {
                await self.wait()
                return nil
            }
            defer { group.cancelAll() }
            // The first to finish decides: the answer, its failure, the expiry or the client's
            // departure. A wait ended by this task's own cancellation leaves the answer (or its
            // failure) to it. One ended by a departure the call stopped watching for just after
            // (`runToEnd()`) starts again, for the expiry.
            while let outcome = try await group.next() {
                if let value = outcome { return value }
                try throwIfOver()
                if !Task.isCancelled {
                    group.addTask {
                        await self.wait()
                        return nil
                    }
                }
            }
            throw CancellationError()
        }
    }

    /// Throws the expiry, or the client's departure, that ended the wait.
    @inline(never)
    private func throwIfOver() throws {
        let (departed, expired) = state.withLock { ($0.departed && $0.watchesDeparture, $0.expired) }
        if let expired { throw expired }
        if departed { try Self.refuseDeparted() }
    }

    @inline(never)
    private static func refuseDeparted() throws -> Never { throw GatewayError.clientClosedRequest }

    /// The departure of the client on `channel`, when its pipeline has one (it always does in the
    /// gateway; a test that builds its own channel may not).
    @inline(never)
    static func of(_ channel: any Channel) async -> ClientDeparture? {
        await ConnectionPersistenceHandler.of(channel) { $0.departure }
    }
}

/// A call run by `ClientDeparture.watching`, for the forwarder to bound: `expire(at:on:with:)`
/// gives the call up with a failure once a deadline passes, whatever it is waiting on then
/// (the upstream client's own deadline covers only the wait for an answer's head, not the
/// reading of its body).
struct CallWatch: Sendable {
    fileprivate let departure: ClientDeparture
    fileprivate let call: Int

    /// From now on the client's going does not give the call up: it has been sent upstream and
    /// runs to its end there, holding its slot (`upstream.abandoned_calls: finish`). A departure
    /// seen before this still gives it up.
    func runToEnd() {
        departure.ignoreDepartures(call: call)
    }

    /// Gives the call up with `failure` at `deadline`, unless the returned task is cancelled
    /// first. The timer runs on `loop` (the connection's), so it costs the call no task.
    func expire(at deadline: NIODeadline, on loop: any EventLoop, with failure: GatewayError) -> Scheduled<Void> {
        let (departure, call) = (departure, call)
        return loop.scheduleTask(deadline: deadline) { departure.expire(call: call, with: failure) }
    }
}
