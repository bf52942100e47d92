import ArgumentParser

@main
struct AlgoGateCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "algogate",
        abstract: "A gateway in front of the Algorithmia API: key isolation, caching, compression, quotas.",
        subcommands: [Sim.self]
    )
}
