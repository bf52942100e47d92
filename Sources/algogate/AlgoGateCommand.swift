import AlgoGate
import ArgumentParser

struct AlgoGateCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "algogate",
        abstract: "A gateway in front of the Algorithmia API: one server-held key; per-team keys, scopes, data prefixes and quotas; a response cache; compression.",
        version: AlgoGateVersion.string,
        subcommands: [Serve.self, CheckConfig.self, Keygen.self, CacheCommand.self, UsageCommand.self, BackupCommand.self, RestoreCommand.self, Demo.self, Sim.self]
    )
}
