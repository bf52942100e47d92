import AlgoGate
import ArgumentParser
import Foundation

/// `algogate usage`: what each client used per day, read from the gateway's SQLite file (safe
/// while the gateway runs; counters reach the file within a second).
struct UsageCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "usage",
        abstract: "Print usage per client per day: requests, cache hits, upstream calls, errors, bytes, compute, upstream slot time."
    )

    @Option(help: "The gateway's YAML configuration file (for cache.path, where usage is kept).")
    var config: String

    @Option(help: "Only this client (a name no configured client has, and none in the records of those days has, is refused as a typo).")
    var client: String?

    @Option(help: "How many days back, today included (7 unless --month is given).")
    var days: Int?

    @Option(help: ArgumentHelp("One calendar month (UTC) instead, whole: what a monthly chargeback reads on the first of the next.", valueName: "YYYY-MM"))
    var month: String?

    @Option(help: "table (aligned columns), or csv (a header line, then one line per client per day, for a spreadsheet or a chargeback script).")
    var format: Format = .table

    enum Format: String, ExpressibleByArgument, CaseIterable {
        case table, csv
    }

    func validate() throws {
        if let days, !(1...3660).contains(days) { throw ValidationError("--days must be from 1 to 3660") }
        if let month {
            guard days == nil else { throw ValidationError("give --days or --month, not both") }
            guard UsagePeriod.month(month) != nil else { throw ValidationError(UsagePeriod.monthRefusal("--month", month)) }
        }
    }

    /// What the report covers: the month given, or the last `--days` days.
    var period: UsagePeriod { month.flatMap(UsagePeriod.month) ?? .lastDays(days ?? 7) }

    func run() async throws {
        let gatewayConfig = try loadWithoutKeyOrExit(path: config)
        let statePath = try existingStatePath(gatewayConfig, command: "usage", nothing: "no usage to report")
        let store = SQLiteUsageStore(pool: try StateDatabase.open(path: statePath))
        let today = Int((Date().timeIntervalSince1970 / 86_400).rounded(.down))
        let rows = try await store.report(days: period.days(today: today), client: client)
        if let client, rows.isEmpty, !gatewayConfig.clients.contains(where: { $0.name == client }) {
            FileHandle.standardError.write(Data("algogate usage: \(OperatorRoutes.unknownClient(client, in: period))\n".utf8))
            throw ExitCode(1)
        }
        if format == .csv {
            // Client names are letters, digits, '-', '_' and '.': no field needs quoting.
            print("day,client,requests,cache_hits,upstream_calls,errors,bytes_in,bytes_out,compute_seconds,slot_seconds")
            for row in rows {
                let u = row.usage
                print([row.day, row.client, "\(u.requests)", "\(u.cacheHits)", "\(u.upstreamCalls)", "\(u.errors)",
                       "\(u.bytesIn)", "\(u.bytesOut)", String(format: "%.3f", u.computeSeconds), String(format: "%.3f", u.slotSeconds)].joined(separator: ","))
            }
            return
        }
        let header = ["day", "client", "requests", "cache hits", "upstream", "errors", "bytes in", "bytes out", "compute s", "slot s"]
        var table = [header]
        for row in rows {
            let u = row.usage
            table.append([row.day, row.client, "\(u.requests)", "\(u.cacheHits)", "\(u.upstreamCalls)", "\(u.errors)",
                          "\(u.bytesIn)", "\(u.bytesOut)", String(format: "%.3f", u.computeSeconds), String(format: "%.3f", u.slotSeconds)])
        }
        let widths = header.indices.map { column in table.map { $0[column].count }.max() ?? 0 }
        for line in table {
            print(line.enumerated().map { index, cell in
                index < 2 ? cell.padding(toLength: widths[index], withPad: " ", startingAt: 0) : cell.leftPad(widths[index])
            }.joined(separator: "  "))
        }
        if rows.isEmpty { print("(no usage recorded in \(period.description))") }
    }
}
