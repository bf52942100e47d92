import Foundation

/// An algorithm call's options (`timeout`, `output`, `stdout`, `sudo`), read from its query the
/// one way the gateway reads them.
///
/// The cache keys an answer by them and the forwarder clamps `timeout`, so the upstream must not
/// be able to read them otherwise. Servers differ where a query is ambiguous: one reads the first
/// of two `output`s and another the last; one reads `Output` or `%6Futput` as `output` and
/// another as no option at all (and Java's `equalsIgnoreCase` reads `%C5%BFudo`, a long s, as
/// `sudo`). Such a call, if stored, would answer later calls that ask
/// otherwise (another team's, since entries are shared), and a timeout read one way here and
/// another upstream would escape its clamp. So an option given twice, a name spelt other than
/// in plain lowercase, or a value other than plain letters and digits is refused with a 400,
/// never guessed at. The official clients send each option once, plainly.
public struct AlgoOptions: Sendable, Equatable {
    /// Whole seconds, as asked (`Forwarder.query` clamps it). 0 is read as none given, the
    /// default: the official Java client sends it for a timeout set in minutes or hours
    /// (`Algorithm.setTimeout(5, TimeUnit.MINUTES)` converts the wrong way round, to 0), and that
    /// the bug stayed suggests Algorithmia answers it as it would a call without one.
    public var timeout: Int?
    public var output: String?
    public var stdout: String?
    public var sudo: String?

    public init(timeout: Int? = nil, output: String? = nil, stdout: String? = nil, sudo: String? = nil) {
        self.timeout = timeout
        self.output = output
        self.stdout = stdout
        self.sudo = sudo
    }

    static let timeoutMessage = "the timeout option must be a whole number of seconds (larger ones are cut to the gateway's upstream.timeout_seconds; 0 is the default, 300)"

    /// The options in `query`, or a 400 naming what is ambiguous. Other parameters are left alone.
    public static func parse(_ query: String?) throws(GatewayError) -> AlgoOptions {
        var options = AlgoOptions()
        guard let query, !query.isEmpty else { return options }
        for pair in query.utf8.split(separator: UInt8(ascii: "&"), omittingEmptySubsequences: true) {
            let equals = pair.firstIndex(of: UInt8(ascii: "="))
            let rawName = Substring(pair[..<(equals ?? pair.endIndex)])
            guard let name = optionName(rawName) else { continue }
            guard rawName == name else {
                throw GatewayError.badRequest("the query spells the \(name) option '\(rawName)': write it \(name), in lowercase and not percent-encoded, so that the gateway and the upstream read it alike")
            }
            let value = equals.map { Substring(pair[pair.index(after: $0)...]) } ?? ""
            let plain = !value.isEmpty && value.utf8.allSatisfy { byte in
                switch byte {
                case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "0")...UInt8(ascii: "9"): true
                default: false
                }
            }
            switch name {
            case "timeout":
                guard options.timeout == nil else { throw twice(name) }
                guard plain, value.utf8.allSatisfy({ (UInt8(ascii: "0")...UInt8(ascii: "9")).contains($0) }) else {
                    throw GatewayError.badRequest(timeoutMessage)
                }
                // Digits too many for an Int ask for more than any maximum: the clamp's.
                options.timeout = Int(value) ?? .max
            case "output":
                guard options.output == nil else { throw twice(name) }
                guard plain else { throw notPlain(name, "raw, void or default") }
                options.output = String(value)
            case "stdout":
                guard options.stdout == nil else { throw twice(name) }
                guard plain else { throw notPlain(name, "true or false") }
                options.stdout = String(value)
            default:
                guard options.sudo == nil else { throw twice(name) }
                guard plain else { throw notPlain(name, "true or false") }
                options.sudo = String(value)
            }
        }
        return options
    }

    /// The option `name` names to some server (percent-decoded, in any case, see `ParameterName`),
    /// if it names one.
    private static func optionName(_ name: Substring) -> String? {
        ParameterName.reading(name, among: names)
    }

    private static let names = ["timeout", "output", "stdout", "sudo"]

    private static func twice(_ name: String) -> GatewayError {
        .badRequest("the query gives the \(name) option more than once: give each of an algorithm call's options once")
    }

    private static func notPlain(_ name: String, _ values: String) -> GatewayError {
        .badRequest("the \(name) option must be a plain word (\(values)), not empty nor percent-encoded")
    }

    /// Whether the call may be answered from the cache at all: not one run for its side effects
    /// (`output=void`, in any case) nor run as `sudo` (any value but `false`, in any case).
    var isCacheable: Bool {
        !isAsync && (sudo == nil || sudo?.lowercased() == "false")
    }

    /// An asynchronous call (`output=void`, in any case): the upstream answers it at once and runs
    /// the algorithm on its own.
    var isAsync: Bool { output?.lowercased() == "void" }

    /// Whether the answer is Algorithmia's envelope (`result` and `metadata`, in the default
    /// output mode, absent or `default` in any case), rather than the algorithm's own output
    /// (`raw`) or an acknowledgement (`void`).
    var wrapsAnswer: Bool { output == nil || output?.lowercased() == "default" }

    /// The output mode as the cache key holds it: absent is the default mode.
    var outputKey: String { output ?? "default" }

    /// The stdout flag as the cache key holds it, with the key's earlier spellings for `true` and
    /// for absent or `false`, in any case (the Python client sends `stdout=False`, which the
    /// simulator reads as false, as a Scala server's `toBoolean` would); any other value is kept
    /// as given.
    var stdoutKey: String {
        switch stdout?.lowercased() {
        case nil, "false": "-"
        case "true": "stdout"
        case let value?: "stdout=" + value
        }
    }
}
