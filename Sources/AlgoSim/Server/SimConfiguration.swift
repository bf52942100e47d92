import Foundation

/// Everything the simulator needs to know at start-up.
public struct SimConfiguration: Sendable {
    /// Address to listen on; the simulator is a test double, so loopback by default.
    public var host: String
    /// Port to listen on; 0 picks a free one (tests read it back from `SimServer`).
    public var port: Int
    /// The account key every request must present (`Simple KEY`, bare `KEY` or `Bearer KEY`).
    public var apiKey: String
    /// The account's user name: what `.my` stands for in data URIs.
    public var username: String
    /// Root folder of the data API's files; one sub-folder per connector.
    public let dataDirectory: URL
    /// True when no folder was given and the simulator made a temporary one of its own, which
    /// `Simulator.removeTemporaryData()` removes as it stops.
    public let dataDirectoryIsTemporary: Bool
    /// Entries per directory-listing page before a `marker` is returned.
    public var pageSize: Int
    /// A fault applied to every request that does not name its own with `X-Sim-Fault`.
    public var defaultFault: Fault?

    public init(
        host: String = "127.0.0.1",
        port: Int = 0,
        apiKey: String,
        username: String = "sim",
        dataDirectory: URL? = nil,
        pageSize: Int = 1000,
        defaultFault: Fault? = nil
    ) {
        self.host = host
        self.port = port
        self.apiKey = apiKey
        self.username = username
        self.dataDirectory = dataDirectory
            ?? FileManager.default.temporaryDirectory.appendingPathComponent("algosim-\(UUID().uuidString)")
        self.dataDirectoryIsTemporary = dataDirectory == nil
        self.pageSize = max(1, pageSize)
        self.defaultFault = defaultFault
    }
}
