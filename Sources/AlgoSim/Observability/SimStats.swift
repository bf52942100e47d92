import Synchronization

/// What reached the simulator, so a test can prove what a gateway forwarded.
public final class SimStats: Sendable {
    /// A point-in-time copy of the counters, as served at `GET /__sim/stats`.
    public struct Snapshot: Sendable, Codable, Equatable {
        /// Algorithm calls per path as requested (`owner/name[/version]`).
        public var algoCalls: [String: Int] = [:]
        /// Every distinct `Authorization` value received.
        public var authorizations: [String] = []
        /// Every distinct request header name received (lower-cased).
        public var headerNames: [String] = []
        public var totalRequests: Int = 0
        public var inFlight: Int = 0
        public var peakConcurrency: Int = 0
        /// Requests per path prefix class: algo, data, management, other.
        public var requestsByClass: [String: Int] = [:]
        /// Algorithm answers sent gzip-compressed (the client asked with Accept-Encoding).
        public var gzipResponses: Int = 0
        /// Algorithms running after their asynchronous call (`output=void`) was answered, and the
        /// most at once: runs no request is in flight for.
        public var asyncRunning: Int = 0
        public var peakAsyncRunning: Int = 0
    }

    private struct State {
        var snapshot = Snapshot()
        var authorizations: Set<String> = []
        var headerNames: Set<String> = []
    }

    private let state = Mutex(State())

    public init() {}

    public var snapshot: Snapshot {
        state.withLock { state in
            var copy = state.snapshot
            copy.authorizations = state.authorizations.sorted()
            copy.headerNames = state.headerNames.sorted()
            return copy
        }
    }

    public func reset() {
        state.withLock { state in
            let inFlight = state.snapshot.inFlight, asyncRunning = state.snapshot.asyncRunning
            state = State()
            state.snapshot.inFlight = inFlight
            state.snapshot.peakConcurrency = inFlight
            state.snapshot.asyncRunning = asyncRunning
            state.snapshot.peakAsyncRunning = asyncRunning
        }
    }

    func begin(routeClass: String, authorization: String?, headerNames: [String]) {
        state.withLock { state in
            state.snapshot.totalRequests += 1
            state.snapshot.inFlight += 1
            state.snapshot.peakConcurrency = max(state.snapshot.peakConcurrency, state.snapshot.inFlight)
            state.snapshot.requestsByClass[routeClass, default: 0] += 1
            if let authorization { state.authorizations.insert(authorization) }
            state.headerNames.formUnion(headerNames)
        }
    }

    func end() {
        state.withLock { $0.snapshot.inFlight -= 1 }
    }

    /// An asynchronous call's algorithm starts running (`asyncRunEnded` when it is done).
    func asyncRunStarted() {
        state.withLock { state in
            state.snapshot.asyncRunning += 1
            state.snapshot.peakAsyncRunning = max(state.snapshot.peakAsyncRunning, state.snapshot.asyncRunning)
        }
    }

    func asyncRunEnded() {
        state.withLock { $0.snapshot.asyncRunning -= 1 }
    }

    func recordGzipResponse() {
        state.withLock { $0.snapshot.gzipResponses += 1 }
    }

    func recordAlgoCall(_ path: String) {
        state.withLock { $0.snapshot.algoCalls[path, default: 0] += 1 }
    }
}
