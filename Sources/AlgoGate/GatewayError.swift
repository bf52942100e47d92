import Foundation
import HTTPTypes
import Hummingbird
import NIOCore

/// Every error the gateway itself answers with, rendered in Algorithmia's envelope
/// `{"error":{"message":…,"error_type":…}}`. Handlers throw; `ErrorMiddleware` renders.
/// Messages never contain a key: callers build them from names, paths and limits only.
public struct GatewayError: Error, Sendable, Equatable, HTTPResponseError {
    public let status: HTTPResponse.Status
    public let errorType: String
    public let message: String
    /// Extra response headers (e.g. `Retry-After`).
    public var headers: HTTPFields = [:]
    /// What went wrong underneath (a transport error's own description), for the operator's log
    /// line only: never sent to the client.
    public var cause: String?
    /// The upstream's answer came, and was refused for what it is (too large, or holding the
    /// upstream key): an identical call of a pinned version gets the same answer, refused the same
    /// way, so the calls waiting on this one (single flight) are given this error rather than
    /// each making the call again.
    public var refusesTheAnswer = false
    /// The quota a 429 `QuotaExceeded` refused the request under (`requests_per_minute`,
    /// `slot_seconds_per_day`, ...), for the log line and `algogate_quota_refusals_total`: a
    /// refusal's message is not logged, and an operator asked why a team is refused needs it.
    public var quota: String?

    public init(status: HTTPResponse.Status, errorType: String, message: String, headers: HTTPFields = [:]) {
        self.status = status
        self.errorType = errorType
        self.message = message
        self.headers = headers
    }

    /// Two errors are the same answer when status, type, message and headers are; `cause` is
    /// only what the log says of it, `refusesTheAnswer` what single flight makes of it.
    public static func == (lhs: GatewayError, rhs: GatewayError) -> Bool {
        lhs.status == rhs.status && lhs.errorType == rhs.errorType && lhs.message == rhs.message && lhs.headers == rhs.headers
    }

    /// The same answer, remembering the error underneath it (at most `maxCause` characters of its
    /// description).
    public func caused(by error: any Error) -> GatewayError {
        var copy = self
        copy.cause = Self.describe(error)
        return copy
    }

    /// What an error says of itself, for a log line: a gateway error's message, else its
    /// description, at most `maxCause` characters.
    static func describe(_ error: any Error) -> String {
        String(((error as? GatewayError)?.message ?? String(describing: error)).prefix(maxCause))
    }

    static let maxCause = 500

    /// An answer the gateway made because something failed on its side or the upstream's (5xx),
    /// as opposed to a request it refused or an upstream answer it passed on. A 501 refuses a
    /// request framed with a transfer coding the gateway does not decode (`TransferCoding`): the
    /// client's doing, though HTTP gives it a 5xx status.
    public var isGatewayFailure: Bool { status.code >= 500 && status != .notImplemented }

    public static func badRequest(_ message: String) -> GatewayError {
        .init(status: .badRequest, errorType: "InputError", message: message)
    }
    /// With the challenge a 401 must carry (RFC 9110 §11.6.1), naming the scheme the official
    /// clients send.
    public static func unauthorized(_ message: String) -> GatewayError {
        .init(status: .unauthorized, errorType: "AuthorizationError", message: message,
              headers: [.wwwAuthenticate: #"Simple realm="algogate""#])
    }
    public static func forbidden(_ message: String) -> GatewayError {
        .init(status: .forbidden, errorType: "PermissionDenied", message: message)
    }
    public static func notFound(_ message: String) -> GatewayError {
        .init(status: .notFound, errorType: "EntityNotFoundError", message: message)
    }
    public static func tooLarge(_ message: String) -> GatewayError {
        .init(status: .contentTooLarge, errorType: "RequestTooLarge", message: message)
    }
    /// 408 for a request whose body did not arrive in time; the connection is closed with the
    /// answer, since the rest of the body was never read (RFC 9110 §15.5.9).
    public static func inputTimeout(_ message: String) -> GatewayError {
        .init(status: .requestTimeout, errorType: "InputTimeout", message: message, headers: [.connection: "close"])
    }
    public static func badGateway(_ message: String) -> GatewayError {
        .init(status: .badGateway, errorType: "UpstreamError", message: message)
    }
    /// A 502 refusing the upstream's answer for what it is (see `refusesTheAnswer`).
    static func answerRefused(_ message: String) -> GatewayError {
        var error = badGateway(message)
        error.refusesTheAnswer = true
        return error
    }
    public static func gatewayTimeout(_ message: String) -> GatewayError {
        .init(status: .gatewayTimeout, errorType: "UpstreamTimeout", message: message)
    }
    public static func unavailable(_ message: String) -> GatewayError {
        .init(status: .serviceUnavailable, errorType: "ServiceUnavailable", message: message)
    }
    /// `allow`: the methods the target takes, for the `Allow` field a 405 carries (RFC 9110 §15.5.6).
    public static func methodNotAllowed(_ message: String, allow: [HTTPRequest.Method] = []) -> GatewayError {
        .init(status: .methodNotAllowed, errorType: "InputError", message: message,
              headers: allow.isEmpty ? [:] : [.allow: allow.map(\.rawValue).joined(separator: ", ")])
    }
    /// The methods the gateway forwards, named in the `Allow` of a 405 for one it never does.
    static let forwardedMethods: [HTTPRequest.Method] = [.get, .head, .post, .put, .patch, .delete]

    /// CONNECT and TRACE, which the gateway answers itself for any target. A CONNECT comes from
    /// a client given the gateway as its HTTP(S) proxy; a TRACE would have the upstream echo a
    /// request holding the server key.
    static func unsupported(_ method: HTTPRequest.Method) -> GatewayError {
        let message = method == .connect
            ? "CONNECT is not supported: algogate is not a proxy. Give it to the client as the API address (ALGORITHMIA_API=http://algogate:8080), not as an HTTP(S) proxy"
            : "\(method.rawValue) is not supported by the gateway"
        return .methodNotAllowed(message, allow: forwardedMethods)
    }
    /// nginx's 499: the client closed its connection before its algorithm call was answered, and
    /// the upstream call was cancelled. Nobody reads it; the log line and metrics record it.
    static let clientClosedRequest = GatewayError(
        status: .init(code: 499, reasonPhrase: "Client Closed Request"), errorType: "ClientClosedRequest",
        message: "the client closed its connection before the algorithm answered; the upstream call was cancelled")
    /// The same for a data or management request whose client went while it waited for an
    /// upstream slot: it was never sent.
    static let clientClosedWhileQueued = GatewayError(
        status: clientClosedRequest.status, errorType: clientClosedRequest.errorType,
        message: "the client closed its connection while its request waited for an upstream slot; it was not sent")
    static let internalErrorType = "InternalError"
    public static func internalError(_ message: String) -> GatewayError {
        .init(status: .internalServerError, errorType: internalErrorType, message: message)
    }

    /// The envelope's bytes.
    public var body: ByteBuffer {
        let object = ["error": ["message": message, "error_type": errorType]]
        let data = (try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys, .withoutEscapingSlashes])) ?? Data()
        return ByteBuffer(bytes: data)
    }

    public func response(from request: Request, context: some RequestContext) throws -> Response {
        var fields = headers
        fields[.contentType] = "application/json"
        // A HEAD's answer has no body, so its message goes in a field too, as Algorithmia sends
        // it: the official clients read it there (the Python client's `exists()`, `getString()`).
        if request.method == .head { fields[.errorMessage] = Self.fieldValue(message) }
        return Response(status: status, headers: fields, body: .init(byteBuffer: body))
    }

    /// Longest `X-Error-Message` value, in bytes; a longer message is cut, ending "...".
    static let maxFieldBytes = 2048

    /// `message` as a field value: visible ASCII and spaces as they are, any other byte (controls,
    /// UTF-8 of a path written in another script) percent-encoded, so nothing can end the field
    /// or be read differently by clients that decode fields as Latin-1.
    static func fieldValue(_ message: String) -> String {
        let hex = Array("0123456789ABCDEF".utf8)
        func encoded(_ byte: UInt8) -> [UInt8] {
            byte >= 0x20 && byte < 0x7F ? [byte] : [UInt8(ascii: "%"), hex[Int(byte >> 4)], hex[Int(byte & 0xF)]]
        }
        let whole = message.utf8.flatMap(encoded)
        guard whole.count > maxFieldBytes else { return String(decoding: whole, as: UTF8.self) }
        var value: [UInt8] = []
        for byte in message.utf8 {
            let piece = encoded(byte)
            if value.count + piece.count > maxFieldBytes - 3 { break }
            value += piece
        }
        return String(decoding: value + Array("...".utf8), as: UTF8.self)
    }
}

extension HTTPField.Name {
    /// The message of an error answer to a HEAD, which has no body to carry it.
    static let errorMessage = HTTPField.Name("X-Error-Message")!
}
