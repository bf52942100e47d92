import NIOSSL
import Synchronization

/// The certificate chain and private key the gateway serves HTTPS with (`server.tls`), read at
/// start and again at each reload: a renewed certificate (cert-manager rewriting a mounted
/// Secret, say) is presented from the next TLS handshake on, with no restart; a connection
/// already open keeps the one it began with.
public final class TLSCredentials: Sendable {
    /// A chain and the key that belongs to its first certificate, both parsed.
    public struct Pair: Sendable {
        let chain: [NIOSSLCertificateSource]
        let key: NIOSSLPrivateKeySource
    }

    private let current: Mutex<Pair>

    public init(_ pair: Pair) {
        current = Mutex(pair)
    }

    /// Reads both files and checks them (`ConfigLoader.load`, for every load and reload): a PEM certificate chain, a PEM private key, and a key
    /// that belongs to the chain's first certificate, so that what the gateway would present is
    /// known to work before it is put in place. Throws a `ConfigError` naming the field; never
    /// any of the files' content.
    public static func read(_ tls: GatewayConfig.Server.TLS) throws -> Pair {
        let chain: [NIOSSLCertificate]
        do {
            chain = try NIOSSLCertificate.fromPEMFile(tls.certFile)
        } catch {
            throw ConfigError(field: "server.tls.cert_file", message: "\(tls.certFile) holds no PEM certificate")
        }
        guard !chain.isEmpty else {
            throw ConfigError(field: "server.tls.cert_file", message: "\(tls.certFile) holds no PEM certificate")
        }
        let key: NIOSSLPrivateKey
        do {
            key = try NIOSSLPrivateKey(file: tls.keyFile, format: .pem)
        } catch {
            throw ConfigError(field: "server.tls.key_file", message: "\(tls.keyFile) holds no PEM private key (an encrypted key is not read)")
        }
        let pair = Pair(chain: chain.map { .certificate($0) }, key: .privateKey(key))
        // BoringSSL refuses, when a context is made, a key that does not belong to the certificate.
        do {
            _ = try NIOSSLContext(configuration: .makeServerConfiguration(certificateChain: pair.chain, privateKey: pair.key))
        } catch {
            throw ConfigError(field: "server.tls.key_file", message: "the key in \(tls.keyFile) does not belong to the certificate in \(tls.certFile)")
        }
        return pair
    }

    /// Puts a pair `read(_:)` returned in place for the handshakes that follow.
    func replace(with pair: Pair) {
        current.withLock { $0 = pair }
    }

    /// The server's TLS configuration: the pair in place now, and at each handshake (the
    /// configuration's context callback, called once per client hello) the pair in place then.
    public func serverConfiguration() -> TLSConfiguration {
        var configuration = TLSConfiguration.makeServerConfiguration(certificateChain: current.withLock { $0.chain },
                                                                     privateKey: current.withLock { $0.key })
        configuration.sslContextCallback = { [self] _, promise in
            let pair = current.withLock { $0 }
            var override = NIOSSLContextConfigurationOverride()
            override.certificateChain = pair.chain
            override.privateKey = pair.key
            promise.succeed(override)
        }
        return configuration
    }
}
