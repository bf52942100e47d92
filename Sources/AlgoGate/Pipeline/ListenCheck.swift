import NIOCore
import NIOPosix

/// Binds `host:port` as the server will (with SO_REUSEADDR) and lets go at once, so that a port
/// already taken is found before any service starts. Found later, the service group cancels the
/// services it started, and that cancellation once deadlocked in a test run (a thread in
/// swift-async-algorithms' merge, which `cancelOnGracefulShutdown` uses, another waiting on a
/// task's status lock), leaving the process hanging rather than exiting. Port 0 (any free port)
/// is bound too: that checks the host (one that does not resolve fails the same late way).
///
/// For the moment it is bound the port listens, and a client that connects then (a health check,
/// a benchmark's wait loop) lands here, not on the server. Such a connection is never accepted
/// (the channel does not read), so when the port is let go the kernel resets it and the client
/// tries again; one accepted all the same is closed at once. Accepted with no handler, as it
/// once was, it stayed open for good with its request read and never answered: a benchmark's
/// `curl` waited on one for 16 minutes. `whileBound` runs while the port is held (tests).
public func checkListenable(host: String, port: Int, whileBound: @Sendable () async throws -> Void = {}) async throws {
    let channel = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
        .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
        .serverChannelOption(.autoRead, value: false)
        .childChannelInitializer { child in child.close() }
        .bind(host: host, port: port).get()
    do {
        try await whileBound()
    } catch {
        try? await channel.close()
        throw error
    }
    try await channel.close()
}
