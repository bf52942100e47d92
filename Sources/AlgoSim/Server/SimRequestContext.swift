import Hummingbird
import NIOCore

/// Request context that keeps the connection's channel, so the fault injector can drop it.
public struct SimRequestContext: RequestContext {
    public var coreContext: CoreRequestContextStorage
    let channel: any Channel

    public init(source: ApplicationRequestContextSource) {
        self.coreContext = .init(source: source)
        self.channel = source.channel
    }

    /// Data files stream to disk, so uploads are not bounded by memory; algorithm inputs are
    /// bounded separately by the algorithm handler.
    public var maxUploadSize: Int { .max }
}
