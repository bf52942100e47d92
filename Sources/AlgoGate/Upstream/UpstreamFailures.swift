import AsyncHTTPClient
import Foundation
import NIOCore
import NIOPosix
import NIOSSL
import CompressNIO

/// How a failed upstream exchange is told: to the client (a 502 or 504 in Algorithmia's envelope,
/// naming no host, key or body), to the circuit breaker (no answer at all, or not), and to the
/// retry of a bodiless request (a connection lost under it).
extension Forwarder {
    /// A failure that says the upstream cannot be reached: a refused or timed-out connect, a
    /// connection lost before the answer, a TLS failure, a proxy that opened no tunnel. Not a
    /// timeout waiting for an answer (a slow algorithm) nor the client going away.
    static func isUnreachable(_ error: any Error) -> Bool {
        if let error = error as? HTTPClientError {
            return error == .connectTimeout || error == .getConnectionFromPoolTimeout || error == .remoteConnectionClosed
                || error == .proxyAuthenticationRequired || error == .invalidProxyResponse || error == .httpProxyHandshakeTimeout
        }
        return error is NIOConnectionError || error is ChannelError || error is IOError
            || error is NIOSSLError || error is BoringSSLError
    }

    /// A connection that closed or reset under a sent request, before any answer: not a refused
    /// connect, a timeout, or a TLS failure, which a second attempt would only repeat.
    static func isLostConnection(_ error: any Error) -> Bool {
        if let error = error as? HTTPClientError { return error == .remoteConnectionClosed }
        if let error = error as? ChannelError {
            return error == .ioOnClosedChannel || error == .eof || error == .outputClosed || error == .alreadyClosed
        }
        if let error = error as? IOError { return error.errnoCode == ECONNRESET || error.errnoCode == EPIPE }
        return false
    }

    /// Maps transport failures to 502/504 with messages that name no host, key or body; what the
    /// transport said goes in the error's `cause`, for the log line.
    ///
    /// `wholeCall`: `timeoutSeconds` bounds the whole exchange, body included (an algorithm call,
    /// `forwardAlgo`), so the read timeout, which is never shorter, only comes once that deadline
    /// has passed, and is reported as it.
    static func translate(_ error: any Error, timeoutSeconds: Int, wholeCall: Bool = false) -> GatewayError {
        if let error = error as? GatewayError { return error }
        if (error as? HTTPClientError) == .deadlineExceeded {
            // Told as the call's own watch tells it (`Forwarder.expire`): the two share one
            // deadline, and which of them notices first is the machine's timing.
            var expired = timedOut(seconds: timeoutSeconds)
            expired.cause = deadlinePassed
            return expired
        }
        return answer(for: error, timeoutSeconds: timeoutSeconds, wholeCall: wholeCall).caused(by: error)
    }

    /// The log's cause of a call given up at its deadline.
    static let deadlinePassed = "the call's deadline (its timeout and the grace) passed before all of its answer had come"

    /// A call given up at its deadline: its answer, or the whole of it, was not in by then.
    static func timedOut(seconds: Int) -> GatewayError {
        .gatewayTimeout("the upstream did not answer within \(seconds) second\(seconds == 1 ? "" : "s")")
    }

    private static func answer(for error: any Error, timeoutSeconds: Int, wholeCall: Bool) -> GatewayError {
        // A compressed body's inflation errors arrive as `corruptUpload` (`InflatingSequence`);
        // this catches any that reach here bare.
        if error is CompressNIOError {
            return corruptUpload
        }
        if let error = error as? HTTPClientError {
            switch error {
            case .deadlineExceeded, .writeTimeout:
                return timedOut(seconds: timeoutSeconds)
            case .readTimeout where wholeCall:
                return timedOut(seconds: timeoutSeconds)
            case .readTimeout:
                return .gatewayTimeout("the upstream sent nothing for longer than upstream.timeout_seconds (and 5 s of grace)")
            case .connectTimeout, .getConnectionFromPoolTimeout:
                // The second: no pooled connection could be had within the connect timeout, since
                // the one being made for the request did not connect in time.
                return .badGateway("the upstream is unreachable")
            case .remoteConnectionClosed:
                return .badGateway("the upstream closed the connection before answering")
            case .proxyAuthenticationRequired:
                return .badGateway("the upstream proxy asked for credentials (407): check upstream.proxy.auth_env")
            case .invalidProxyResponse:
                return .badGateway("the upstream proxy refused to open a tunnel to the upstream")
            case .httpProxyHandshakeTimeout:
                return .badGateway("the upstream proxy did not open a tunnel to the upstream in time")
            default:
                break
            }
        }
        if error is NIOSSLError || error is BoringSSLError {
            return .badGateway("the upstream's TLS certificate could not be verified")
        }
        // A connection reset or broken under the request (the upstream closed it with the
        // request's bytes still unread on its side) is told as a clean close is: it was reached.
        if isLostConnection(error) {
            return .badGateway("the upstream closed the connection before answering")
        }
        if error is NIOConnectionError || error is ChannelError || error is IOError {
            return .badGateway("the upstream is unreachable")
        }
        return .badGateway("the upstream request failed")
    }
}
