import AlgoGate
import ArgumentParser
import Foundation

/// `algogate restore`: a copy `algogate backup` made put in place as the gateway's SQLite file,
/// while the gateway is stopped.
struct RestoreCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "restore",
        abstract: "Put a copy made by algogate backup in place as the gateway's SQLite file (the gateway stopped).",
        discussion: """
            The copy is checked (SQLite's integrity check, the gateway's tables), then written into \
            cache.path through SQLite in one transaction, so a -wal file a killed gateway left \
            beside the old file is read into the old file first rather than replayed into the \
            copy. The file is held in SQLite's exclusive locking mode meanwhile, which also \
            proves no other process has it open: a gateway serving it is refused (stop it first). \
            An existing state file is replaced only with --replace, and what it held is printed. \
            A state file the restore makes takes the copy's permissions (and, made by root, the \
            owner of its directory). Cached entries are answered only for the upstream.url that \
            stored them.
            """
    )

    @Option(help: "The gateway's YAML configuration file (for cache.path, the file to restore).")
    var config: String

    @Option(help: ArgumentHelp("The copy to restore (a file algogate backup wrote).", valueName: "path"))
    var from: String

    @Flag(help: "Replace an existing state file: its cache and usage counters are lost to the copy's.")
    var replace = false

    func run() async throws {
        let gatewayConfig = try loadWithoutKeyOrExit(path: config)
        let statePath = gatewayConfig.cache.path
        do {
            let outcome = try StateRestore.restore(from: from, to: statePath, replacing: replace)
            print("restored \(statePath) from \(from): \(outcome.restored.description); integrity check ok")
            if let replaced = outcome.replaced { print("the file replaced held \(replaced.description)") }
        } catch let failure as StateBackup.Failure {
            FileHandle.standardError.write(Data("algogate restore: \(failure.message)\n".utf8))
            throw ExitCode(1)
        }
    }
}
