import HTTPTypes

/// Transfer codings (RFC 9112 §6.1). NIO's parser decodes `chunked` and takes a list that ends
/// in it (`gzip, chunked`) as chunked, leaving the other codings undone: such a body would be read,
/// forwarded and cached in its coded bytes as if they were the input. So `chunked` alone is
/// accepted and any other list is refused with 501 (RFC 9112 §6.1: a server that receives a transfer
/// coding it does not understand SHOULD answer 501), as nginx refuses it, before any key is asked
/// for. A compressed body is sent with `Content-Encoding`.
enum TransferCoding {
    /// Whether a `Transfer-Encoding` value (repeated fields joined with ", ") is `chunked` and nothing else.
    static func isChunkedAlone(_ value: String) -> Bool {
        let codings = value.split(separator: ",", omittingEmptySubsequences: false)
        return codings.count == 1 && codings[0].trimmedSpaces.lowercased() == "chunked"
    }

    /// The refusal of a request whose `Transfer-Encoding` is not `chunked` alone; nil when it is, or has none.
    static func refusal(_ fields: HTTPFields) -> GatewayError? {
        guard let value = fields.value(.transferEncoding), !isChunkedAlone(value) else { return nil }
        return GatewayError(status: .notImplemented, errorType: "InputError",
                            message: "Transfer-Encoding '\(value)' is not supported: send the body with chunked alone, or with a Content-Length; a compressed body is sent with Content-Encoding: gzip")
    }
}
