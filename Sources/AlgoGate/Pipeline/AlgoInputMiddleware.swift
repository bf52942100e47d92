import Hummingbird
import NIOCore

/// Reads an algorithm call's input, bounded by `limits.max_request_bytes` (413 before anything
/// reaches the upstream, chunked bodies included), inflates it when it arrives gzip- or
/// deflate-encoded (the inflated size counts against the same bound, and inflation stops there),
/// and keeps data URIs inside it within the client's `data_prefixes`, so an algorithm cannot be
/// used to read another team's files. Before reading, it reserves the input's size in the
/// `MemoryBudget` (`limits.max_buffered_bytes`), held until the answer is ready; no one client's
/// inputs take the bound's last `max_request_bytes` (`share(of:)`), and the input must then
/// arrive whole within `limits.input_timeout_seconds` (408).
struct AlgoInputMiddleware: RouterMiddleware {
    typealias Context = GatewayRequestContext
    let limits: @Sendable () -> GatewayConfig.Limits
    let budget: MemoryBudget
    let queueTimeout: @Sendable () -> Duration

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        guard case .algo = context.route else { return try await next(request, context) }
        let (request, held) = try await read(request, context: context)
        defer { budget.release(held, client: context.client?.name) }
        return try await next(request, context)
    }

    /// The 503 for an input that found no room within `waited`, saying what held it back as
    /// things stand when its time runs out: its own client's share (when it is less than the
    /// whole bound), or the whole bound.
    private static func busy(client: String?, bytes: Int, share: Int?, budget: MemoryBudget, waited: Duration) -> GatewayError {
        let why = if let client, let share, budget.held(by: client) + bytes > share {
            "client '\(client)' holds its share of the memory the gateway gives algorithm inputs (limits.max_buffered_bytes but for the last max_request_bytes, kept for the other clients) with inputs waiting for their calls"
        } else {
            "the algorithm inputs the gateway holds in memory are at their limit (limits.max_buffered_bytes)"
        }
        return GatewayError(status: .serviceUnavailable, errorType: "GatewayBusy",
                            message: "\(why), and this one did not fit within \(waited.components.seconds) s; retry shortly",
                            headers: [.retryAfter: "1"])
    }

    /// The most of the bound one client's inputs hold at once: all but the last `limit` bytes
    /// (`max_request_bytes`), kept for the other clients' inputs. A client whose calls queue
    /// (behind its own `max_concurrent`, or a busy account) would otherwise fill the bound with
    /// inputs waiting for its own slots, and every other client's call would wait behind them for
    /// room, then get 503, with the account's free slots unused. A bound too small to keep that
    /// room beside an input (under twice `max_request_bytes`) is shared as before.
    static func share(of capacity: Int, limit: Int) -> Int {
        max(capacity - limit, limit)
    }

    /// The request with its input read (and inflated, and checked), and the bytes it holds in
    /// the budget, for the caller to release once the answer is ready. Not inlined into `handle`,
    /// whose frame would otherwise hold all of this while the call waits (see
    /// `CacheMiddleware.handle`).
    @inline(never)
    private func read(_ request: Request, context: Context) async throws -> (Request, held: Int) {
        // The method first: a call that is not a POST is refused the same way for every client,
        // whatever its input (and before the quota step counts it).
        guard request.method == .post else {
            throw GatewayError.methodNotAllowed("algorithms are called with POST", allow: [.post])
        }
        _ = try AlgoOptions.parse(request.uri.query)
        let limits = limits()
        let limit = limits.maxRequestBytes
        let tooLarge = GatewayError.tooLarge("algorithm input exceeds the \(limit)-byte limit (limits.max_request_bytes)")
        if let length = request.headers.value(.contentLength).flatMap(Int.init), length > limit { throw tooLarge }
        // The input's type decides how the upstream reads it and what is checked here: it must be one.
        if request.headers[values: .contentType].count > 1 {
            throw GatewayError.badRequest("send one Content-Type: an algorithm input is application/json, text/plain or application/octet-stream")
        }
        var request = request
        let coding = try ContentCoding.of(contentEncoding: request.headers.value(.contentEncoding))
        // The size the input will take: as declared, or the limit when it is not known before it
        // is read (chunked, or compressed: it may inflate up to the limit).
        let declared = request.headers.value(.transferEncoding) == nil ? request.headers.value(.contentLength).flatMap(Int.init) ?? 0 : nil
        let timeout = queueTimeout()
        let client = context.client?.name
        let bytes = coding == nil ? declared ?? limit : limit
        let share = Self.share(of: limits.maxBufferedBytes, limit: limit)
        var held = try await budget.reserve(bytes, capacity: limits.maxBufferedBytes, client: client, share: share, timeout: timeout,
                                            busy: Self.busy(client: client, bytes: bytes, share: share < limits.maxBufferedBytes ? share : nil, budget: budget,
                                                             waited: timeout))
        var handedOver = false
        defer { if !handedOver { budget.release(held, client: client) } }
        // The room is held from now: the input must arrive whole within the input timeout, or a
        // client trickling its input (a byte now and then keeps the idle timeout away) would hold
        // it for as long as it liked.
        let arrivalTimeout = limits.inputTimeoutSeconds
        await ConnectionPersistenceHandler.boundArrival(on: context.channel, by: .now() + .seconds(Int64(arrivalTimeout)))
        var body: ByteBuffer
        do {
            body = try await request.body.collect(upTo: limit)
        } catch is NIOTooManyBytesError {
            throw tooLarge
        } catch let late as InputArrivalTimeout {
            // How much had come tells a slow link (the limit too low for it) from a client that stalled.
            let sent = "\(late.received)\(declared.map { " of its \($0)" } ?? "") bytes"
            throw GatewayError.inputTimeout("algorithm input did not arrive whole within \(arrivalTimeout) s (limits.input_timeout_seconds): \(sent) had arrived")
        }
        if let coding {
            do {
                let compressed = body
                body = try await BodyWork.run(over: compressed.readableBytes) { try Inflater.inflateAll(compressed, coding: coding, limit: limit) }
            } catch is Inflater.LimitExceeded {
                throw GatewayError.tooLarge("algorithm input inflates past the \(limit)-byte limit (limits.max_request_bytes)")
            } catch {
                throw GatewayError.badRequest("algorithm input is not valid \(coding.rawValue) data")
            }
            // From here on the input is plain: the upstream expects plain bodies.
            var head = request.head
            head.headerFields[.contentEncoding] = nil
            head.headerFields[.contentLength] = String(body.readableBytes)
            request = Request(head: head, body: request.body)
        }
        if let client = context.client, client.dataPrefixes != nil {
            let input = body, contentType = request.headers.value(.contentType)
            try await BodyWork.run(over: input.readableBytes) { try Self.checkDataReferences(in: input, contentType: contentType, client: client) }
        }
        if body.readableBytes < held {
            budget.release(held - body.readableBytes, client: client)
            held = body.readableBytes
        }
        request.body = .init(buffer: body)
        handedOver = true
        return (request, held)
    }

    /// Keeps the data URIs in a (plain) input within the client's `data_prefixes`, if it has any.
    /// An empty input names nothing, whatever its type says.
    static func checkDataReferences(in body: ByteBuffer, contentType: String?, client: ClientIdentity) throws {
        guard let prefixes = client.dataPrefixes, body.readableBytes > 0 else { return }
        let references: [DataReferences.Reference]
        do {
            references = try DataReferences.find(in: body, contentType: contentType)
        } catch .json {
            // Fail closed: what this parser refuses, the upstream's may still read.
            throw GatewayError.badRequest("algorithm input is not JSON the gateway can read (invalid, or nested too deeply), so its data URIs cannot be checked against client '\(client.name)' data prefixes")
        } catch .charset(let charset) {
            throw GatewayError(status: .unsupportedMediaType, errorType: "InputError",
                               message: "algorithm input in charset \(charset) cannot be checked against client '\(client.name)' data prefixes: send it in UTF-8")
        } catch .mediaType(let mediaType) {
            throw GatewayError(status: .unsupportedMediaType, errorType: "InputError",
                               message: "algorithm input \(mediaType.map { "of type \($0)" } ?? "without a Content-Type") cannot be checked against client '\(client.name)' data prefixes: send application/json, text/plain or application/octet-stream")
        }
        for reference in references {
            switch reference {
            case .unreadable(let reason):
                throw GatewayError.forbidden("algorithm input holds a data URI that cannot be checked safely: \(reason)")
            case .location(let uri):
                guard prefixes.contains(where: uri.isWithin) else {
                    throw GatewayError.forbidden("algorithm input references \(uri), outside client '\(client.name)' data prefixes \(DataURI.naming(prefixes))")
                }
            }
        }
    }
}
