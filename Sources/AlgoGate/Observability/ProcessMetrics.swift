#if canImport(Glibc)
import Glibc
#endif
import Foundation
import Prometheus
import Synchronization

/// The process's own figures at `GET /metrics`, under the names every Prometheus client library
/// gives them (`process_resident_memory_bytes`, `process_open_fds`, ...), so the dashboards and
/// alerts written for those work unchanged: resident and virtual memory, CPU time, open file
/// descriptors and their limit (client connections each hold one: see `server.max_connections`),
/// and the start time. Read from `/proc/self` when scraped; on a system without it they stay 0.
final class ProcessMetrics: Sendable {
    private let cpuSeconds: Counter
    private let cpuSecondsCounted = Mutex(0.0)
    private let residentBytes: Gauge
    private let virtualBytes: Gauge
    private let startTime: Gauge
    private let openDescriptors: Gauge
    private let maxDescriptors: Gauge
    /// The machine's boot time (`/proc/stat`'s `btime`), read once: the start time is counted from it.
    private let bootTime: Double?

    init(registry: PrometheusCollectorRegistry) {
        bootTime = (try? String(contentsOfFile: "/proc/stat", encoding: .utf8)).flatMap(Reading.bootTime)
        cpuSeconds = registry.makeCounter(descriptor: .init(
            metricName: "process_cpu_seconds", unitName: "total", helpText: "Total user and system CPU time spent in seconds."))
        residentBytes = registry.makeGauge(descriptor: .init(
            metricName: "process_resident_memory", unitName: "bytes", helpText: "Resident memory size in bytes."))
        virtualBytes = registry.makeGauge(descriptor: .init(
            metricName: "process_virtual_memory", unitName: "bytes", helpText: "Virtual memory size in bytes."))
        startTime = registry.makeGauge(descriptor: .init(
            metricName: "process_start_time", unitName: "seconds", helpText: "Start time of the process since unix epoch in seconds."))
        openDescriptors = registry.makeGauge(descriptor: .init(
            metricName: "process_open_fds", unitName: "", helpText: "Number of open file descriptors."))
        maxDescriptors = registry.makeGauge(descriptor: .init(
            metricName: "process_max_fds", unitName: "", helpText: "Maximum number of open file descriptors."))
    }

    /// Reads the figures now (at scrape time).
    func update() {
        guard let bootTime, let reading = Reading.current(bootTime: bootTime) else { return }
        residentBytes.set(to: Double(reading.residentBytes))
        virtualBytes.set(to: Double(reading.virtualBytes))
        startTime.set(to: reading.startTime)
        openDescriptors.set(to: Double(reading.openDescriptors))
        maxDescriptors.set(to: Double(reading.maxDescriptors))
        let added = cpuSecondsCounted.withLock { counted in
            defer { counted = max(counted, reading.cpuSeconds) }
            return reading.cpuSeconds - counted
        }
        if added > 0 { cpuSeconds.increment(by: added) }
    }

    /// One reading of `/proc/self`.
    struct Reading: Equatable {
        var cpuSeconds: Double
        var residentBytes: Int
        var virtualBytes: Int
        var startTime: Double
        var openDescriptors: Int
        var maxDescriptors: Int

        static func current(bootTime: Double) -> Reading? {
            guard let stat = try? String(contentsOfFile: "/proc/self/stat", encoding: .utf8) else { return nil }
            var limit = rlimit()
            let maxDescriptors = getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit) == 0 ? Int(clamping: limit.rlim_cur) : 0
            return parse(stat: stat, bootTime: bootTime, ticksPerSecond: sysconf(Int32(_SC_CLK_TCK)), pageSize: sysconf(Int32(_SC_PAGESIZE)),
                         openDescriptors: openDescriptorCount(), maxDescriptors: maxDescriptors)
        }

        /// `/proc/self/stat` read (proc(5)): the fields after the command's closing parenthesis
        /// (the command may hold spaces and parentheses) start at field 3, the state.
        static func parse(stat: String, bootTime: Double, ticksPerSecond: Int, pageSize: Int, openDescriptors: Int, maxDescriptors: Int) -> Reading? {
            guard let close = stat.lastIndex(of: ")"), ticksPerSecond > 0 else { return nil }
            let fields = stat[stat.index(after: close)...].split(separator: " ")
            func field(_ number: Int) -> Double? { fields.count > number - 3 ? Double(fields[number - 3]) : nil }
            guard let userTicks = field(14), let systemTicks = field(15), let startTicks = field(22),
                  let virtualBytes = field(23), let residentPages = field(24) else { return nil }
            let ticks = Double(ticksPerSecond)
            return Reading(cpuSeconds: (userTicks + systemTicks) / ticks, residentBytes: Int(residentPages) * pageSize,
                           virtualBytes: Int(virtualBytes), startTime: bootTime + startTicks / ticks,
                           openDescriptors: openDescriptors, maxDescriptors: maxDescriptors)
        }

        /// The boot time, in seconds since the epoch: `/proc/stat`'s `btime` line.
        static func bootTime(_ system: String) -> Double? {
            system.split(separator: "\n").first { $0.hasPrefix("btime ") }.flatMap { Double($0.dropFirst(6)) }
        }

        /// The entries of `/proc/self/fd`, less the one the listing itself holds open.
        static func openDescriptorCount() -> Int {
            max(0, (entryCount(ofDirectory: "/proc/self/fd") ?? 0) - 1)
        }

        /// The entries of a directory whose names do not start with a dot (of a descriptor
        /// listing, all but `.` and `..`), or nil when it cannot be opened.
        ///
        /// Reads only the first byte of each entry's name. `readdir` returns a pointer into its
        /// buffer, where an entry takes only as many bytes as its name needs (`d_reclen`): reading
        /// `entry.pointee` copies the whole `dirent` with its 256-byte name field, past the end of
        /// the buffer for the last entries of a full one. With over a thousand descriptors open
        /// that read crashed the process (SIGSEGV in `memcpy`) once the buffer ended at unmapped
        /// memory, as Foundation's `Process` did (see the tests' `ChildProcess`).
        static func entryCount(ofDirectory path: String) -> Int? {
            guard let directory = opendir(path) else { return nil }
            defer { closedir(directory) }
            var count = 0
            while let entry = readdir(directory) {
                let first = UnsafeRawPointer(entry).load(fromByteOffset: nameOffset, as: UInt8.self)
                if first != UInt8(ascii: ".") { count += 1 }
            }
            return count
        }

        private static let nameOffset = MemoryLayout<dirent>.offset(of: \dirent.d_name)!
    }
}
