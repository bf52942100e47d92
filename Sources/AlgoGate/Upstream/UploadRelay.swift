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
final class UploadRelay: AsyncSequence, Sendable {
    typealias Element = ByteBuffer

    private struct State {
        var reading = false
        var settled = false
        var settling: CheckedContinuation<Void, Never>?
        var clientFailure: (any Error)?
    }
    private let state = Mutex(State())
    private let body: RequestBody

    init(_ body: RequestBody) {
        self.body = body
    }

    struct AsyncIterator: AsyncIteratorProtocol {
        let relay: UploadRelay
        var base: RequestBody.AsyncIterator

        mutating func next() async throws -> ByteBuffer? {
            // After the answer, the body belongs to Hummingbird again: the HTTP client sees it end.
            guard relay.beginRead() else { return nil }
            do {
                let part = try await base.next()
                relay.endRead()
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
        state.withLock { state in
            guard !state.settled else { return false }
            state.reading = true
            return true
        }
    }

    private func endRead(failure: (any Error)? = nil) {
        let settling = state.withLock { state in
            state.reading = false
            if let failure { state.clientFailure = failure }
            defer { state.settling = nil }
            return state.settling
        }
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
            let waits = state.withLock { state in
                state.settled = true
                guard state.reading else { return false }
                state.settling = continuation
                return true
            }
            if !waits { continuation.resume() }
        }
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
