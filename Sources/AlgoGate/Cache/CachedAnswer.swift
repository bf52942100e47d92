import NIOCore

/// An answer as the cache hands it out: decoded body, ready to send, and the stored gzip bytes
/// when it was stored compressed (sent as they are to clients that accept gzip).
struct CachedAnswer: Sendable {
    let algo: String
    let status: Int
    let contentType: String
    let body: ByteBuffer
    var gzipBody: ByteBuffer? = nil
    let createdAt: Double
    var expiresAt: Double
    /// A hit from the hot tier on a large entry: kept with the answer until it has been sent, so
    /// that the entry's bytes are counted should it leave the tier meanwhile (`HotTier.Residency`).
    var lease: HotTier.Lease? = nil

    /// The answer as fresh as `lifetime` lets it be: the TTL in force now for its algorithm
    /// (`cache.ttl_seconds` or its rule). An entry is fresh until the earlier of the expiry it was
    /// stored with and `lifetime` seconds after it was stored, so a TTL lowered by a reload or a
    /// restart applies to the entries already stored; a TTL raised does not lengthen them.
    func capped(to lifetime: Int?) -> CachedAnswer {
        let expiry = Self.expiry(createdAt: createdAt, expiresAt: expiresAt, lifetime: lifetime)
        guard expiry < expiresAt else { return self }
        var capped = self
        capped.expiresAt = expiry
        return capped
    }

    static func expiry(createdAt: Double, expiresAt: Double, lifetime: Int?) -> Double {
        lifetime.map { min(expiresAt, createdAt + Double($0)) } ?? expiresAt
    }
}
