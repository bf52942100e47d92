import AlgoTestSupport
import Testing

/// The tests' own helpers, where a wrong one would let tests pass that should fail.
@Suite struct TestSupportTests {
    @Test func firstDifferenceSaysWhereBodiesDiffer() {
        #expect(firstDifference([UInt8](), [UInt8]()) == nil)
        #expect(firstDifference([1, 2, 3], [1, 2, 3]) == nil)
        #expect(firstDifference([1, 2, 3], [1, 2]) == "3 bytes where 2 were expected; first difference at byte 2: 0x3 where the end was expected")
        #expect(firstDifference([1, 2], [1, 2, 3]) == "2 bytes where 3 were expected; first difference at byte 2: the end where 0x3 was expected")
        #expect(firstDifference([1, 9, 3, 4], [1, 2, 3]) == "4 bytes where 3 were expected; first difference at byte 1: 0x9 where 0x2 was expected")
        // A megabyte that differs in its last byte fails at once.
        let megabyte = [UInt8](repeating: 7, count: 1 << 20)
        #expect(firstDifference(megabyte, megabyte.dropLast() + [8]) == "1048576 bytes where 1048576 were expected; first difference at byte 1048575: 0x7 where 0x8 was expected")
        #expect(firstDifference("héllo".utf8, Array("héllo".utf8)) == nil)
    }
}
