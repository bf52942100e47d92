import HTTPTypes
import Hummingbird
import Synchronization

/// Gives every request an `X-Request-ID`: the client's own when it is a sane token, else a new
/// UUID-shaped id. The same id goes upstream, into the log line and back on the response.
struct RequestIDMiddleware: RouterMiddleware {
    typealias Context = GatewayRequestContext

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        var context = context
        context.requestID = Self.accept(request.headers.value(.requestID)) ?? RequestIDs.next()
        var response = try await next(request, context)
        response.headers[.requestID] = context.requestID
        return response
    }

    /// Accepts ids of up to 128 letters, digits, `-`, `_`, `.`, so an id cannot inject log syntax.
    static func accept(_ value: String?) -> String? {
        guard let value, (1...128).contains(value.utf8.count),
              value.utf8.allSatisfy({ (0x30...0x39).contains($0) || (0x41...0x5a).contains($0) || (0x61...0x7a).contains($0) || $0 == 0x2d || $0 == 0x5f || $0 == 0x2e })
        else { return nil }
        return value
    }
}

extension HTTPField.Name {
    static let requestID = HTTPField.Name("X-Request-ID")!
}

/// Request ids in the UUID version 4 layout without a system call per request (Foundation's `UUID()`
/// opens and reads `/dev/urandom` each time, three system calls on the hot path). The first 64 bits
/// are random per process; the last 64 are a counter passed through a bijective mixer (SplitMix64's
/// finaliser), so ids never repeat within a process and do not look sequential.
enum RequestIDs {
    private static let prefix = UInt64.random(in: .min ... .max) & 0xffff_ffff_ffff_0fff | 0x0000_0000_0000_4000
    private static let counter = Atomic<UInt64>(UInt64.random(in: .min ... .max))

    static func next() -> String {
        let count = counter.add(1, ordering: .relaxed).newValue
        var mixed = count
        mixed = (mixed ^ (mixed >> 30)) &* 0xbf58_476d_1ce4_e5b9
        mixed = (mixed ^ (mixed >> 27)) &* 0x94d0_49bb_1331_11eb
        mixed ^= mixed >> 31
        // RFC 9562 variant bits (10xx) in the second half.
        return format(prefix, mixed & 0x3fff_ffff_ffff_ffff | 0x8000_0000_0000_0000)
    }

    /// `xxxxxxxx-xxxx-4xxx-yxxx-xxxxxxxxxxxx`
    static func format(_ high: UInt64, _ low: UInt64) -> String {
        String(unsafeUninitializedCapacity: 36) { out in
            let digits: StaticString = "0123456789abcdef"
            var index = 0
            func put(_ value: UInt64, nibbles: Int) {
                for shift in stride(from: (nibbles - 1) * 4, through: 0, by: -4) {
                    out[index] = digits.utf8Start[Int((value >> UInt64(shift)) & 0xf)]
                    index += 1
                }
            }
            func dash() { out[index] = 0x2d; index += 1 }
            put(high >> 32, nibbles: 8); dash()
            put(high >> 16, nibbles: 4); dash()
            put(high, nibbles: 4); dash()
            put(low >> 48, nibbles: 4); dash()
            put(low, nibbles: 12)
            return index
        }
    }
}
