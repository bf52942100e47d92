import Foundation
import Logging

/// Each log record as one line, JSON or text, handed to a `LogWriter`: the request that logs never
/// waits for the log's reader. Rendered by hand rather than through `JSONSerialization`: it runs
/// once per request. With a `LogRedactor`, the upstream key is written as `[redacted]` wherever a
/// line would hold it.
public struct LineLogHandler: LogHandler {
    public var metadata: Logger.Metadata = [:]
    public var logLevel: Logger.Level = .info
    private let label: String
    private let format: LogLineFormat
    private let writer: LogWriter
    private let redactor: LogRedactor?

    public init(label: String, format: LogLineFormat, writer: LogWriter, redactor: LogRedactor? = nil) {
        self.label = label
        self.format = format
        self.writer = writer
        self.redactor = redactor
    }

    public subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    public func log(event: LogEvent) {
        var event = event
        if !metadata.isEmpty { event.metadata = metadata.merging(event.metadata ?? [:], uniquingKeysWith: { $1 }) }
        let line = format.render(event, label: label)
        writer.write(redactor?.redact(line) ?? line)
    }
}

/// How a log record is written as one line.
///
/// - `json`: one object: `ts` (UTC, milliseconds), `level`, `logger`, `msg`, then the metadata
///   sorted by key, so lines diff and grep the same way every time; a `LogNumber` is a JSON
///   number, every other value a string (or an array or object of them).
/// - `text`: `TS LEVEL LOGGER: MSG key=value ...`, metadata sorted by key; a value with spaces,
///   quotes, `=` or control characters, and a message with control characters, is written as a
///   JSON string, so a record is always exactly one line.
public enum LogLineFormat: String, Sendable, CaseIterable {
    case json, text

    public func render(_ event: LogEvent, label: String) -> [UInt8] {
        var line: [UInt8] = []
        line.reserveCapacity(512)
        let fields = event.metadata ?? [:]
        switch self {
        case .json:
            line.append(contentsOf: #"{"ts":""#.utf8)
            Self.appendTimestamp(to: &line)
            line.append(contentsOf: #"","level":""#.utf8)
            line.append(contentsOf: event.level.rawValue.utf8)
            line.append(contentsOf: #"","logger":"#.utf8)
            Self.appendQuoted(label, to: &line)
            line.append(contentsOf: #","msg":"#.utf8)
            Self.appendQuoted(event.message.description, to: &line)
            for (key, value) in fields.sorted(by: { $0.key < $1.key }) {
                line.append(UInt8(ascii: ","))
                Self.appendQuoted(key, to: &line)
                line.append(UInt8(ascii: ":"))
                Self.append(value, to: &line)
            }
            line.append(contentsOf: "}\n".utf8)
        case .text:
            Self.appendTimestamp(to: &line)
            line.append(UInt8(ascii: " "))
            line.append(contentsOf: event.level.rawValue.utf8)
            line.append(UInt8(ascii: " "))
            Self.appendBare(label, to: &line)
            line.append(contentsOf: ": ".utf8)
            Self.appendMessage(event.message.description, to: &line)
            for (key, value) in fields.sorted(by: { $0.key < $1.key }) {
                line.append(UInt8(ascii: " "))
                Self.appendBare(key, to: &line)
                line.append(UInt8(ascii: "="))
                switch value {
                case .string(let text): Self.appendBare(text, to: &line)
                case .stringConvertible(let value): Self.appendBare(value.description, to: &line)
                case let structured: Self.append(structured, to: &line)
                }
            }
            line.append(UInt8(ascii: "\n"))
        }
        return line
    }

    /// `text` as it is when it holds nothing that would blur where a text field ends (space,
    /// quote, `=`, backslash, control characters), else as a JSON string.
    static func appendBare(_ text: String, to line: inout [UInt8]) {
        let plain = !text.isEmpty && text.utf8.allSatisfy { byte in
            byte > 0x20 && byte != 0x7f && byte != UInt8(ascii: "\"") && byte != UInt8(ascii: "=") && byte != UInt8(ascii: "\\")
        }
        if plain { line.append(contentsOf: text.utf8) } else { appendQuoted(text, to: &line) }
    }

    /// A text line's message: as it is unless it holds control characters or starts with a quote.
    static func appendMessage(_ text: String, to line: inout [UInt8]) {
        let plain = text.utf8.first != UInt8(ascii: "\"") && text.utf8.allSatisfy { $0 >= 0x20 && $0 != 0x7f }
        if plain { line.append(contentsOf: text.utf8) } else { appendQuoted(text, to: &line) }
    }

    static func append(_ value: Logger.Metadata.Value, to line: inout [UInt8]) {
        switch value {
        case .string(let text): appendQuoted(text, to: &line)
        case .stringConvertible(let value):
            // A type check rather than a cast: this runs for every number of every line.
            if type(of: value) == LogNumber.self {
                line.append(contentsOf: value.description.utf8)
            } else {
                appendQuoted(value.description, to: &line)
            }
        case .array(let values):
            line.append(UInt8(ascii: "["))
            for (index, element) in values.enumerated() {
                if index > 0 { line.append(UInt8(ascii: ",")) }
                append(element, to: &line)
            }
            line.append(UInt8(ascii: "]"))
        case .dictionary(let values):
            line.append(UInt8(ascii: "{"))
            for (index, key) in values.keys.sorted().enumerated() {
                if index > 0 { line.append(UInt8(ascii: ",")) }
                appendQuoted(key, to: &line)
                line.append(UInt8(ascii: ":"))
                append(values[key]!, to: &line)
            }
            line.append(UInt8(ascii: "}"))
        }
    }

    /// `text` as a JSON string (RFC 8259 §7): quote, backslash and control characters escaped,
    /// everything else copied as UTF-8.
    static func appendQuoted(_ text: String, to line: inout [UInt8]) {
        line.append(UInt8(ascii: "\""))
        // Most values need no escape: copied whole, from their bytes in place.
        let needsEscape = { (byte: UInt8) in byte < 0x20 || byte == UInt8(ascii: "\"") || byte == UInt8(ascii: "\\") }
        let copied = text.utf8.withContiguousStorageIfAvailable { bytes in
            guard !bytes.contains(where: needsEscape) else { return false }
            line.append(contentsOf: bytes)
            return true
        }
        if copied == true {
            line.append(UInt8(ascii: "\""))
            return
        }
        if copied == nil && !text.utf8.contains(where: needsEscape) {
            line.append(contentsOf: text.utf8)
            line.append(UInt8(ascii: "\""))
            return
        }
        for byte in text.utf8 {
            switch byte {
            case UInt8(ascii: "\""): line.append(contentsOf: #"\""#.utf8)
            case UInt8(ascii: "\\"): line.append(contentsOf: #"\\"#.utf8)
            case UInt8(ascii: "\n"): line.append(contentsOf: #"\n"#.utf8)
            case UInt8(ascii: "\r"): line.append(contentsOf: #"\r"#.utf8)
            case UInt8(ascii: "\t"): line.append(contentsOf: #"\t"#.utf8)
            case 0..<0x20:
                line.append(contentsOf: #"\u00"#.utf8)
                line.append(hexDigits[Int(byte >> 4)])
                line.append(hexDigits[Int(byte & 0x0f)])
            default: line.append(byte)
            }
        }
        line.append(UInt8(ascii: "\""))
    }

    private static let hexDigits: [UInt8] = Array("0123456789abcdef".utf8)

    /// UTC time with milliseconds, e.g. `2026-11-24T02:17:34.123Z`.
    static func appendTimestamp(to line: inout [UInt8]) {
        var now = timespec()
        clock_gettime(CLOCK_REALTIME, &now)
        var seconds = now.tv_sec
        var parts = tm()
        gmtime_r(&seconds, &parts)
        func digits(_ value: Int, _ width: Int) {
            var divisor = 1
            for _ in 1..<width { divisor *= 10 }
            while divisor > 0 {
                line.append(UInt8(ascii: "0") + UInt8(value / divisor % 10))
                divisor /= 10
            }
        }
        digits(Int(parts.tm_year) + 1900, 4); line.append(UInt8(ascii: "-"))
        digits(Int(parts.tm_mon) + 1, 2); line.append(UInt8(ascii: "-"))
        digits(Int(parts.tm_mday), 2); line.append(UInt8(ascii: "T"))
        digits(Int(parts.tm_hour), 2); line.append(UInt8(ascii: ":"))
        digits(Int(parts.tm_min), 2); line.append(UInt8(ascii: ":"))
        digits(Int(parts.tm_sec), 2); line.append(UInt8(ascii: "."))
        digits(now.tv_nsec / 1_000_000, 3); line.append(UInt8(ascii: "Z"))
    }
}

/// A log field that is a number (a status, a count of bytes, a duration in milliseconds): a JSON
/// number in `json` lines, so a log pipeline can sum, compare and chart it without a mapping of
/// its own; as it is in `text` lines.
public struct LogNumber: CustomStringConvertible, Sendable {
    public let description: String

    public init(_ value: some BinaryInteger) {
        description = String(value)
    }

    /// Milliseconds to the microsecond: `12.345`.
    public init(milliseconds duration: Duration) {
        description = Formatting.milliseconds(duration)
    }
}

extension Logger.MetadataValue {
    /// `value` as a `LogNumber`.
    static func number(_ value: some BinaryInteger) -> Self { .stringConvertible(LogNumber(value)) }
}
