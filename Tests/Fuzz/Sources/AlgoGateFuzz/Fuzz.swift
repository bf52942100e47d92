@testable import AlgoGate
import Foundation
import HTTPTypes
import NIOCore

/// The executable's entry, as SwiftPM names it on Linux (`<module>_main`, which it links as
/// `main`): libFuzzer's driver, fed by `fuzz` below. (With SwiftPM's `main` taken, libFuzzer's
/// own is never linked.)
@_cdecl("AlgoGateFuzz_main")
public func fuzzMain(_ argc: CInt, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?) -> CInt {
    var argc = argc, argv = argv
    return LLVMFuzzerRunDriver(&argc, &argv) { data, count in fuzz(data.map(UnsafeRawPointer.init) ?? UnsafeRawPointer(bitPattern: 1)!, count) }
}

@_silgen_name("LLVMFuzzerRunDriver")
func LLVMFuzzerRunDriver(_ argc: UnsafeMutablePointer<CInt>, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?>,
                         _ callback: @convention(c) (UnsafePointer<UInt8>?, Int) -> CInt) -> CInt

/// libFuzzer's entry: one input, to the parser `ALGOGATE_FUZZ` names. Each parser must return or
/// throw, never trap, and what it accepts must hold its invariants (a `preconditionFailure` is a
/// finding, with the input that caused it saved by libFuzzer).
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ start: UnsafeRawPointer, _ count: Int) -> CInt {
    let bytes = [UInt8](UnsafeRawBufferPointer(start: start, count: count))
    switch target {
    case .dataPath: FuzzTargets.dataPath(bytes)
    case .route: FuzzTargets.route(bytes)
    case .input: FuzzTargets.input(bytes)
    case .headers: FuzzTargets.headers(bytes)
    case .inflate: FuzzTargets.inflate(bytes)
    }
    return 0
}

enum FuzzTarget: String, CaseIterable {
    case dataPath = "data-path", route, input, headers, inflate
}

let target: FuzzTarget = {
    let name = ProcessInfo.processInfo.environment["ALGOGATE_FUZZ"] ?? ""
    guard let target = FuzzTarget(rawValue: name) else {
        preconditionFailure("set ALGOGATE_FUZZ to one of \(FuzzTarget.allCases.map(\.rawValue).joined(separator: ", "))")
    }
    return target
}()

enum FuzzTargets {
    /// A request path's data location and a directory name: what is accepted is forwarded as a
    /// path that parses back to the same location, whose segments are plain names.
    static func dataPath(_ bytes: [UInt8]) {
        let cut = bytes.firstIndex(of: 0) ?? bytes.endIndex
        let path = String(decoding: bytes[..<cut], as: UTF8.self)
        let name = cut < bytes.endIndex ? String(decoding: bytes[(cut + 1)...], as: UTF8.self) : nil
        for (connectorForm, parse) in [(false, { try DataURI.parse(dataPath: Substring(path)) }),
                                       (true, { try DataURI.parse(connectorPath: Substring(path)) }),
                                       (false, { try DataURI.parse(uri: path) })] as [(Bool, () throws -> DataURI)] {
            guard let location = try? parse() else { continue }
            check(location, path)
            let forwarded = location.upstreamPath(connectorForm: connectorForm)
            // `data` locations go as `/v1/data/...` whichever form named them.
            let again = forwarded.hasPrefix("/v1/connector/") ? try? DataURI.parse(connectorPath: Substring(forwarded.dropFirst("/v1/connector/".count)))
                                                              : try? DataURI.parse(dataPath: Substring(forwarded.dropFirst("/v1/data/".count)))
            guard again == location else { preconditionFailure("\(path.debugDescription) forwarded as \(forwarded) reads back as \(String(describing: again))") }
            precondition(location.isWithin(location))
            if let name, let made = try? location.appending(name) {
                check(made, name)
                precondition(made.isWithin(location) && made.segments.count == location.segments.count + 1, "\(name.debugDescription) made \(made)")
            }
        }
    }

    static func check(_ location: DataURI, _ from: String) {
        for segment in location.segments {
            let bytes = Array(segment.utf8)
            guard !bytes.isEmpty, bytes != [46], bytes != [46, 46], !bytes.contains(47), !bytes.contains(92),
                  !segment.unicodeScalars.contains(where: { $0.value < 0x20 || $0.value == 0x7f }) else {
                preconditionFailure("\(from.debugDescription) gave the segment \(segment.debugDescription)")
            }
        }
    }

    /// A request path's route class, and the algorithm or management path checks.
    static func route(_ bytes: [UInt8]) {
        let text = String(decoding: bytes, as: UTF8.self)
        for prefix in ["", "/v1/", "/v1/algo/", "/v1/data/", "/v1/connector/", "/v1/algorithms/"] {
            let path = prefix + text
            if case .data(let location, _)? = try? RouteClass.classify(path: path) { check(location, path) }
            // An algorithm the gateway reads is plain names, and its upstream path reads back as
            // the same algorithm (the Node clients' `algo://` and `/` spellings go up without them).
            if let ref = AlgoRef(path: Substring(path)) {
                // A call by id: the id a UUID, no name.
                precondition(!ref.byID || AlgoRef.isUUID(ref.owner.utf8), "\(path.debugDescription) read as a call by id \(ref)")
                precondition((ref.byID ? [ref.owner] : [ref.owner, ref.name]).allSatisfy { AlgoRef.isSegment($0, wildcard: true) }
                              && ref.version.map { AlgoRef.isSegment($0, wildcard: true) } ?? true, "\(path.debugDescription) read as \(ref)")
                precondition(AlgoRef(path: Substring(ref.description)) == ref, "\(path.debugDescription) read as \(ref), which reads back otherwise")
            }
            _ = path.dropPrefix("/v1/")
        }
        _ = try? AlgoOptions.parse(text)
        _ = try? AlgorithmPattern(parsing: text)
        // A name no server could read as an option is not one to the gateway either.
        let options = ["timeout", "output", "stdout", "sudo", "_method"]
        let decoded = text.removingPercentEncoding ?? text
        for reading in [decoded.lowercased(), decoded.precomposedStringWithCompatibilityMapping.lowercased()] where options.contains(reading) {
            precondition(ParameterName.reading(Substring(text), among: options) == reading, "\(text.debugDescription) reads as \(reading)")
        }
        if let option = options.first(where: { javaEqualsIgnoreCase(decoded, $0) }) {
            precondition(ParameterName.reading(Substring(text), among: options) == option, "\(text.debugDescription) is \(option) to Java")
        }
    }

    /// Java's `String.equalsIgnoreCase`: UTF-16 unit by unit, equal, or equal uppercased, or equal
    /// lowercased after that (simple case mappings: for the letters compared here, the first
    /// scalar of Unicode's full mapping).
    static func javaEqualsIgnoreCase(_ a: String, _ b: String) -> Bool {
        let a = Array(a.utf16), b = Array(b.utf16)
        guard a.count == b.count else { return false }
        func upper(_ unit: UInt16) -> UInt32 {
            Unicode.Scalar(unit).flatMap { $0.properties.uppercaseMapping.unicodeScalars.first }.map(\.value) ?? UInt32(unit)
        }
        func lower(_ value: UInt32) -> UInt32 {
            Unicode.Scalar(value).flatMap { $0.properties.lowercaseMapping.unicodeScalars.first }.map(\.value) ?? value
        }
        return zip(a, b).allSatisfy { x, y in x == y || upper(x) == upper(y) || lower(upper(x)) == lower(upper(y)) }
    }

    /// An algorithm input's data references, as JSON, text and bytes.
    static func input(_ bytes: [UInt8]) {
        let body = ByteBuffer(bytes: bytes)
        for type in ["application/json", "text/plain", "application/text", "application/octet-stream", "text/plain; charset=utf-8"] {
            _ = try? DataReferences.find(in: body, contentType: type)
        }
        let scanned = DataReferences.strings(inJSON: bytes)
        for string in scanned ?? [] { _ = DataReferences.references(in: string) }
        // Every string the JSON parser reads, keys included, the scan must read too, byte for byte:
        // a string read one way here and another upstream could hide a data URI from the check.
        // (A document the scan cannot read is refused whole, fail closed.)
        if let parsed = JSON.parse(body), let scanned {
            let seen = Set(scanned.map { Array($0.utf8) })
            for string in allStrings(parsed) where !seen.contains(Array(string.utf8)) {
                preconditionFailure("the parser reads the string \(string.debugDescription), which the scan does not")
            }
        }
        _ = DataReferences.otherCharset(of: String(decoding: bytes, as: UTF8.self))
    }

    static func allStrings(_ value: Any) -> [String] {
        switch value {
        case let string as String: [string]
        case let array as [Any]: array.flatMap(allStrings)
        case let object as [String: Any]: object.flatMap { [$0.key] + allStrings($0.value) }
        default: []
        }
    }

    /// Header values: credentials, Cache-Control, content codings.
    static func headers(_ bytes: [UInt8]) {
        let value = String(decoding: bytes, as: UTF8.self)
        _ = try? Credentials.key(parsing: value)
        var fields = HTTPFields()
        if let field = HTTPField.Name("Cache-Control").map({ HTTPField(name: $0, value: value) }) { fields.append(field) }
        fields[.init("Pragma")!] = value
        _ = CachePolicy.cacheControl(fields)
        // The bounds a request puts on cached answers are read only when the directive names say
        // it has them: the two readings must agree, or a `max-age` could go unread. A field read
        // alone or with another as one comma-joined field bounds alike (RFC 9110 §5.3).
        var control = HTTPFields()
        if let field = HTTPField.Name("Cache-Control").map({ HTTPField(name: $0, value: value) }) { control.append(field) }
        let names = CachePolicy.cacheControl(control), freshness = RequestFreshness(control)
        precondition(names.contains("max-age") == (freshness.maxAge != nil), "max-age read one way and not the other in \(value.debugDescription)")
        precondition(names.contains("min-fresh") == (freshness.minFresh != nil), "min-fresh read one way and not the other in \(value.debugDescription)")
        precondition((freshness.maxAge ?? 0) >= 0 && (freshness.maxAge ?? 0) <= 1 << 31 && (freshness.minFresh ?? 0) >= 0 && (freshness.minFresh ?? 0) <= 1 << 31)
        if let comma = value.firstIndex(of: ","), let name = HTTPField.Name("Cache-Control") {
            let split = HTTPFields([HTTPField(name: name, value: String(value[..<comma])), HTTPField(name: name, value: String(value[value.index(after: comma)...]))])
            precondition(RequestFreshness(split) == freshness, "\(value.debugDescription) read as two fields bounds otherwise")
        }
        _ = try? ContentCoding.of(contentEncoding: value)
        _ = ContentCoding.preferred(acceptEncoding: [value])
        _ = CachePolicy.isPinned(value)
        // A Host taken as sound holds nothing that ends or reroutes a URL, nor anything that is
        // not printable ASCII.
        if HostField.isValid(value) {
            precondition(value.utf8.allSatisfy { $0 > 0x20 && $0 < 0x7f && !"/?#@\"\\<>`{}|^".utf8.contains($0) }, "Host \(value.debugDescription) taken as sound")
        }
    }

    /// A compressed upload, inflated within a limit; inflated as it streams, cut anywhere, it
    /// reads as it does whole (members ending in one part or between two).
    static func inflate(_ bytes: [UInt8]) {
        for coding in [ContentCoding.gzip, .deflate] {
            let limit = 1 << 16
            let whole = try? Inflater.inflateAll(ByteBuffer(bytes: bytes), coding: coding, limit: limit)
            if let whole {
                precondition(whole.readableBytes <= limit, "inflated \(whole.readableBytes) bytes past the \(limit)-byte limit")
            }
            let cut = bytes.isEmpty ? 0 : Int(bytes[bytes.count / 2]) % (bytes.count + 1)
            let streamed = try? streamedInflate([Array(bytes[..<cut]), Array(bytes[cut...])], coding: coding, limit: limit)
            precondition(streamed == whole.map { Array($0.readableBytesView) },
                         "cut at \(cut), \(coding): streamed \(streamed?.count ?? -1) bytes, whole \(whole?.readableBytes ?? -1)")
            _ = Inflater.declaredSize(of: ByteBuffer(bytes: bytes), coding: coding)
        }
    }

    /// What `InflatingSequence` does with these parts, without its asynchrony.
    static func streamedInflate(_ parts: [[UInt8]], coding: ContentCoding, limit: Int) throws -> [UInt8] {
        let inflater = try Inflater(coding, limit: limit)
        var output: [UInt8] = []
        for part in parts {
            var input = ByteBuffer(bytes: part)
            var more = false
            while input.readableBytes > 0 || more {
                var piece = ByteBuffer()
                piece.reserveCapacity(4096)
                let left = input.readableBytes
                more = try inflater.inflate(&input, into: &piece)
                output += piece.readableBytesView
                if piece.readableBytes == 0 && !more && input.readableBytes > 0 && input.readableBytes == left { throw Inflater.Truncated() }
            }
        }
        try inflater.finish()
        return output
    }
}
