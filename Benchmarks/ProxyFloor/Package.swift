// swift-tools-version:6.0
// Floors of the pass-through benchmark, with none of the gateway's work:
// - ProxyFloor: the barest proxy built from algogate's own stack (a Hummingbird 2 server, an
//   AsyncHTTPClient upstream);
// - NIOFloor: the barest proxy SwiftNIO itself makes (channel handlers on both sides, no Swift
//   concurrency, one upstream connection per client connection on the same event loop): what
//   Swift on these cores can reach without the frameworks.
import PackageDescription

let package = Package(
    name: "ProxyFloor",
    platforms: [.macOS(.v14)],
    dependencies: [
        .package(url: "https://github.com/hummingbird-project/hummingbird.git", from: "2.28.1"),
        .package(url: "https://github.com/swift-server/async-http-client.git", from: "1.37.0"),
        .package(url: "https://github.com/apple/swift-nio.git", from: "2.101.2"),
    ],
    targets: [
        .executableTarget(name: "ProxyFloor", dependencies: [
            .product(name: "Hummingbird", package: "hummingbird"),
            .product(name: "AsyncHTTPClient", package: "async-http-client"),
            .product(name: "NIOCore", package: "swift-nio"),
            .product(name: "NIOPosix", package: "swift-nio"),
            .product(name: "NIOHTTP1", package: "swift-nio"),
        ]),
        .executableTarget(name: "NIOFloor", dependencies: [
            .product(name: "NIOCore", package: "swift-nio"),
            .product(name: "NIOPosix", package: "swift-nio"),
            .product(name: "NIOHTTP1", package: "swift-nio"),
        ]),
    ]
)
