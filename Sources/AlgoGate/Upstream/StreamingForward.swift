import AsyncHTTPClient
import HTTPTypes
import Hummingbird
import NIOCore

// Data, connector and management requests: bodies that stream in both directions, so the rest of
// the forwarder only ever holds algorithm inputs and answers, which are read whole.
extension Forwarder {
    /// A compressed upload that turns out corrupt or truncated as it streams: the client's bytes,
    /// so a 400, whenever it is found (even once part of it has gone upstream).
    static let corruptUpload = GatewayError.badRequest("the request body is not valid compressed data for its Content-Encoding")

    /// Forwards any other request with its body streaming in both directions. A bodiless GET, HEAD
    /// or OPTIONS whose connection was lost before an answer is sent once more (`onRetry` is told).
    ///
    /// `upstreamEnded` is called once the upstream has sent all of a streamed answer (or failed
    /// to): with a spool (`SpoolPipe`), that can be well before a slow client has read it.
    @inline(never)
    func forwardStreaming(_ request: Request, path: String, context: GatewayRequestContext, upstreamEnded: (@Sendable () -> Void)? = nil,
                          onRetry: @Sendable () -> Void = {}) async throws -> Response {
        // Split as `forwardAlgo` is, for the same reason.
        let settings = settings()
        let (upstream, hasBody, upload) = try streamingRequest(request, path: path, settings: settings, context: context)
        let replayable = !hasBody && [.get, .head, .options].contains(request.method)
        // A request with a body streams it from the client: the time it takes to arrive is the
        // client's (a 1 GB upload may take longer than any timeout), so no deadline runs from the
        // request's start. Once it has all been sent, the read timeout gives the upstream
        // `upstream.timeout_seconds` (and the grace) to answer.
        let deadline: NIODeadline = hasBody ? .distantFuture : .now() + .seconds(Int64(settings.timeoutSeconds))
        let response = try await execute(upstream, upstream: settings.origin, deadline: deadline, timeoutSeconds: settings.timeoutSeconds,
                                         facts: context.facts, replayable: replayable,
                                         upload: upload, onRetry: onRetry)
        return try await streamedAnswer(response, to: request, path: path, settings: settings, context: context, upstreamEnded: upstreamEnded)
    }

    /// The upstream request, whether it has a body, and the body as it streams from the client.
    @inline(never)
    private func streamingRequest(_ request: Request, path: String, settings: Settings,
                                  context: GatewayRequestContext) throws -> (HTTPClientRequest, hasBody: Bool, UploadRelay?) {
        var upstream = makeRequest(request, path: path, query: request.uri.query, settings: settings, context: context)
        let length = request.headers.value(.contentLength).flatMap(Int64.init)
        let hasBody = (length ?? 0) > 0 || request.headers.value(.transferEncoding) != nil
        var upload: UploadRelay?
        if hasBody {
            let coding = try ContentCoding.of(contentEncoding: request.headers.value(.contentEncoding))
            // Settled by `ErrorMiddleware` once the answer has been sent (see `UploadRelay`).
            let relay = UploadRelay(request.body, declaredLength: length)
            // The slot is held from here: the upload must keep coming (`UploadRelay`).
            relay.keep(to: settings.uploadMinimumRate.applying(to: context.client), on: context.channel)
            context.facts.upload = relay
            upload = relay
            if let coding {
                // Compressed uploads are inflated as they stream; the upstream expects plain bodies.
                upstream.headers.remove(name: "Content-Encoding")
                upstream.body = .stream(InflatingSequence(base: relay, coding: coding, limit: .max, corrupt: Self.corruptUpload), length: .unknown)
            } else {
                upstream.body = .stream(relay, length: length.map { .known($0) } ?? .unknown)
            }
        }
        return (upstream, hasBody, upload)
    }

    /// The response for a streamed request's upstream answer (see `forwardStreaming`).
    @inline(never)
    private func streamedAnswer(_ response: HTTPClientResponse, to request: Request, path: String, settings: Settings,
                                context: GatewayRequestContext, upstreamEnded: (@Sendable () -> Void)?) async throws -> Response {
        var headers = HeaderPolicy.downstreamResponse(response.headers.map { ($0.name, $0.value) })
        var contentLength = response.headers.first(name: "content-length").flatMap(Int.init)
        let status = HTTPResponse.Status(code: Int(response.status.code), reasonPhrase: response.status.reasonPhrase)
        let coding = try? ContentCoding.of(contentEncoding: headers.value(.contentEncoding))
        // A 204 or 304 has no body to inflate, whatever coding it names (a 304 names its 200's,
        // and says what that 200 becomes here: its fields are recoded alike).
        let hasBody = status.code >= 200 && status.code != 204 && status.code != 304
        let upstreamCoding = hasBody ? coding : nil
        if coding != nil {
            headers[.contentEncoding] = nil
            contentLength = nil
            // Ranges stay: a request for one asks the upstream for plain bytes.
            HeaderPolicy.contentRecoded(&headers, rangesStay: true)
        }
        let keyGuard = KeyEchoGuard(key: settings.key)
        try await refuseEchoedKey(keyGuard, headers: headers, context: context)
        let links = linkRewriter(request, settings)
        links?.rewriteLinkFields(&headers)
        if request.method == .head {
            // A HEAD answer has no body but reports the size the GET would have.
            if let contentLength { headers[.contentLength] = String(contentLength) }
            return Response(status: status, headers: headers, body: .init())
        }
        var answer = Answer(status: status, headers: headers, contentLength: contentLength, keyGuard: keyGuard,
                            links: links.flatMap { LinkRewriter.rewritesBody(path: path, headers: headers) ? $0 : nil })
        if let spool = settings.spool, let spoolBudget { answer.spool = (spool, spoolBudget, upstreamEnded) }
        if let upstreamCoding {
            return try await respond(answer, parts: InflatingSequence(base: response.body, coding: upstreamCoding, limit: .max,
                                                                      corrupt: .badGateway("the upstream sent a corrupt \(upstreamCoding.rawValue) body")),
                                     readsFirstPart: true, timeoutSeconds: settings.timeoutSeconds, context: context)
        }
        return try await respond(answer, parts: response.body, timeoutSeconds: settings.timeoutSeconds, context: context)
    }

    /// A streamed upstream answer, as it will be sent: `links` is set when its body's links are
    /// rewritten (`LinkRewriter.rewritesBody`).
    private struct Answer {
        var status: HTTPResponse.Status
        var headers: HTTPFields
        var contentLength: Int?
        var keyGuard: KeyEchoGuard
        var links: LinkRewriter?
        /// Where its body waits for a slow client, and who is told when the upstream has sent it all.
        var spool: (settings: SpoolPipe.Settings, budget: MemoryBudget, upstreamEnded: (@Sendable () -> Void)?)?
    }

    /// The response for an upstream answer whose body arrives as `parts` (inflated already).
    ///
    /// A management answer is read ahead, up to `LinkRewriter.maxBodyBytes`, whatever its framing
    /// (the upstream may gzip it, or send it chunked, so its size is often unknown). One that ends
    /// within that is rewritten and sent whole, with its length; a larger one is rewritten as it
    /// streams (what was read ahead first) and sent chunked. Other answers stream as they came.
    /// What streams goes a chunk behind the upstream, for the key check. `readsFirstPart` (an
    /// inflated answer): its first part is read before the status is sent, so one that is corrupt
    /// from its first bytes is a 502; one found corrupt later can only be cut short.
    private func respond<Parts: AsyncSequence & Sendable>(_ answer: Answer, parts: Parts, readsFirstPart: Bool = false, timeoutSeconds: Int,
                                                           context: GatewayRequestContext) async throws -> Response
    where Parts.Element == ByteBuffer {
        var iterator = parts.makeAsyncIterator()
        var readAhead: ByteBuffer?
        var headers = answer.headers
        var contentLength = answer.contentLength
        if let links = answer.links, (contentLength ?? 0) <= LinkRewriter.maxBodyBytes {
            var whole = ByteBuffer()
            var ended = false
            do {
                while whole.readableBytes <= LinkRewriter.maxBodyBytes {
                    guard var part = try await iterator.next() else {
                        ended = true
                        break
                    }
                    whole.writeBuffer(&part)
                }
            } catch {
                throw failure(error, timeoutSeconds: timeoutSeconds)
            }
            if ended {
                let whole = whole
                try await refuseEchoedKey(answer.keyGuard, headers: HTTPFields(), body: whole, context: context)  // fields checked already
                let rewritten = try await BodyWork.run(over: whole.readableBytes) { links.rewrite(whole) }
                var headers = answer.headers
                headers[.contentLength] = String(rewritten.readableBytes)
                return Response(status: answer.status, headers: headers, body: .init(byteBuffer: rewritten))
            }
            readAhead = whole
        } else if readsFirstPart {
            let first: ByteBuffer?
            do {
                first = try await iterator.next()
            } catch {
                throw failure(error, timeoutSeconds: timeoutSeconds)
            }
            guard let first else { return Response(status: answer.status, headers: headers, body: .init()) }
            readAhead = first
        }
        if answer.links != nil {
            // Rewritten as it streams: its length is known only once it has all been sent.
            headers[.contentLength] = nil
            contentLength = nil
        }
        context.facts.streamsResponse = true
        let rest = Handoff(iterator)
        let keyGuard = answer.keyGuard
        let ahead = readAhead
        let links = answer.links
        // An answer small enough to wait in the pipe's memory whole needs none.
        let spool = answer.spool.flatMap { (contentLength ?? .max) > $0.settings.memoryBytes ? $0 : nil }
        let body = ResponseBody(contentLength: contentLength) { writer in
            // Sent a chunk behind the upstream, so a key across two chunks is caught before any of it goes.
            var checked = KeyEchoGuard.Stream(keyGuard)
            var rewriting = links.map(LinkRewriter.Stream.init)
            do {
                if let ahead, let ready = try checked.pass(ahead), let out = rewriting.passing(ready) { try await writer.write(out) }
                if let spool {
                    // The upstream's bytes are taken as they come, by a task of their own, and wait
                    // in the pipe for the client; the exchange ends when the upstream has sent them.
                    // That task checks them for the key, so none that hold it reach the disk: the
                    // check goes with it, and this side's starts again with nothing held.
                    let pipe = SpoolPipe(settings: spool.settings, budget: spool.budget)
                    defer {
                        context.facts.spooledBytes = pipe.spooled
                        pipe.close()
                    }
                    let handed = checked
                    checked = KeyEchoGuard.Stream(keyGuard)
                    try await withThrowingTaskGroup(of: Void.self) { group in
                        group.addTask {
                            var parts = rest.take()
                            var checked = handed
                            do {
                                while let part = try await parts.next() {
                                    if let ready = try checked.pass(part) { try await pipe.push(ready) }
                                }
                                if let last = checked.finish() { try await pipe.push(last) }
                                pipe.finish()
                            } catch {
                                pipe.finish(error)
                            }
                            spool.upstreamEnded?()
                        }
                        while let part = try await pipe.next() {
                            if let out = rewriting.passing(part) { try await writer.write(out) }
                        }
                        try await group.waitForAll()
                    }
                } else {
                    var parts = rest.take()
                    while let part = try await parts.next() {
                        if let ready = try checked.pass(part), let out = rewriting.passing(ready) { try await writer.write(out) }
                    }
                }
            } catch let error as GatewayError where error == KeyEchoGuard.withheld {
                withheld(context)
                throw error
            }
            if let last = checked.finish(), let out = rewriting.passing(last) { try await writer.write(out) }
            if let held = rewriting?.finish() { try await writer.write(held) }
            try await writer.finish(nil)
        }
        return Response(status: answer.status, headers: headers, body: body)
    }

    /// Where links to the upstream in this request's answer are pointed instead, if anywhere.
    private func linkRewriter(_ request: Request, _ settings: Settings) -> LinkRewriter? {
        LinkRewriter(upstreamOrigin: settings.origin,
                     gatewayOrigin: LinkRewriter.gatewayOrigin(publicURL: settings.publicURL, tls: settings.tls, request: request))
    }
}

/// An upstream answer's body iterator, handed from the request handler (which read ahead of it)
/// to the response body's writer (which goes on with it). Hummingbird runs the writer once, after
/// the handler has returned, so the iterator is never used by two tasks at once.
private final class Handoff<Iterator>: @unchecked Sendable {
    private let iterator: Iterator
    init(_ iterator: Iterator) { self.iterator = iterator }
    func take() -> Iterator { iterator }
}
