@testable import AlgoGate
import AlgoTestSupport
import Foundation
import Logging
import Synchronization
import Testing

/// The log writer on a real pipe: lines arrive whole and in order, a reader that stops reading
/// costs dropped (and counted, and announced) lines instead of stalled callers, and a reader that
/// goes away is counted rather than fatal.
@Suite struct LogWriterTests {
    @Test func linesFromConcurrentCallersArriveWholeAndInOrder() async throws {
        let pipe = try TestPipe()
        pipe.startReading()
        let writer = LogWriter(fileDescriptor: pipe.writeEnd, bufferBytes: 1 << 20, dropNotice: Self.notice)
        let producers = 4, perProducer = 2_500
        await withTaskGroup(of: Void.self) { group in
            for producer in 0..<producers {
                group.addTask {
                    for sequence in 0..<perProducer { writer.write(Self.line(producer: producer, sequence: sequence)) }
                }
            }
        }
        #expect(writer.flush(timeout: .seconds(30)))
        #expect(writer.finish(timeout: .seconds(30)))
        let lines = try pipe.closeAndCollectLines()
        #expect(writer.droppedLines == 0)
        #expect(lines.count == producers * perProducer)
        var next = Array(repeating: 0, count: producers)
        for line in lines {
            let object = try #require(try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any], "not a whole line: \(line.prefix(80))")
            let producer = try #require(object["producer"] as? Int), sequence = try #require(object["sequence"] as? Int)
            #expect(sequence == next[producer], "producer \(producer): \(sequence) after \(next[producer] - 1)")
            next[producer] = sequence + 1
        }
        #expect(next == Array(repeating: perProducer, count: producers))
    }

    @Test func aStalledReaderCostsDroppedLinesNotWaitingCallers() async throws {
        let pipe = try TestPipe()
        let writer = LogWriter(fileDescriptor: pipe.writeEnd, bufferBytes: LogWriter.minimumBufferBytes, dropNotice: Self.notice)
        // Nobody reads: the pipe (64 KiB) and the buffer fill up. Every call still returns; were
        // one to block on the pipe, this test would not finish. Short pauses let the writer move
        // what it has into the pipe until the pipe is full.
        let total = 3_000
        for sequence in 0..<total {
            writer.write(Self.line(producer: 0, sequence: sequence))
            if sequence % 30 == 29 { writer.flush(timeout: .milliseconds(5)) }
        }
        #expect(!writer.flush(timeout: .milliseconds(200)), "nothing reads the pipe, so not everything can be written")
        let dropped = writer.droppedLines
        #expect(dropped > 0 && dropped < total, "dropped \(dropped) of \(total)")

        // The reader comes back: what was buffered is written, then a line saying what was lost.
        pipe.startReading()
        #expect(writer.flush(timeout: .seconds(30)))
        #expect(writer.finish(timeout: .seconds(30)))
        let lines = try pipe.closeAndCollectLines()
        var received: [Int] = []
        var announced = 0
        for line in lines {
            let object = try #require(try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any], "not a whole line: \(line.prefix(80))")
            if let count = object["dropped"] as? Int { announced += count } else { received.append(try #require(object["sequence"] as? Int)) }
        }
        #expect(announced == dropped)
        #expect(received.count + dropped == total)
        #expect(received == received.sorted(), "lines kept their order")
        #expect(received.first == 0, "the first lines were buffered, not dropped")
    }

    /// The buffer holds what it is sized for and not a line more: with the writer stuck on a
    /// full pipe, lines of a quarter of it fit four times, and the fifth is dropped whole.
    @Test func theBufferTakesLinesUpToItsSizeAndNotOneMore() async throws {
        let pipe = try TestPipe()
        // Fill the pipe first, so the writer's first write waits for the reader.
        _ = fcntl(pipe.writeEnd, F_SETFL, fcntl(pipe.writeEnd, F_GETFL) | O_NONBLOCK)
        let filler = Array(String(repeating: "f", count: 1023).utf8) + [UInt8(ascii: "\n")]
        var filled = 0
        while filler.withUnsafeBytes({ write(pipe.writeEnd, $0.baseAddress, $0.count) }) > 0 { filled += 1 }
        let capacity = LogWriter.minimumBufferBytes
        let writer = LogWriter(fileDescriptor: pipe.writeEnd, bufferBytes: capacity, dropNotice: Self.notice)
        // The writer takes this line and waits on the pipe with it, leaving the buffer empty.
        writer.write(Self.sized(0, capacity / 4))
        #expect(!writer.flush(timeout: .seconds(1)), "nothing reads the pipe")
        for sequence in 1...5 { writer.write(Self.sized(sequence, capacity / 4)) }
        #expect(writer.droppedLines == 1, "4 lines fill the buffer exactly; the fifth does not fit")

        pipe.startReading()
        #expect(writer.flush(timeout: .seconds(30)))
        #expect(writer.finish(timeout: .seconds(30)))
        let lines = try pipe.closeAndCollectLines().filter { !$0.hasPrefix("f") }
        #expect(filled > 0)
        #expect(lines == (0...4).map { String(decoding: Self.sized($0, capacity / 4).dropLast(), as: UTF8.self) } + [#"{"dropped":1}"#])
    }

    /// A line of exactly `bytes` bytes, newline included.
    static func sized(_ sequence: Int, _ bytes: Int) -> [UInt8] {
        let head = Array(#"{"sequence":\#(sequence),"padding":""#.utf8)
        return head + Array(repeating: UInt8(ascii: "x"), count: bytes - head.count - 3) + Array(#""}"#.utf8) + [UInt8(ascii: "\n")]
    }

    @Test func aReaderThatGoesAwayIsCountedNotFatal() throws {
        signal(SIGPIPE, SIG_IGN)  // as `algogate serve` does: EPIPE instead of death
        let pipe = try TestPipe()
        close(pipe.readEnd)
        let writer = LogWriter(fileDescriptor: pipe.writeEnd, bufferBytes: 1 << 16, dropNotice: Self.notice)
        for sequence in 0..<10 { writer.write(Self.line(producer: 0, sequence: sequence)) }
        #expect(writer.flush(timeout: .seconds(30)), "lines the output refuses are settled, not waited for")
        #expect(writer.droppedLines == 10)
        #expect(writer.finish(timeout: .seconds(30)))
        writer.write(Self.line(producer: 0, sequence: 10))
        #expect(writer.droppedLines == 11, "after finish, lines are dropped and counted")
        close(pipe.writeEnd)
    }

    @Test func handlerLinesCarryTheHandlersMetadataUnderTheEvents() throws {
        let pipe = try TestPipe()
        pipe.startReading()
        let writer = LogWriter(fileDescriptor: pipe.writeEnd, dropNotice: Self.notice)
        var logger = Logger(label: "algogate") { LineLogHandler(label: $0, format: .json, writer: writer) }
        logger[metadataKey: "instance"] = "a"
        logger[metadataKey: "path"] = "overridden"
        logger.info("request", metadata: ["path": "/v1/algo/x", "status": .stringConvertible(200)])
        logger.debug("below the level")
        #expect(writer.finish(timeout: .seconds(30)))
        let lines = try pipe.closeAndCollectLines()
        #expect(lines.count == 1)
        let first = try #require(lines.first)
        let object = try #require(try JSONSerialization.jsonObject(with: Data(first.utf8)) as? [String: String])
        #expect(object["instance"] == "a")
        #expect(object["path"] == "/v1/algo/x", "event metadata wins over the handler's")
        #expect(object["status"] == "200")
        #expect(object["msg"] == "request")
    }

    /// `algogate serve` whose standard output nobody reads (a wedged log shipper): requests are
    /// answered all the same, the lines that did not fit are counted in /metrics, and once the
    /// reader is back every line is either received or announced as dropped.
    @Test func aGatewayWhoseLogIsNotReadKeepsAnswering() async throws {
        try await withTemporaryDirectory("stalled-log") { work in
            let sim = try ChildProcess(arguments: ["sim", "--port", "0", "--key", Keys.upstream, "--data-dir", work.appendingPathComponent("data").path])
            defer { sim.stop() }
            let config = work.appendingPathComponent("gateway.yaml")
            try ProcessHarness.standardYAML(simPort: try await sim.listeningPort(), gatewayPort: 0, work: work)
                .write(to: config, atomically: true, encoding: .utf8)
            let pipe = try TestPipe()
            let gateway = try ChildProcess(arguments: ["serve", "--config", config.path, "--log-buffer-bytes", "4096"],
                                           environment: [ProcessHarness.keyVariable: Keys.upstream],
                                           standardOutput: FileHandle(fileDescriptor: pipe.writeEnd, closeOnDealloc: false))
            defer { gateway.stop() }
            pipe.closeWriteEnd()  // the child has its own copy; the reader sees the end when it exits
            let http = TestHTTP(port: try await pipe.listeningPort())

            // Each answer logs a line of about 250 bytes: 3,000 of them overflow the pipe (64 KiB)
            // and the 4 KiB buffer many times over. With a blocking write the event loops would
            // stop in write(2) and these requests would time out.
            let requests = 3_000
            let statuses = try await withThrowingTaskGroup(of: [Int].self) { group in
                for worker in 0..<16 {
                    group.addTask {
                        var seen: [Int] = []
                        for _ in stride(from: worker, to: requests, by: 16) {
                            seen.append(try await http.send(.GET, "/v1/algo/demo/Hello", timeout: .seconds(10)).status)
                        }
                        return seen
                    }
                }
                return try await group.reduce(into: []) { $0 += $1 }
            }
            #expect(statuses.count == requests && statuses.allSatisfy { $0 == 401 })
            let scrape = try await http.send(.GET, "/metrics")
            let counted = try #require(metricSample(scrape.text, "algogate_log_lines_dropped_total").map { Int($0) },
                                       "no dropped-lines counter in: \(scrape.text.prefix(300))")
            #expect(counted > 0)

            pipe.startReading()
            try await Task.sleep(for: .milliseconds(300))  // the writer catches up before shutdown logs
            gateway.signal(SIGTERM)
            await gateway.exited()
            #expect(gateway.termination == .exited(0))
            var answered = 0, scrapes = 0, announced = 0
            for line in try pipe.closeAndCollectLines() {
                let object = try #require(try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any], "not a whole line: \(line.prefix(80))")
                if object["status"] as? Int == 401 { answered += 1 }
                if object["path"] as? String == "/metrics" { scrapes += 1 }
                if let dropped = object["dropped"] as? Int {
                    #expect(object["level"] as? String == "warning")
                    announced += dropped
                }
            }
            #expect(answered < requests, "some lines had to be dropped")
            #expect(announced >= counted, "the scrape counted \(counted), the log announced \(announced)")
            #expect(answered + scrapes + announced == requests + 1, "every request line is received or announced as dropped")
        }
    }

    static let notice: @Sendable (Int) -> [UInt8] = { Array(#"{"dropped":\#($0)}"#.utf8) + [UInt8(ascii: "\n")] }

    static func line(producer: Int, sequence: Int) -> [UInt8] {
        // About 100 bytes, like a short request line.
        Array(#"{"producer":\#(producer),"sequence":\#(sequence),"padding":"\#(String(repeating: "x", count: 60))"}"#.utf8) + [UInt8(ascii: "\n")]
    }
}

/// A pipe whose read end is drained on a thread of its own once `startReading()` is called.
final class TestPipe: @unchecked Sendable {
    // `@unchecked`: the descriptors are set once; the bytes read are behind a Mutex.
    let readEnd: Int32
    let writeEnd: Int32
    private let received = Mutex<[UInt8]>([])
    private let writeEndOpen = Mutex(true)
    private let done = DispatchSemaphore(value: 0)

    init() throws {
        var ends: [Int32] = [0, 0]
        guard pipe(&ends) == 0 else { throw POSIXError(.EMFILE) }
        readEnd = ends[0]
        writeEnd = ends[1]
    }

    func startReading() {
        let thread = Thread { [self] in
            var chunk = [UInt8](repeating: 0, count: 65536)
            while true {
                let count = chunk.withUnsafeMutableBytes { read(readEnd, $0.baseAddress, $0.count) }
                if count < 0 && errno == EINTR { continue }
                if count <= 0 { break }
                received.withLock { $0.append(contentsOf: chunk[0..<count]) }
            }
            close(readEnd)
            done.signal()
        }
        thread.start()
    }

    func closeWriteEnd() {
        if writeEndOpen.withLock({ open in defer { open = false }; return open }) { close(writeEnd) }
    }

    /// Reads what is there, without blocking, until a line says "listening on 127.0.0.1:PORT";
    /// what was read stays in the pipe's record.
    func listeningPort(seconds: Double = 60) async throws -> Int {
        let deadline = Date().addingTimeInterval(seconds)
        var chunk = [UInt8](repeating: 0, count: 4096)
        while Date() < deadline {
            var ready = pollfd(fd: readEnd, events: Int16(POLLIN), revents: 0)
            if poll(&ready, 1, 0) == 1 {
                let count = chunk.withUnsafeMutableBytes { read(readEnd, $0.baseAddress, $0.count) }
                if count > 0 { received.withLock { $0.append(contentsOf: chunk[0..<count]) } }
            } else {
                try await Task.sleep(for: .milliseconds(50))
            }
            if let port = ChildProcess.listeningPort(in: received.withLock { String(decoding: $0, as: UTF8.self) }) { return port }
        }
        throw ChildProcessError.notListening("no 'listening on' line on the pipe within \(seconds) s")
    }

    /// Closes the write end, waits for the reader to reach the end, and returns the lines read
    /// (each without its newline). Throws when the last line is incomplete.
    func closeAndCollectLines() throws -> [String] {
        closeWriteEnd()
        guard done.wait(timeout: .now() + 30) == .success else { throw TestPipeError.readerDidNotFinish }
        let bytes = received.withLock { $0 }
        guard bytes.isEmpty || bytes.last == UInt8(ascii: "\n") else { throw TestPipeError.partialLastLine }
        return bytes.split(separator: UInt8(ascii: "\n")).map { String(decoding: $0, as: UTF8.self) }
    }

    enum TestPipeError: Error { case readerDidNotFinish, partialLastLine }
}
