import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// A 64-byte-aligned heap block of `count` bytes, freed with the object.
public final class ByteBuffer: @unchecked Sendable {
    public let pointer: UnsafeMutableRawPointer
    public let count: Int

    public init(count: Int) {
        var p: UnsafeMutableRawPointer? = nil
        guard posix_memalign(&p, 64, max(count, 64)) == 0, let p else { fatalError("out of memory allocating \(count) bytes") }
        pointer = p
        self.count = count
    }

    deinit { free(pointer) }
}

/// A 64-byte-aligned array of floats, zero-initialised unless the caller fills it at once (`zeroed: false`).
public final class FloatBuffer: @unchecked Sendable {
    public let pointer: UnsafeMutablePointer<Float>
    public let count: Int

    public init(count: Int, zeroed: Bool = true) {
        var p: UnsafeMutableRawPointer? = nil
        guard posix_memalign(&p, 64, max(count * 4, 64)) == 0, let p else { fatalError("out of memory allocating \(count) floats") }
        if zeroed { memset(p, 0, max(count * 4, 64)) }
        pointer = p.assumingMemoryBound(to: Float.self)
        self.count = count
    }

    deinit { free(pointer) }

    public var buffer: UnsafeMutableBufferPointer<Float> { UnsafeMutableBufferPointer(start: pointer, count: count) }
}

/// Splits a range of work items into one contiguous chunk per thread and runs the chunks in parallel.
public struct WorkSplitter {
    public let threads: Int

    public init(threads: Int) { self.threads = max(1, threads) }

    /// Calls `body(begin, end)` once per chunk of 0..<count; returns the chunks' results in order.
    public func map<T>(count: Int, _ body: (Int, Int) -> T) -> [T] {
        let chunks = min(threads, max(1, count))
        if chunks == 1 { return [body(0, count)] }
        var results = [T?](repeating: nil, count: chunks)
        results.withUnsafeMutableBufferPointer { slots in
            let out = UnsafeSendable(slots.baseAddress!)
            DispatchQueue.concurrentPerform(iterations: chunks) { c in
                let begin = count * c / chunks, end = count * (c + 1) / chunks
                out.value[c] = body(begin, end)
            }
        }
        return results.map { $0! }
    }
}

/// Carries a raw pointer into concurrent closures; the caller guarantees disjoint use.
public struct UnsafeSendable<T>: @unchecked Sendable {
    public let value: T
    public init(_ value: T) { self.value = value }
}
