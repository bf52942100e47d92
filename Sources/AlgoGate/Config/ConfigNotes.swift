import Foundation

/// What `check-config` prints and `serve` logs (at start and on each reload) about a
/// configuration that loads but most likely does not do what was meant. None is refused: a
/// configuration that loaded before still loads.
extension ConfigLoader {
    /// Every note on `config` but the environment's (`ignoredProxyVariables`), in the order they
    /// are printed.
    public static func notes(_ config: GatewayConfig) -> [String] {
        let unbounded = unboundedAlgorithmClients(config)
        return (unbounded.isEmpty ? [] : [unboundedAlgorithmNote(unbounded)]) + rewrittenPrefixes(config) + settingsWithoutEffect(config)
    }

    /// Settings that cannot take effect as written: a concurrency cap above the account's own, an
    /// upload rate for a client that cannot upload, an input bound too small to keep room for
    /// other clients' inputs, cache rules with the cache off, a cache too small to hold any answer.
    static func settingsWithoutEffect(_ config: GatewayConfig) -> [String] {
        var notes: [String] = []
        let slots = config.upstream.maxConcurrency
        if let cap = config.quota.maxConcurrent, cap > slots {
            notes.append("quota.max_concurrent (\(cap)) is above upstream.max_concurrency (\(slots)): it never binds, as no client can have more than the account's \(slots) calls under way")
        }
        for (index, client) in config.clients.enumerated() {
            if let cap = client.quota?.maxConcurrent, cap > slots {
                notes.append("clients[\(index)].quota.max_concurrent (\(cap)) is above upstream.max_concurrency (\(slots)): it never binds, as no client can have more than the account's \(slots) calls under way")
            }
            if client.uploadMinBytesPerSecond != nil, Set(client.scopes).isDisjoint(with: [Scope.dataWrite, .manage, .admin]) {
                notes.append("clients[\(index)].upload_min_bytes_per_second applies to nothing: client '\(client.name)' has no scope that uploads (data:write, manage, admin)")
            }
        }
        let limits = config.limits
        if config.clients.count > 1, limits.maxBufferedBytes < 2 * limits.maxRequestBytes {
            notes.append("limits.max_buffered_bytes (\(limits.maxBufferedBytes)) is under twice limits.max_request_bytes (\(limits.maxRequestBytes)): one client's algorithm inputs can hold all of it, with no room kept for the other clients' (see the README's Memory)")
        }
        if !config.cache.enabled {
            if !config.cache.rules.isEmpty { notes.append("cache.rules apply to nothing: cache.enabled is false") }
        } else if config.cache.maxBytes <= ResponseCache.entryOverhead {
            notes.append("cache.max_bytes (\(config.cache.maxBytes)) holds no answer: each entry takes \(ResponseCache.entryOverhead) bytes beside its body; to turn the cache off, set cache.enabled: false")
        }
        return notes
    }

    /// Clients whose algorithm calls reach every path of the account though no route of theirs
    /// does: the `algo` scope, neither data scope and no `data_prefixes`, in a configuration where
    /// other clients have `data_prefixes` (so teams are meant to be kept apart). An algorithm
    /// runs with the account's key: a data path in such a client's input is read, whatever its
    /// scopes. `check-config` and `serve` say so; the configuration is not refused (a trusted
    /// team may be meant to reach everything).
    public static func unboundedAlgorithmClients(_ config: GatewayConfig) -> [String] {
        guard config.clients.contains(where: { $0.dataPrefixes != nil }) else { return [] }
        return config.clients.filter { client in
            client.scopes.contains(.algo) && client.dataPrefixes == nil
                && !client.scopes.contains(.dataRead) && !client.scopes.contains(.dataWrite)
        }.map(\.name)
    }

    /// Data prefixes that read otherwise than they are written: a `.` or `..` segment resolved, a
    /// repeated slash or a backslash folded, as in a request's path. Accepted (a configuration
    /// that loaded before still loads), but most likely a typo: `check-config` and `serve` say
    /// what is enforced.
    public static func rewrittenPrefixes(_ config: GatewayConfig) -> [String] {
        var notes: [String] = []
        for (index, client) in config.clients.enumerated() {
            for (prefixIndex, prefix) in (client.dataPrefixes ?? []).enumerated() {
                guard let read = try? DataURI.parse(uri: prefix), let (_, rest) = DataURI.splitScheme(prefix) else { continue }
                var written = (rest.removingPercentEncoding ?? rest).split(separator: "/", omittingEmptySubsequences: false).map(String.init)
                if written.last == "" { written.removeLast() }
                guard written != read.segments else { continue }
                notes.append("clients[\(index)].data_prefixes[\(prefixIndex)] '\(prefix)' is read as '\(read)/': a '.' or '..' segment, a repeated slash or a backslash in it is folded, as in a request's path")
            }
        }
        return notes
    }

    /// What `serve` logs and `check-config` prints about `unboundedAlgorithmClients`.
    public static func unboundedAlgorithmNote(_ names: [String]) -> String {
        "with the algo scope and no data_prefixes (nor a data scope), algorithms called by \(names.joined(separator: ", ")) run with the account's key and can read and write every path, other teams' included; data_prefixes keep a client's calls to its own files"
    }

    /// The proxy variables (`HTTPS_PROXY`, `HTTP_PROXY`, `ALL_PROXY`, either case) set in
    /// `environment` that would route this configuration's upstream through a proxy, had the
    /// gateway read them. It does not: it goes through a proxy only when `upstream.proxy` says so,
    /// so that nothing in a shell or a pod's environment moves where the key goes. Named, so an
    /// operator who expected them to apply is told; their values may hold credentials and are
    /// never shown. Empty when `upstream.proxy` is set, when the upstream is on loopback, or when
    /// `NO_PROXY` covers its host.
    public static func ignoredProxyVariables(_ config: GatewayConfig, environment: [String: String]) -> [String] {
        guard config.upstream.proxy == nil, let host = URL(string: config.upstream.url)?.host?.lowercased(), !isLoopback(host) else { return [] }
        let exempt = ["NO_PROXY", "no_proxy"].compactMap { environment[$0] }.flatMap { $0.split(separator: ",") }.contains { entry in
            let domain = entry.trimmingCharacters(in: .whitespaces).lowercased().split(separator: ":").first.map(String.init) ?? ""
            let bare = domain.hasPrefix(".") ? String(domain.dropFirst()) : domain
            return domain == "*" || (!bare.isEmpty && (host == bare || host.hasSuffix("." + bare)))
        }
        guard !exempt else { return [] }
        return ["HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"].filter { environment[$0].map { !$0.isEmpty } ?? false }
    }

    /// `localhost`, 127.0.0.0/8 or ::1: a host whose traffic never leaves the machine.
    static func isLoopback(_ host: String) -> Bool {
        let host = host.lowercased().trimmingCharacters(in: CharacterSet(charactersIn: "[]"))
        if host == "localhost" || host == "::1" { return true }
        let octets = host.split(separator: ".", omittingEmptySubsequences: false)
        return octets.count == 4 && octets[0] == "127" && octets.allSatisfy { UInt8($0) != nil }
    }
}
