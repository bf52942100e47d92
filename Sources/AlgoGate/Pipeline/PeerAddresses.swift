import NIOCore
import Synchronization

/// The peer address of each connection, kept for as long as its channel lives. NIO forgets a
/// channel's addresses when it closes, and a request the client sent just before resetting or
/// closing its connection is handled after that: its log line would have no `remote`, and these
/// are the requests (499s, walk-aways) whose origin an operator most wants. `PeerAddressRecorder`
/// notes the address as each connection is set up; the request context falls back to it.
enum PeerAddresses {
    private struct Entry {
        weak var channel: (any Channel)?
        let address: SocketAddress
    }

    private struct Table {
        var entries: [ObjectIdentifier: Entry] = [:]
        /// Entries whose channel is gone are swept once the table reaches this size.
        var sweepAt = 1024
    }

    private static let table = Mutex(Table())

    static func remember(_ channel: any Channel) {
        guard let address = channel.remoteAddress else { return }
        table.withLock { table in
            table.entries[ObjectIdentifier(channel)] = Entry(channel: channel, address: address)
            if table.entries.count >= table.sweepAt {
                table.entries = table.entries.filter { $0.value.channel != nil }
                table.sweepAt = max(1024, 2 * table.entries.count)
            }
        }
    }

    /// The channel's peer: as NIO has it while the channel is open, else as it was recorded.
    static func remote(of channel: any Channel) -> SocketAddress? {
        if let address = channel.remoteAddress { return address }
        return table.withLock { table in
            guard let entry = table.entries[ObjectIdentifier(channel)], entry.channel === channel else { return nil }
            return entry.address
        }
    }

    /// A peer's address as the logs give it, `-` when none is known. An IPv4 peer of a dual-stack
    /// listener (`server.host: "::"`) is given in dotted form (`10.0.0.7`), not IPv4-mapped
    /// (`::ffff:10.0.0.7`, as the socket has it), so the same client reads the same whichever
    /// listener it reached, as Go's servers give it.
    /// Runs for every logged request: the prefix is compared in place (NIO writes addresses as
    /// `inet_ntop` does, in lowercase).
    static func logged(_ address: SocketAddress?) -> String {
        guard let ip = address?.ipAddress else { return "-" }
        let mapped = "::ffff:".utf8
        guard ip.utf8.count > mapped.count, ip.utf8.starts(with: mapped) else { return ip }
        let rest = ip.utf8.dropFirst(mapped.count)
        return rest.contains(UInt8(ascii: ".")) ? String(Substring(rest)) : ip
    }

    /// How many connections are recorded (gone ones included until the next sweep); for tests.
    static var count: Int { table.withLock { $0.entries.count } }
}

/// Records its connection's peer (`PeerAddresses`) as the connection is set up, then leaves the
/// pipeline.
final class PeerAddressRecorder: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = NIOAny

    func handlerAdded(context: ChannelHandlerContext) {
        PeerAddresses.remember(context.channel)
        context.pipeline.syncOperations.removeHandler(context: context, promise: nil)
    }
}
