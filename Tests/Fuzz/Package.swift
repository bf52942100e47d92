// swift-tools-version:6.1
// Coverage-guided fuzzing of the gateway's parsers with libFuzzer: see run.sh. A package of its
// own, since it builds the gateway with `-sanitize=fuzzer,address`, which the main build must not.
import PackageDescription

let package = Package(
    name: "algogate-fuzz",
    platforms: [.macOS(.v15)],
    dependencies: [
        .package(name: "algogate", path: "../.."),
        .package(url: "https://github.com/apple/swift-nio.git", from: "2.101.2"),
        .package(url: "https://github.com/apple/swift-http-types.git", from: "1.8.0"),
    ],
    targets: [
        .executableTarget(
            name: "AlgoGateFuzz",
            dependencies: [
                .product(name: "AlgoGate", package: "algogate"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "HTTPTypes", package: "swift-http-types"),
            ]
        ),
    ],
    swiftLanguageModes: [.v6]
)
