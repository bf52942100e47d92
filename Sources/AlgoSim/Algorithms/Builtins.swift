import Foundation

/// `demo/Hello`: "Hello " followed by the input text.
struct Hello: SimAlgorithm {
    func run(_ input: AlgoInput, _ run: AlgoRun) async throws -> AlgoOutput {
        let name: String
        switch input {
        case .text(let text): name = text
        case .json(let value as String): name = value
        case .json(let value):
            throw AlgoFailure(message: "Expected STRING but was \(type(of: value))", errorType: "InputError")
        case .binary:
            throw AlgoFailure(message: "Expected STRING but was binary", errorType: "InputError")
        }
        run.print("Saying hello to \(name)")
        return .text("Hello " + name)
    }
}

/// `nlp/LDA`: `{"docsList":[…],"numTopics":N}` → one word→count object per topic. Not real topic
/// modelling: words are counted, stop words dropped, and dealt to topics by frequency rank, which
/// keeps the result deterministic (and so cacheable) like a pinned real model.
struct LDA: SimAlgorithm {
    static let stopWords: Set<String> = ["a", "an", "and", "are", "as", "at", "be", "by", "for", "from", "in", "is", "it", "of", "on", "or", "that", "the", "this", "to", "was", "were", "with"]

    func run(_ input: AlgoInput, _ run: AlgoRun) async throws -> AlgoOutput {
        guard case .json(let value) = input, let object = value as? [String: Any],
              let docs = object["docsList"] as? [String] else {
            throw AlgoFailure(message: "Expected input {\"docsList\": [string, ...]}", errorType: "InputError")
        }
        let topics = max(1, min((object["numTopics"] as? Int) ?? 2, 50))
        var counts: [String: Int] = [:]
        for doc in docs {
            let words = doc.lowercased().split { !$0.isLetter && !$0.isNumber }.map(String.init)
            for word in words where word.count > 1 && !Self.stopWords.contains(word) {
                counts[word, default: 0] += 1
            }
        }
        let ranked = counts.sorted { $0.value != $1.value ? $0.value > $1.value : $0.key < $1.key }
        var result = Array(repeating: [String: Int](), count: topics)
        for (index, entry) in ranked.enumerated() { result[index % topics][entry.key] = entry.value }
        return .json(result)
    }
}

/// `util/Echo`: returns its input with the same content type, binary included.
struct Echo: SimAlgorithm {
    func run(_ input: AlgoInput, _ run: AlgoRun) async throws -> AlgoOutput {
        switch input {
        case .json(let value): .json(value)
        case .text(let text): .text(text)
        case .binary(let bytes): .binary(bytes)
        }
    }
}

/// `test/Sleep`: sleeps the given number of milliseconds (JSON number or text).
struct Sleep: SimAlgorithm {
    func run(_ input: AlgoInput, _ run: AlgoRun) async throws -> AlgoOutput {
        let milliseconds: Int?
        switch input {
        case .json(let value as Int): milliseconds = value
        case .json(let value as Double): milliseconds = Int(value)
        case .text(let text): milliseconds = Int(text.trimmingCharacters(in: .whitespacesAndNewlines))
        default: milliseconds = nil
        }
        guard let milliseconds, (0...3_000_000).contains(milliseconds) else {
            throw AlgoFailure(message: "Expected a number of milliseconds between 0 and 3000000", errorType: "InputError")
        }
        try await Task.sleep(for: .milliseconds(milliseconds))
        return .json(["slept_ms": milliseconds])
    }
}

/// `test/Fail`: always raises an algorithm error, with the input in its message.
struct Fail: SimAlgorithm {
    func run(_ input: AlgoInput, _ run: AlgoRun) async throws -> AlgoOutput {
        var detail = ""
        if case .text(let text) = input { detail = ": " + text }
        if case .json(let value as String) = input { detail = ": " + value }
        throw AlgoFailure(
            message: "test/Fail always fails\(detail)",
            errorType: "AlgorithmError",
            stackTrace: "Traceback (most recent call last):\n  File \"src/Fail.py\", line 3, in apply\n    raise AlgorithmError(message)\nAlgorithmError: test/Fail always fails"
        )
    }
}

/// `test/Big`: returns N bytes of text (N as JSON number or text), for output-size limits.
struct Big: SimAlgorithm {
    static let maximum = 64 << 20

    func run(_ input: AlgoInput, _ run: AlgoRun) async throws -> AlgoOutput {
        let size: Int?
        switch input {
        case .json(let value as Int): size = value
        case .text(let text): size = Int(text.trimmingCharacters(in: .whitespacesAndNewlines))
        default: size = nil
        }
        guard let size, (0...Self.maximum).contains(size) else {
            throw AlgoFailure(message: "Expected a byte count between 0 and \(Self.maximum)", errorType: "InputError")
        }
        let pattern = Array("abcdefghijklmnopqrstuvwxyz0123456789\n".utf8)
        var bytes = [UInt8](repeating: 0, count: size)
        for index in 0..<size { bytes[index] = pattern[index % pattern.count] }
        return .text(String(decoding: bytes, as: UTF8.self))
    }
}
