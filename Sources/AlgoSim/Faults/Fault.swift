import Foundation

/// A failure the simulator injects, so the gateway's handling of a misbehaving upstream can be
/// tested: added latency, a chosen 5xx status, or a connection dropped without an answer, every
/// time (`drop`) or only the first time a request ID is seen (`drop-first`: what a retry after a
/// stale keep-alive connection meets).
///
/// Written as comma-separated terms, e.g. `delay=250`, `status=503`, `drop`, `delay=100,status=502`;
/// sent per request in the `X-Sim-Fault` header or set for every request with `algogate sim --fault`.
public struct Fault: Sendable, Equatable, CustomStringConvertible {
    public var delayMilliseconds: Int = 0
    public var status: Int?
    public var dropConnection: Bool = false
    /// Drop only the first attempt of each `X-Request-ID` (requests without one are always dropped).
    public var dropFirstAttempt: Bool = false

    public init(delayMilliseconds: Int = 0, status: Int? = nil, dropConnection: Bool = false, dropFirstAttempt: Bool = false) {
        self.delayMilliseconds = delayMilliseconds
        self.status = status
        self.dropConnection = dropConnection
        self.dropFirstAttempt = dropFirstAttempt
    }

    /// Parses the header form; nil when any term is not understood.
    public init?(parsing text: String) {
        for term in text.split(separator: ",").map({ $0.trimmingCharacters(in: .whitespaces) }) where !term.isEmpty {
            let parts = term.split(separator: "=", maxSplits: 1).map(String.init)
            switch (parts[0], parts.count == 2 ? Int(parts[1]) : nil) {
            case ("delay", let value?) where value >= 0: delayMilliseconds = value
            case ("status", let value?) where (400...599).contains(value): status = value
            case ("drop", nil) where parts.count == 1: dropConnection = true
            case ("drop-first", nil) where parts.count == 1: dropFirstAttempt = true
            default: return nil
            }
        }
    }

    public var description: String {
        var terms: [String] = []
        if delayMilliseconds > 0 { terms.append("delay=\(delayMilliseconds)") }
        if let status { terms.append("status=\(status)") }
        if dropConnection { terms.append("drop") }
        if dropFirstAttempt { terms.append("drop-first") }
        return terms.joined(separator: ",")
    }
}
