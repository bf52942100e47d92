import Foundation

/// Runs `body` with a fresh directory under the system's temporary folder (named `prefix-UUID`),
/// and removes the directory and everything in it afterwards, whether `body` throws or not.
public func withTemporaryDirectory<T>(_ prefix: String, _ body: (URL) async throws -> T) async throws -> T {
    let directory = FileManager.default.temporaryDirectory.appendingPathComponent("\(prefix)-\(UUID().uuidString)")
    try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
    defer { try? FileManager.default.removeItem(at: directory) }
    return try await body(directory)
}

/// Detaches a filesystem a test mounted, as `umount -l` does, from a `defer` (which cannot
/// await). A system call rather than `/bin/umount`: Foundation's `Process.run()` copies entries
/// of /proc/self/fd past the end of its buffer (AddressSanitizer: heap-buffer-overflow in
/// `findMaximumOpenFromProcSelfFD`, from this very call; see `ChildProcess`).
public func detachMount(at point: URL) {
    _ = umount2(point.path, Int32(MNT_DETACH))
}
