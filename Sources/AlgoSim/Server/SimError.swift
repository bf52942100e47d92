import Foundation
import HTTPTypes
import Hummingbird

/// An error the simulator answers with, rendered the way Algorithmia renders it.
///
/// The algorithm and data APIs use `{"error":{"message":…,"error_type":…}}`; the management API
/// (`/v1/algorithms`) uses its own fields `{"id":…,"code":…,"message":…}`, under `error` too: the
/// official Python client only recognises a failure (e.g. `Algorithm.exists()`) when `error` is there.
public struct SimError: HTTPResponseError {
    public enum Envelope: Sendable { case api, management }

    public let status: HTTPResponse.Status
    public let message: String
    public let errorType: String?
    public let envelope: Envelope
    /// The methods a 405 names in `Allow` (RFC 9110 §15.5.6).
    public let allow: [HTTPRequest.Method]

    public init(_ status: HTTPResponse.Status, _ message: String, errorType: String? = nil, envelope: Envelope = .api,
                allow: [HTTPRequest.Method] = []) {
        self.status = status
        self.message = message
        self.errorType = errorType
        self.envelope = envelope
        self.allow = allow
    }

    public func response(from request: Request, context: some RequestContext) throws -> Response {
        var headers: HTTPFields = [.contentType: "application/json"]
        // The official clients read HEAD failures from this header, since HEAD has no body.
        if request.method == .head { headers[SimHeaders.errorMessage] = message }
        if !allow.isEmpty { headers[.allow] = allow.map(\.rawValue).joined(separator: ", ") }
        return Response(status: status, headers: headers, body: .init(byteBuffer: ByteBuffer(bytes: body)))
    }

    var body: [UInt8] {
        let object: [String: Any]
        switch envelope {
        case .api:
            var error: [String: Any] = ["message": message]
            if let errorType { error["error_type"] = errorType }
            object = ["error": error]
        case .management:
            object = ["error": ["id": UUID().uuidString.lowercased(), "code": String(status.code), "message": message]]
        }
        return JSON.bytes(object)
    }

    static func notFound(_ message: String) -> SimError { SimError(.notFound, message, errorType: "EntityNotFoundError") }
    static func badRequest(_ message: String) -> SimError { SimError(.badRequest, message, errorType: "InputError") }
    static func methodNotAllowed(_ message: String, allow: [HTTPRequest.Method]) -> SimError {
        SimError(.methodNotAllowed, message, errorType: "InputError", allow: allow)
    }
}

enum SimHeaders {
    static let errorMessage = HTTPField.Name("X-Error-Message")!
    static let fault = HTTPField.Name("X-Sim-Fault")!
    static let requestID = HTTPField.Name("X-Request-ID")!
}
