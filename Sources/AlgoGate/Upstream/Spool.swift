import DequeModule
import NIOCore
import NIOPosix
import Synchronization

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// A download's body between the upstream and a client slower than it, as nginx buffers a
/// proxied answer: the upstream's bytes are taken as fast as they come, and those the client has
/// not taken yet wait in memory (up to `memoryBytes`) and then in an unlinked temporary file, so
/// the upstream exchange, and the account's slot it holds, ends when the upstream has sent the
/// answer, not when a slow client has read it. The file's bytes count against a budget shared by
/// every download (a `MemoryBudget` of disk, `GatewayApp.spoolBudget`); when it is full, or the
/// file cannot be written, the pipe holds what memory allows and the upstream waits for the
/// client, as without a spool.
///
/// One task pushes (`push`, then `finish`), one takes (`next`); bytes come out in the order they
/// went in: a part goes to memory only while the file holds nothing untaken, so what memory holds
/// is always older than what the file holds.
final class SpoolPipe: Sendable {
    struct Settings: Sendable {
        /// The directory the temporary file is made in (and unlinked from at once).
        var directory: String
        /// What the files of every download may hold at once (`limits.spool_max_bytes`).
        var capacity: Int
        /// What a download's pipe holds in memory before its file takes the rest.
        var memoryBytes = 262_144
        /// A file all of whose bytes have been taken starts again from nothing (its room given
        /// back) once it has grown this large; a smaller one is appended to.
        var rewindBytes = 4 << 20
    }

    private struct State {
        var memory: Deque<ByteBuffer> = []
        var memoryBytes = 0
        /// The file, once made (-1 before; `fileFailed` when it could not be, or written).
        var descriptor: CInt = -1
        var fileFailed = false
        /// Bytes written to the file, and bytes of it taken (since it last started again).
        var written = 0
        var taken = 0
        /// Bytes that went through the file, all told.
        var spooled = 0
        /// Bytes held under the budget for the file.
        var reserved = 0
        var ended = false
        var failure: (any Error)?
        var closed = false
        /// A side waiting for the other: the taker for bytes, the pusher for room.
        var taker: CheckedContinuation<Void, Never>?
        var pusher: CheckedContinuation<Void, Never>?
    }

    private let state = Mutex(State())
    private let settings: Settings
    private let budget: MemoryBudget
    private let pool: NIOThreadPool

    init(settings: Settings, budget: MemoryBudget, pool: NIOThreadPool = .singleton) {
        self.settings = settings
        self.budget = budget
        self.pool = pool
    }

    /// The bytes of the download that went through the file so far.
    var spooled: Int { state.withLock { $0.spooled } }

    /// Takes `part` in: to memory when it fits there and the file holds nothing untaken, else to
    /// the file when the budget has room; else waits for the taker to make room. Throws the
    /// task's cancellation (the taker has gone).
    func push(_ part: ByteBuffer) async throws {
        while true {
            try Task.checkCancellation()
            enum Step { case done, file(CInt), rewind(CInt, reserved: Int), wait }
            let step: Step = state.withLock { state in
                if state.closed { return .done }
                let fileEmpty = state.taken == state.written
                if fileEmpty, state.memoryBytes == 0 || state.memoryBytes + part.readableBytes <= settings.memoryBytes {
                    state.memory.append(part)
                    state.memoryBytes += part.readableBytes
                    Self.wake(&state.taker)
                    return .done
                }
                if fileEmpty, state.written >= settings.rewindBytes, state.descriptor >= 0 {
                    // All the file held has been taken (and no read of it is under way, which
                    // would have left `taken` short): it starts again from nothing, its room given back.
                    defer { state.written = 0; state.taken = 0; state.reserved = 0 }
                    return .rewind(state.descriptor, reserved: state.reserved)
                }
                if !state.fileFailed {
                    if part.readableBytes <= settings.capacity, budget.tryReserve(part.readableBytes, capacity: settings.capacity) != nil {
                        state.reserved += part.readableBytes
                        return .file(state.descriptor)
                    }
                    if fileEmpty, state.written > 0, state.descriptor >= 0 {
                        // No room, and bytes of its own already taken hold some: given back.
                        defer { state.written = 0; state.taken = 0; state.reserved = 0 }
                        return .rewind(state.descriptor, reserved: state.reserved)
                    }
                }
                return .wait
            }
            switch step {
            case .done:
                return
            case .wait:
                await wait { $0.pusher = $1 }
            case .rewind(let descriptor, let reserved):
                let truncated = (try? await pool.runIfActive { ftruncate(descriptor, 0) == 0 }) ?? false
                if truncated {
                    budget.release(reserved)
                } else {
                    // Its blocks may still be on disk: they stay counted, and the file is used no more.
                    state.withLock { state in
                        state.fileFailed = true
                        state.reserved += reserved
                    }
                }
            case .file(var descriptor):
                if descriptor < 0 { descriptor = (try? await makeFile()) ?? -1 }
                let offset = state.withLock { $0.written }
                let wrote = descriptor >= 0 ? (try? await write(part, to: descriptor, at: offset)) != nil : false
                let stored: Bool = state.withLock { state in
                    // Closed meanwhile: `close` gave back all the room, this part's included.
                    if state.closed { return true }
                    if wrote {
                        state.written += part.readableBytes
                        state.spooled += part.readableBytes
                        Self.wake(&state.taker)
                        return true
                    }
                    // Not written (the disk full, say): the part waits in hand for memory.
                    state.fileFailed = true
                    state.reserved -= part.readableBytes
                    return false
                }
                if !stored { budget.release(part.readableBytes) }
                if stored { return }
            }
        }
    }

    /// No more parts: the taker gets the rest, then the end, or `failure`.
    func finish(_ failure: (any Error)? = nil) {
        state.withLock { state in
            state.ended = true
            state.failure = failure
            Self.wake(&state.taker)
        }
    }

    /// The next bytes, in order; nil at the end; throws the pusher's failure once all before it
    /// have been taken, or the task's cancellation.
    func next() async throws -> ByteBuffer? {
        while true {
            try Task.checkCancellation()
            enum Step { case part(ByteBuffer), read(CInt, offset: Int, count: Int), end, failed(any Error), wait }
            let step: Step = state.withLock { state in
                if let part = state.memory.popFirst() {
                    state.memoryBytes -= part.readableBytes
                    Self.wake(&state.pusher)
                    return .part(part)
                }
                if state.closed { return .failed(CancellationError()) }
                if state.taken < state.written {
                    return .read(state.descriptor, offset: state.taken, count: min(state.written - state.taken, Self.readSize))
                }
                if state.ended { return state.failure.map { .failed($0) } ?? .end }
                return .wait
            }
            switch step {
            case .part(let part):
                return part
            case .read(let descriptor, let offset, let count):
                let part = try await read(from: descriptor, at: offset, count: count)
                state.withLock { state in
                    state.taken += part.readableBytes
                    if state.taken == state.written { Self.wake(&state.pusher) }
                }
                return part
            case .end:
                return nil
            case .failed(let error):
                throw error
            case .wait:
                await wait { $0.taker = $1 }
            }
        }
    }

    /// Closes the file and gives its room back. Both sides must have ended.
    func close() {
        let (descriptor, reserved) = state.withLock { state -> (CInt, Int) in
            state.closed = true
            Self.wake(&state.taker)
            Self.wake(&state.pusher)
            defer { state.descriptor = -1; state.reserved = 0 }
            return (state.descriptor, state.reserved)
        }
        if descriptor >= 0 { closeDescriptor(descriptor) }
        budget.release(reserved)
    }

    private static let readSize = 65_536

    private static func wake(_ waiter: inout CheckedContinuation<Void, Never>?) {
        waiter?.resume()
        waiter = nil
    }

    /// Waits to be woken by the other side, or by the task's cancellation (the caller looks again
    /// either way).
    private func wait(_ register: @escaping (inout State, CheckedContinuation<Void, Never>) -> Void) async {
        await withTaskCancellationHandler {
            await withCheckedContinuation { continuation in
                let resumeNow = state.withLock { state -> Bool in
                    if Task.isCancelled || state.closed { return true }
                    register(&state, continuation)
                    return false
                }
                if resumeNow { continuation.resume() }
            }
        } onCancel: {
            state.withLock { state in
                Self.wake(&state.taker)
                Self.wake(&state.pusher)
            }
        }
    }

    /// An unlinked temporary file in the spool's directory: it goes with its descriptor, whatever
    /// ends the process.
    private func makeFile() async throws -> CInt {
        let directory = settings.directory
        let descriptor: CInt = try await pool.runIfActive {
            var template = Array((directory + "/.algogate-spool-XXXXXX").utf8CString)
            let descriptor = template.withUnsafeMutableBufferPointer { mkstemp($0.baseAddress!) }
            guard descriptor >= 0 else { throw IOError(errnoCode: errno, reason: "mkstemp") }
            template.withUnsafeBufferPointer { _ = unlink($0.baseAddress!) }
            return descriptor
        }
        let kept = state.withLock { state -> Bool in
            guard !state.closed, state.descriptor < 0 else { return false }
            state.descriptor = descriptor
            return true
        }
        if !kept {
            closeDescriptor(descriptor)
            throw CancellationError()
        }
        return descriptor
    }

    private func write(_ part: ByteBuffer, to descriptor: CInt, at offset: Int) async throws {
        try await pool.runIfActive {
            try part.withUnsafeReadableBytes { bytes in
                var done = 0
                while done < bytes.count {
                    let wrote = pwrite(descriptor, bytes.baseAddress! + done, bytes.count - done, off_t(offset + done))
                    if wrote < 0 {
                        if errno == EINTR { continue }
                        throw IOError(errnoCode: errno, reason: "pwrite")
                    }
                    done += wrote
                }
            }
        }
    }

    private func read(from descriptor: CInt, at offset: Int, count: Int) async throws -> ByteBuffer {
        try await pool.runIfActive {
            var buffer = ByteBufferAllocator().buffer(capacity: count)
            var done = 0
            while done < count {
                var read = 0
                buffer.writeWithUnsafeMutableBytes(minimumWritableBytes: count - done) { bytes in
                    read = pread(descriptor, bytes.baseAddress!, count - done, off_t(offset + done))
                    return max(0, read)
                }
                if read < 0 {
                    if errno == EINTR { continue }
                    throw IOError(errnoCode: errno, reason: "pread")
                }
                if read == 0 { throw IOError(errnoCode: EIO, reason: "pread: the spool file ended early") }
                done += read
            }
            return buffer
        }
    }
}

/// close(2), named apart from `SpoolPipe.close`, which hides it inside the class (on Glibc and Musl alike).
private func closeDescriptor(_ descriptor: CInt) {
    _ = close(descriptor)
}
