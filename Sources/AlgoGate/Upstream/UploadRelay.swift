import Hummingbird
import NIOCore
import Synchronization

/// A client's request body as the HTTP client reads it to stream it upstream.
///
/// AsyncHTTPClient reads a streamed request body on a task of its own, and it returns the
/// upstream's answer as soon as its head arrives, even while the body is still being sent: an
/// origin may answer a PUT with a 404 before reading a byte. Once the gateway has sent that answer,
/// Hummingbird reads (and discards) what is left of the body on the connection, from the same
/// iterator. If the HTTP client's task were still waiting inside that iterator at that moment, two
/// readers would meet in NIO's inbound stream, which traps and takes the whole process down.
///
/// So every read goes through the relay, and `settle()`, called once the answer has been sent,
/// waits for a read under way to return and lets no other start. Hummingbird then drains the rest
/// as it does for any body a handler left unread, and the connection stays usable.
///
/// The relay also keeps the upload to a minimum rate (`limits.upload_min_bytes_per_second`): an
/// upload holds an upstream slot while it streams, and a client sending a byte now and then keeps
/// the idle timeout away, so without it such a client could hold a slot for as long as it liked.
/// Only the time the HTTP client waits inside the relay for the client's bytes counts: while the
/// upstream reads slowly, or the gateway is still connecting to it, nothing is asked of the client.
/// Each `MinimumRate.window` the relay looks at the bytes that came in it; if it waited at least
/// half the window and they came slower than the minimum, the rest of the body is refused
/// (`UploadTooSlow`, a 408).
final class UploadRelay: AsyncSequence, Sendable {
    typealias Element = ByteBuffer

    /// `limits.upload_min_bytes_per_second`, or the client's own, judged over each `window` (20 s;
    /// tests shorten it).
    struct MinimumRate: Sendable {
        var bytesPerSecond: Int
        var window: TimeAmount
        /// Whose setting it is, for the message of an upload refused under it.
        var setting = "limits.upload_min_bytes_per_second"

        /// The rate `client` keeps to: its own `upload_min_bytes_per_second`, else this one.
        func applying(to client: ClientIdentity?) -> MinimumRate {
            guard let client, let own = client.uploadMinBytesPerSecond else { return self }
            return MinimumRate(bytesPerSecond: own, window: window, setting: "client \(client.name)'s upload_min_bytes_per_second")
        }
    }

    private struct State {
        var reading = false
        var settled = false
        var ended = false
        var settling: CheckedContinuation<Void, Never>?
        var clientFailure: (any Error)?
        /// Bytes read in all, and in the window under way; the time spent waiting for them in the
        /// window, and since when the read under way has waited, if one is.
        var received = 0
        var windowBytes = 0
        var waited: Duration = .zero
        var waitingSince: ContinuousClock.Instant?
        var judge: RepeatedTask?
    }
    private let state = Mutex(State())
    private let body: RequestBody
    private let declaredLength: Int64?

    /// `declaredLength`: the body's `Content-Length`, for the message of an upload refused as too slow.
    init(_ body: RequestBody, declaredLength: Int64? = nil) {
        self.body = body
        self.declaredLength = declaredLength
    }

    /// Keeps the upload to `rate` from now on, judged on `channel`'s event loop; one that falls
    /// below it has the rest of its body refused on `channel` (`ConnectionPersistenceHandler`).
    func keep(to rate: MinimumRate, on channel: any Channel) {
        guard rate.bytesPerSecond > 0 else { return }
        let task = channel.eventLoop.scheduleRepeatedTask(initialDelay: rate.window, delay: rate.window) { [weak self] task in
            guard let self, channel.isActive else { return task.cancel() }
            switch self.judge(rate) {
            case .keptUp: break
            case .over: task.cancel()
            case .tooSlow(let slow):
                task.cancel()
                ConnectionPersistenceHandler.refuseBody(on: channel, slow)
            }
        }
        let over = state.withLock { state in
            state.judge = task
            return state.ended || state.settled
        }
        if over { task.cancel() }
    }

    private enum Verdict {
        /// The upload kept the rate in the window just ended; a new one has begun.
        case keptUp
        /// The body has ended, failed or been handed back: there is nothing left to judge.
        case over
        case tooSlow(UploadTooSlow)
    }

    /// The window just ended, judged.
    private func judge(_ rate: MinimumRate) -> Verdict {
        let now = ContinuousClock.now
        return state.withLock { state in
            guard !state.ended, !state.settled, state.clientFailure == nil else { return .over }
            let waited = state.waited + (state.waitingSince.map { now - $0 } ?? .zero)
            let seconds = waited / .seconds(1)
            if waited * 2 >= .nanoseconds(rate.window.nanoseconds), Double(state.windowBytes) < Double(rate.bytesPerSecond) * seconds {
                return .tooSlow(UploadTooSlow(bytes: state.windowBytes, seconds: seconds, minimum: rate.bytesPerSecond, setting: rate.setting,
                                              received: state.received, declared: declaredLength))
            }
            state.windowBytes = 0
            state.waited = .zero
            if state.waitingSince != nil { state.waitingSince = now }
            return .keptUp
        }
    }

    struct AsyncIterator: AsyncIteratorProtocol {
        let relay: UploadRelay
        var base: RequestBody.AsyncIterator

        mutating func next() async throws -> ByteBuffer? {
            // After the answer, the body belongs to Hummingbird again: the HTTP client sees it end.
            guard relay.beginRead() else { return nil }
            do {
                let part = try await base.next()
                relay.endRead(part: part)
                return part
            } catch {
                relay.endRead(failure: error)
                throw error
            }
        }
    }

    func makeAsyncIterator() -> AsyncIterator {
        AsyncIterator(relay: self, base: body.makeAsyncIterator())
    }

    private func beginRead() -> Bool {
        let now = ContinuousClock.now
        return state.withLock { state in
            guard !state.settled else { return false }
            state.reading = true
            state.waitingSince = now
            return true
        }
    }

    /// `part`: what the read returned (nil: the body's end); `failure`: what it threw instead.
    private func endRead(part: ByteBuffer? = nil, failure: (any Error)? = nil) {
        let now = ContinuousClock.now
        let (settling, judge) = state.withLock { state in
            state.reading = false
            if let since = state.waitingSince { state.waited += now - since }
            state.waitingSince = nil
            if let part {
                state.received += part.readableBytes
                state.windowBytes += part.readableBytes
            } else if failure == nil {
                state.ended = true
            }
            if let failure { state.clientFailure = failure }
            defer { state.settling = nil }
            let over = state.ended || state.clientFailure != nil
            return (state.settling, over ? state.judge : nil)
        }
        judge?.cancel()
        settling?.resume()
    }

    /// What reading the client's body threw (a malformed body, the client's connection ending or
    /// reset), if it did: the upstream exchange then failed on the client's side, not the upstream's.
    var clientFailure: (any Error)? {
        state.withLock { $0.clientFailure }
    }

    /// Returns once no read of the body is under way, and none will start. A read under way ends
    /// when the client sends its next bytes, finishes, or goes away (or the idle timeout closes
    /// the connection), exactly what Hummingbird's own drain would wait for.
    func settle() async {
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            let (waits, judge) = state.withLock { state in
                state.settled = true
                guard state.reading else { return (false, state.judge) }
                state.settling = continuation
                return (true, state.judge)
            }
            judge?.cancel()
            if !waits { continuation.resume() }
        }
    }
}

/// An upload that came slower than `limits.upload_min_bytes_per_second` (or its client's own,
/// `setting`) over a window in which the gateway waited for it: `bytes` in `seconds` of waiting,
/// `received` in all. The rest of its body is refused, and its client is answered 408 (`Forwarder`).
struct UploadTooSlow: Error {
    let bytes: Int
    let seconds: Double
    let minimum: Int
    let setting: String
    let received: Int
    let declared: Int64?

    var message: String {
        let of = declared.map { " of its \($0)" } ?? ""
        return "the upload came too slowly: \(bytes) bytes in the \(max(1, Int(seconds.rounded()))) s the gateway waited for them, "
            + "under \(setting) (\(minimum)); \(received)\(of) bytes had arrived"
    }
}

extension ResponseBody {
    /// The same body, then `settle` once it has been written (or its writing failed).
    func settling(_ relay: UploadRelay) -> ResponseBody {
        let body = self
        return ResponseBody(contentLength: body.contentLength) { writer in
            do {
                try await body.write(writer)
            } catch {
                await relay.settle()
                throw error
            }
            await relay.settle()
        }
    }
}
