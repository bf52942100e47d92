// swift-tools-version:6.0
// The floor of the pass-through benchmark: the barest proxy built from algogate's own stack
// (a Hummingbird 2 server, an AsyncHTTPClient upstream), with none of the gateway's work.
import PackageDescription

let package = Package(
    name: "ProxyFloor",
    platforms: [.macOS(.v14)],
    dependencies: [
        .package(url: "https://github.com/hummingbird-project/hummingbird.git", from: "2.28.1"),
        .package(url: "https://github.com/swift-server/async-http-client.git", from: "1.37.0"),
    ],
    targets: [
        .executableTarget(name: "ProxyFloor", dependencies: [
            .product(name: "Hummingbird", package: "hummingbird"),
            .product(name: "AsyncHTTPClient", package: "async-http-client"),
        ]),
    ]
)
