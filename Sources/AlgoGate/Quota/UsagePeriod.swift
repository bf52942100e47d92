import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// The days a usage report covers: the last N days (today included), or one calendar month
/// (UTC), which a monthly chargeback reads whole on the first of the next.
public enum UsagePeriod: Sendable, Equatable {
    case lastDays(Int)
    case month(year: Int, month: Int)

    /// What `name` (`month`, `--month`) given `text` that `month(_:)` does not read is told.
    public static func monthRefusal(_ name: String, _ text: String) -> String {
        "\(name) must be YYYY-MM, a month from 1970-01 to 9999-12 (such as 2026-11), not '\(text)'"
    }

    /// `YYYY-MM`, or nil when `text` is not one (months 01 to 12, years 1970 to 9999).
    public static func month(_ text: String) -> UsagePeriod? {
        let parts = text.split(separator: "-", omittingEmptySubsequences: false)
        guard parts.count == 2, parts[0].count == 4, parts[1].count == 2,
              parts.allSatisfy({ $0.allSatisfy(\.isASCII) && $0.allSatisfy(\.isNumber) }),
              let year = Int(parts[0]), let month = Int(parts[1]), (1970...9999).contains(year), (1...12).contains(month) else { return nil }
        return .month(year: year, month: month)
    }

    /// Its days (days since 1970-01-01, UTC), given today's.
    public func days(today: Int) -> ClosedRange<Int> {
        switch self {
        case .lastDays(let count):
            return (today - count + 1)...today
        case .month(let year, let month):
            let first = Self.day(year: year, month: month)
            let next = month == 12 ? Self.day(year: year + 1, month: 1) : Self.day(year: year, month: month + 1)
            return first...(next - 1)
        }
    }

    /// How messages name it: `the last 7 days`, `the last 1 day`, `2026-11`.
    public var description: String {
        switch self {
        case .lastDays(let count): return "the last \(count) day\(count == 1 ? "" : "s")"
        case .month(let year, let month): return "\(Formatting.padded(year, 4))-\(Formatting.padded(month, 2))"
        }
    }

    /// The days of the calendar month (UTC) that day `day` (days since 1970-01-01) is in.
    static func monthDays(containing day: Int) -> ClosedRange<Int> {
        var seconds = time_t(day * 86_400)
        var parts = tm()
        gmtime_r(&seconds, &parts)
        return UsagePeriod.month(year: Int(parts.tm_year) + 1900, month: Int(parts.tm_mon) + 1).days(today: day)
    }

    /// The day number of the first of `month` in `year`.
    static func day(year: Int, month: Int) -> Int {
        var parts = tm()
        parts.tm_year = Int32(year - 1900)
        parts.tm_mon = Int32(month - 1)
        parts.tm_mday = 1
        return Int(timegm(&parts)) / 86_400
    }
}
