import AlgoGate
import AlgoTestSupport
import Foundation
import Synchronization
import Testing

/// `serve --watch`: the config file and `upstream.key_file` are looked at every few seconds and
/// reloaded when they change, as a Kubernetes ConfigMap or Secret mounted as a volume is updated
/// in place by the kubelet, with no signal to send.
@Suite struct ConfigWatchTests {
    @Test func aChangedConfigOrKeyIsLoadedOnceWithoutASignal() async throws {
        let watcher = "watcher-key-\(UUID().uuidString)"
        let watcherEntry = """
              - name: team-w
                key_sha256: "\(ClientRegistry.hash(of: watcher))"
                scopes: [algo]
            """
        let rotated = "rotated-\(UUID().uuidString)"
        let holder = Mutex<(config: MountedVolume?, key: MountedVolume?)>((nil, nil))
        let pair = try await ProcessHarness(serveArguments: ["--watch", "1"], writeConfig: { yaml, work in
            let key = try MountedVolume(in: work, name: "secret", files: ["upstream-key": Keys.upstream + "\n"])
            let config = try MountedVolume(in: work, name: "config", files: [
                "algogate.yaml": yaml.replacingOccurrences(of: "key_env: \(ProcessHarness.keyVariable)", with: "key_file: \"\(key.path("upstream-key"))\""),
            ])
            holder.withLock { $0 = (config, key) }
            return URL(fileURLWithPath: config.path("algogate.yaml"))
        }) { simPort, gatewayPort, work in
            ProcessHarness.standardYAML(simPort: simPort, gatewayPort: gatewayPort, work: work)
        }
        defer { pair.stop() }
        let (config, key) = holder.withLock { ($0.config!, $0.key!) }
        let first = try String(contentsOfFile: config.path("algogate.yaml"), encoding: .utf8)
        let http = TestHTTP(port: pair.gatewayPort), sim = TestHTTP(port: pair.simPort)
        func call(_ key: String) async throws -> TestHTTP.Reply {
            try await http.send(.POST, "/v1/algo/demo/Hello", headers: simple(key) + textType, text: "HAL")
        }
        func count(_ text: String) -> Int { pair.gateway.log.components(separatedBy: text).count - 1 }
        func metrics() async throws -> String { try await http.send(.GET, "/metrics").text }
        let reloaded = "configuration reloaded", refused = "reload refused"

        // Nothing changed: nothing is reloaded, however many times the files are looked at.
        #expect(try await call(watcher).status == 401)
        try await Task.sleep(for: .seconds(2.5))
        #expect(count(reloaded) == 0 && count(refused) == 0, "\(pair.gateway.log)")

        // A new version of the ConfigMap with a client added: admitted, with one reload logged.
        try config.update(["algogate.yaml": first + "\n" + watcherEntry + "\n"])
        #expect(try await eventually(within: .seconds(20)) { try await call(watcher).status == 200 }, "the added client is admitted")
        // The log line is written just after the swap, by the log's own thread.
        #expect(await eventually { count(reloaded) == 1 }, "\(pair.gateway.log)")
        #expect(pair.gateway.log.contains(#""trigger":"file changed""#), "\(pair.gateway.log)")
        // The standard clients keep team-a to prefixes and not team-b: named at start, and again
        // with the added team-w once it is in force.
        #expect(count("algorithms called by team-b run with the account's key") == 1, "\(pair.gateway.log)")
        #expect(count("algorithms called by team-b, team-w run with the account's key") == 1, "\(pair.gateway.log)")

        // A version that does not load: refused once, however long it stays, and the one in force keeps serving.
        try config.update(["algogate.yaml": first + "\n" + watcherEntry + "\n    colour: blue\n"])
        #expect(await eventually(within: .seconds(20)) { count(refused) == 1 }, "the refusal is logged")
        try await Task.sleep(for: .seconds(2.5))
        #expect(count(refused) == 1 && count(reloaded) == 1, "\(pair.gateway.log)")
        #expect(pair.gateway.log.contains("clients[3].colour: unknown field"), "\(pair.gateway.log)")
        #expect(try await call(watcher).status == 200)
        let afterRefusal = try await metrics()
        #expect(afterRefusal.contains(#"algogate_config_reloads_total{result="applied"} 1"#), "\(afterRefusal)")
        #expect(afterRefusal.contains(#"algogate_config_reloads_total{result="refused"} 1"#))
        // The sample itself: the help line reads "algogate_config_last_reload_successful 0 while ...".
        #expect(metricSample(afterRefusal, "algogate_config_last_reload_successful") == 0)

        // Put right without the client: it is refused again.
        try config.update(["algogate.yaml": first])
        #expect(try await eventually(within: .seconds(20)) { try await call(watcher).status == 401 }, "the removed client is refused")
        #expect(await eventually { count(reloaded) == 2 }, "\(pair.gateway.log)")
        #expect(metricSample(try await metrics(), "algogate_config_last_reload_successful") == 1)

        // The Secret holding the account's key, rotated: the next upstream request carries the new
        // key (the simulator refuses it, which proves it was sent), then the old one again.
        try key.update(["upstream-key": rotated + "\n"])
        #expect(try await eventually(within: .seconds(20)) { try await call(Keys.teamB).status == 401 }, "the rotated key is sent")
        let stats = try await sim.send(.GET, "/__sim/stats").object
        #expect(stats["authorizations"] as? [String] == ["Simple \(Keys.upstream)", "Simple \(rotated)"].sorted())
        try key.update(["upstream-key": Keys.upstream + "\n"])
        #expect(try await eventually(within: .seconds(20)) { try await call(Keys.teamB).status == 200 }, "the key is rotated back")
        #expect(await eventually { count(reloaded) == 4 }, "\(pair.gateway.log)")

        // A SIGHUP with the files as they are reloads once, and the watch does not load them again.
        pair.gateway.signal(SIGHUP)
        #expect(await eventually { count(reloaded) == 5 }, "the signal's reload is logged")
        try await Task.sleep(for: .seconds(2.5))
        #expect(count(reloaded) == 5 && count(refused) == 1, "\(pair.gateway.log)")
        #expect(pair.gateway.log.contains(#""trigger":"SIGHUP""#))
        #expect(!pair.gateway.log.contains(rotated) && !pair.gateway.log.contains(Keys.upstream) && !pair.gateway.log.contains(watcher),
                "a log line holds a key")
    }
}

/// A directory laid out as the kubelet lays out a mounted ConfigMap or Secret: each version in a
/// directory of its own, `..data` a symbolic link to the current one, and each file a link
/// through `..data`. An update writes a new version and renames a new `..data` over the old one,
/// so a reader sees all the old files or all the new ones, never a mix.
struct MountedVolume {
    let directory: URL

    init(in parent: URL, name: String, files: [String: String]) throws {
        directory = parent.appendingPathComponent(name)
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        try update(files)
        for file in files.keys {
            try FileManager.default.createSymbolicLink(atPath: path(file), withDestinationPath: "..data/\(file)")
        }
    }

    func path(_ file: String) -> String { directory.appendingPathComponent(file).path }

    /// Replaces every file at once (the same names as at the start).
    func update(_ files: [String: String]) throws {
        let fm = FileManager.default
        let version = "..version-\(UUID().uuidString)"
        try fm.createDirectory(at: directory.appendingPathComponent(version), withIntermediateDirectories: false)
        for (file, content) in files {
            try content.write(to: directory.appendingPathComponent(version).appendingPathComponent(file), atomically: false, encoding: .utf8)
        }
        let data = directory.appendingPathComponent("..data").path, staged = directory.appendingPathComponent("..data_tmp").path
        let previous = try? fm.destinationOfSymbolicLink(atPath: data)
        try fm.createSymbolicLink(atPath: staged, withDestinationPath: version)
        guard rename(staged, data) == 0 else { throw POSIXError(POSIXErrorCode(rawValue: errno) ?? .EIO) }
        if let previous { try fm.removeItem(at: directory.appendingPathComponent(previous)) }
    }
}
