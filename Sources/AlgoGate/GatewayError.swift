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

    public init(status: HTTPResponse.Status, errorType: String, message: String, headers: HTTPFields = [:]) {
        self.status = status
        self.errorType = errorType
        self.message = message
        self.headers = headers
    }

    public static func badRequest(_ message: String) -> GatewayError {
        .init(status: .badRequest, errorType: "InputError", message: message)
    }
    public static func unauthorized(_ message: String) -> GatewayError {
        .init(status: .unauthorized, errorType: "AuthorizationError", message: message)
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
    public static func badGateway(_ message: String) -> GatewayError {
        .init(status: .badGateway, errorType: "UpstreamError", message: message)
    }
    public static func gatewayTimeout(_ message: String) -> GatewayError {
        .init(status: .gatewayTimeout, errorType: "UpstreamTimeout", message: message)
    }
    public static func unavailable(_ message: String) -> GatewayError {
        .init(status: .serviceUnavailable, errorType: "ServiceUnavailable", message: message)
    }
    public static func methodNotAllowed(_ message: String) -> GatewayError {
        .init(status: .methodNotAllowed, errorType: "InputError", message: message)
    }
    public static func internalError(_ message: String) -> GatewayError {
        .init(status: .internalServerError, errorType: "InternalError", message: message)
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
        return Response(status: status, headers: fields, body: .init(byteBuffer: body))
    }
}
