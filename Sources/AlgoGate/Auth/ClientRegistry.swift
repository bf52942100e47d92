import Crypto
import Foundation

/// A configured client as the pipeline sees it once its key has matched.
public struct ClientIdentity: Sendable, Equatable {
    public let name: String
    public let scopes: Set<Scope>
    /// Parsed `data_prefixes`; nil means every data path.
    public let dataPrefixes: [DataURI]?
    /// Parsed `algorithms`; nil means every algorithm.
    public var algorithms: [AlgorithmPattern]? = nil
    /// Parsed `cors_origins`: the web pages the key may be used from; none unless configured.
    public var corsOrigins = BrowserOrigins.none
    /// `async_calls`: whether the client may call with `output=void`.
    public var asyncCalls = true
    /// `upload_min_bytes_per_second`, when the client sets its own; nil: the global one.
    public var uploadMinBytesPerSecond: Int? = nil
    public let quota: GatewayConfig.Quota
    /// Whether this is the operator (admin key) rather than a team.
    public let isOperator: Bool
    /// Whether the key presented was the one being rotated out (`previous_key_sha256`): logged,
    /// counted and shown by `/_gateway/me`, so the operator knows when it can be removed.
    public var viaPreviousKey = false
}

/// Maps presented keys to clients by SHA-256, comparing digests in constant time so the response
/// time does not reveal how much of a hash matched.
public struct ClientRegistry: Sendable {
    private let entries: [(digest: [UInt8], client: ClientIdentity)]
    /// Every client's `cors_origins` together: a browser's preflight, which carries no key, is
    /// answered for these.
    public let browserOrigins: BrowserOrigins
    /// Each configured client's quota as it applies (its own fields over the top-level
    /// defaults), by name.
    public let quotas: [String: GatewayConfig.Quota]
    /// The upstream slots each client keeps for itself (`quota.reserved_concurrent`), by name;
    /// clients without any are left out.
    public var reservations: [String: Int] {
        quotas.compactMapValues { quota in quota.reservedConcurrent.flatMap { $0 > 0 ? $0 : nil } }
    }

    public init(config: GatewayConfig) throws {
        var entries: [([UInt8], ClientIdentity)] = []
        func admit(_ identity: ClientIdentity, key: String, previousKey: String?) {
            entries.append((Self.bytes(hex: key), identity))
            if let previousKey {
                var rotating = identity
                rotating.viaPreviousKey = true
                entries.append((Self.bytes(hex: previousKey), rotating))
            }
        }
        for client in config.clients {
            let prefixes = try client.dataPrefixes.map { try $0.map(DataURI.parse(uri:)) }
            admit(ClientIdentity(name: client.name, scopes: Set(client.scopes), dataPrefixes: prefixes,
                                 algorithms: try client.algorithms.map { try $0.map(AlgorithmPattern.init(parsing:)) },
                                 corsOrigins: try BrowserOrigins(parsing: client.corsOrigins ?? []),
                                 asyncCalls: client.asyncCalls ?? true,
                                 uploadMinBytesPerSecond: client.uploadMinBytesPerSecond,
                                 quota: Self.merge(client.quota, over: config.quota), isOperator: false),
                  key: client.keySHA256, previousKey: client.previousKeySHA256)
        }
        browserOrigins = .union(entries.map(\.1.corsOrigins))
        quotas = Dictionary(config.clients.map { ($0.name, Self.merge($0.quota, over: config.quota)) }) { first, _ in first }
        if let admin = config.admin {
            admit(ClientIdentity(name: "admin", scopes: [.admin], dataPrefixes: nil, quota: GatewayConfig.Quota(), isOperator: true),
                  key: admin.keySHA256, previousKey: admin.previousKeySHA256)
        }
        self.entries = entries
    }

    /// A client's quota: each field it sets, else the top-level default's.
    static func merge(_ own: GatewayConfig.Quota?, over defaults: GatewayConfig.Quota) -> GatewayConfig.Quota {
        guard let own else { return defaults }
        var quota = defaults
        quota.requestsPerMinute = own.requestsPerMinute ?? defaults.requestsPerMinute
        quota.requestsPerDay = own.requestsPerDay ?? defaults.requestsPerDay
        quota.maxConcurrent = own.maxConcurrent ?? defaults.maxConcurrent
        quota.reservedConcurrent = own.reservedConcurrent ?? defaults.reservedConcurrent
        quota.bytesPerDay = own.bytesPerDay ?? defaults.bytesPerDay
        quota.slotSecondsPerDay = own.slotSecondsPerDay ?? defaults.slotSecondsPerDay
        quota.slotSecondsPerMonth = own.slotSecondsPerMonth ?? defaults.slotSecondsPerMonth
        return quota
    }

    /// The client whose key hash matches, checking every entry whatever the outcome.
    public func client(for key: Secret) -> ClientIdentity? {
        var presented = key.revealed
        let digest = presented.withUTF8 { SHA256.hash(data: UnsafeRawBufferPointer($0)) }
        return digest.withUnsafeBytes { digest in
            var found: ClientIdentity?
            for entry in entries where entry.digest.withUnsafeBytes({ Self.sameBytes($0, digest) }) { found = entry.client }
            return found
        }
    }

    /// Whether two keys are the same, in time that does not depend on where they differ (their
    /// SHA-256 digests are compared).
    static func sameKey(_ left: Secret, _ right: Secret) -> Bool {
        var (left, right) = (left.revealed, right.revealed)
        let a = left.withUTF8 { SHA256.hash(data: UnsafeRawBufferPointer($0)) }
        let b = right.withUTF8 { SHA256.hash(data: UnsafeRawBufferPointer($0)) }
        return a.withUnsafeBytes { a in b.withUnsafeBytes { b in sameBytes(a, b) } }
    }

    /// Byte equality whose time depends on the lengths only, not on where the bytes differ.
    static func sameBytes(_ left: UnsafeRawBufferPointer, _ right: UnsafeRawBufferPointer) -> Bool {
        guard left.count == right.count else { return false }
        var difference: UInt8 = 0
        for index in 0..<left.count { difference |= left[index] ^ right[index] }
        return difference == 0
    }

    static func bytes(hex: String) -> [UInt8] {
        var bytes: [UInt8] = []
        var index = hex.startIndex
        while index < hex.endIndex {
            let next = hex.index(index, offsetBy: 2)
            bytes.append(UInt8(hex[index..<next], radix: 16) ?? 0)
            index = next
        }
        return bytes
    }

    /// Lowercase hex SHA-256 of a key, as `key_sha256` holds it.
    public static func hash(of key: String) -> String {
        Formatting.hex(SHA256.hash(data: Data(key.utf8)))
    }
}
