import AsyncHTTPClient
import Foundation
import Synchronization

/// A process of the built `algogate` executable (or of another program), for tests that need a
/// separate address space (memory bounds) or signals (shutdown, reload).
///
/// Started with posix_spawn, not Foundation's `Process`: on Linux, `Process.run()` finds the
/// descriptors to close in the child by reading /proc/self/fd, and copies each entry's whole
/// 256-byte name field, reading past the end of the directory buffer (valgrind: "0 bytes after a
/// block of size 32,816"). This test run holds up to 2,000 descriptors at once, and that read
/// once fell off the end of mapped memory and crashed the suite with SIGSEGV. Here glibc closes
/// every inherited descriptor above stderr in the child (`closefrom` file action), the child's
/// signals start at their defaults and unblocked, and a thread of its own waits for its exit.
///
/// A child dies with the test process, however that ends: it is started through `setpriv
/// --pdeathsig KILL` (util-linux, in every Debian), from a thread that lives as long as the
/// process (`Spawner`), since Linux sends a parent-death signal when the *thread* that started
/// the child ends. A test run that crashed (SIGSEGV) or was killed (a CI timeout) used to leave
/// its gateways and simulators running, holding their ports and files; `atexit` covers only an
/// orderly exit.
public final class ChildProcess: Sendable {
    public enum Termination: Equatable, Sendable {
        case exited(Int32)
        case signalled(Int32)
    }

    public let pid: pid_t
    public let arguments: [String]
    public let output: URL
    private let state = Mutex(State())

    private struct State {
        /// Set, under the lock, once the child has exited and before it is reaped: from then on
        /// its pid may be reused, so no signal is sent to it.
        var gone = false
        var termination: Termination?
        var waiters: [CheckedContinuation<Void, Never>] = []
        var onExit: [@Sendable () -> Void] = []
    }

    /// The `algogate` binary built beside the test bundle.
    public static var executable: URL {
        let bundleDirectory = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent()
        let beside = bundleDirectory.appendingPathComponent("algogate")
        if FileManager.default.isExecutableFile(atPath: beside.path) { return beside }
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        return root.appendingPathComponent(".build/debug/algogate")
    }

    /// Starts `executable` with `arguments`, this process's environment plus `environment`, and
    /// stdin from /dev/null. `standardOutput`: where the child's stdout goes instead of the
    /// `output` file (stderr always goes there).
    public init(executable: URL = ChildProcess.executable, arguments: [String], environment: [String: String] = [:],
                standardOutput: FileHandle? = nil) throws {
        self.arguments = arguments
        // setpriv would report a program it cannot run only by its exit status (127), once started.
        guard access(executable.path, X_OK) == 0 else { throw ChildProcessError.spawn("cannot start \(executable.path)", errno: errno) }
        let output = FileManager.default.temporaryDirectory.appendingPathComponent("algogate-child-\(UUID().uuidString).log")
        self.output = output
        let logDescriptor = open(output.path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0o644)
        guard logDescriptor >= 0 else { throw ChildProcessError.spawn("cannot create \(output.path)", errno: errno) }
        defer { close(logDescriptor) }

        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, STDIN_FILENO, "/dev/null", O_RDONLY, 0)
        posix_spawn_file_actions_adddup2(&actions, standardOutput?.fileDescriptor ?? logDescriptor, STDOUT_FILENO)
        posix_spawn_file_actions_adddup2(&actions, logDescriptor, STDERR_FILENO)
        try Self.closeFrom(STDERR_FILENO + 1, &actions)

        var attributes = posix_spawnattr_t()
        posix_spawnattr_init(&attributes)
        defer { posix_spawnattr_destroy(&attributes) }
        var unblocked = sigset_t()
        sigemptyset(&unblocked)
        posix_spawnattr_setsigmask(&attributes, &unblocked)
        // As from a shell: this process ignores SIGPIPE (SwiftNIO does), which a child would inherit.
        var defaults = sigset_t()
        sigfillset(&defaults)
        posix_spawnattr_setsigdefault(&attributes, &defaults)
        posix_spawnattr_setflags(&attributes, Int16(POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF))

        let variables = ProcessInfo.processInfo.environment.merging(environment) { $1 }.map { "\($0)=\($1)" }
        // setpriv execs the program in its own place: the pid is the program's.
        let (program, argument0) = Self.setpriv.map { ($0.path, ["setpriv", "--pdeathsig", "KILL", "--", executable.path]) }
            ?? (executable.path, [executable.path])
        let argv = (argument0 + arguments).map { strdup($0) } + [nil]
        let envp = variables.map { strdup($0) } + [nil]
        defer { (argv + envp).forEach { free($0) } }
        let pid = try Spawner.shared.perform {
            try Self.running.withLock { running in
                var pid: pid_t = 0
                let status = posix_spawn(&pid, program, &actions, &attributes, argv, envp)
                guard status == 0 else {
                    try? FileManager.default.removeItem(at: output)
                    throw ChildProcessError.spawn("cannot start \(program)", errno: status)
                }
                return pid
            }
        }
        self.pid = pid
        Self.running.withLock { $0[pid] = self }
        _ = Self.killRunningAtExit
        let thread = Thread { [self] in reap() }
        thread.name = "child-\(pid)"
        thread.start()
    }

    /// util-linux's `setpriv`, which sets the parent-death signal and then execs the program; nil
    /// on a system without it (the children then outlive a crashed test run, as before).
    static let setpriv: URL? = ["/usr/bin/setpriv", "/bin/setpriv"].map { URL(fileURLWithPath: $0) }
        .first { FileManager.default.isExecutableFile(atPath: $0.path) }

    /// glibc's `posix_spawn_file_actions_addclosefrom_np` (2.34 and later), which Swift's Glibc
    /// module does not declare (it is behind _GNU_SOURCE).
    private static func closeFrom(_ first: Int32, _ actions: inout posix_spawn_file_actions_t) throws {
        typealias AddCloseFrom = @convention(c) (UnsafeMutablePointer<posix_spawn_file_actions_t>, Int32) -> Int32
        guard let symbol = dlsym(nil, "posix_spawn_file_actions_addclosefrom_np") else {
            throw ChildProcessError.spawn("posix_spawn_file_actions_addclosefrom_np is missing (glibc 2.34 or later is needed)", errno: ENOSYS)
        }
        let status = unsafeBitCast(symbol, to: AddCloseFrom.self)(&actions, first)
        guard status == 0 else { throw ChildProcessError.spawn("posix_spawn_file_actions_addclosefrom_np", errno: status) }
    }

    /// Waits for the child's exit without reaping it (its pid stays taken), marks it gone, reaps
    /// it, then wakes whoever waits.
    private func reap() {
        var info = siginfo_t()
        while waitid(P_PID, id_t(pid), &info, WEXITED | WNOWAIT) != 0 && errno == EINTR {}
        state.withLock { $0.gone = true }
        Self.running.withLock { _ = $0.removeValue(forKey: pid) }
        var status: Int32 = 0
        var reaped: pid_t
        repeat { reaped = waitpid(pid, &status, 0) } while reaped < 0 && errno == EINTR
        let signal = status & 0x7f
        // Reaped by someone else (nothing in this run does that): how it ended is not known.
        let termination: Termination = reaped != pid ? .exited(-1) : signal == 0 ? .exited((status >> 8) & 0xff) : .signalled(signal)
        let (waiters, onExit) = state.withLock { state in
            state.termination = termination
            defer { state.waiters = []; state.onExit = [] }
            return (state.waiters, state.onExit)
        }
        waiters.forEach { $0.resume() }
        onExit.forEach { $0() }
    }

    /// Children that have not exited yet. `stop()` returns before they have, so the test run may
    /// end first: then, as it exits, they are killed, and what `stop` was to do after their exit
    /// is done (their output files and the tests' directories removed), not left behind. A pass
    /// may stop more children (a gateway's cleanup stops its simulator), hence a few passes.
    private static let running = Mutex<[pid_t: ChildProcess]>([:])
    private static let killRunningAtExit: Void = {
        atexit {
            for _ in 0..<4 {
                let children = ChildProcess.running.withLock { Array($0.values) }
                var cleanedUp = false
                for child in children {
                    child.signal(SIGKILL)
                    let pending = child.state.withLock { state in
                        defer { state.onExit = [] }
                        return state.onExit
                    }
                    pending.forEach { $0() }
                    cleanedUp = cleanedUp || !pending.isEmpty
                    unlink(child.output.path)
                }
                if !cleanedUp { break }
            }
        }
    }()

    /// How the child ended; nil while it runs.
    public var termination: Termination? { state.withLock { $0.termination } }
    public var isRunning: Bool { termination == nil }

    /// Everything the process has written to stdout and stderr so far.
    public var log: String { (try? String(contentsOf: output, encoding: .utf8)) ?? "" }

    /// Peak resident memory (VmHWM) in bytes, read from /proc.
    public var peakResidentBytes: Int? { Self.procStatus(pid: pid, field: "VmHWM") }
    public var residentBytes: Int? { Self.procStatus(pid: pid, field: "VmRSS") }

    static func procStatus(pid: Int32, field: String) -> Int? {
        guard let status = try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8) else { return nil }
        for line in status.split(separator: "\n") where line.hasPrefix(field + ":") {
            let kib = line.split(separator: " ", omittingEmptySubsequences: true).dropFirst().first.flatMap { Int($0) }
            return kib.map { $0 * 1024 }
        }
        return nil
    }

    /// Sends `signal`, unless the child has exited (its pid may belong to another process then).
    public func signal(_ signal: Int32) {
        state.withLock { state in
            if !state.gone { kill(pid, signal) }
        }
    }

    /// SIGTERM, and SIGKILL when the process has not exited 10 s later (a test that failed
    /// because the process hung must not hang itself); then, once it has exited, removes `output`
    /// and calls `cleanup` (on the thread that saw the exit). Returns at once.
    public func stop(then cleanup: @escaping @Sendable () -> Void = {}) {
        let output = output
        let afterExit: @Sendable () -> Void = {
            try? FileManager.default.removeItem(at: output)
            cleanup()
        }
        let running = state.withLock { state in
            guard state.termination == nil else { return false }
            state.onExit.append(afterExit)
            return true
        }
        guard running else { return afterExit() }
        signal(SIGTERM)
        DispatchQueue.global().asyncAfter(deadline: .now() + 10) { [self] in signal(SIGKILL) }
    }

    /// What a one-shot command left: how it ended and what it wrote.
    public struct Outcome: Sendable {
        public let termination: Termination?
        public let log: String
        /// The output file, removed by the time `run` returns.
        public let output: URL
    }

    /// Runs a command to its end (a CLI command such as `check-config`), then removes its output file.
    public static func run(executable: URL = ChildProcess.executable, arguments: [String],
                           environment: [String: String] = [:]) async throws -> Outcome {
        let child = try ChildProcess(executable: executable, arguments: arguments, environment: environment)
        await child.exited()
        let outcome = Outcome(termination: child.termination, log: child.log, output: child.output)
        await withCheckedContinuation { done in child.stop { done.resume() } }
        return outcome
    }

    /// Waits for the process to exit, without blocking a thread.
    public func exited() async {
        await withCheckedContinuation { (waiter: CheckedContinuation<Void, Never>) in
            let ended = state.withLock { state in
                guard state.termination == nil else { return true }
                state.waiters.append(waiter)
                return false
            }
            if ended { waiter.resume() }
        }
    }

    /// The port the process reports listening on (Hummingbird logs "listening on HOST:PORT");
    /// processes are started on port 0 so two tests can never race for the same port.
    public func listeningPort(seconds: Double = 60) async throws -> Int {
        let deadline = Date().addingTimeInterval(seconds)
        while Date() < deadline {
            if let port = Self.listeningPort(in: log) { return port }
            guard isRunning else { break }
            try await Task.sleep(for: .milliseconds(50))
        }
        throw ChildProcessError.notListening("\(arguments): \(log.suffix(500))")
    }

    /// The port in a "listening on 127.0.0.1:PORT" line of `output`, if there is one yet.
    public static func listeningPort(in output: String) -> Int? {
        guard let range = output.range(of: #"listening on 127\.0\.0\.1:[0-9]+"#, options: .regularExpression) else { return nil }
        return Int(output[range].split(separator: ":").last ?? "")
    }

    /// Waits until `url` answers at all (any status), up to `seconds`.
    public static func waitForHTTP(_ url: String, seconds: Double = 30) async throws {
        let deadline = Date().addingTimeInterval(seconds)
        while Date() < deadline {
            if (try? await HTTPClient.shared.execute(HTTPClientRequest(url: url), timeout: .seconds(1))) != nil { return }
            try await Task.sleep(for: .milliseconds(100))
        }
        throw ChildProcessError.notListening(url)
    }
}

/// One thread, alive as long as the process, that starts every child: Linux sends a child its
/// parent-death signal when the thread that started it ends, and the threads of Swift's
/// concurrency pool (or Dispatch's) come and go.
final class Spawner: @unchecked Sendable {
    // `@unchecked`: `jobs` is guarded by its lock; a job's closure and result are handed between
    // the two threads through the semaphores, which order the accesses.
    static let shared = Spawner()

    private final class Job: @unchecked Sendable {
        /// Let go by the spawner's thread before `done` is signalled: it holds the caller's
        /// closure, which must not outlive `withoutActuallyEscaping` (the runtime checks, and
        /// traps when a reference is left).
        var work: (() -> Void)?
        let done = DispatchSemaphore(value: 0)
        init(_ work: @escaping () -> Void) { self.work = work }
    }

    private let jobs = Mutex<[Job]>([])
    private let queued = DispatchSemaphore(value: 0)

    private init() {
        let thread = Thread { [self] in
            while true {
                queued.wait()
                guard let job = jobs.withLock({ $0.isEmpty ? nil : $0.removeFirst() }) else { continue }
                job.work?()
                job.work = nil
                job.done.signal()
            }
        }
        thread.name = "child-spawner"
        thread.start()
    }

    /// Runs `body` on the spawner's thread, and waits for it.
    func perform<T>(_ body: () throws -> T) throws -> T {
        var result: Result<T, any Error>?
        withoutActuallyEscaping(body) { body in
            let job = Job { result = Result { try body() } }
            jobs.withLock { $0.append(job) }
            queued.signal()
            job.done.wait()
        }
        return try result!.get()
    }
}

public enum ChildProcessError: Error {
    case notListening(String)
    case spawn(String, errno: Int32)
}
