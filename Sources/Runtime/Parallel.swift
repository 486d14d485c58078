import Foundation
import Kernels
#if canImport(Glibc)
import Glibc
#endif

/// Splits row ranges of the model's matrix products across threads. One place for the threading policy:
/// work too small to pay for a hand-off runs on the calling thread.
public final class Parallel: @unchecked Sendable {
    public let threads: Int
    /// Below this many multiply-adds a product runs on one thread.
    public var minimumWorkPerSplit = 1 << 16

    public init(threads: Int) { self.threads = max(1, threads) }

    /// body(begin, end) over contiguous chunks of 0..<count, one per thread.
    public func forEachChunk(_ count: Int, work: Int, _ body: (Int, Int) -> Void) {
        let chunks = work < minimumWorkPerSplit ? 1 : min(threads, count)
        if chunks <= 1 { body(0, count); return }
        DispatchQueue.concurrentPerform(iterations: chunks) { c in
            body(count * c / chunks, count * (c + 1) / chunks)
        }
    }

    /// y[t][0..<rows] = W x[t] for t in 0..<n (x rows of w.cols floats; y rows of w.rows floats).
    public func matmul(_ w: fb_matrix, _ x: UnsafePointer<Float>, _ n: Int, _ y: UnsafeMutablePointer<Float>) {
        matmul(w, x, ldx: w.cols, n, y, ldy: w.rows)
    }

    public func matmul(_ w: fb_matrix, _ x: UnsafePointer<Float>, ldx: Int, _ n: Int, _ y: UnsafeMutablePointer<Float>, ldy: Int) {
        let xs = UnsafeSendable(x), ys = UnsafeSendable(y)
        forEachChunk(w.rows, work: w.rows * w.cols * n) { begin, end in
            var m = w
            fb_matmul(&m, xs.value, ldx, n, ys.value, ldy, begin, end)
        }
    }
}

/// Anonymous memory that becomes resident only when touched: caches sized for the whole context cost RSS only
/// for the positions actually used.
public final class LazyFloatBuffer: @unchecked Sendable {
    public let pointer: UnsafeMutablePointer<Float>
    public let count: Int
    private let bytes: Int

    public init(count: Int) {
        self.count = count
        bytes = max(count * 4, 4096)
        guard let p = mmap(nil, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0), p != MAP_FAILED else {
            fatalError("out of memory mapping \(bytes) bytes")
        }
        pointer = p.assumingMemoryBound(to: Float.self)
    }

    deinit { munmap(pointer, bytes) }
}
