import ArgumentParser
import NIOCore
import NIOPosix

@main
enum Entry {
    static func main() async {
        // Swift concurrency's jobs run on NIO's event loops rather than a separate thread pool, so a
        // request is not handed between threads at each await on I/O (SwiftNIO's supported
        // take-over; it must happen on the main thread before other concurrency code runs). Blocking
        // work (SQLite) runs on GRDB's own threads.
        NIOSingletons.unsafeTryInstallSingletonPosixEventLoopGroupAsConcurrencyGlobalExecutor()
        await AlgoGateCommand.main()
    }
}
