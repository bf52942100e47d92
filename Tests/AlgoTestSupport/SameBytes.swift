/// Where two byte sequences first differ, or nil when they are the same: for large bodies,
/// `#expect(firstDifference(got, expected) == nil)` rather than `#expect(got == expected)`.
///
/// Swift Testing explains a failed `==` of two arrays by their difference, computed in time that
/// grows with the square of their size (2 s for 50 KB here, hours for a megabyte): a test whose
/// large body came back wrong would run until CI's time ran out instead of failing.
public func firstDifference(_ actual: some Sequence<UInt8>, _ expected: some Sequence<UInt8>) -> String? {
    var actualBytes = actual.makeIterator(), expectedBytes = expected.makeIterator()
    var offset = 0
    while true {
        switch (actualBytes.next(), expectedBytes.next()) {
        case (nil, nil):
            return nil
        case (let got?, let wanted?) where got == wanted:
            offset += 1
        case (let got, let wanted):
            let describe = { (byte: UInt8?) in byte.map { "0x" + String($0, radix: 16) } ?? "the end" }
            var actualCount = offset + (got == nil ? 0 : 1), expectedCount = offset + (wanted == nil ? 0 : 1)
            while actualBytes.next() != nil { actualCount += 1 }
            while expectedBytes.next() != nil { expectedCount += 1 }
            return "\(actualCount) bytes where \(expectedCount) were expected; first difference at byte \(offset): \(describe(got)) where \(describe(wanted)) was expected"
        }
    }
}
