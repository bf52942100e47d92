import AlgoGate
import Foundation
import NIOCore
import NIOPosix
import ServiceLifecycle
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// systemd's service notifications (sd_notify(3)), for the unit's `Type=notify`: `READY=1` once
/// the gateway listens, so that `systemctl start` returns when it serves (or fails, naming why)
/// rather than as the process starts; `RELOADING=1` and `READY=1` around each reload (see
/// `reloadState(_:serving:)`); `STOPPING=1` as it starts to drain; and, under `WatchdogSec=`,
/// `WATCHDOG=1` at half the interval systemd gives (see `SystemdWatchdog`).
/// Each is a datagram to the socket `$NOTIFY_SOCKET` names; without one (not started by systemd,
/// or by a unit of another type) there is nothing to send and nothing is.
struct SystemdNotifier: Sendable {
    /// The socket systemd listens on: a path, or an abstract socket's name after `@`.
    let socketPath: String?
    /// How often to tell systemd the gateway is alive: half `$WATCHDOG_USEC`, when systemd asks
    /// for it of this process (`$WATCHDOG_PID` absent, or this process's).
    let watchdogInterval: Duration?
    /// How long a message may wait for room at the socket.
    static let sendTimeout: Duration = .seconds(5)

    init(environment: [String: String] = ProcessInfo.processInfo.environment, pid: Int32 = getpid()) {
        let path = environment["NOTIFY_SOCKET"].flatMap { $0.isEmpty ? nil : $0 }
        socketPath = path
        if path != nil, let microseconds = environment["WATCHDOG_USEC"].flatMap(Int64.init), microseconds > 0,
           environment["WATCHDOG_PID"].map({ Int32($0) == pid }) ?? true {
            watchdogInterval = .microseconds(microseconds / 2)
        } else {
            watchdogInterval = nil
        }
    }

    /// What to tell systemd of a reload's `progress`. As it begins, `RELOADING=1` with the
    /// monotonic time (`MONOTONIC_USEC`), by which systemd (253 and later) knows the reload for
    /// one begun after the signal it sent, under `Type=notify-reload`; once it is over, `READY=1`,
    /// and the status `serving` (the address served), saying when the reload was refused and the
    /// configuration before it kept. Under `Type=notify` systemd shows the unit as reloading
    /// meanwhile.
    static func reloadState(_ progress: ConfigReloader.Progress, serving: String) -> String {
        switch progress {
        case .begun:
            var now = timespec()
            clock_gettime(CLOCK_MONOTONIC, &now)
            return "RELOADING=1\nMONOTONIC_USEC=\(UInt64(now.tv_sec) * 1_000_000 + UInt64(now.tv_nsec) / 1_000)\nSTATUS=reloading the configuration"
        case .taken:
            return "READY=1\nSTATUS=\(serving)"
        case .refused:
            return "READY=1\nSTATUS=\(serving); the last reload was refused, the configuration before it kept (see the log)"
        }
    }

    /// `notify(state)` on NIO's thread pool: a wait for room at the socket holds none of the
    /// threads Swift's tasks share.
    func send(_ state: String) async {
        _ = try? await NIOThreadPool.singleton.runIfActive { notify(state) }
    }

    /// Sends `state` (`KEY=value` lines); false when there is no socket or it could not be sent.
    /// A socket whose queue is full (its reader behind: the kernel holds a few datagrams) is
    /// waited on for at most `sendTimeout` rather than the message lost: a lost `READY=1` would
    /// have systemd kill a gateway that serves.
    @discardableResult
    func notify(_ state: String) -> Bool {
        guard let socketPath else { return false }
        var name = Array(socketPath.utf8)
        let abstract = name.first == UInt8(ascii: "@")
        if abstract { name[0] = 0 }
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        guard name.count < MemoryLayout.size(ofValue: address.sun_path) else { return false }
        withUnsafeMutableBytes(of: &address.sun_path) { $0.copyBytes(from: name) }
        // A path's length counts its terminating NUL; an abstract name's does not.
        let length = socklen_t(MemoryLayout<sa_family_t>.size + name.count + (abstract ? 0 : 1))
        let descriptor = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard descriptor >= 0 else { return false }
        defer { close(descriptor) }
        var timeout = timeval(tv_sec: Int(Self.sendTimeout.components.seconds), tv_usec: 0)
        setsockopt(descriptor, SOL_SOCKET, SO_SNDTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        let message = Array(state.utf8)
        let sent = message.withUnsafeBytes { bytes in
            withUnsafePointer(to: &address) { pointer in
                pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                    sendto(descriptor, bytes.baseAddress, bytes.count, Int32(MSG_NOSIGNAL), $0, length)
                }
            }
        }
        return sent == message.count
    }
}

/// The status the gateway gives systemd while it serves (`serving on HOST:PORT`), set once it
/// listens and restated after each reload.
final class ServingStatus: Sendable {
    private let value = Mutex("")
    var text: String {
        get { value.withLock { $0 } }
        set { value.withLock { $0 = newValue } }
    }
}

/// Tells systemd the gateway is alive (`WATCHDOG=1`) every `notifier.watchdogInterval`, each
/// time only after every event loop has run a task it was given, from a Swift task: a loop stuck
/// in a call, or a pool of tasks that no longer runs, stops the pings, and systemd, after
/// `WatchdogSec=`, kills the gateway (SIGABRT) and starts it again (`Restart=on-failure`). Says
/// `STOPPING=1` when the gateway starts to drain, and stops pinging then (systemd watches a
/// running service only).
struct SystemdWatchdog: Service {
    let notifier: SystemdNotifier

    func run() async throws {
        await withGracefulShutdownHandler {
            guard let interval = notifier.watchdogInterval else {
                try? await gracefulShutdown()
                return
            }
            try? await cancelWhenGracefulShutdown {
                while true {
                    // NIO's loops: the server's (Hummingbird's) and the upstream client's.
                    for loop in MultiThreadedEventLoopGroup.singleton.makeIterator() {
                        try await loop.submit {}.get()
                    }
                    await notifier.send("WATCHDOG=1")
                    try await Task.sleep(for: interval)
                }
            }
        } onGracefulShutdown: {
            // Here, not on the thread pool: sent before the gateway goes on to drain and exit.
            notifier.notify("STOPPING=1")
        }
    }
}
