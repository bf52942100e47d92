import AlgoGate
import AlgoTestSupport
import Foundation
import GRDB
import Testing
import Yams

/// No container engine or cluster runs here, so the deployment files are checked statically:
/// against each other and against the configuration schema (the ConfigMap's config is loaded by
/// the real loader).
@Suite struct DeployTests {
    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
    static func text(_ path: String) throws -> String { try String(contentsOf: root.appendingPathComponent(path), encoding: .utf8) }
    static func yaml(_ path: String) throws -> [String: Any] { try Yams.load(yaml: text(path)) as? [String: Any] ?? [:] }

    /// Follows a path of keys and list indexes through parsed YAML.
    static func dig(_ value: Any?, _ path: Any...) -> Any? {
        var current = value
        for step in path {
            if let key = step as? String { current = (current as? [String: Any])?[key] }
            else if let index = step as? Int, let list = current as? [Any], index < list.count { current = list[index] }
            else { return nil }
        }
        return current
    }

    static func gatewayConfig() throws -> GatewayConfig {
        let configMap = try yaml("deploy/kubernetes/configmap.yaml")
        let file = FileManager.default.temporaryDirectory.appendingPathComponent("cm-\(UUID().uuidString).yaml")
        try (dig(configMap, "data", "algogate.yaml") as? String ?? "").write(to: file, atomically: true, encoding: .utf8)
        defer { try? FileManager.default.removeItem(at: file) }
        return try ConfigLoader.loadWithoutKey(path: file.path)
    }

    @Test func theKubernetesManifestsAgreeWithTheConfigAndEachOther() throws {
        let config = try Self.gatewayConfig()
        let deployment = try Self.yaml("deploy/kubernetes/deployment.yaml")
        let pod = Self.dig(deployment, "spec", "template", "spec")
        let container = Self.dig(pod, "containers", 0)

        #expect(Self.dig(deployment, "kind") as? String == "Deployment")
        let port = Self.dig(container, "ports", 0)
        #expect(Self.dig(port, "containerPort") as? Int == config.server.port)
        #expect(Self.dig(container, "readinessProbe", "httpGet", "path") as? String == "/readyz")
        #expect(Self.dig(container, "livenessProbe", "httpGet", "path") as? String == "/healthz")
        #expect(Self.dig(container, "readinessProbe", "httpGet", "port") as? String == Self.dig(port, "name") as? String)
        #expect(Self.dig(pod, "securityContext", "runAsNonRoot") as? Bool == true)
        #expect(Self.dig(container, "securityContext", "readOnlyRootFilesystem") as? Bool == true)
        #expect(Self.dig(container, "resources", "requests", "memory") != nil && Self.dig(container, "resources", "limits", "memory") != nil)
        // The README's sum of resident memory (Operating it) stays inside the pod's limit: 50 MB,
        // the hot tier, the two buffer bounds, 80 KB a connection (13 KB open, and up to 66 KB
        // more while its request goes through the pipeline, `Benchmarks/inflight.sh`: every
        // connection at once) and 50 MiB not counted.
        let limit = Self.dig(container, "resources", "limits", "memory") as? String ?? ""
        let limitBytes = limit.hasSuffix("Mi") ? (Int(limit.dropLast(2)) ?? 0) << 20 : limit.hasSuffix("Gi") ? (Int(limit.dropLast(2)) ?? 0) << 30 : 0
        let resident = 50_000_000 + config.cache.memoryBytes + config.limits.maxBufferedBytes + config.limits.maxBufferedAnswerBytes
            + 80_000 * config.server.maxConnections + 50 << 20
        #expect(resident <= limitBytes, "\(resident) bytes at most against a limit of \(limit)")
        #expect((Self.dig(pod, "terminationGracePeriodSeconds") as? Int ?? 0) > config.server.drainTimeoutSeconds)

        let mounts = Dictionary(uniqueKeysWithValues: (Self.dig(container, "volumeMounts") as? [[String: Any]] ?? []).map {
            ($0["name"] as? String ?? "", $0["mountPath"] as? String ?? "")
        })
        let args = Self.dig(container, "args") as? [String] ?? []
        #expect(args.first == "serve")
        #expect(args.last == (mounts["config"] ?? "") + "/algogate.yaml")
        #expect(args.contains("--watch"))
        let keyFile = URL(fileURLWithPath: config.upstream.keyFile ?? "")
        #expect(mounts["upstream-key"] == keyFile.deletingLastPathComponent().path)
        #expect(mounts["cache"] == URL(fileURLWithPath: config.cache.path).deletingLastPathComponent().path)

        let volumes = Self.dig(pod, "volumes") as? [[String: Any]] ?? []
        let claim = volumes.compactMap { Self.dig($0, "persistentVolumeClaim", "claimName") as? String }.first
        #expect(claim == Self.dig(try Self.yaml("deploy/kubernetes/pvc.yaml"), "metadata", "name") as? String)
        let secret = try Self.yaml("deploy/kubernetes/secret.yaml")
        #expect(volumes.compactMap { Self.dig($0, "secret", "secretName") as? String }.first == Self.dig(secret, "metadata", "name") as? String)
        #expect((Self.dig(secret, "stringData") as? [String: Any])?.keys.contains(keyFile.lastPathComponent) == true)
        let configMapName = volumes.compactMap { Self.dig($0, "configMap", "name") as? String }.first
        #expect(configMapName == Self.dig(try Self.yaml("deploy/kubernetes/configmap.yaml"), "metadata", "name") as? String)

        let service = try Self.yaml("deploy/kubernetes/service.yaml")
        #expect(Self.dig(service, "spec", "ports", 0, "targetPort") as? String == Self.dig(port, "name") as? String)
        #expect(Self.dig(service, "spec", "ports", 0, "port") as? Int == config.server.port)
    }

    /// The NetworkPolicy covers the gateway's pods (not the maintenance pod), lets in its port and
    /// lets out only DNS and the upstream's port, as the ConfigMap's `upstream.url` names it.
    @Test func theNetworkPolicyLetsInTheGatewaysPortAndOutOnlyDNSAndTheUpstream() throws {
        let config = try Self.gatewayConfig()
        let policy = try Self.yaml("deploy/kubernetes/networkpolicy.yaml")
        #expect(Self.dig(policy, "kind") as? String == "NetworkPolicy")
        let labels = Self.dig(try Self.yaml("deploy/kubernetes/deployment.yaml"), "spec", "template", "metadata", "labels") as? [String: String]
        let selected = Self.dig(policy, "spec", "podSelector", "matchLabels") as? [String: String]
        #expect(selected != nil && selected == labels)
        let maintenance = Self.dig(try Self.yaml("deploy/kubernetes/maintenance-pod.yaml"), "metadata", "labels") as? [String: String] ?? [:]
        #expect(!(selected ?? [:]).allSatisfy { maintenance[$0.key] == $0.value })
        #expect(Self.dig(policy, "spec", "policyTypes") as? [String] == ["Ingress", "Egress"])
        func ports(_ rules: String) -> [String] {
            (Self.dig(policy, "spec", rules) as? [[String: Any]] ?? []).flatMap { rule in
                (rule["ports"] as? [[String: Any]] ?? []).map { "\($0["protocol"] ?? "TCP")/\($0["port"] ?? "")" }
            }.sorted()
        }
        #expect(ports("ingress") == ["TCP/\(config.server.port)"])
        let upstream = try #require(URLComponents(string: config.upstream.url))
        let upstreamPort = upstream.port ?? (upstream.scheme == "https" ? 443 : 80)
        #expect(ports("egress") == ["TCP/53", "TCP/\(upstreamPort)", "UDP/53"].sorted())
    }

    /// The maintenance pod (for `algogate restore`, the gateway stopped) runs the gateway's image
    /// as its user, with its config and state volume where the gateway has them, and takes no
    /// traffic; its comment's commands name them.
    /// The manifests against Kubernetes' own schemas (kubernetes-validate, fetched by
    /// `Tests/fetch-tools.sh`, which carries them), strictly: a field Kubernetes does not know, or
    /// one of the wrong type, in any of them fails, at the oldest release it has schemas for
    /// (1.25) and the newest (1.37). The ServiceMonitor is the Prometheus operator's, whose
    /// schema Kubernetes does not have: it alone may be passed over, and says so.
    @Test func theManifestsAreValidKubernetesObjects() async throws {
        let tool = Self.root.appendingPathComponent(".build/tools/kubernetes-validate/bin/kubernetes-validate")
        guard FileManager.default.isExecutableFile(atPath: tool.path) else {
            throw MonitoringTests.MonitoringTestError("\(tool.path) is missing: run bash Tests/fetch-tools.sh (Tests/run.sh does)")
        }
        let directory = Self.root.appendingPathComponent("deploy/kubernetes")
        let manifests = try FileManager.default.contentsOfDirectory(atPath: directory.path).filter { $0.hasSuffix(".yaml") }.sorted()
        try #require(manifests.count == 8, "\(manifests)")
        for version in ["1.25.0", "1.37.0"] {
            let run = try await ChildProcess.run(executable: tool, arguments: ["--strict", "-k", version] + manifests.map { directory.appendingPathComponent($0).path })
            #expect(run.termination == .exited(0), "\(version): \(run.log)")
            for manifest in manifests {
                let line = run.log.split(separator: "\n").first { $0.contains("deploy/kubernetes/\(manifest) ") }.map(String.init) ?? "no line for \(manifest)"
                if manifest == "servicemonitor.yaml" {
                    #expect(line.hasPrefix("WARN ") && line.contains("Couldn't find schema for kind ServiceMonitor"), "\(version): \(line)")
                } else {
                    #expect(line.hasPrefix("INFO ") && line.contains(" passed for resource "), "\(version): \(line)")
                }
            }
        }
    }

    @Test func theMaintenancePodHasTheGatewaysImageConfigAndVolume() throws {
        let gateway = Self.dig(try Self.yaml("deploy/kubernetes/deployment.yaml"), "spec", "template", "spec")
        let text = try Self.text("deploy/kubernetes/maintenance-pod.yaml")
        let maintenance = try Self.yaml("deploy/kubernetes/maintenance-pod.yaml")
        let pod = Self.dig(maintenance, "spec")
        #expect(Self.dig(maintenance, "kind") as? String == "Pod")
        #expect(Self.dig(pod, "containers", 0, "image") as? String == Self.dig(gateway, "containers", 0, "image") as? String)
        #expect(Self.dig(pod, "containers", 0, "command") as? [String] == ["/bin/sleep", "infinity"])
        #expect(Self.dig(pod, "securityContext", "runAsUser") as? Int == Self.dig(gateway, "securityContext", "runAsUser") as? Int)
        #expect(Self.dig(pod, "securityContext", "fsGroup") as? Int == Self.dig(gateway, "securityContext", "fsGroup") as? Int)
        func mounts(_ spec: Any?) -> [String: String] {
            Dictionary(uniqueKeysWithValues: (Self.dig(spec, "containers", 0, "volumeMounts") as? [[String: Any]] ?? []).map {
                ($0["name"] as? String ?? "", $0["mountPath"] as? String ?? "")
            })
        }
        func volumes(_ spec: Any?) -> [String: String] {
            Dictionary(uniqueKeysWithValues: (Self.dig(spec, "volumes") as? [[String: Any]] ?? []).map {
                ($0["name"] as? String ?? "", "\(Self.dig($0, "persistentVolumeClaim", "claimName") ?? Self.dig($0, "configMap", "name") ?? "emptyDir")")
            })
        }
        for name in ["config", "cache", "tmp"] {
            #expect(mounts(pod)[name] != nil && mounts(pod)[name] == mounts(gateway)[name], "\(name)")
            #expect(volumes(pod)[name] != nil && volumes(pod)[name] == volumes(gateway)[name], "\(name)")
        }
        let selector = Self.dig(try Self.yaml("deploy/kubernetes/service.yaml"), "spec", "selector") as? [String: String] ?? [:]
        let labels = Self.dig(maintenance, "metadata", "labels") as? [String: String] ?? [:]
        #expect(!selector.isEmpty && !selector.allSatisfy { labels[$0.key] == $0.value })
        let name = Self.dig(maintenance, "metadata", "name") as? String ?? ""
        #expect(text.contains("kubectl exec \(name) -- algogate restore --config \(mounts(gateway)["config"] ?? "")/algogate.yaml --from /tmp/algogate.sqlite --replace"))
        #expect(text.contains("kubectl cp algogate.sqlite \(name):/tmp/algogate.sqlite"))
    }

    /// Every `kubectl exec` the README and the manifests give runs a program the image has: it is
    /// `debian:trixie-slim` with `algogate` added, so `sh` (dash, with its own `kill`) but no
    /// `kill` program (Debian's `procps` is not in slim images), no `ps`, no `sqlite3`.
    @Test func theKubectlExecCommandsRunProgramsTheImageHas() throws {
        var texts = [try Self.text("README.md")]
        let manifests = try FileManager.default.contentsOfDirectory(atPath: Self.root.appendingPathComponent("deploy/kubernetes").path)
        for file in manifests where file.hasSuffix(".yaml") { texts.append(try Self.text("deploy/kubernetes/" + file)) }
        var programs: [String] = []
        for text in texts {
            // Across a line break and a comment's `#`, as the README and the manifests wrap them.
            let flat = text.replacingOccurrences(of: "\n#", with: " ").replacingOccurrences(of: "\n", with: " ")
            var rest = flat[...]
            while let exec = rest.range(of: "kubectl exec ") {
                rest = rest[exec.upperBound...]
                // `kubectl exec` named in prose, with no command after it, is passed over.
                guard let dashes = rest.range(of: " -- "), rest.distance(from: rest.startIndex, to: dashes.lowerBound) < 60 else { continue }
                programs.append(String(rest[dashes.upperBound...].prefix { $0 != " " && $0 != "`" }))
            }
        }
        #expect(programs.count >= 4, "\(programs)")
        #expect(programs.allSatisfy { ["algogate", "sh"].contains($0) }, "\(programs)")
        let dockerfile = try Self.text("deploy/Dockerfile")
        #expect(dockerfile.contains("FROM debian:trixie-slim") && !dockerfile.contains("procps"))
    }

    /// The backup timer's service, its command lines run as systemd runs them (`%%` is `%`, words
    /// split at spaces outside single quotes, no shell unless named) with this test's binary,
    /// config and directory in place of the installed ones: it makes a copy named for its time,
    /// then removes the copies over 14 days old, and nothing else.
    @Test func theBackupTimersServiceCopiesTheFileAndPrunesOldCopies() async throws {
        let unit = try Self.text("deploy/systemd/algogate-backup.service")
        let gateway = try Self.text("deploy/systemd/algogate.service")
        #expect(try Self.text("deploy/systemd/algogate-backup.timer").contains("OnCalendar=daily"))
        func lines(_ key: String) -> [String] {
            unit.split(separator: "\n").filter { $0.hasPrefix(key + "=") }.map { String($0.dropFirst(key.count + 1)) }
        }
        let config = "/etc/algogate/algogate.yaml"
        #expect(gateway.contains("--config \(config)") && unit.contains("--config \(config)"))
        #expect(lines("WorkingDirectory") == ["/var/lib/algogate"] && gateway.contains("WorkingDirectory=/var/lib/algogate"))
        try await withTemporaryDirectory("backup-timer") { directory in
            let statePath = try await BackupTests.stateFile(in: directory, filler: "zeroblob", megabytes: 1)
            let configPath = try BackupTests.config(statePath: statePath, in: directory)
            let backups = directory.appendingPathComponent("backups").path
            func words(_ line: String) -> [String] {
                let line = line.replacingOccurrences(of: "%%", with: "%").replacingOccurrences(of: "/usr/local/bin/algogate", with: ChildProcess.executable.path)
                    .replacingOccurrences(of: config, with: configPath).replacingOccurrences(of: "/var/backups/algogate", with: backups)
                var words: [String] = [], word = "", quoted = false
                for character in line {
                    if character == "'" { quoted.toggle() } else if character == " ", !quoted { if !word.isEmpty { words.append(word); word = "" } } else { word.append(character) }
                }
                return word.isEmpty ? words : words + [word]
            }
            func run(_ key: String) async throws {
                for line in lines(key) {
                    let command = words(line)
                    let outcome = try await ChildProcess.run(executable: URL(fileURLWithPath: command[0]), arguments: Array(command.dropFirst()))
                    #expect(outcome.termination == .exited(0), "\(key): \(command): \(outcome.log)")
                }
            }
            try await run("ExecStartPre")
            #expect(try FileManager.default.attributesOfItem(atPath: backups)[.posixPermissions] as? Int == 0o700)
            // Copies of 15 days and 1 day ago, and a file of the operator's own.
            for (name, days) in [("algogate-20260101T000000Z.sqlite", 15.0), ("algogate-20260115T000000Z.sqlite", 1.0), ("notes.txt", 15.0)] {
                let path = backups + "/" + name
                #expect(FileManager.default.createFile(atPath: path, contents: Data("x".utf8)))
                try FileManager.default.setAttributes([.modificationDate: Date().addingTimeInterval(-days * 86_400)], ofItemAtPath: path)
            }
            try await run("ExecStart")
            try await run("ExecStartPost")
            let left = try FileManager.default.contentsOfDirectory(atPath: backups).sorted()
            #expect(left.count == 3 && left.contains("algogate-20260115T000000Z.sqlite") && left.contains("notes.txt"), "\(left)")
            let made = left.first { $0.range(of: #"^algogate-[0-9]{8}T[0-9]{6}Z\.sqlite$"#, options: .regularExpression) != nil && $0 != "algogate-20260115T000000Z.sqlite" }
            let copy = try #require(made, "\(left)")
            let queue = try DatabaseQueue(path: backups + "/" + copy)
            #expect(try await queue.read { try Int.fetchOne($0, sql: "SELECT count(*) FROM filler") } == 1)
            try queue.close()
        }
    }

    /// The container's arguments are ones `serve` takes: run with them, the ConfigMap's config in
    /// place of the mounted one, it gets as far as reading the config (the Secret's key file is
    /// not mounted here, so that is where it stops) rather than refusing its flags.
    @Test func theContainerArgumentsAreOnesServeTakes() async throws {
        let deployment = try Self.yaml("deploy/kubernetes/deployment.yaml")
        let args = Self.dig(deployment, "spec", "template", "spec", "containers", 0, "args") as? [String] ?? []
        let configMap = try Self.yaml("deploy/kubernetes/configmap.yaml")
        try await withTemporaryDirectory("deploy-args") { directory in
            let file = directory.appendingPathComponent("algogate.yaml")
            try (Self.dig(configMap, "data", "algogate.yaml") as? String ?? "").write(to: file, atomically: true, encoding: .utf8)
            let run = try await ChildProcess.run(arguments: args.dropLast() + [file.path])
            #expect(run.termination == .exited(1), "\(run.log)")
            #expect(run.log.hasPrefix("algogate: invalid configuration \(file.path): upstream.key_file: cannot read "), "\(run.log)")
        }
    }

    /// The alerting rules are whole, and name only metrics the gateway serves: every `algogate_*`
    /// and `process_*` name in an expression is in a live scrape (after one request, so the
    /// per-request family exists), so renaming a metric without its rule fails here.
    @Test func theAlertRulesNameMetricsTheGatewayServes() async throws {
        let rules = Self.dig(try Self.yaml("deploy/prometheus/alerts.yaml"), "groups", 0, "rules") as? [[String: Any]] ?? []
        #expect(rules.count == 13)
        var names: Set<String> = []
        for rule in rules {
            let alert = rule["alert"] as? String ?? ""
            #expect(alert.hasPrefix("Algogate"), "\(rule)")
            #expect(["critical", "warning"].contains(Self.dig(rule, "labels", "severity") as? String ?? ""), "\(alert)")
            #expect(Self.dig(rule, "annotations", "summary") is String && Self.dig(rule, "annotations", "description") is String, "\(alert)")
            let expression = rule["expr"] as? String ?? ""
            let found = expression.matches(of: #/(?:algogate|process)_[a-z_]+/#).map { String($0.output) }
            #expect(!found.isEmpty, "\(alert)")
            names.formUnion(found)
        }
        try await GatewayHarness.run { h in
            #expect(try await h.gateway.send(.POST, "/v1/algo/demo/Hello", headers: simple(Keys.teamB) + textType, text: "x").status == 200)
            let served = Set(try await h.gateway.send(.GET, "/metrics").text.split(separator: "\n").compactMap { line -> String? in
                line.hasPrefix("#") ? nil : line.split(whereSeparator: { $0 == "{" || $0 == " " }).first.map(String.init)
            })
            for name in names.sorted() {
                #expect(served.contains(name), "\(name) is not served at /metrics")
            }
        }
    }

    @Test func theDockerfileIsMultiStageNonRootAndChecksHealth() throws {
        let dockerfile = try Self.text("deploy/Dockerfile")
        let lines = dockerfile.split(separator: "\n").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.hasPrefix("#") }
        #expect(lines.filter { $0.hasPrefix("FROM ") }.count == 2)
        #expect(lines.first { $0.hasPrefix("FROM ") }?.contains("swift:6") == true)
        let user = lines.last { $0.hasPrefix("USER ") } ?? ""
        #expect(!user.isEmpty && !user.contains("root") && !user.hasPrefix("USER 0"))
        let defaultPort = GatewayConfig.Server().port
        #expect(lines.contains("EXPOSE \(defaultPort)"))
        #expect(dockerfile.contains("http://127.0.0.1:\(defaultPort)/healthz"))
        #expect(lines.contains { $0.hasPrefix("HEALTHCHECK") })
        #expect(dockerfile.contains("libsqlite3-0") && dockerfile.contains("zlib1g") && dockerfile.contains("libsqlite3-dev zlib1g-dev"))
        #expect(dockerfile.contains("VOLUME [\"/var/lib/algogate\"]"))
    }

    @Test func theSystemdUnitIsHardenedAndReloads() throws {
        let unit = try Self.text("deploy/systemd/algogate.service")
        for directive in ["NoNewPrivileges=yes", "ProtectSystem=strict", "PrivateTmp=yes", "ProtectHome=yes", "DynamicUser=yes",
                          "StateDirectory=algogate", "KillSignal=SIGTERM", "ExecReload=/bin/kill -HUP $MAINPID",
                          "ExecStart=/usr/local/bin/algogate serve --config /etc/algogate/algogate.yaml"] {
            #expect(unit.contains(directive), "\(directive)")
        }
    }

    /// systemd's own reading of the units, where systemd is installed (`Tests/systemd-runtime.sh`
    /// runs them under systemd): `systemd-analyze verify` names unknown or misspelt directives and
    /// commands that do not exist, and `security --offline` scores the service's exposure (0 to
    /// 10; 1.2 when this was written, 1.8 before `ProtectProc`, `PrivateMounts`, `PrivateUsers`
    /// and the `~@privileged @resources` filter), which must stay at 1.5 or under, and the backup
    /// service's, root with three capabilities (1.5; 8.5 before its sandbox), at 2.0 or under.
    @Test(.enabled(if: FileManager.default.isExecutableFile(atPath: "/usr/bin/systemd-analyze")))
    func systemdReadsTheUnitsWithoutAWarningAndTheServiceExposesLittle() async throws {
        try await withTemporaryDirectory("systemd") { work in
            // The units as installed, the binary they name being the one built here.
            var files: [String] = []
            for name in ["algogate.service", "algogate-backup.service", "algogate-backup.timer"] {
                let unit = try Self.text("deploy/systemd/\(name)").replacingOccurrences(of: "/usr/local/bin/algogate", with: ChildProcess.executable.path)
                let file = work.appendingPathComponent(name)
                try unit.write(to: file, atomically: true, encoding: .utf8)
                files.append(file.path)
            }
            let analyze = URL(fileURLWithPath: "/usr/bin/systemd-analyze")
            let verify = try await ChildProcess.run(executable: analyze, arguments: ["verify"] + files)
            #expect(verify.termination == .exited(0) && verify.log.isEmpty, "\(verify.log)")
            for (file, name, most) in [(files[0], "algogate.service", 1.5), (files[1], "algogate-backup.service", 2.0)] {
                let security = try await ChildProcess.run(executable: analyze, arguments: ["security", "--offline=yes", "--threshold=25", file])
                #expect(security.termination == .exited(0), "\(security.log)")
                let overall = security.log.split(separator: "\n").first { $0.contains("Overall exposure level for \(name):") }
                let score = overall.flatMap { $0.split(separator: " ").compactMap { Double($0) }.first }
                #expect(score.map { $0 <= most } == true, "\(name): \(security.log)")
            }
        }
    }
}
