import AsyncHTTPClient
import NIOCore
import NIOSSL

extension Forwarder {
    /// The shared client's configuration: no redirects, no automatic decompression, pooled
    /// HTTP/1.1 connections, and a read timeout: once a request has been sent, an upstream that sends
    /// nothing for `upstream.timeout_seconds` and the grace (longer than any call may wait for its
    /// answer) has its request failed. Without it, a connection that died silently while an
    /// answer's body was arriving (no reset ever comes) would hold its call, its upstream slot,
    /// and for a cacheable call every identical call collapsed onto it, for ever. A write timeout
    /// of the same length fails an upload the upstream stops taking (the client's side of an
    /// upload is bounded by `server.idle_timeout_seconds`). Fixed at start: a reload that raises
    /// `upstream.timeout_seconds` asks for a restart. With `upstream.proxy`, every connection is
    /// a tunnel through the proxy (`CONNECT`), with its credentials when it has them.
    public static func clientConfiguration(_ loaded: ConfigLoader.Loaded) -> HTTPClient.Configuration {
        let upstream = loaded.config.upstream
        var configuration = HTTPClient.Configuration()
        configuration.redirectConfiguration = .disallow
        let silence = TimeAmount.seconds(Int64(upstream.timeoutSeconds)) + timeoutGrace
        configuration.timeout = .init(connect: .seconds(Int64(upstream.connectTimeoutSeconds)), read: silence, write: silence)
        // A pooled connection idle for `idle_connection_seconds` (50 s by default, before the 60 s
        // after which AWS's load balancers and many others close one) is closed by the gateway:
        // a call sent on a connection just as the far side closes it is lost, and an algorithm
        // call (POST) is never sent again.
        configuration.connectionPool = .init(idleTimeout: .seconds(Int64(upstream.idleConnectionSeconds)),
                                             concurrentHTTP1ConnectionsPerHostSoftLimit: upstream.maxConcurrency)
        configuration.decompression = .disabled
        // HTTP/1.1 whatever the upstream offers in its TLS handshake: the pool, sized by
        // `max_concurrency`, the replay of a request whose pooled connection was lost, and
        // `abandoned_calls: cancel` work per connection, and a connection that fails takes one
        // call with it, not every call multiplexed onto it (nor does a large upload share one
        // connection's flow-control window with the algorithm calls).
        configuration.httpVersion = .http1Only
        // No tracer is installed; without this the client parses every URL again for span attributes.
        configuration.tracing.tracer = nil
        if let caFile = upstream.caFile {
            // Verification stays on (full chain and host name); only the roots change.
            var tls = TLSConfiguration.makeClientConfiguration()
            tls.trustRoots = .file(caFile)
            configuration.tlsConfiguration = tls
        }
        if let endpoint = upstream.proxy?.endpoint {
            let authorization = loaded.proxyAuth.map { HTTPClient.Authorization.basic(username: $0.user, password: $0.password.revealed) }
            configuration.proxy = .server(host: endpoint.host, port: endpoint.port, authorization: authorization)
            // A connection that fails is tried again, with backoff, until the connect timeout
            // passes: about a dozen CONNECTs in 5 s. With credentials, each would be a failed
            // login when they are wrong, and a proxy that checks them against a directory locks
            // the account after a few. So a failed connection fails the calls waiting on it at
            // once, and the circuit breaker spaces out what follows.
            if authorization != nil { configuration.connectionPool.retryConnectionEstablishment = false }
        }
        return configuration
    }
}
