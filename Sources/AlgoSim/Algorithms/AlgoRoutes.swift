import Foundation
import Hummingbird
import NIOCore
import NIOPosix
import Synchronization

/// `POST /v1/algo/{owner}/{name}[/{version}]`: runs an algorithm the way Algorithmia does.
struct AlgoRoutes: Sendable {
    /// Algorithmia caps algorithm input at 10 MB.
    static let maxInputBytes = 10 << 20
    /// Algorithmia's default and maximum `timeout` query values, in seconds.
    static let defaultTimeout = 300
    static let maxTimeout = 3000

    let registry: AlgorithmRegistry
    let stats: SimStats

    func handle(_ request: Request, context: SimRequestContext, path: Substring) async throws -> Response {
        // `algo://o/n` and `/o/n` after `/v1/algo/` are `o/n`: the official Node clients put the
        // reference they are given into the path as it is (their README calls
        // `algo://demo/Hello/0.1.1`); the other clients strip either themselves.
        let given = path.hasPrefix("algo://") ? path.dropFirst(7) : path.hasPrefix("/") ? path.dropFirst() : path
        var segments = given.split(separator: "/", omittingEmptySubsequences: false).map(String.init)
        if segments.last == "" { segments.removeLast() }  // `/v1/algo/o/n/` is `/v1/algo/o/n`
        let called = segments.joined(separator: "/")
        // `/v1/algo/{id}[/{version}]`: an algorithm called by its id (Algorithmia's "invoke an
        // algorithm by UUID").
        if (1...2).contains(segments.count), let record = registry.record(id: segments[0]) {
            segments = [record.owner, record.name] + segments.dropFirst()
        }
        guard (2...3).contains(segments.count), segments.allSatisfy({ !$0.isEmpty }) else {
            throw SimError.notFound("algorithm algo://\(given) not found")
        }
        guard request.method == .post else {
            throw SimError.methodNotAllowed("algorithms are called with POST", allow: [.post])
        }
        let (owner, name) = (segments[0], segments[1])
        let versionText = segments.count == 3 ? segments[2] : nil
        let reference = "algo://\(owner)/\(name)" + (versionText.map { "/\($0)" } ?? "")
        stats.recordAlgoCall(called)

        let options = try Options(request.uri.queryParameters)
        let input = try await readInput(request, context: context)
        guard let version = registry.resolve(owner: owner, name: name, version: versionText) else {
            throw SimError.notFound("algorithm \(reference) not found")
        }

        if options.output == "void" {
            let algorithm = version.algorithm
            let sendableInput = SendableBox(input)
            let stats = stats
            stats.asyncRunStarted()
            Task.detached {
                defer { stats.asyncRunEnded() }
                _ = try? await algorithm.run(sendableInput.value, AlgoRun())
            }
            return Self.json(["async": "void", "request_id": "req-" + UUID().uuidString.lowercased()])
        }

        let started = ContinuousClock.now
        let run = AlgoRun()
        let outcome: Result<AlgoOutput, AlgoFailure>
        do {
            outcome = .success(try await Self.run(version.algorithm, input, run, timeoutSeconds: options.timeout))
        } catch let failure as AlgoFailure {
            outcome = .failure(failure)
        }
        let elapsed = ContinuousClock.now - started
        let duration = Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18

        switch outcome {
        case .failure(let failure):
            var error: [String: Any] = ["message": failure.message, "error_type": failure.errorType]
            if let trace = failure.stackTrace { error["stack_trace"] = trace }
            // The official Python client (2.0.5) only turns an error into AlgorithmException, with
            // its error_type and stack trace, when it arrives in a 2xx; raw output reads 400 as an error.
            if options.output == "raw" {
                return Self.json(["error": error], status: .badRequest)
            }
            return Self.json(["error": error, "metadata": ["duration": duration]])
        case .success(let output):
            if options.output == "raw" { return Self.raw(output) }
            var metadata: [String: Any] = ["content_type": output.contentType, "duration": duration]
            if options.stdout { metadata["stdout"] = run.stdout }
            let result: Any = switch output {
            case .json(let value): value
            case .text(let text): text
            case .binary(let bytes): Data(bytes).base64EncodedString()
            }
            return Self.json(["result": result, "metadata": metadata])
        }
    }

    struct Options {
        var timeout = AlgoRoutes.defaultTimeout
        var stdout = false
        var output: String?

        init(_ query: Parameters) throws {
            if let text = query.get("timeout") {
                guard let value = Int(text), (0...AlgoRoutes.maxTimeout).contains(value) else {
                    throw SimError.badRequest("timeout must be a whole number of seconds from 0 to \(AlgoRoutes.maxTimeout) (0 is the default, \(AlgoRoutes.defaultTimeout))")
                }
                // 0 is the default, as the gateway reads it (`AlgoOptions.timeout`): the Java
                // client sends it for a timeout set in minutes or hours.
                if value > 0 { timeout = value }
            }
            if let text = query.get("stdout") {
                guard let value = Bool(text.lowercased()) else { throw SimError.badRequest("stdout must be true or false") }
                stdout = value
            }
            if let text = query.get("output") {
                guard ["raw", "void", "default"].contains(text) else { throw SimError.badRequest("output must be raw or void") }
                output = text == "default" ? nil : text
            }
        }
    }

    private func readInput(_ request: Request, context: SimRequestContext) async throws -> AlgoInput {
        let body: ByteBuffer
        do {
            body = try await request.body.collect(upTo: Self.maxInputBytes)
        } catch is NIOTooManyBytesError {
            throw SimError(.contentTooLarge, "algorithm input exceeds the 10 MB limit", errorType: "InputError")
        }
        let mediaType = request.headers[.contentType]?.split(separator: ";").first?
            .trimmingCharacters(in: .whitespaces).lowercased() ?? "application/octet-stream"
        switch mediaType {
        case "application/json":
            guard let value = JSON.parse(body) else { throw SimError.badRequest("input is not valid JSON") }
            return .json(value)
        case "text/plain", "application/text":  // the second as Algorithmia's API reference names it
            return .text(String(buffer: body))
        case "application/octet-stream":
            return .binary(Array(body.readableBytesView))
        default:
            throw SimError(.unsupportedMediaType, "unsupported Content-Type \(mediaType): use application/json, text/plain or application/octet-stream", errorType: "InputError")
        }
    }

    /// Runs the algorithm, cancelled after `timeoutSeconds`. The timer is an event loop's scheduled
    /// task, which is removed when cancelled: a sleeping task racing each call would keep its
    /// timer (and about 700 bytes) alive for the whole timeout, 300 s by default, after every call.
    /// A run that ends after its time is up is a timeout too, even if the timer fired late (its
    /// event loop busy, or its CPU taken away by the host): the answer never depends on which
    /// thread got to run first.
    static func run(_ algorithm: any SimAlgorithm, _ input: AlgoInput, _ run: AlgoRun, timeoutSeconds: Int) async throws -> AlgoOutput {
        func timeout() -> AlgoFailure {
            AlgoFailure(message: "algorithm timed out after \(timeoutSeconds) seconds", errorType: "AlgorithmTimeoutError")
        }
        let deadline = ContinuousClock.now + .seconds(timeoutSeconds)
        let box = SendableBox(input)
        let task = Task { SendableBox(try await algorithm.run(box.value, run)) }
        let timedOut = Atomic<Bool>(false)
        let timer = MultiThreadedEventLoopGroup.singleton.any().scheduleTask(in: .seconds(Int64(timeoutSeconds))) {
            timedOut.store(true, ordering: .relaxed)
            task.cancel()
        }
        defer { timer.cancel() }
        let output: AlgoOutput
        do {
            output = try await withTaskCancellationHandler { try await task.value.value } onCancel: { task.cancel() }
        } catch {
            if timedOut.load(ordering: .relaxed) { throw timeout() }
            throw error
        }
        guard ContinuousClock.now < deadline else { throw timeout() }
        return output
    }

    static func json(_ object: Any, status: HTTPResponse.Status = .ok) -> Response {
        Response(status: status, headers: [.contentType: "application/json"], body: .init(byteBuffer: JSON.buffer(object)))
    }

    private static func raw(_ output: AlgoOutput) -> Response {
        switch output {
        case .json(let value): json(value)
        case .text(let text):
            Response(status: .ok, headers: [.contentType: "text/plain"], body: .init(byteBuffer: ByteBuffer(string: text)))
        case .binary(let bytes):
            Response(status: .ok, headers: [.contentType: "application/octet-stream"], body: .init(byteBuffer: ByteBuffer(bytes: bytes)))
        }
    }
}

/// Carries an algorithm's JSON-shaped (`Any`) value into or out of a child task.
/// `@unchecked` is sound here: the value is built before the task starts and never mutated after.
struct SendableBox<Value>: @unchecked Sendable {
    let value: Value
    init(_ value: Value) { self.value = value }
}
