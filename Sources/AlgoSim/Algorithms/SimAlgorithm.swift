import Foundation

/// An algorithm's input, typed by the request's Content-Type as Algorithmia does.
enum AlgoInput {
    case json(Any)
    case text(String)
    case binary([UInt8])
}

/// An algorithm's result; `content_type` in the response metadata follows the case.
enum AlgoOutput {
    case json(Any)
    case text(String)
    case binary([UInt8])

    var contentType: String {
        switch self {
        case .json: "json"
        case .text: "text"
        case .binary: "binary"
        }
    }
}

/// What an algorithm sees besides its input: a place to print to (returned as `stdout` when asked).
final class AlgoRun: @unchecked Sendable {
    // Only the task running the algorithm touches `stdout`; the handler reads it after that task
    // has finished, so there is no concurrent access.
    var stdout = ""
    func print(_ line: String) { stdout += line + "\n" }
}

/// An error raised by an algorithm, reported in the `error` envelope with its type and trace.
struct AlgoFailure: Error {
    var message: String
    var errorType: String = "AlgorithmError"
    var stackTrace: String?
}

/// One runnable algorithm version.
protocol SimAlgorithm: Sendable {
    func run(_ input: AlgoInput, _ run: AlgoRun) async throws -> AlgoOutput
}
