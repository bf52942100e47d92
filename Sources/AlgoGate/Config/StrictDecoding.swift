import Yams
/// Codable helpers that make config decoding refuse what it does not know, naming the field.

struct AnyCodingKey: CodingKey {
    var stringValue: String
    var intValue: Int?
    init(stringValue: String) { self.stringValue = stringValue }
    init?(intValue: Int) { self.stringValue = String(intValue); self.intValue = intValue }
}

extension Decoder {
    /// Throws for any key of this mapping that `Keys` does not list, so a typo in the config
    /// (`max_concurency`) stops start-up instead of silently falling back to a default.
    ///
    /// Decoded with a `ConfigProblems` in `userInfo` (as `ConfigLoader` does), each unknown key is
    /// written down there instead and decoding goes on, so that one run names every mistake.
    func rejectUnknownKeys<Keys: CodingKey & CaseIterable>(_: Keys.Type) throws {
        let container = try container(keyedBy: AnyCodingKey.self)
        let known = Set(Keys.allCases.map(\.stringValue))
        // Yams gives a mapping's keys in the file's order.
        for key in container.allKeys where !known.contains(key.stringValue) {
            // A long name with digits in it is likelier a key pasted in the wrong place than a
            // field's name, and the message reaches logs: it is not shown.
            let name = key.stringValue
            if name.count >= 16 && name.contains(where: \.isNumber) {
                let hidden = AnyCodingKey(stringValue: "<\(name.count) characters>")
                try noteOrThrow(ConfigError(field: ConfigError.describe(codingPath + [hidden]),
                                            message: "unknown field; its name is not shown, since one that long with digits in it may be a secret pasted in the wrong place"))
                continue
            }
            let near = ConfigError.nearestFields(to: name, among: Keys.allCases.map(\.stringValue))
            let hint = near.isEmpty ? "" : "; did you mean \(near.joined(separator: " or "))?"
            try noteOrThrow(ConfigError(field: ConfigError.describe(codingPath + [key]), message: "unknown field" + hint))
        }
    }

    /// The value of an optional field, as `decodeIfPresent`. Decoded with a `ConfigProblems` in
    /// `userInfo`, a value that cannot be read (a word where a number is due, an unknown choice)
    /// is written down there and nil returned, so that the field's default stands in (the file
    /// is refused all the same) and decoding goes on.
    func optional<T: Decodable, Key: CodingKey>(_ type: T.Type, _ key: Key, in container: KeyedDecodingContainer<Key>) throws -> T? {
        do {
            return try container.decodeIfPresent(type, forKey: key)
        } catch {
            guard let problems = userInfo[ConfigProblems.key] as? ConfigProblems else { throw error }
            problems.add(ConfigError.describing(error))
            return nil
        }
    }

    /// Writes `problem` down in `userInfo`'s `ConfigProblems`, or, decoded without one, throws it.
    func noteOrThrow(_ problem: ConfigError) throws {
        guard let problems = userInfo[ConfigProblems.key] as? ConfigProblems else { throw problem }
        problems.add(problem)
    }
}

/// The problems one decoding of a configuration found and went on past, in the order met: passed
/// in the decoder's `userInfo`. Used by one decoding, on one thread.
final class ConfigProblems {
    static let key = CodingUserInfoKey(rawValue: "algogate.configProblems")!
    private(set) var found: [ConfigError] = []

    func add(_ problem: ConfigError) {
        for one in problem.problems where !found.contains(one) { found.append(one) }
    }
}

extension ConfigError {
    /// The fields an unknown one was likely meant as: the same words otherwise written
    /// (`maxConcurrency`, `max-concurrency`), the field it begins (`timeout` for
    /// `timeout_seconds`, `key` for `key_env` or `key_file`), else the nearest by a few letters
    /// (`max_concurency`). None when nothing is close.
    static func nearestFields(to unknown: String, among known: [String]) -> [String] {
        var words = ""
        for character in unknown {
            if character.isUppercase, !words.isEmpty, words.last != "_" { words.append("_") }
            words.append(character == "-" ? "_" : Character(character.lowercased()))
        }
        if known.contains(words) { return [words] }
        let begun = known.filter { $0.hasPrefix(words + "_") }
        if !begun.isEmpty { return begun.sorted() }
        let limit = max(1, words.count / 5)
        let distances = known.map { ($0, editDistance(words, $0)) }.filter { $0.1 <= limit }
        guard let best = distances.map(\.1).min() else { return [] }
        return distances.filter { $0.1 == best }.map(\.0).sorted()
    }

    /// Levenshtein distance: insertions, deletions and substitutions of one character each.
    static func editDistance(_ a: String, _ b: String) -> Int {
        let a = Array(a.utf8), b = Array(b.utf8)
        var previous = Array(0...b.count)
        for (i, x) in a.enumerated() {
            var current = [i + 1] + Array(repeating: 0, count: b.count)
            for (j, y) in b.enumerated() {
                current[j + 1] = Swift.min(previous[j + 1] + 1, current[j] + 1, previous[j] + (x == y ? 0 : 1))
            }
            previous = current
        }
        return previous[b.count]
    }
}

/// A field whose value is one of a few words. Its `init(from:)` calls `choice(from:)`, so that a
/// word it does not know is refused listing those it does (rather than with Codable's "Cannot
/// initialize ... from invalid String value").
protocol ConfigChoice: RawRepresentable<String>, CaseIterable {}

extension ConfigChoice {
    static func choice(from decoder: any Decoder) throws -> Self {
        let word = try decoder.singleValueContainer().decode(String.self)
        guard let value = Self(rawValue: word) else {
            throw ConfigError(field: ConfigError.describe(decoder.codingPath),
                              message: "unknown value '\(word)'; use \(allCases.map(\.rawValue).joined(separator: " or "))")
        }
        return value
    }
}

/// Why a configuration was refused, naming the field as a dotted path (`clients[1].key_sha256`).
/// A configuration with several problems is refused with the first, which carries the others
/// (`others`), so that one run of `check-config` names them all.
public struct ConfigError: Error, CustomStringConvertible, Equatable {
    public let field: String
    public let message: String
    /// The problems found beside this one, in the order they were found; usually none.
    public private(set) var others: [ConfigError] = []

    public init(field: String, message: String) {
        self.field = field
        self.message = message
    }

    /// One error for `problems` (nil when there are none): the first, carrying the rest. Of
    /// several problems with one field only the first is kept, since the others most often
    /// follow from it (a proxy URL that does not parse has no host and no port either).
    init?(problems: [ConfigError]) {
        var fields: Set<String> = []
        let kept = problems.flatMap(\.problems).filter { $0.field.isEmpty || fields.insert($0.field).inserted }
        guard let first = kept.first else { return nil }
        self = first
        others = Array(kept.dropFirst())
    }

    /// This problem and those it carries, each on its own.
    public var problems: [ConfigError] {
        [ConfigError(field: field, message: message)] + others
    }

    /// One problem as `field: message`; several as their count and each of them, on one line
    /// (for logs); `check-config` and the other commands print them a line each.
    public var description: String {
        guard !others.isEmpty else { return line }
        return "\(others.count + 1) problems: " + problems.map(\.line).joined(separator: "; ")
    }

    /// `field: message`, or the message alone for a problem of the whole file.
    public var line: String { field.isEmpty ? message : "\(field): \(message)" }

    static func describe(_ path: [any CodingKey]) -> String {
        var text = ""
        for key in path {
            if let index = key.intValue { text += "[\(index)]" } else { text += text.isEmpty ? key.stringValue : ".\(key.stringValue)" }
        }
        return text
    }

    /// What a decoding failure says, naming the field where it can.
    static func describing(_ error: any Error) -> ConfigError {
        switch error {
        case let error as ConfigError: error
        case let error as DecodingError: from(error)
        case let error as YamlError: from(error)
        default: ConfigError(field: "", message: "not valid YAML: \(error)")
        }
    }

    /// Turns a Codable decoding error into a message that names the field.
    static func from(_ error: DecodingError) -> ConfigError {
        switch error {
        case .typeMismatch(let type, let context):
            return ConfigError(field: describe(context.codingPath), message: "expected \(typeName(type))")
        case .valueNotFound(let type, let context):
            return ConfigError(field: describe(context.codingPath), message: "expected \(typeName(type)), found nothing")
        case .keyNotFound(let key, let context):
            return ConfigError(field: describe(context.codingPath + [key]), message: "required field is missing")
        case .dataCorrupted(let context):
            if let underlying = context.underlyingError as? ConfigError { return underlying }
            if let yaml = context.underlyingError as? YamlError { return from(yaml) }
            return ConfigError(field: describe(context.codingPath), message: context.debugDescription)
        @unknown default:
            return ConfigError(field: "", message: "\(error)")
        }
    }

    /// YAML that does not parse: where and what, as Yams reports it, without the line itself
    /// (Yams quotes it), so that nothing of the file but its structure reaches a log.
    static func from(_ error: YamlError) -> ConfigError {
        func at(_ mark: Mark) -> String { "line \(mark.line), column \(mark.column)" }
        func context(_ context: YamlError.Context?) -> String { context.map { " (\($0.text) at \(at($0.mark)))" } ?? "" }
        let message = switch error {
        case let .scanner(context: near, problem: problem, mark, yaml: _), let .parser(context: near, problem: problem, mark, yaml: _),
             let .composer(context: near, problem: problem, mark, yaml: _):
            "\(at(mark)): \(problem)\(context(near))"
        case let .reader(problem: problem, offset: offset, value: _, yaml: _):
            problem + (offset.map { " at byte \($0)" } ?? "")
        case let .duplicatedKeysInMapping(duplicates: duplicates, context: near):
            // Its context's text is the whole mapping.
            "the same key twice in one mapping: \(duplicates.sorted().joined(separator: ", ")) (the mapping at \(at(near.mark)))"
        default:
            "\(error)"
        }
        return ConfigError(field: "", message: "not valid YAML: " + message)
    }

    private static func typeName(_ type: Any.Type) -> String {
        switch type {
        case is String.Type: "a string"
        case is Int.Type: "a whole number"
        case is Bool.Type: "true or false"
        case is Double.Type: "a number"
        // What Yams names when a value has the wrong shape: a scalar where a list was due, say.
        case is Node.Sequence.Type: "a list"
        case is Node.Scalar.Type: "a single value, not a list or a mapping"
        default:
            String(describing: type).hasPrefix("Array") ? "a list" : "a mapping"
        }
    }
}
