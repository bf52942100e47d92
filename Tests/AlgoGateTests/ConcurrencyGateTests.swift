import AlgoGate
import AlgoTestSupport
import Testing

/// The gate alone, under many acquisitions at once: the invariants its reservations rest on.
@Suite struct ConcurrencyGateTests {
    /// 600 calls from eight clients, two of them with reservations and one with a cap, each
    /// holding its slot a few milliseconds. After every grant the gate's state is read whole and
    /// checked: within the account's cap and each client's, the count of reserved slots not in
    /// use is what the clients hold says it is, and as many slots are free as that count (so a
    /// client under its reservation always finds one free). At the end everything is given back.
    @Test func reservationsHoldUnderManyCallsAtOnce() async throws {
        let capacity = 10
        let reserved = ["c0": 3, "c1": 2]
        let limits = ["c2": 4, "c0": 5]
        let gate = ConcurrencyGate(capacity: capacity)
        gate.reserve(reserved)
        #expect(gate.unusedReserved == 5)
        let problems = try await withThrowingTaskGroup(of: [String].self) { group in
            for call in 0..<600 {
                let client = "c\(call % 8)"
                group.addTask {
                    try await gate.acquire(client: client, limit: limits[client], timeout: .seconds(60))
                    let standing = gate.standing()
                    try await Task.sleep(for: .milliseconds(call % 4))
                    gate.release(client: client)
                    var problems: [String] = []
                    let held = standing.clients.mapValues(\.inFlight)
                    if standing.inFlight > capacity { problems.append("\(standing.inFlight) in flight") }
                    for (name, cap) in limits where held[name] ?? 0 > cap { problems.append("\(name) holds \(held[name]!) over \(cap)") }
                    let unused = reserved.reduce(0) { $0 + max(0, $1.value - (held[$1.key] ?? 0)) }
                    if standing.unusedReserved != unused { problems.append("unused reserved \(standing.unusedReserved), not \(unused)") }
                    if capacity - standing.inFlight < standing.unusedReserved {
                        problems.append("\(capacity - standing.inFlight) free, under the \(standing.unusedReserved) reserved and unused")
                    }
                    return problems
                }
            }
            var all: [String] = []
            for try await problems in group { all += problems }
            return all
        }
        #expect(problems.count == 0, "\(problems.prefix(5))")
        #expect(gate.inFlight == 0 && gate.queued == 0 && gate.unusedReserved == 5)
        #expect(gate.peak == capacity)
        // The clients without a reservation shared what the reservations left them.
        #expect((2..<8).allSatisfy { gate.peak(for: "c\($0)") <= capacity - 5 })
        #expect(gate.peak(for: "c2") <= 4)
    }

    /// Slots lowered below the calls in flight take effect as those end: no call is granted one,
    /// not even within its client's reservation, until fewer are in flight than the new figure;
    /// raised again, the queue is served at once.
    @Test func slotsLoweredBelowTheCallsInFlightTakeEffectAsTheyEnd() async throws {
        let gate = ConcurrencyGate(capacity: 4)
        gate.reserve(["r": 1])
        for _ in 0..<3 { try await gate.acquire(client: "a", limit: nil, timeout: .seconds(60)) }
        #expect(gate.inFlight == 3 && gate.unusedReserved == 1)

        gate.configure(capacity: 2, reservations: ["r": 1])
        #expect(gate.capacity == 2)
        #expect(!gate.tryAcquire(client: "a", limit: nil))
        #expect(!gate.tryAcquire(client: "r", limit: nil), "a reserved slot granted with more calls in flight than the slots in force")
        let reserving = Task { try await gate.acquire(client: "r", limit: nil, timeout: .seconds(60)) }
        let other = Task { try await gate.acquire(client: "b", limit: nil, timeout: .seconds(60)) }
        #expect(await eventually { gate.queued == 2 })
        gate.release(client: "a")
        #expect(gate.inFlight == 2 && gate.queued == 2)
        // One below the figure: the reserving client's call takes the slot kept for it.
        gate.release(client: "a")
        _ = try await reserving.value
        #expect(gate.inFlight == 2 && gate.queued == 1 && gate.unusedReserved == 0)

        gate.configure(capacity: 4, reservations: ["r": 1])
        _ = try await other.value
        #expect(gate.inFlight == 3 && gate.queued == 0)
        #expect(gate.tryAcquire(client: "a", limit: nil))
        #expect(!gate.tryAcquire(client: "a", limit: nil))
        for client in ["a", "a", "r", "b"] { gate.release(client: client) }
        #expect(gate.inFlight == 0 && gate.unusedReserved == 1)
    }
}
