import AlgoGate
import AlgoTestSupport
import Foundation
import Testing
import Yams

/// The monitoring files an operator loads: `deploy/prometheus/alerts.yaml` (with its unit tests,
/// `alerts.test.yaml`) and the Grafana dashboard `deploy/grafana/algogate.json`. Checked with
/// Prometheus's own tools (Debian's build, fetched by `Tests/fetch-tools.sh`): promtool runs
/// the rules' unit tests, and a Prometheus server scrapes a live gateway so that every query of
/// the dashboard is run against what the gateway serves.
@Suite struct MonitoringTests {
    static let tools = DeployTests.root.appendingPathComponent(".build/tools/prometheus")

    static func tool(_ name: String) throws -> URL {
        let url = tools.appendingPathComponent(name)
        guard FileManager.default.isExecutableFile(atPath: url.path) else {
            throw MonitoringTestError("\(url.path) is missing: run bash Tests/fetch-tools.sh (Tests/run.sh does)")
        }
        return url
    }

    struct MonitoringTestError: Error, CustomStringConvertible {
        let description: String
        init(_ description: String) { self.description = description }
    }

    /// promtool accepts the rules, and its unit tests of them pass: each alert fires on the
    /// series it is for, with its labels and rendered annotations, and stays quiet otherwise.
    @Test func theAlertRulesPassPromtoolsUnitTests() async throws {
        let promtool = try Self.tool("promtool")
        let checked = try await ChildProcess.run(executable: promtool, arguments: ["check", "rules", DeployTests.root.appendingPathComponent("deploy/prometheus/alerts.yaml").path])
        #expect(checked.termination == .exited(0), "\(checked.log)")
        #expect(checked.log.contains("SUCCESS: 13 rules found"), "\(checked.log)")
        let tested = try await ChildProcess.run(executable: promtool, arguments: ["test", "rules", DeployTests.root.appendingPathComponent("deploy/prometheus/alerts.test.yaml").path])
        #expect(tested.termination == .exited(0), "\(tested.log)")
        #expect(tested.log.contains("SUCCESS"), "\(tested.log)")

        // Every alert has a case in which it fires.
        let rules = DeployTests.dig(try DeployTests.yaml("deploy/prometheus/alerts.yaml"), "groups", 0, "rules") as? [[String: Any]] ?? []
        let cases = (try DeployTests.yaml("deploy/prometheus/alerts.test.yaml")["tests"] as? [[String: Any]] ?? [])
            .flatMap { $0["alert_rule_test"] as? [[String: Any]] ?? [] }
        let firing = Set(cases.filter { !($0["exp_alerts"] as? [Any] ?? []).isEmpty }.compactMap { $0["alertname"] as? String })
        #expect(Set(rules.compactMap { $0["alert"] as? String }) == firing)
    }

    /// For the Prometheus Operator: the ServiceMonitor selects the Service and scrapes `/metrics`
    /// on one of its named ports, and the README's command makes a PrometheusRule whose rules are
    /// alerts.yaml's (run here up to its `kubectl apply`). Without the operator, the pods'
    /// annotations say where to scrape.
    @Test func theOperatorsObjectsMatchTheServiceAndTheRules() async throws {
        let monitor = try DeployTests.yaml("deploy/kubernetes/servicemonitor.yaml")
        let service = try DeployTests.yaml("deploy/kubernetes/service.yaml")
        #expect(DeployTests.dig(monitor, "kind") as? String == "ServiceMonitor")
        #expect(DeployTests.dig(monitor, "spec", "selector", "matchLabels") as? [String: String] == DeployTests.dig(service, "metadata", "labels") as? [String: String])
        let ports = (DeployTests.dig(service, "spec", "ports") as? [[String: Any]] ?? []).compactMap { $0["name"] as? String }
        let endpoint = DeployTests.dig(monitor, "spec", "endpoints", 0) as? [String: Any] ?? [:]
        #expect(ports.contains(endpoint["port"] as? String ?? "?"), "\(ports)")
        #expect(endpoint["path"] as? String == "/metrics")
        // The pods' annotations, for a Prometheus that finds pods by them, name the container's port.
        let template = DeployTests.dig(try DeployTests.yaml("deploy/kubernetes/deployment.yaml"), "spec", "template") as? [String: Any] ?? [:]
        let annotations = DeployTests.dig(template, "metadata", "annotations") as? [String: String] ?? [:]
        let containerPorts = DeployTests.dig(template, "spec", "containers", 0, "ports") as? [[String: Any]] ?? []
        #expect(annotations == ["prometheus.io/scrape": "true", "prometheus.io/path": "/metrics",
                                "prometheus.io/port": String(containerPorts.first { $0["name"] as? String == "http" }?["containerPort"] as? Int ?? 0)])

        let readme = try DeployTests.text("README.md")
        let line = try #require(readme.split(separator: "\n").first { $0.contains("kind: PrometheusRule") })
        let command = try #require(line.range(of: " | kubectl apply -f -").map { line[..<$0.lowerBound] })
        let made = try await ChildProcess.run(executable: URL(fileURLWithPath: "/bin/bash"), arguments: ["-c", "cd '\(DeployTests.root.path)' && \(command)"])
        #expect(made.termination == .exited(0), "\(made.log)")
        let rule = try #require(try Yams.load(yaml: made.log) as? [String: Any])
        #expect(rule["apiVersion"] as? String == "monitoring.coreos.com/v1" && rule["kind"] as? String == "PrometheusRule")
        #expect(DeployTests.dig(rule, "metadata", "name") as? String == "algogate")
        let groups = try JSONSerialization.data(withJSONObject: DeployTests.dig(rule, "spec", "groups") ?? [], options: .sortedKeys)
        let alerts = try JSONSerialization.data(withJSONObject: try DeployTests.yaml("deploy/prometheus/alerts.yaml")["groups"] ?? [], options: .sortedKeys)
        #expect(groups == alerts)
        #expect(groups.count > 1000)
    }

    /// A dashboard query: its panel, its expression as Grafana sends it for `instance` and the
    /// clients team-a and team-b chosen, and its legend.
    struct Query {
        let panel: String, expr: String, legend: String

        /// The labels each series must carry: those it is summed by (`le` is consumed by
        /// `histogram_quantile`) and those its legend shows.
        var labels: Set<String> {
            var names = Set(expr.matches(of: #/by \(([a-z_, ]+)\)/#).flatMap { $0.output.1.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) } })
            names.remove("le")
            return names.union(legend.matches(of: #/\{\{([a-z_]+)\}\}/#).map { String($0.output.1) })
        }
    }

    static func dashboardQueries(instance: String) throws -> [Query] {
        let data = try Data(contentsOf: DeployTests.root.appendingPathComponent("deploy/grafana/algogate.json"))
        let dashboard = try #require(try JSONSerialization.jsonObject(with: data) as? [String: Any])
        #expect(dashboard["uid"] as? String == "algogate")
        let panels = dashboard["panels"] as? [[String: Any]] ?? []
        #expect(Set(panels.compactMap { $0["id"] as? Int }).count == panels.count, "panel ids repeat")
        let variables = (DeployTests.dig(dashboard, "templating", "list") as? [[String: Any]] ?? []).compactMap { $0["name"] as? String }
        #expect(variables == ["datasource", "instance", "client"])
        var queries: [Query] = []
        // The variables' choices: `label_values(SELECTOR, LABEL)` lists LABEL's values in SELECTOR's series.
        for variable in DeployTests.dig(dashboard, "templating", "list") as? [[String: Any]] ?? [] where variable["type"] as? String == "query" {
            let definition = variable["definition"] as? String ?? ""
            let parts = try #require(definition.firstMatch(of: #/^label_values\((.+), ([a-z_]+)\)$/#), "\(definition)")
            queries.append(Query(panel: "variable \(variable["name"] ?? "")", expr: "group by (\(parts.output.2)) (\(parts.output.1))".replacingOccurrences(of: "$instance", with: instance),
                                 legend: ""))
        }
        for panel in panels where panel["type"] as? String != "row" {
            let title = panel["title"] as? String ?? "?"
            #expect(DeployTests.dig(panel, "datasource", "uid") as? String == "${datasource}", "\(title)")
            let targets = panel["targets"] as? [[String: Any]] ?? []
            #expect(!targets.isEmpty, "\(title) has no query")
            for target in targets {
                let expr = try #require(target["expr"] as? String, "\(title)")
                queries.append(Query(panel: title, expr: expr.replacingOccurrences(of: "$__rate_interval", with: "10s")
                    .replacingOccurrences(of: "$instance", with: instance).replacingOccurrences(of: "$client", with: "(team-a|team-b|reader)"),
                                     legend: target["legendFormat"] as? String ?? ""))
            }
        }
        #expect(queries.count == 2 + 53)
        return queries
    }

    /// A Prometheus server scrapes a live gateway that has served a little of everything, with
    /// the alert rules loaded. Every dashboard query then returns data (a query naming a metric,
    /// a suffix or a filtered label the gateway does not serve returns none), each series with the
    /// labels it is summed by and its legend shows, and every alert rule evaluates without error.
    @Test(.timeLimit(.minutes(4))) func everyDashboardQueryReturnsDataFromALiveGateway() async throws {
        let prometheus = try Self.tool("prometheus")
        // The reader may make one request a day: its others are quota refusals.
        try await GatewayHarness.run(clientsYAML: GatewayHarness.clientsYAML() + "\n    quota: {requests_per_day: 1}") { h in
            let queries = try Self.dashboardQueries(instance: "127.0.0.1:\(h.gatewayPort)")
            let work = FileManager.default.temporaryDirectory.appendingPathComponent("prometheus-\(UUID().uuidString)")
            try FileManager.default.createDirectory(at: work, withIntermediateDirectories: true)
            defer { try? FileManager.default.removeItem(at: work) }
            try """
            global: {scrape_interval: 1s, evaluation_interval: 1s}
            rule_files: ["\(DeployTests.root.appendingPathComponent("deploy/prometheus/alerts.yaml").path)"]
            scrape_configs:
              - job_name: algogate
                static_configs: [{targets: ["127.0.0.1:\(h.gatewayPort)"]}]
            """.write(to: work.appendingPathComponent("prometheus.yml"), atomically: true, encoding: .utf8)

            try await Self.traffic(h)
            // The port is probed free, then bound by Prometheus: another test may take it meanwhile, so try again.
            var server: (process: ChildProcess, api: TestHTTP)?
            for _ in 0..<3 where server == nil {
                let port = try await DemoTests.freePort()
                let process = try ChildProcess(executable: prometheus, arguments: [
                    "--config.file=\(work.appendingPathComponent("prometheus.yml").path)", "--storage.tsdb.path=\(work.appendingPathComponent("data").path)",
                    "--web.listen-address=127.0.0.1:\(port)", "--log.level=warn"])
                let api = TestHTTP(port: port)
                if await eventually(within: .seconds(20), { (try? await api.send(.GET, "/-/ready").status) == 200 }) {
                    server = (process, api)
                } else {
                    await withCheckedContinuation { done in process.stop { done.resume() } }
                }
            }
            let (process, api) = try #require(server, "Prometheus did not start")
            defer { process.stop() }

            // Scrapes on both sides of a second round of traffic, so that rates have two samples.
            #expect(try await eventually(within: .seconds(30)) { try await Self.query(api, #"up{job="algogate"} == 1"#).count == 1 })
            try await Self.traffic(h)
            #expect(try await eventually(within: .seconds(30)) {
                (try await Self.query(api, #"count_over_time(up{job="algogate"}[1m])"#).first?.value ?? 0) >= 4
            })
            for query in queries {
                // Asked again for a while when empty: a scrape that a loaded whole-suite run made
                // slower than the 1 s interval fails, and its series read as gone until the next.
                var result = try await Self.query(api, query.expr)
                if result.isEmpty {
                    _ = await eventually(within: .seconds(10)) {
                        result = (try? await Self.query(api, query.expr)) ?? []
                        return !result.isEmpty
                    }
                }
                #expect(!result.isEmpty, "\(query.panel): no data for \(query.expr)")
                for series in result {
                    let missing = query.labels.filter { (series.labels[$0] ?? "").isEmpty }
                    #expect(missing.isEmpty, "\(query.panel): \(query.expr) gives series without \(missing.sorted())")
                }
            }

            // The alert rules evaluate against the live series without error.
            #expect(try await eventually(within: .seconds(30)) {
                let rules = try await Self.rules(api)
                return rules.count == 13 && rules.allSatisfy { $0.health == "ok" }
            })
            let rules = try await Self.rules(api)
            #expect(rules.filter { $0.health != "ok" }.map(\.name) == [], "\(rules)")
            // Nothing is wrong with this gateway, so nothing fires.
            #expect(rules.filter { $0.state != "inactive" }.map(\.name) == [])
        }
    }

    /// Requests of every kind the dashboard shows: algorithm calls (a miss, then a hit), one
    /// asynchronous call, one whose client goes before its answer, a data call, refusals (one
    /// over a quota when the reader's is one request a day).
    static func traffic(_ h: GatewayHarness) async throws {
        let text = simple(Keys.teamB) + [("Content-Type", "text/plain")]
        #expect(try await h.gateway.send(.POST, "/v1/algo/demo/Hello/0.1.0", headers: text, text: "HAL").status == 200)
        #expect(try await h.gateway.send(.POST, "/v1/algo/demo/Hello/0.1.0", headers: text, text: "HAL").header("X-Cache") == "HIT")
        #expect(try await h.gateway.send(.POST, "/v1/algo/util/Echo/1.0.0?output=void", headers: text, text: "x").status == 200)
        #expect(try await h.gateway.send(.GET, "/v1/data/.my/team-a", headers: simple(Keys.teamB)).status == 403)
        #expect(try await h.gateway.send(.GET, "/v1/data/.my/team-a", headers: simple(Keys.teamA)).status != 403)
        for _ in 0..<2 { _ = try await h.gateway.send(.GET, "/v1/data/.my/reader", headers: simple(Keys.reader)) }
        #expect(try await h.gateway.send(.GET, "/v1/data/.my/reader", headers: simple(Keys.reader)).status == 429)
        #expect(try await h.gateway.send(.POST, "/v1/algo/demo/Hello", headers: simple("not-a-key") + [("Content-Type", "text/plain")], text: "x").status == 401)
        let unread = try await h.gateway.send(.GET, "/metrics").text
        let before = metricSample(unread, #"algogate_unread_answers_total{client="team-a"}"#) ?? 0
        // Gone while its call is upstream (the simulator holds it 5 s), which runs on to its end.
        let leaving = try await RawConnection.connect(port: h.gatewayPort, sending: ClientDepartureTests.call("/v1/algo/test/Sleep", key: Keys.teamA, input: "5000"))
        #expect(await eventually { h.app.gate.inFlight == 1 })
        await leaving.close()
        #expect(try await eventually(within: .seconds(60)) {
            metricSample(try await h.gateway.send(.GET, "/metrics").text, #"algogate_unread_answers_total{client="team-a"}"#) == before + 1
        })
    }

    /// The series an instant query returns, with their values.
    static func query(_ api: TestHTTP, _ expr: String) async throws -> [(labels: [String: String], value: Double)] {
        var allowed = CharacterSet.alphanumerics
        allowed.insert(charactersIn: "-._~")
        let reply = try await api.send(.GET, "/api/v1/query?query=" + (expr.addingPercentEncoding(withAllowedCharacters: allowed) ?? ""))
        guard reply.status == 200, reply.object["status"] as? String == "success" else {
            throw MonitoringTestError("\(expr): \(reply.status) \(reply.text)")
        }
        return (DeployTests.dig(reply.object, "data", "result") as? [[String: Any]] ?? []).map { series in
            (series["metric"] as? [String: String] ?? [:], Double((series["value"] as? [Any])?.last as? String ?? "") ?? .nan)
        }
    }

    struct Rule: CustomStringConvertible {
        let name: String, health: String, state: String, lastError: String
        var description: String { "\(name): \(health) \(state) \(lastError)" }
    }

    static func rules(_ api: TestHTTP) async throws -> [Rule] {
        let reply = try await api.send(.GET, "/api/v1/rules")
        let groups = DeployTests.dig(reply.object, "data", "groups") as? [[String: Any]] ?? []
        return groups.flatMap { $0["rules"] as? [[String: Any]] ?? [] }.map { rule in
            Rule(name: rule["name"] as? String ?? "", health: rule["health"] as? String ?? "", state: rule["state"] as? String ?? "",
                 lastError: rule["lastError"] as? String ?? "")
        }
    }
}
