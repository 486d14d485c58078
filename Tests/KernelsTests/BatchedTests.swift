// Tests of the thread pool, the batched products (fb_matmul_pool's routes, fb_sgemm) and the SIMD element-wise ops.
import Foundation
import Kernels
import XCTest

// MARK: - Helpers

/// A weight matrix in one of the storage types, made with the library's converters.
private final class Weights {
    let type: fb_dtype
    let rows: Int, cols: Int
    let data: UnsafeMutableRawPointer
    let scales: UnsafeMutablePointer<UInt16>

    init(_ type: fb_dtype, rows: Int, cols: Int, _ w: [Float]) {
        self.type = type
        self.rows = rows
        self.cols = cols
        let bytes = type == FB_F32 ? rows * cols * 4 : type == FB_F16 ? rows * cols * 2 : fb_quant_bytes(type, rows, cols)
        data = UnsafeMutableRawPointer.allocate(byteCount: max(1, bytes), alignment: 64)
        let nScales = max(1, fb_scale_bytes(type, rows, cols) / 2)
        scales = UnsafeMutablePointer<UInt16>.allocate(capacity: nScales)
        scales.initialize(repeating: 0, count: nScales)
        w.withUnsafeBufferPointer { src in
            let p = src.baseAddress!
            switch type {
            case FB_F32: data.copyMemory(from: p, byteCount: rows * cols * 4)
            case FB_F16: fb_f32_to_f16_array(p, data.assumingMemoryBound(to: UInt16.self), rows * cols)
            case FB_Q8: fb_quantize_q8(p, cols, 0, rows, data.assumingMemoryBound(to: Int8.self), scales)
            case FB_Q4NL: fb_quantize_q4nl(p, cols, 0, rows, data.assumingMemoryBound(to: UInt8.self), scales)
            default: fb_quantize_q4(p, cols, 0, rows, data.assumingMemoryBound(to: UInt8.self), scales)
            }
        }
    }

    deinit {
        data.deallocate()
        scales.deallocate()
    }

    var matrix: fb_matrix { fb_matrix(type: type, rows: rows, cols: cols, data: UnsafeRawPointer(data), scales: UnsafePointer(scales)) }

    /// The weights as f32 (fb_matrix_row).
    func dequantized() -> [Float] {
        var m = matrix
        var out = [Float](repeating: 0, count: rows * cols)
        out.withUnsafeMutableBufferPointer { o in for r in 0..<rows { fb_matrix_row(&m, r, o.baseAddress! + r * cols) } }
        return out
    }
}

/// y[t][r] = sum_c w[r][c] x[t][c] in double, and sum_c |w x| (the scale of the rounding error).
private func reference(_ w: [Float], rows: Int, cols: Int, _ x: [Float], ldx: Int, n: Int) -> (y: [Double], mag: [Double]) {
    var y = [Double](repeating: 0, count: n * rows), mag = y
    for t in 0..<n {
        for r in 0..<rows {
            var acc = 0.0, a = 0.0
            for c in 0..<cols {
                let p = Double(w[r * cols + c]) * Double(x[t * ldx + c])
                acc += p
                a += abs(p)
            }
            y[t * rows + r] = acc
            mag[t * rows + r] = a
        }
    }
    return (y, mag)
}

/// Hands raw pointers to another thread (the test keeps the uses disjoint).
private struct Shared<T>: @unchecked Sendable {
    let value: T
}

private func typeName(_ t: fb_dtype) -> String { ["f32", "f16", "q8", "q4", "q4nl"][Int(t.rawValue)] }

/// Runs fn(chunk, chunks) as one pool job.
private final class PoolJob {
    let body: (Int, Int) -> Void
    init(_ body: @escaping (Int, Int) -> Void) { self.body = body }
    func run(_ pool: OpaquePointer?, chunks: Int) {
        let me = Unmanaged.passUnretained(self).toOpaque()
        fb_pool_run_chunks(pool, Int32(chunks), { ctx, c, n in
            Unmanaged<PoolJob>.fromOpaque(ctx!).takeUnretainedValue().body(Int(c), Int(n))
        }, me)
    }
}

final class BatchedTests: XCTestCase {
    override func tearDown() {
        XCTAssertEqual(fb_batched_select("auto"), 0)
        super.tearDown()
    }

    // MARK: Pool

    func testPoolRunsEveryChunkOnce() {
        for threads in 1...4 {
            let pool = fb_pool_create(Int32(threads))
            defer { fb_pool_destroy(pool) }
            XCTAssertEqual(Int(fb_pool_threads(pool)), threads)
            let slots = UnsafeMutablePointer<Int>.allocate(capacity: 8)
            slots.initialize(repeating: 0, count: 8)
            defer { slots.deallocate() }
            var wrongCount = 0
            let job = PoolJob { c, n in
                slots[c] += 1  // a chunk index runs on one thread at a time, so no race
                if c >= n || fb_pool_inside() == 0 { slots[6] += 1 }
            }
            for chunks in 1...threads {
                for i in 0..<8 { slots[i] = 0 }
                for _ in 0..<2000 { job.run(pool, chunks: chunks) }
                for c in 0..<chunks where slots[c] != 2000 { wrongCount += 1 }
                for c in chunks..<6 where slots[c] != 0 { wrongCount += 1 }
                XCTAssertEqual(slots[6], 0)
            }
            XCTAssertEqual(wrongCount, 0, "\(threads) threads")
            // More chunks than threads are clamped.
            for i in 0..<8 { slots[i] = 0 }
            job.run(pool, chunks: threads + 3)
            XCTAssertEqual((0..<6).map { slots[$0] }.reduce(0, +), threads)
        }
    }

    func testPoolNeverNests() {
        let pool = fb_pool_create(2), other = fb_pool_create(2)
        defer { fb_pool_destroy(pool); fb_pool_destroy(other) }
        XCTAssertEqual(fb_pool_inside(), 0)
        let counts = UnsafeMutablePointer<Int>.allocate(capacity: 4)
        counts.initialize(repeating: 0, count: 4)
        defer { counts.deallocate() }
        let inner = PoolJob { c, _ in counts[2 + c] += 1 }  // runs inline on each outer chunk's thread
        var insideFlags = [Int32](repeating: 0, count: 2)
        insideFlags.withUnsafeMutableBufferPointer { flags in
            let f = flags.baseAddress!
            let outer = PoolJob { c, _ in
                f[c] = fb_pool_inside()
                counts[c] += 1
                inner.run(c == 0 ? pool : other, chunks: 2)
            }
            for _ in 0..<100 { outer.run(pool, chunks: 2) }
        }
        XCTAssertEqual(insideFlags, [1, 1])
        XCTAssertEqual(counts[0], 100)
        XCTAssertEqual(counts[1], 100)
        // Each outer chunk ran both inner chunks itself; the two threads' increments may race on the same slot,
        // so only bounds are certain.
        XCTAssertGreaterThan(counts[2], 0)
        XCTAssertEqual(fb_pool_inside(), 0)
    }

    func testPoolSharedByConcurrentCallers() {
        let pool = Shared(value: fb_pool_shared(2))
        XCTAssertEqual(fb_pool_shared(2), pool.value)
        let group = DispatchGroup()
        let totals = UnsafeMutablePointer<Int>.allocate(capacity: 4)
        totals.initialize(repeating: 0, count: 4)
        defer { totals.deallocate() }
        let shared = Shared(value: totals)
        for caller in 0..<2 {
            group.enter()
            Thread {
                let job = PoolJob { c, _ in shared.value[caller * 2 + c] += 1 }
                for _ in 0..<3000 { job.run(pool.value, chunks: 2) }
                group.leave()
            }.start()
        }
        group.wait()
        for i in 0..<4 { XCTAssertEqual(totals[i], 3000) }
    }

    /// What a hand-off costs: jobs with empty chunks back to back (the workers are spinning). Printed (~200 ns on
    /// 2 idle cores); the bound is loose because test machines are shared and a busy core deschedules the worker.
    func testPoolDispatchCost() {
        let pool = fb_pool_create(2)
        defer { fb_pool_destroy(pool) }
        let job = PoolJob { _, _ in }
        for _ in 0..<1000 { job.run(pool, chunks: 2) }
        let jobs = 200_000
        let start = DispatchTime.now().uptimeNanoseconds
        for _ in 0..<jobs { job.run(pool, chunks: 2) }
        let ns = Double(DispatchTime.now().uptimeNanoseconds - start) / Double(jobs)
        print(String(format: "[pool] 2 threads: %.0f ns per job", ns))
        XCTAssertLessThan(ns, 1_000_000)
    }

    // MARK: Batched products

    /// fb_matmul_pool on the gemm route (and the plain route) against a double-precision reference, for every
    /// weight type, row counts that leave partial panels and blocks, column counts with vector tails (f32/f16),
    /// padded strides, on 1 and 2 threads. Tolerance as in KernelsTests.testMatmulAllPaths: 4·√(cols+4)·2⁻²⁴·Σ|w x|.
    func testBatchedRoutesMatchTheReference() {
        var rng = LCG(seed: 7)
        let cases: [(fb_dtype, Int, Int)] = [(FB_F32, 37, 100), (FB_F32, 300, 1030), (FB_F16, 45, 300),
                                             (FB_Q8, 37, 96), (FB_Q8, 260, 1024), (FB_Q4, 300, 160), (FB_Q4, 70, 4608),
                                             (FB_Q4NL, 300, 160), (FB_Q4NL, 70, 4608)]
        let pools: [OpaquePointer?] = [nil, fb_pool_shared(2)]
        for (type, rows, cols) in cases {
            let w = Weights(type, rows: rows, cols: cols, rng.normals(rows * cols, scale: 0.05))
            let wd = w.dequantized()
            for n in [8, 13, 70] where cols < 4000 || n == 13 {
                let ldx = cols + 3, ldy = rows + 5
                let x = rng.normals(n * ldx)
                let (ref, mag) = reference(wd, rows: rows, cols: cols, x, ldx: ldx, n: n)
                for route in ["gemm", "off"] {
                    XCTAssertEqual(fb_batched_select(route), 0)
                    for pool in pools {
                        let what = "\(route), \(typeName(type)) \(rows)x\(cols), n \(n), \(pool == nil ? 1 : 2) threads"
                        if route == "gemm" { XCTAssertEqual(String(cString: fb_batched_route([w.matrix], n)), "gemm", what) }
                        let sentinel: Float = -12345
                        var y = [Float](repeating: sentinel, count: n * ldy)
                        let ws = fb_workspace_create()
                        var m = w.matrix
                        x.withUnsafeBufferPointer { xp in
                            y.withUnsafeMutableBufferPointer { yp in fb_matmul_pool(pool, ws, &m, xp.baseAddress, ldx, n, yp.baseAddress, ldy) }
                        }
                        fb_workspace_destroy(ws)
                        var wrong = 0, outside = 0
                        for t in 0..<n {
                            for r in 0..<ldy {
                                let v = y[t * ldy + r]
                                guard r < rows else { if v != sentinel { outside += 1 }; continue }
                                let tol = 4 * Double(cols + 4).squareRoot() * 0x1p-24 * mag[t * rows + r]
                                if !(abs(Double(v) - ref[t * rows + r]) <= tol) {
                                    wrong += 1
                                    if wrong <= 3 { XCTFail("\(what), t \(t), r \(r): \(v) vs \(ref[t * rows + r]) (tol \(tol))") }
                                }
                            }
                        }
                        XCTAssertEqual(wrong, 0, what)
                        XCTAssertEqual(outside, 0, "\(what): wrote outside the rows")
                    }
                }
            }
        }
    }

    /// The int8 route (q8/q4 weights, activations quantized per group of 32). Its error is the activation rounding:
    /// relative RMS over a product ≈ 4e-3 (uniform rounding of x/127 per group); bound 1e-2, and 3 % of Σ|w x| for
    /// any single output. The AVX2 and scalar versions do the same integer sums and may differ only in float
    /// rounding (bound 1e-5 of Σ|w x|).
    func testInt8RouteError() {
        var rng = LCG(seed: 11)
        let original = String(cString: fb_kernels_name())
        defer { XCTAssertEqual(fb_kernels_select(original), 0) }
        // The packed kernels pack 16-row panels in blocks of 64 rows and walk the tokens 48 at a time in tiles of 6:
        // the shapes and token counts below leave partial panels and blocks and every tile remainder (1-5).
        for (type, rows, cols) in [(FB_Q8, 70, 1024), (FB_Q8, 33, 96), (FB_Q8, 150, 256), (FB_Q4, 45, 4608),
                                   (FB_Q4, 33, 96), (FB_Q4, 150, 256), (FB_Q4NL, 45, 4608), (FB_Q4NL, 33, 96),
                                   (FB_Q4NL, 150, 256)] {
            let w = Weights(type, rows: rows, cols: cols, rng.normals(rows * cols, scale: 0.05))
            let wd = w.dequantized()
            for n in (cols <= 256 ? [8, 9, 10, 11, 19, 53] : [8, 19]) {
                let x = rng.normals(n * cols)
                let (ref, mag) = reference(wd, rows: rows, cols: cols, x, ldx: cols, n: n)
                XCTAssertEqual(fb_batched_select("int8"), 0)
                var results: [[Float]] = []
                for path in ["scalar", original] {
                    XCTAssertEqual(fb_kernels_select(path), 0)
                    XCTAssertEqual(String(cString: fb_batched_route([w.matrix], n)), "int8")
                    // Padded output rows (ldy = rows + 3) hold a sentinel that must survive.
                    let ldy = rows + 3, sentinel: Float = -12345
                    var y = [Float](repeating: sentinel, count: n * ldy)
                    let ws = fb_workspace_create()
                    var m = w.matrix
                    x.withUnsafeBufferPointer { xp in
                        y.withUnsafeMutableBufferPointer { yp in fb_matmul_pool(fb_pool_shared(2), ws, &m, xp.baseAddress, cols, n, yp.baseAddress, ldy) }
                    }
                    fb_workspace_destroy(ws)
                    let outside = (0..<n).reduce(0) { c, t in c + (rows..<ldy).filter { y[t * ldy + $0] != sentinel }.count }
                    XCTAssertEqual(outside, 0, "\(path), \(typeName(type)) \(rows)x\(cols), n \(n): wrote outside the rows")
                    results.append((0..<n).flatMap { t in y[t * ldy..<t * ldy + rows] })
                }
                let what = "\(typeName(type)) \(rows)x\(cols), n \(n)"
                var e = 0.0, s = 0.0, worst = 0.0, offScalar = 0
                for i in ref.indices {
                    let d = Double(results[1][i]) - ref[i]
                    e += d * d
                    s += ref[i] * ref[i]
                    worst = max(worst, abs(d) / mag[i])
                    if !(abs(Double(results[1][i]) - Double(results[0][i])) <= 1e-5 * mag[i]) { offScalar += 1 }
                }
                let relative = (e / s).squareRoot()
                print(String(format: "[int8] %@: relative RMS error %.2e, worst |Δ| / Σ|w x| %.2e", what, relative, worst))
                XCTAssertLessThan(relative, 1e-2, what)
                XCTAssertLessThan(worst, 0.03, what)
                XCTAssertEqual(offScalar, 0, "\(what): AVX2 vs scalar")
            }
        }
    }

    /// fb_sgemm (attention's products) against double, both layouts of B, alpha, beta 0 / 1, on the SIMD and the
    /// portable paths.
    func testSgemm() {
        let original = String(cString: fb_kernels_name())
        defer { XCTAssertEqual(fb_kernels_select(original), 0) }
        for path in ["scalar", original] {
            XCTAssertEqual(fb_kernels_select(path), 0)
            checkSgemm(path)
        }
    }

    private func checkSgemm(_ path: String) {
        var rng = LCG(seed: 3)
        for (m, n, k) in [(1, 5, 3), (7, 33, 64), (70, 19, 130), (256, 40, 17)] {
            for transB in [0, 1] {
                for (alpha, beta) in [(Float(1), Float(0)), (0.125, 0), (1, 1)] {
                    let lda = k + 2, ldb = (transB == 1 ? k : n) + 3, ldc = n + 1
                    let a = rng.normals(m * lda), b = rng.normals((transB == 1 ? n : k) * ldb)
                    let c0 = rng.normals(m * ldc)
                    var c = c0
                    fb_sgemm(Int32(transB), m, n, k, alpha, a, lda, b, ldb, beta, &c, ldc)
                    var wrong = 0
                    for i in 0..<m {
                        for j in 0..<n {
                            var acc = 0.0, mag = 0.0
                            for q in 0..<k {
                                let p = Double(a[i * lda + q]) * Double(transB == 1 ? b[j * ldb + q] : b[q * ldb + j])
                                acc += p
                                mag += abs(p)
                            }
                            let expected = Double(alpha) * acc + Double(beta) * Double(c0[i * ldc + j])
                            let tol = 4 * Double(k + 4).squareRoot() * 0x1p-24 * (Double(abs(alpha)) * mag + abs(Double(c0[i * ldc + j])))
                            if !(abs(Double(c[i * ldc + j]) - expected) <= tol) { wrong += 1 }
                        }
                        for j in n..<ldc where c[i * ldc + j] != c0[i * ldc + j] { wrong += 1 }  // padding untouched
                    }
                    XCTAssertEqual(wrong, 0, "\(path): m \(m) n \(n) k \(k) transB \(transB) alpha \(alpha) beta \(beta)")
                }
            }
        }
    }

    // MARK: Element-wise ops

    /// The SIMD element-wise ops against the portable C (the scalar kernel path), lengths with and without vector
    /// tails. Both compute the same formulas in float (the norms' sums in double); the SIMD exp is within ~2 ulp, so
    /// the bounds are a few float ulps: |Δ| ≤ 1e-6·(|x| + 1) for the activations, 1e-6 of the largest output for
    /// softmax and the norms.
    /// fb_attend (decode attention for the query heads that share one key/value head) and fb_attend_f16 (the same
    /// over a binary16 cache) on the scalar and SIMD paths against a double-precision reference: strided cache rows,
    /// one to four query heads (the SIMD path takes them in pairs), head sizes that leave every 8-float tail of its
    /// 32-float value blocks (and one not a multiple of 8: the portable path), one position and many. The f16 reference reads the cache's
    /// f16 values exactly (widening is exact), so both get the same bound: 1e-5 of the largest |v| (float sums of
    /// ≤ 600 softmax-weighted rows).
    func testAttendMatchesReference() {
        let original = String(cString: fb_kernels_name())
        defer { XCTAssertEqual(fb_kernels_select(original), 0) }
        var rng = LCG(seed: 9)
        func reference(_ q: [Float], _ keys: [Float], _ values: [Float], groups: Int, hd: Int, ld: Int, n: Int, scale: Float) -> [Double] {
            var expected = [Double](repeating: 0, count: groups * hd)
            for g in 0..<groups {
                var s = (0..<n).map { j in Double(scale) * (0..<hd).reduce(0.0) { $0 + Double(q[g * hd + $1]) * Double(keys[j * ld + $1]) } }
                let m = s.max()!
                s = s.map { exp($0 - m) }
                let sum = s.reduce(0, +)
                for j in 0..<n { for i in 0..<hd { expected[g * hd + i] += s[j] / sum * Double(values[j * ld + i]) } }
            }
            return expected
        }
        for (groups, hd, n) in [(2, 64, 1), (2, 64, 600), (1, 24, 37), (3, 72, 130), (4, 64, 50), (2, 48, 33), (2, 7, 9), (2, 136, 20)] {
            let ld = 3 * hd + 5, scale = 1 / Float(hd).squareRoot()
            let q = rng.normals(groups * hd), keys = rng.normals(n * ld), values = rng.normals(n * ld)
            let keys16 = keys.map { fb_f32_to_f16($0) }, values16 = values.map { fb_f32_to_f16($0) }
            let expected = reference(q, keys, values, groups: groups, hd: hd, ld: ld, n: n, scale: scale)
            let expected16 = reference(q, keys16.map { fb_f16_to_f32($0) }, values16.map { fb_f16_to_f32($0) },
                                       groups: groups, hd: hd, ld: ld, n: n, scale: scale)
            let vmax = Double(values.map { abs($0) }.max()!)
            for path in ["scalar", original] {
                XCTAssertEqual(fb_kernels_select(path), 0)
                var scores = [Float](repeating: 0, count: groups * n), out = [Float](repeating: .nan, count: groups * hd)
                fb_attend(q, groups, hd, keys, values, ld, n, scale, &scores, &out)
                let worst = (0..<groups * hd).map { abs(Double(out[$0]) - expected[$0]) }.max()!
                XCTAssertLessThanOrEqual(worst, 1e-5 * vmax, "\(path), groups \(groups), hd \(hd), n \(n)")
                var out16 = [Float](repeating: .nan, count: groups * hd)
                fb_attend_f16(q, groups, hd, keys16, values16, ld, n, scale, &scores, &out16)
                let worst16 = (0..<groups * hd).map { abs(Double(out16[$0]) - expected16[$0]) }.max()!
                XCTAssertLessThanOrEqual(worst16, 1e-5 * vmax, "f16 cache, \(path), groups \(groups), hd \(hd), n \(n)")
            }
        }
    }

    /// fb_causal_conv against a direct float64 sum: rows of different rings (41 and 53 rows, so positions wrap),
    /// positions before and past the 40 taps (lag blocks of 16: whole, partial and several), channel ranges that
    /// start mid-row and end inside a block. The sums run in float32 over up to 40 products of unit-scale values;
    /// 1e-5 of the sum of |terms| bounds their rounding (40 roundings of at most 2^-24 each).
    func testCausalConvolutionOverRings() {
        var rng = LCG(seed: 11)
        let dt = 45, ntaps = 40, rowsA = 41, rowsB = 53
        let taps = rng.normals(ntaps * dt)
        let ringA = rng.normals(rowsA * dt), ringB = rng.normals(rowsB * dt)
        let positions = [0, 3, 17, 39, 45, 60, 100, 52]  // row r reads ring A for even r, B for odd; 45, 60, 100 wrap
        let t = positions.count
        for (c0, c1) in [(0, dt), (0, 32), (5, 40), (33, 45), (44, 45)] {
            var z = rng.normals(t * dt)  // the kernel adds to what is there
            let before = z
            ringA.withUnsafeBufferPointer { a in
                ringB.withUnsafeBufferPointer { b in
                    let rings: [UnsafePointer<Float>?] = (0..<t).map { $0 % 2 == 0 ? a.baseAddress! : b.baseAddress! }
                    let lengths = (0..<t).map { $0 % 2 == 0 ? rowsA : rowsB }
                    fb_causal_conv(taps, ntaps, rings, lengths, positions, t, dt, c0, c1, &z)
                }
            }
            for r in 0..<t {
                let ring = r % 2 == 0 ? ringA : ringB, rows = r % 2 == 0 ? rowsA : rowsB, p = positions[r]
                for ch in 0..<dt {
                    guard ch >= c0 && ch < c1 else {
                        XCTAssertEqual(z[r * dt + ch], before[r * dt + ch], "channel \(ch) outside [\(c0), \(c1)) changed")
                        continue
                    }
                    var sum = Double(before[r * dt + ch]), magnitude = abs(sum)
                    for j in 0...min(p, ntaps - 1) {
                        let term = Double(taps[j * dt + ch]) * Double(ring[((p - j) % rows) * dt + ch])
                        sum += term
                        magnitude += abs(term)
                    }
                    XCTAssertLessThanOrEqual(abs(Double(z[r * dt + ch]) - sum), 1e-5 * magnitude,
                                             "row \(r) (position \(p)), channel \(ch), channels [\(c0), \(c1))")
                }
            }
        }
    }

    func testElementwiseOpsMatchScalar() {
        let original = String(cString: fb_kernels_name())
        defer { XCTAssertEqual(fb_kernels_select(original), 0) }
        var rng = LCG(seed: 5)
        for n in [1, 7, 8, 33, 768, 1000] {
            let x = rng.normals(n, scale: 3), b = rng.normals(n), w = rng.normals(n), bias = rng.normals(n)
            var masked = x
            for i in stride(from: 0, to: n, by: 5) { masked[i] = -.infinity }
            if n > 1 { masked[n - 1] = 1 }  // at least one finite entry
            func run(_ path: String) -> [[Float]] {
                XCTAssertEqual(fb_kernels_select(path), 0)
                var gelu = x; fb_gelu_tanh(&gelu, n)
                var silu = [Float](repeating: 0, count: n); fb_silu_mul(x, b, &silu, n)
                var soft = x; fb_softmax(&soft, n)
                var softMasked = masked; fb_softmax(&softMasked, n)
                var rms = [Float](repeating: 0, count: n); fb_rmsnorm(x, w, &rms, n, 1e-5)
                var ln = [Float](repeating: 0, count: n); fb_layernorm(x, w, bias, &ln, n, 1e-6)
                return [gelu, silu, soft, softMasked, rms, ln]
            }
            let scalar = run("scalar"), simd = run(original)
            let names = ["gelu_tanh", "silu_mul", "softmax", "softmax with -inf", "rmsnorm", "layernorm"]
            for (k, name) in names.enumerated() {
                let scale = scalar[k].map { abs($0) }.max()!
                for i in 0..<n {
                    let tol: Float = k < 2 ? 1e-6 * (abs(x[i]) * (k == 1 ? abs(b[i]) + 1 : 1) + 1) : 1e-6 * scale
                    if !(abs(simd[k][i] - scalar[k][i]) <= tol) {
                        XCTFail("\(name), n \(n), i \(i): \(simd[k][i]) vs \(scalar[k][i]) (x \(x[i]))")
                        break
                    }
                }
            }
            for i in stride(from: 0, to: n - 1, by: 5) { XCTAssertEqual(simd[3][i], 0, "masked entries become 0") }
        }
        // Extremes: exp under- and overflow inside the activations.
        XCTAssertEqual(fb_kernels_select(original), 0)
        var big: [Float] = [-200, -90, -20, 0, 20, 90, 200, -0.0]
        fb_gelu_tanh(&big, big.count)
        XCTAssertEqual(Array(big[0..<3]), [0, 0, 0], "large negative inputs give (-)0")
        XCTAssertEqual(Array(big[3..<7]), [0, 20, 90, 200])
    }
}
