import AlgoGate
import ArgumentParser
import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// `algogate backup`: a consistent, checked copy of the gateway's SQLite file (the cache and the
/// usage counters), taken while it serves.
struct BackupCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "backup",
        abstract: "Copy the gateway's SQLite file (cache and usage counters) while it serves, consistently, and check the copy.",
        discussion: """
            The copy is one snapshot of the file (SQLite's VACUUM INTO), WAL included, read without \
            stopping the gateway's writes; the state file is only read. The copy is \
            written under a temporary name beside the destination, with the state file's permissions, \
            passes SQLite's integrity check, \
            is flushed to disk, and only then takes its name: a file at the destination is a whole \
            copy. A destination that exists is never replaced. The copy must fit on its disk (with \
            64 MiB left over when that is the gateway's own disk).

            --to - writes the copy to standard output (it is made in $TMPDIR first, and \
            removed; what one killed outright left there goes as partial copies do), for \
            `kubectl exec deploy/algogate -- algogate backup --config /etc/algogate/algogate.yaml --to - > algogate.sqlite`.

            --without-cache leaves the cached answers out: the usage counters and the rest of \
            the file, in kilobytes, from the same one snapshot; restored, the cache is empty and \
            refills from the upstream.

            SIGINT or SIGTERM stops it and discards the copy under way. Partial copies that \
            backups killed outright (SIGKILL) left in the destination's directory are removed \
            first, once their process is gone and they have not changed for ten minutes.

            To restore: stop the gateway, run algogate restore --config FILE --from COPY \
            --replace, start the gateway.
            """
    )

    @Option(help: "The gateway's YAML configuration file (for cache.path, the file to copy).")
    var config: String

    @Option(help: ArgumentHelp("The new file to write the copy to; a directory, for algogate-<UTC time>.sqlite in it (algogate-20261206T043000Z.sqlite); - for standard output.", valueName: "path"))
    var to: String

    @Flag(help: "Leave the cached answers out (a refilled cache needs no backup): the usage counters and the rest, in kilobytes rather than the cache's size; restored, the cache is empty.")
    var withoutCache = false

    func validate() throws {
        if to == "-", isatty(STDOUT_FILENO) != 0 {
            throw ValidationError("--to - writes a binary SQLite file to standard output, which is a terminal here: redirect it to a file")
        }
    }

    func run() async throws {
        let gatewayConfig = try loadWithoutKeyOrExit(path: config)
        let statePath = gatewayConfig.cache.path
        // Ctrl-C, or a timer's stop, interrupts the copy, which is then discarded: a killed
        // backup would leave its partial file (as large as the cache) beside the destination.
        let cancellation = StateBackup.Cancellation()
        let signals = [SIGINT, SIGTERM].map { number in
            signal(number, SIG_IGN)
            let source = DispatchSource.makeSignalSource(signal: number, queue: .global())
            source.setEventHandler { cancellation.cancel() }
            source.resume()
            return source
        }
        defer { signals.forEach { $0.cancel() } }
        do {
            if to == "-" {
                try copyToStandardOutput(statePath: statePath, cancellation: cancellation)
            } else {
                let target = StateBackup.target(for: to)
                let directory = (target as NSString).deletingLastPathComponent
                let abandoned = StateBackup.removeAbandonedPartials(in: directory.isEmpty ? "." : directory)
                if !abandoned.isEmpty {
                    print("removed \(abandoned.count) partial cop\(abandoned.count == 1 ? "y" : "ies") that killed backups left: \(abandoned.joined(separator: ", "))")
                }
                let summary = try StateBackup.copy(statePath: statePath, to: target, withoutCache: withoutCache, cancellation: cancellation)
                print("copied \(statePath) to \(target)\(leftOut): \(summary.description); integrity check ok")
            }
        } catch let failure as StateBackup.Failure {
            FileHandle.standardError.write(Data("algogate backup: \(failure.message)\n".utf8))
            throw ExitCode(1)
        }
    }

    private var leftOut: String { withoutCache ? ", its cache left out" : "" }

    /// The directories (`algogate-backup-PID-XXXXXX`) that `--to -` backups killed outright left
    /// in $TMPDIR, each holding a copy or part of one: removed once their process is gone and they
    /// have not changed for ten minutes, as `StateBackup.removeAbandonedPartials` does.
    static func removeAbandonedDirectories(in temporary: String, stale: TimeInterval = 600) {
        guard let names = try? FileManager.default.contentsOfDirectory(atPath: temporary) else { return }
        for name in names where name.hasPrefix("algogate-backup-") {
            let parts = name.split(separator: "-")
            guard parts.count == 4, let pid = pid_t(parts[2]), pid > 0, kill(pid, 0) != 0, errno == ESRCH else { continue }
            let path = (temporary as NSString).appendingPathComponent(name)
            let contents = (try? FileManager.default.contentsOfDirectory(atPath: path)) ?? []
            let changed = ([path] + contents.map { (path as NSString).appendingPathComponent($0) }).compactMap {
                (try? FileManager.default.attributesOfItem(atPath: $0))?[.modificationDate] as? Date
            }.max() ?? .distantPast
            guard Date().timeIntervalSince(changed) >= stale else { continue }
            try? FileManager.default.removeItem(atPath: path)
        }
    }

    /// Writes all of `data` to standard output; what went wrong (`strerror`) when it could not.
    /// (Foundation's `FileHandle.write(contentsOf:)` reports a closed pipe as "NSCocoaErrorDomain
    /// error 512".)
    static func writeToStandardOutput(_ data: Data) -> String? {
        data.withUnsafeBytes { bytes in
            var offset = 0
            while offset < bytes.count {
                let written = write(STDOUT_FILENO, bytes.baseAddress! + offset, bytes.count - offset)
                if written < 0 {
                    if errno == EINTR { continue }
                    return String(cString: strerror(errno))
                }
                offset += written
            }
            return nil
        }
    }

    /// Makes the copy in a private directory under $TMPDIR, sends it, and removes it.
    private func copyToStandardOutput(statePath: String, cancellation: StateBackup.Cancellation) throws {
        Self.removeAbandonedDirectories(in: FileManager.default.temporaryDirectory.path)
        var template = Array(FileManager.default.temporaryDirectory.appendingPathComponent("algogate-backup-\(getpid())-XXXXXX").path.utf8CString)
        guard let made = mkdtemp(&template) else {
            throw StateBackup.Failure(message: "cannot make a directory for the copy in \(FileManager.default.temporaryDirectory.path): \(String(cString: strerror(errno)))")
        }
        let directory = String(cString: made)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let copy = (directory as NSString).appendingPathComponent("algogate.sqlite")
        let summary = try StateBackup.copy(statePath: statePath, to: copy, withoutCache: withoutCache, cancellation: cancellation)
        // A reader that goes away (a closed pipe) must end the copy with a message, not kill the
        // process before it removes the temporary file.
        signal(SIGPIPE, SIG_IGN)
        guard let input = FileHandle(forReadingAtPath: copy) else {
            throw StateBackup.Failure(message: "cannot read the copy back from \(copy)")
        }
        defer { try? input.close() }
        while true {
            let chunk: Data
            do {
                chunk = try input.read(upToCount: 1 << 20) ?? Data()
            } catch {
                throw StateBackup.Failure(message: "cannot read the copy back from \(copy): what read standard output has part of it")
            }
            if chunk.isEmpty { break }
            if cancellation.isCancelled {
                throw StateBackup.Failure(message: "stopped before the copy was sent whole: standard output holds part of it")
            }
            if let failed = Self.writeToStandardOutput(chunk) {
                throw StateBackup.Failure(message: "the copy could not be written whole to standard output (\(failed)): what read it has part of it")
            }
        }
        FileHandle.standardError.write(Data("copied \(statePath) to standard output\(leftOut): \(summary.description); integrity check ok\n".utf8))
    }
}
