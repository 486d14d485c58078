import Foundation
import Kernels
#if canImport(Glibc)
import Glibc
#endif

/// Splits the model's matrix products and other data-parallel loops across threads. One place for the threading
/// policy: work too small to pay for a hand-off runs on the calling thread; the rest runs on a persistent pool
/// (`fb_pool`, shared by every `Parallel` of the same thread count; the calling thread works too). Matrix
/// products go through `fb_matmul_pool`, which applies the same policy to rows and takes the batched GEMMs for
/// many tokens (prefill, the vision tower). One `Parallel` is used by one thread at a time (it owns the batched
/// products' scratch).
public final class Parallel: @unchecked Sendable {
    public let threads: Int
    /// Below this many multiply-adds a product runs on one thread.
    public var minimumWorkPerSplit = 1 << 16
    let pool: OpaquePointer?
    let workspace: OpaquePointer

    public init(threads: Int) {
        self.threads = max(1, threads)
        pool = self.threads > 1 ? fb_pool_shared(Int32(min(self.threads, 256))) : nil
        workspace = fb_workspace_create()
    }

    deinit { fb_workspace_destroy(workspace) }

    /// body(begin, end) over contiguous chunks of 0..<count, one per thread.
    public func forEachChunk(_ count: Int, work: Int, _ body: (Int, Int) -> Void) {
        forEachIndexedChunk(count, work: work) { _, begin, end in body(begin, end) }
    }

    /// body(chunk, begin, end) over contiguous chunks of 0..<count, one per thread; chunk < threads, and no two
    /// calls running at the same time share a chunk index (per-thread scratch can be indexed by it).
    public func forEachIndexedChunk(_ count: Int, work: Int, _ body: (Int, Int, Int) -> Void) {
        let chunks = work < minimumWorkPerSplit ? 1 : min(threads, count)
        if chunks <= 1 || pool == nil { body(0, 0, count); return }
        withoutActuallyEscaping(body) { body in
            var job = ChunkJob(count: count, body: body)
            withUnsafeMutablePointer(to: &job) { p in
                fb_pool_run_chunks(pool, Int32(chunks), { context, chunk, chunks in
                    let job = context!.assumingMemoryBound(to: ChunkJob.self)
                    let count = job.pointee.count, c = Int(chunk), n = Int(chunks)
                    job.pointee.body(c, count * c / n, count * (c + 1) / n)
                }, p)
            }
        }
    }

    /// y[t][0..<rows] = W x[t] for t in 0..<n (x rows of w.cols floats; y rows of w.rows floats).
    public func matmul(_ w: fb_matrix, _ x: UnsafePointer<Float>, _ n: Int, _ y: UnsafeMutablePointer<Float>) {
        matmul(w, x, ldx: w.cols, n, y, ldy: w.rows)
    }

    /// fb_matmul_pool decides: few tokens split rows across the pool (one thread below 2¹⁶ multiply-adds, like
    /// forEachChunk), many take a batched route.
    public func matmul(_ w: fb_matrix, _ x: UnsafePointer<Float>, ldx: Int, _ n: Int, _ y: UnsafeMutablePointer<Float>, ldy: Int) {
        var m = w
        fb_matmul_pool(pool, workspace, &m, x, ldx, n, y, ldy)
    }
}

/// One `forEachChunk` call as the pool's C callback sees it.
private struct ChunkJob {
    let count: Int
    let body: (Int, Int, Int) -> Void
}
