import Foundation
import HTTPTypes
import Logging
import Synchronization

/// Fails fast while the upstream cannot be reached. After `failures` upstream requests in a row
/// that never got an answer (a refused or timed-out connect, a connection lost before the answer,
/// a TLS failure), spread over at least `minimumStreak`, the circuit opens: for `open_seconds`
/// every request is refused at once with 503 and `Retry-After`, rather than each holding an
/// upstream slot while it waits out the connect timeout. Then one request is let through to test
/// the upstream: an answer, whatever its status, closes the circuit; another failure opens it
/// again, for twice as long each time up to `max_open_seconds`, so that a long outage (or a proxy
/// refusing the gateway's credentials, where each test is a failed login) is tested ever less
/// often. Slow answers (timeouts), upstream errors and the client going away say nothing about
/// reachability and do not count.
///
/// It judges one upstream: when a reload points `upstream.url` elsewhere (a failover to another
/// cluster, most likely because this one is down), the next request starts it afresh, closed, for
/// the new upstream, and what calls to the old one still in flight find says nothing of it.
public final class CircuitBreaker: Sendable {
    public enum Outcome: Sendable { case answered, unreachable, unknown }

    /// How long failures must have gone on, with no answer between them, before they open the
    /// circuit. Under load a handful of failures can finish in a row while the upstream is
    /// answering everything else (lost connections fail at once, answers take their time; a burst
    /// on pooled connections that a load balancer closed while idle fails together): measured with
    /// one dropped connection in 17 requests at 1,000 requests/s, it opened twice in five minutes
    /// without this. An upstream that is down fails for longer than this.
    static let minimumStreak = 1.0

    private struct State {
        /// The upstream judged (`Forwarder.Settings.origin`); nil before the first request.
        var upstream: String?
        var consecutiveFailures = 0
        /// When the first failure of the current streak was recorded.
        var streakStarted = 0.0
        /// Set while open: until when requests are refused.
        var openUntil: Double?
        /// A request is testing the upstream after the open period.
        var probing = false
        /// Open periods in a row whose test request failed (0 in the first).
        var failedTests = 0
        var refused = 0
    }

    private let state = Mutex(State())
    private let settings: @Sendable () -> GatewayConfig.CircuitBreaker
    private let now: @Sendable () -> Double
    private let logger: Logger

    public init(settings: @escaping @Sendable () -> GatewayConfig.CircuitBreaker, now: @escaping @Sendable () -> Double, logger: Logger) {
        self.settings = settings
        self.now = now
        self.logger = logger
    }

    /// What `admit` let through: a request like any other, or the one testing the upstream after
    /// an open period. Only the test's own outcome ends the test: a request let through before the
    /// circuit opened may finish while the test runs.
    struct Admission: Sendable {
        let isTest: Bool
        /// The upstream the request goes to: its outcome counts only while that is the one judged.
        var upstream: String? = nil
    }

    /// Lets a request go upstream, or throws 503 while the circuit is open (and while another
    /// request is testing the upstream).
    func admit(upstream: String? = nil) throws -> Admission {
        guard settings().failures > 0 else { return Admission(isTest: false, upstream: upstream) }
        let current = now()
        let (admission, reset) = try state.withLock { state -> (Admission, Bool) in
            var reset = false
            if let upstream, upstream != state.upstream {
                reset = state.upstream != nil && state.openUntil != nil
                state = State(upstream: upstream, refused: state.refused)
            }
            guard let until = state.openUntil else { return (Admission(isTest: false, upstream: upstream), reset) }
            if current < until {
                state.refused += 1
                let seconds = max(1, Int((until - current).rounded(.up)))
                throw GatewayError(status: .serviceUnavailable, errorType: "UpstreamUnavailable",
                                   message: "the upstream could not be reached \(state.consecutiveFailures) times in a row; requests are refused for \(seconds) s, then one is let through to test it",
                                   headers: [.retryAfter: String(seconds)])
            }
            if state.probing {
                state.refused += 1
                throw GatewayError(status: .serviceUnavailable, errorType: "UpstreamUnavailable",
                                   message: "the upstream could not be reached and a request is testing it now; retry shortly",
                                   headers: [.retryAfter: "1"])
            }
            state.probing = true
            return (Admission(isTest: true, upstream: upstream), reset)
        }
        if reset {
            logger.info("upstream circuit closed: upstream.url names another upstream, judged afresh")
        }
        return admission
    }

    /// What became of a request admitted upstream.
    func record(_ outcome: Outcome, _ admission: Admission) {
        let limits = settings()
        guard limits.failures > 0 else { return }
        let current = now()
        enum Change { case opened(failures: Int, seconds: Int), closed }
        let change: Change? = state.withLock { state in
            // A call to an upstream no longer configured says nothing of the one judged now.
            if let upstream = admission.upstream, upstream != state.upstream { return nil }
            switch outcome {
            case .answered:
                let wasOpen = state.openUntil != nil
                state.consecutiveFailures = 0
                state.openUntil = nil
                state.probing = false
                state.failedTests = 0
                return wasOpen ? .closed : nil
            case .unreachable:
                if state.consecutiveFailures == 0 { state.streakStarted = current }
                state.consecutiveFailures += 1
                let longEnough = current - state.streakStarted >= Self.minimumStreak
                if admission.isTest && state.openUntil != nil {
                    state.probing = false
                    state.failedTests += 1
                } else if state.openUntil == nil && state.consecutiveFailures >= limits.failures && longEnough {
                    state.failedTests = 0
                } else {
                    return nil
                }
                let seconds = limits.openPeriod(afterFailedTests: state.failedTests)
                state.openUntil = current + Double(seconds)
                return .opened(failures: state.consecutiveFailures, seconds: seconds)
            case .unknown:
                if admission.isTest { state.probing = false }
                return nil
            }
        }
        switch change {
        case .opened(let failures, let seconds):
            logger.warning("upstream circuit opened: requests are refused until it answers again", metadata: [
                "failures_in_a_row": .number(failures), "open_seconds": .number(seconds)])
        case .closed:
            logger.info("upstream circuit closed: the upstream answers again")
        case nil:
            break
        }
    }

    /// Whether requests are being refused now.
    public var isOpen: Bool { state.withLock { $0.openUntil != nil } }
    /// Requests refused since start.
    public var refusedTotal: Int { state.withLock { $0.refused } }
}
