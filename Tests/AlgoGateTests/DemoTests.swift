import AsyncHTTPClient
import AlgoTestSupport
import Foundation
import NIOCore
import NIOPosix
import Testing

/// `algogate demo`, which the README's first command runs: it starts, and every curl line its
/// banner prints does what the line's comment says, run as printed with curl.
@Suite struct DemoTests {
    /// A port free now (the demo's two listeners are configured, not chosen at bind time).
    static func freePort() async throws -> Int {
        let probe = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton).bind(host: "127.0.0.1", port: 0).get()
        let port = probe.localAddress?.port ?? 0
        try await probe.close()
        return port
    }

    static func shell(_ command: String) async throws -> String {
        let run = try await ChildProcess.run(executable: URL(fileURLWithPath: "/bin/bash"), arguments: ["-c", command])
        #expect(run.termination == .exited(0), "\(command): \(run.log)")
        return run.log
    }

    /// The demo, started with the shipped `config/demo.yaml` on two free ports. A port free when
    /// probed can be taken before the demo binds it (the suite's other tests open connections and
    /// listeners all the while, from the same range): then it is tried again on two others.
    static func startDemo(in work: URL, environment: [String: String] = [:]) async throws -> (ChildProcess, gatewayPort: Int, simPort: Int) {
        let shipped = try String(contentsOf: DeployTests.root.appendingPathComponent("config/demo.yaml"), encoding: .utf8)
        let config = work.appendingPathComponent("demo.yaml")
        var attempt = 0
        while true {
            attempt += 1
            let (gatewayPort, simPort) = (try await freePort(), try await freePort())
            try shipped
                .replacingOccurrences(of: "port: 8080", with: "port: \(gatewayPort)")
                .replacingOccurrences(of: "url: http://127.0.0.1:9000", with: "url: http://127.0.0.1:\(simPort)")
                .replacingOccurrences(of: "path: var/demo-cache.sqlite", with: "path: \(work.path)/demo-cache.sqlite")
                .write(to: config, atomically: true, encoding: .utf8)
            let demo = try ChildProcess(arguments: ["demo", "--config", config.path, "--sim-port", String(simPort)], environment: environment)
            #expect(await eventually { demo.log.contains("listening on 127.0.0.1:\(gatewayPort)") || !demo.isRunning }, "\(demo.log)")
            if demo.isRunning || attempt == 3 || !demo.log.contains("Address already in use") { return (demo, gatewayPort, simPort) }
        }
    }

    @Test func theDemoStartsAndItsPrintedLinesWork() async throws {
        try await withTemporaryDirectory("demo") { work in
            // The demo's own temporary directory, to see the simulator's files come and go.
            // With a space in its name, as a TMPDIR may have: the printed lines quote it.
            let temporary = work.appendingPathComponent("tmp dir")
            try FileManager.default.createDirectory(at: temporary, withIntermediateDirectories: false)
            let (demo, gatewayPort, simPort) = try await Self.startDemo(in: work, environment: ["TMPDIR": temporary.path])
            defer { demo.stop() }
            try #require(demo.isRunning, "\(demo.log)")

            let lines = demo.log.split(separator: "\n").map(String.init)
            #expect(lines.contains("algogate demo: gateway http://127.0.0.1:\(gatewayPort)  ->  simulator http://127.0.0.1:\(simPort)"))
            let curls = lines.filter { $0.hasPrefix("  curl ") }.map { $0.components(separatedBy: "    #")[0].trimmingCharacters(in: .whitespaces) }
            try #require(curls.count == 6, "\(lines)")
            #expect(curls.allSatisfy { $0.contains("http://127.0.0.1:\(gatewayPort)/v1/") })

            let call = try await Self.shell(curls[0])
            #expect(call.hasPrefix("HTTP/1.1 200 OK\r\n") && call.contains("\r\nX-Cache: MISS\r\n"), "\(call)")
            #expect(call.contains("\r\n\r\n{") && call.contains(#""result":"Hello HAL""#), "\(call)")
            // "X-Cache: MISS the first time, HIT from then on, in later demos too": this demo's cache is new.
            let again = try await Self.shell(curls[0])
            #expect(again.contains("\r\nX-Cache: HIT\r\n") && again.contains(#""result":"Hello HAL""#), "\(again)")
            #expect(try await Self.shell(curls[1])
                    == #"{"error":{"error_type":"PermissionDenied","message":"client 'team-b' lacks the 'data:read' scope for GET data requests"}}"#)
            #expect(try await Self.shell(curls[2]) == #"{"result":"data://.my/team-a"}"#)
            #expect(try await Self.shell(curls[3]) == #"{"result":"data://.my/team-a/hello.txt"}"#)
            #expect(try await Self.shell(curls[4]) == "hello")
            #expect(try await Self.shell(curls[5])
                    == #"{"error":{"error_type":"PermissionDenied","message":"client 'team-a' may not access data://.my/team-b: outside its data prefixes (data://.my/team-a/)"}}"#)
            // The Python lines put the client in a virtual environment in the demo's temporary
            // directory (Debian's python3 has no pip outside one), and name the same gateway and
            // key; Tests/ClientCompat/run.sh runs them as printed.
            let venv = "'" + temporary.appendingPathComponent("algogate-demo-venv").path + "'"
            #expect(lines.contains("  python3 -m venv \(venv) && \(venv)/bin/pip install algorithmia==2.0.5    # the official Python client"), "\(lines)")
            #expect(lines.contains { $0.hasPrefix("  ALGORITHMIA_API=http://127.0.0.1:\(gatewayPort) ALGORITHMIA_API_KEY=demo-team-a-key \(venv)/bin/python -c ") }, "\(lines)")
            #expect(!demo.log.contains("sim-"), "the simulator's fresh account key is never printed")

            // "Ctrl-C stops both; the simulator's files (in a temporary directory) go with it, the cache stays."
            let simulatorFolders = try Self.simulatorFolders(in: temporary)
            try #require(simulatorFolders.count == 1, "\(simulatorFolders)")
            #expect(try String(contentsOf: simulatorFolders[0].appendingPathComponent("data/sim/team-a/hello.txt"), encoding: .utf8) == "hello")
            demo.signal(SIGINT)
            #expect(await eventually { !demo.isRunning }, "\(demo.log)")
            #expect(demo.termination == .exited(0), "\(demo.log)")
            #expect(try Self.simulatorFolders(in: temporary) == [])
            #expect(FileManager.default.fileExists(atPath: work.appendingPathComponent("demo-cache.sqlite").path))
        }
    }

    /// The folders a simulator started without `--data-dir` made for its files in `temporary`.
    static func simulatorFolders(in temporary: URL) throws -> [URL] {
        try FileManager.default.contentsOfDirectory(at: temporary, includingPropertiesForKeys: nil)
            .filter { $0.lastPathComponent.hasPrefix("algosim-") }
    }

    /// `algogate sim` without `--data-dir` keeps its files in a temporary directory of its own and
    /// removes it as it stops; a folder named with `--data-dir` is kept, files and all.
    @Test func theSimulatorRemovesOnlyTheDataFolderItMade() async throws {
        try await withTemporaryDirectory("sim-data") { work in
            let temporary = work.appendingPathComponent("tmp"), named = work.appendingPathComponent("named")
            try FileManager.default.createDirectory(at: temporary, withIntermediateDirectories: false)
            for dataDirectory in [nil, named] {
                let sim = try ChildProcess(arguments: ["sim", "--port", "0", "--key", Keys.upstream] + (dataDirectory.map { ["--data-dir", $0.path] } ?? []),
                                           environment: ["TMPDIR": temporary.path])
                defer { sim.stop() }
                let port = try await sim.listeningPort()
                var upload = HTTPClientRequest(url: "http://127.0.0.1:\(port)/v1/data/.my/kept.txt")
                upload.method = .PUT
                upload.headers.add(name: "Authorization", value: "Simple \(Keys.upstream)")
                upload.body = .bytes(ByteBuffer(string: "kept"))
                let answer = try await HTTPClient.shared.execute(upload, timeout: .seconds(30))
                #expect(answer.status == .ok)
                let folder = try dataDirectory ?? #require(Self.simulatorFolders(in: temporary).first)
                #expect(try String(contentsOf: folder.appendingPathComponent("data/sim/kept.txt"), encoding: .utf8) == "kept")
                sim.signal(SIGTERM)
                #expect(await eventually { !sim.isRunning }, "\(sim.log)")
                #expect(sim.termination == .exited(0), "\(sim.log)")
                #expect(FileManager.default.fileExists(atPath: folder.path) == (dataDirectory != nil))
                #expect(try Self.simulatorFolders(in: temporary) == [])
            }
            #expect(try String(contentsOf: named.appendingPathComponent("data/sim/kept.txt"), encoding: .utf8) == "kept")
        }
    }

    /// `algogate sim`, the demo's upstream on its own, refuses a missing key or an unreadable
    /// fault before starting, with its own usage line.
    @Test func theSimulatorCommandRefusesWhatItCannotRunWith() async throws {
        let missing = try await ChildProcess.run(arguments: ["sim", "--port", "0"], environment: ["ALGOSIM_KEY": ""])
        #expect(missing.termination == .exited(64))
        #expect(missing.log.hasPrefix("Error: --key (or $ALGOSIM_KEY) is required\nUsage: algogate sim [--host <host>]"), "\(missing.log)")
        let fault = try await ChildProcess.run(arguments: ["sim", "--port", "0", "--key", "k", "--fault", "sometimes"])
        #expect(fault.termination == .exited(64))
        #expect(fault.log.hasPrefix("Error: --fault: cannot parse 'sometimes'\nUsage: algogate sim "), "\(fault.log)")
    }

    /// A demo that cannot start says why, naming the one setting at fault: a simulator port its
    /// configuration's upstream does not name, or whichever of its two ports is taken.
    @Test func aDemoThatCannotStartNamesWhatIsWrong() async throws {
        try await withTemporaryDirectory("demo-refused") { work in
            let taken = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton).bind(host: "127.0.0.1", port: 0).get()
            let takenPort = taken.localAddress?.port ?? 0
            // No other port needs to be free: the upstream is checked before anything listens, the
            // gateway's port comes first, and port 0 always binds.
            let (anyPort, otherPort) = (0, takenPort == 9 ? 10 : 9)
            func demo(gatewayPort: Int, upstreamPort: Int, simPort: Int) async throws -> ChildProcess.Outcome {
                let config = work.appendingPathComponent("demo.yaml")
                try String(contentsOf: DeployTests.root.appendingPathComponent("config/demo.yaml"), encoding: .utf8)
                    .replacingOccurrences(of: "port: 8080", with: "port: \(gatewayPort)")
                    .replacingOccurrences(of: "url: http://127.0.0.1:9000", with: "url: http://127.0.0.1:\(upstreamPort)")
                    .replacingOccurrences(of: "path: var/demo-cache.sqlite", with: "path: \(work.path)/demo-cache.sqlite")
                    .write(to: config, atomically: true, encoding: .utf8)
                return try await ChildProcess.run(arguments: ["demo", "--config", config.path, "--sim-port", String(simPort)])
            }
            let prefix = "algogate: cannot start with \(work.path)/demo.yaml: "
            let mismatched = try await demo(gatewayPort: anyPort, upstreamPort: otherPort, simPort: takenPort)
            #expect(mismatched.termination == .exited(1))
            #expect(mismatched.log.contains(prefix + "upstream.url is http://127.0.0.1:\(otherPort), but the simulator listens on http://127.0.0.1:\(takenPort) (--sim-port): set one to the other"),
                    "\(mismatched.log)")
            let gatewayTaken = try await demo(gatewayPort: takenPort, upstreamPort: otherPort, simPort: otherPort)
            #expect(gatewayTaken.termination == .exited(1))
            #expect(gatewayTaken.log.contains(prefix + "cannot listen on 127.0.0.1:\(takenPort) (the gateway: server.port in \(work.path)/demo.yaml): Address already in use\n"),
                    "\(gatewayTaken.log)")
            let simulatorTaken = try await demo(gatewayPort: anyPort, upstreamPort: takenPort, simPort: takenPort)
            #expect(simulatorTaken.termination == .exited(1))
            #expect(simulatorTaken.log.contains(prefix + "cannot listen on 127.0.0.1:\(takenPort) (the simulator: --sim-port): Address already in use\n"),
                    "\(simulatorTaken.log)")
            try await taken.close()
        }
    }
}
