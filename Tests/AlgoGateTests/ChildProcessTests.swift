import AlgoTestSupport
import Foundation
import Synchronization
import Testing

/// The test support's child processes: what they inherit, and how their end is seen. Every
/// process test (shutdown, reload, memory bounds, the CLI) stands on these.
struct ChildProcessTests {
    static let env = URL(fileURLWithPath: "/usr/bin/env")

    /// This test run holds hundreds of sockets and files, some without close-on-exec (this test
    /// adds a pipe to be sure); the child sees stdin, stdout and stderr, and the directory `ls`
    /// opens itself.
    @Test func aChildInheritsOnlyItsStandardDescriptors() async throws {
        var ends: [Int32] = [0, 0]
        try #require(pipe(&ends) == 0)
        defer { ends.forEach { close($0) } }
        let ls = try await ChildProcess.run(executable: Self.env, arguments: ["ls", "/proc/self/fd"])
        #expect(ls.termination == .exited(0))
        #expect(ls.log == "0\n1\n2\n3\n")
    }

    /// SwiftNIO makes this process ignore SIGPIPE; a gateway started from it must not inherit
    /// that, or a test would pass that production (where SIGPIPE kills) fails.
    @Test func aChildStartsWithDefaultUnblockedSignals() async throws {
        signal(SIGPIPE, SIG_IGN)
        let grep = try await ChildProcess.run(executable: Self.env, arguments: ["grep", "-E", "^Sig(Blk|Ign):", "/proc/self/status"])
        #expect(grep.termination == .exited(0))
        let masks = Dictionary(uniqueKeysWithValues: grep.log.split(separator: "\n").map { line in
            let parts = line.split(separator: "\t")
            return (String(parts[0]), UInt64(parts.last ?? "", radix: 16) ?? .max)
        })
        // Signals 1 to 31; glibc keeps 32 and 33 for itself.
        let standard: UInt64 = 1 << 31 - 1
        #expect(masks["SigBlk:"].map { $0 & standard } == 0, "\(grep.log)")
        #expect(masks["SigIgn:"].map { $0 & standard } == 0, "\(grep.log)")
    }

    @Test func aSignalledChildReportsTheSignalAndStopCleansUpAfterIt() async throws {
        let sleeper = try ChildProcess(executable: Self.env, arguments: ["sleep", "30"])
        #expect(sleeper.isRunning)
        sleeper.signal(SIGTERM)
        await sleeper.exited()
        #expect(sleeper.termination == .signalled(SIGTERM))
        #expect(!sleeper.isRunning)

        // Stopping a child that has already ended cleans up at once.
        let cleaned = Atomic(false)
        sleeper.stop { cleaned.store(true, ordering: .relaxed) }
        let cleanedAtOnce = cleaned.load(ordering: .relaxed)
        #expect(cleanedAtOnce)
        #expect(!FileManager.default.fileExists(atPath: sleeper.output.path))
    }

    @Test func stopEndsARunningChildAndThenCleansUp() async throws {
        let sleeper = try ChildProcess(executable: Self.env, arguments: ["sleep", "30"])
        let cleaned = Atomic(false)
        sleeper.stop { cleaned.store(true, ordering: .relaxed) }
        await sleeper.exited()
        #expect(sleeper.termination == .signalled(SIGTERM))
        #expect(await eventually { cleaned.load(ordering: .relaxed) })
        #expect(!FileManager.default.fileExists(atPath: sleeper.output.path))
    }

    @Test func aOneShotCommandIsRunToItsEndAndLeavesNoFileBehind() async throws {
        let outcome = try await ChildProcess.run(executable: Self.env, arguments: ["sh", "-c", "echo out; echo err >&2; exit 3"])
        #expect(outcome.termination == .exited(3))
        #expect(outcome.log == "out\nerr\n")
        #expect(!FileManager.default.fileExists(atPath: outcome.output.path))
    }

    /// A child dies with the test process, however it ends (a crash, a CI timeout's SIGKILL): its
    /// parent-death signal is SIGKILL, set before the program starts, with the program's own pid.
    @Test func aChildIsSetToDieWithTheTestProcess() async throws {
        let dump = try await ChildProcess.run(executable: Self.env, arguments: ["setpriv", "--dump"])
        #expect(dump.termination == .exited(0))
        #expect(dump.log.split(separator: "\n").contains("Parent death signal: KILL"), "\(dump.log)")

        let sleeper = try ChildProcess(executable: Self.env, arguments: ["sleep", "30"])
        defer { sleeper.stop() }
        #expect(await eventually { (try? String(contentsOfFile: "/proc/\(sleeper.pid)/comm", encoding: .utf8)) == "sleep\n" })
    }

    private final class Started: Sendable {
        let child = Mutex<ChildProcess?>(nil)
    }

    /// The thread that starts children outlives the tasks that ask for them: a child started from
    /// a task whose thread has since gone is still running (its parent-death signal would have
    /// killed it had the thread that started it been the task's).
    @Test func aChildOutlivesTheThreadThatAskedForIt() async throws {
        let holder = Started()
        let thread = Thread {
            let child = try? ChildProcess(executable: Self.env, arguments: ["sleep", "30"])
            // Until the program runs, so its parent-death signal is set before this thread ends.
            for _ in 0..<1000 {
                guard let child, (try? String(contentsOfFile: "/proc/\(child.pid)/comm", encoding: .utf8)) != "sleep\n" else { break }
                usleep(1000)
            }
            holder.child.withLock { $0 = child }
        }
        thread.start()
        #expect(await eventually { thread.isFinished })
        let started = try #require(holder.child.withLock { $0 })
        defer { started.stop() }
        // A SIGKILL sent as the thread ended would be seen by now.
        try await Task.sleep(for: .milliseconds(300))
        #expect(started.isRunning)
    }

    @Test func aProgramThatCannotStartIsAnError() throws {
        #expect {
            _ = try ChildProcess(executable: URL(fileURLWithPath: "/nonexistent/program"), arguments: [])
        } throws: { error in
            guard case ChildProcessError.spawn(_, let code) = error else { return false }
            return code == ENOENT
        }
    }
}
