import CZstd
import Foundation
import Kernels
import Runtime
#if canImport(Glibc)
import Glibc
#endif

/// Runs an FBMWriter on its own serial queue, at most two encoded tensors ahead of the caller.
final class BackgroundWriter: @unchecked Sendable {
    private let writer: FBMWriter
    private let queue = DispatchQueue(label: "fbm-writer")
    private let slots = DispatchSemaphore(value: 2)
    private let lock = NSLock()
    private var failure: Error?
    private var stored: [Int: UInt64] = [:]

    init(_ writer: FBMWriter) { self.writer = writer }

    private func checkFailure() throws {
        lock.lock(); defer { lock.unlock() }
        if let failure { throw failure }
    }

    func submit(index: Int, _ encoded: FBMConverter.Encoded) throws {
        try checkFailure()
        slots.wait()
        queue.async { [self] in
            defer { slots.signal() }
            lock.lock(); let failed = failure != nil; lock.unlock()
            if failed { return }
            do {
                let size = try writer.writeTensor(index: index, raw: encoded.bytes)
                lock.lock(); stored[index] = size; lock.unlock()
            } catch {
                lock.lock(); failure = error; lock.unlock()
            }
        }
    }

    /// Waits for the queued tensors, then writes the header. Returns the file size and each tensor's stored size.
    func finish() throws -> (UInt64, [Int: UInt64]) {
        queue.sync {}
        try checkFailure()
        return (try writer.finish(), stored)
    }

    func abort() {
        queue.sync {}
        writer.abort()
    }
}
