@testable import AlgoGate
import AlgoTestSupport
import NIOCore
import NIOEmbedded
import NIOPosix
import Glibc
import Synchronization
import Testing

/// The peer recorded as a connection is set up outlives NIO's own, which goes when the channel
/// closes (`ClientDepartureTests.aRequestWhoseClientResetAtOnceIsLoggedWithItsAddress` is the
/// request's side of it); entries go with their channels.
@Suite struct PeerAddressesTests {
    @Test func aClosedChannelsPeerIsTheOneRecordedForIt() async throws {
        let accepted = Mutex<[any Channel]>([])
        let server = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(PeerAddressRecorder())
                    accepted.withLock { $0.append(channel) }
                }
            }
            .bind(host: "127.0.0.1", port: 0).get()
        let client = try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .connect(host: "127.0.0.1", port: try #require(server.localAddress?.port)).get()
        try #require(await eventually { accepted.withLock { $0.count } == 1 })
        let child = try #require(accepted.withLock { $0.first })
        let peer = try #require(child.remoteAddress)
        #expect(peer.port == client.localAddress?.port)

        try await child.close()
        // NIO forgets the addresses just after the close completes.
        #expect(await eventually { child.remoteAddress == nil }, "NIO keeps a closed channel's peer now: the fallback is not needed")
        #expect(PeerAddresses.remote(of: child) == peer)
        // A channel never recorded has no peer once closed (the client closes as the server does),
        // once NIO has forgotten its addresses, just after its close completes as above: checked
        // at once, a loaded machine found it still there (a clean-clone CI run, 2026-12-07).
        try await client.closeFuture.get()
        #expect(await eventually { PeerAddresses.remote(of: client) == nil })
        try await server.close()
    }

    /// Logs give an IPv4 peer of a dual-stack listener in dotted form, every other address as it is.
    @Test func anIPv4MappedPeerIsLoggedInDottedForm() throws {
        #expect(PeerAddresses.logged(try SocketAddress(ipAddress: "::ffff:10.0.0.7", port: 1)) == "10.0.0.7")
        #expect(PeerAddresses.logged(try SocketAddress(ipAddress: "10.0.0.7", port: 1)) == "10.0.0.7")
        #expect(PeerAddresses.logged(try SocketAddress(ipAddress: "::1", port: 1)) == "::1")
        #expect(PeerAddresses.logged(try SocketAddress(ipAddress: "2001:db8::ffff:a00:7", port: 1)) == "2001:db8::ffff:a00:7")
        #expect(PeerAddresses.logged(try SocketAddress(ipAddress: "::ffff:0:a00:7", port: 1)) == "::ffff:0:a00:7")
        #expect(PeerAddresses.logged(nil) == "-")
    }

    /// `server.host: "::"` listens on IPv6 and IPv4 both; a client reaching it on 127.0.0.1 is
    /// served, and logged as 127.0.0.1.
    @Test(.enabled(if: Self.dualStack)) func aDualStackListenerServesIPv4ClientsAndLogsThemAsSuch() async throws {
        try await GatewayHarness.run(host: "::") { h in
            let reply = try await h.gateway.send(.POST, "/v1/algo/demo/Hello", headers: simple(Keys.teamA) + textType, text: "v4")
            #expect(reply.status == 200)
            #expect(reply.object["result"] as? String == "Hello v4", "\(reply.text)")
            let logged = { h.logs.all.first { $0.hasPrefix("info request ") && $0.contains(" path=/v1/algo/demo/Hello ") } }
            #expect(await eventually { logged() != nil })
            let line = try #require(logged())
            #expect(line.contains(" remote=127.0.0.1 "), "\(line)")
        }
    }

    /// Whether this machine can listen on `::` (a container may have IPv6 off).
    static let dualStack: Bool = {
        let descriptor = socket(AF_INET6, Int32(SOCK_STREAM.rawValue), 0)
        guard descriptor >= 0 else { return false }
        defer { close(descriptor) }
        var address = sockaddr_in6()
        address.sin6_family = sa_family_t(AF_INET6)
        return withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(descriptor, $0, socklen_t(MemoryLayout<sockaddr_in6>.size)) == 0 }
        }
    }()

    /// Channels that are gone are swept from the table: recording 5,000 short-lived connections
    /// leaves it far smaller, and a living channel's entry stays through the sweeps.
    @Test func entriesGoWithTheirChannels() throws {
        let kept = EmbeddedChannel()
        let address = try SocketAddress(ipAddress: "192.0.2.7", port: 4000)
        kept.remoteAddress = address
        PeerAddresses.remember(kept)
        for index in 0..<5000 {
            let passing = EmbeddedChannel()
            passing.remoteAddress = try SocketAddress(ipAddress: "192.0.2.8", port: 1000 + index)
            PeerAddresses.remember(passing)
            _ = try passing.finish()  // closed, so it is freed, as a served connection is
        }
        // Other tests' connections share the table; theirs are a few hundred at most.
        #expect(PeerAddresses.count < 3000, "\(PeerAddresses.count) entries kept")
        kept.remoteAddress = nil
        #expect(PeerAddresses.remote(of: kept) == address)
    }
}
