import AsyncHTTPClient
import Foundation
import Synchronization

/// A process of the built `algogate` executable, for tests that need a separate address space
/// (memory bounds) or signals (shutdown, reload).
public final class ChildProcess: @unchecked Sendable {
    // `@unchecked`: `process` and `output` are set once in init and only read afterwards;
    // Foundation's Process is thread-safe for the calls used here (pid, terminate, waitUntilExit).
    public let process = Process()
    public let output: URL

    /// The `algogate` binary built beside the test bundle.
    public static var executable: URL {
        let bundleDirectory = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent()
        let beside = bundleDirectory.appendingPathComponent("algogate")
        if FileManager.default.isExecutableFile(atPath: beside.path) { return beside }
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        return root.appendingPathComponent(".build/debug/algogate")
    }

    /// `standardOutput`: where the process's stdout goes instead of the `output` file (stderr
    /// always goes there).
    public init(arguments: [String], environment: [String: String] = [:], standardOutput: FileHandle? = nil) throws {
        output = FileManager.default.temporaryDirectory.appendingPathComponent("algogate-child-\(UUID().uuidString).log")
        _ = FileManager.default.createFile(atPath: output.path, contents: nil)
        let handle = try FileHandle(forWritingTo: output)
        process.executableURL = Self.executable
        process.arguments = arguments
        process.environment = ProcessInfo.processInfo.environment.merging(environment) { $1 }
        process.standardOutput = standardOutput ?? handle
        process.standardError = handle
        process.terminationHandler = { exited in
            let pid = exited.processIdentifier
            Self.running.withLock { $0.removeAll { $0 == pid } }
        }
        _ = Self.killRunningAtExit
        try Self.running.withLock { running in
            try process.run()
            running.append(process.processIdentifier)
        }
    }

    /// Children that have not exited yet. `stop()` returns before they have, so the test run
    /// may end first: then they are killed as it exits, not left behind.
    private static let running = Mutex<[Int32]>([])
    private static let killRunningAtExit: Void = {
        atexit { ChildProcess.running.withLock { for pid in $0 { kill(pid, SIGKILL) } } }
    }()

    public var pid: Int32 { process.processIdentifier }

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

    public func signal(_ signal: Int32) { kill(pid, signal) }

    /// SIGTERM, and SIGKILL when the process has not exited 10 s later (a test that failed
    /// because the process hung must not hang itself); then `cleanup`. Returns at once: the
    /// waiting is done on a Dispatch thread, never on one of the few threads Swift's tasks share
    /// (a test blocking one of them for a shutdown slows every other test in the run).
    public func stop(then cleanup: @escaping @Sendable () -> Void = {}) {
        if process.isRunning { process.terminate() }
        DispatchQueue.global().async { [self] in
            let deadline = Date().addingTimeInterval(10)
            while process.isRunning && Date() < deadline { usleep(20_000) }
            if process.isRunning { kill(pid, SIGKILL) }
            process.waitUntilExit()
            try? FileManager.default.removeItem(at: output)
            cleanup()
        }
    }

    /// Waits for the process to exit without blocking a thread.
    public func exited() async { await process.exited() }

    /// The port the process reports listening on (Hummingbird logs "listening on HOST:PORT");
    /// processes are started on port 0 so two tests can never race for the same port.
    public func listeningPort(seconds: Double = 60) async throws -> Int {
        let deadline = Date().addingTimeInterval(seconds)
        while Date() < deadline {
            if let port = Self.listeningPort(in: log) { return port }
            guard process.isRunning else { break }
            try await Task.sleep(for: .milliseconds(50))
        }
        throw ChildProcessError.notListening("\(process.arguments ?? []): \(log.suffix(500))")
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

public enum ChildProcessError: Error { case notListening(String) }

extension Process {
    /// Waits for the process to exit, polling, so that no thread Swift's tasks share is blocked
    /// (as `waitUntilExit()` would block one).
    public func exited() async {
        while isRunning { try? await Task.sleep(for: .milliseconds(20)) }
    }
}
