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

    @Test func aProgramThatCannotStartIsAnError() throws {
        #expect {
            _ = try ChildProcess(executable: URL(fileURLWithPath: "/nonexistent/program"), arguments: [])
        } throws: { error in
            guard case ChildProcessError.spawn(_, let code) = error else { return false }
            return code == ENOENT
        }
    }
}
