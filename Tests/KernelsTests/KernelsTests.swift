// Tests of the C kernel library: half precision, XXH64, quantization layouts and error, and
// fb_matmul on every dtype for every kernel path the CPU supports.
import Foundation
import Kernels
import XCTest

// MARK: - Helpers

/// A weight matrix in one of the storage types, built from f32 weights with the library's own
/// converters (64-byte aligned storage, as the runtime maps it).
private final class StoredMatrix {
    let type: fb_dtype
    let rows: Int, cols: Int
    let data: UnsafeMutableRawPointer
    let scales: UnsafeMutablePointer<UInt16>

    init(_ type: fb_dtype, rows: Int, cols: Int, weights w: [Float], baseline: Bool = false) {
        precondition(w.count == rows * cols)
        self.type = type
        self.rows = rows
        self.cols = cols
        data = UnsafeMutableRawPointer.allocate(byteCount: max(1, fb_quant_bytes(type, rows, cols)), alignment: 64)
        let nScales = max(1, fb_scale_bytes(type, rows, cols) / 2)
        scales = UnsafeMutablePointer<UInt16>.allocate(capacity: nScales)
        scales.initialize(repeating: 0, count: nScales)
        w.withUnsafeBufferPointer { src in
            let p = src.baseAddress!
            if type == FB_F32 {
                data.copyMemory(from: p, byteCount: rows * cols * 4)
            } else if type == FB_F16 {
                fb_f32_to_f16_array(p, data.assumingMemoryBound(to: UInt16.self), rows * cols)
            } else if type == FB_Q8 {
                fb_quantize_q8(p, cols, 0, rows, data.assumingMemoryBound(to: Int8.self), scales)
            } else if type == FB_Q4NL {
                fb_quantize_q4nl(p, cols, 0, rows, data.assumingMemoryBound(to: UInt8.self), scales)
            } else if baseline {
                fb_quantize_q4_baseline(p, cols, 0, rows, data.assumingMemoryBound(to: UInt8.self), scales)
            } else {
                fb_quantize_q4(p, cols, 0, rows, data.assumingMemoryBound(to: UInt8.self), scales)
            }
        }
    }

    deinit {
        data.deallocate()
        scales.deallocate()
    }

    func withMatrix<R>(_ body: (UnsafePointer<fb_matrix>) -> R) -> R {
        var m = fb_matrix(type: type, rows: rows, cols: cols, data: UnsafeRawPointer(data),
                          scales: UnsafePointer(scales))
        return withUnsafePointer(to: &m) { body($0) }
    }

    /// The matrix as f32, through fb_matrix_row.
    func dequantized() -> [Float] {
        var out = [Float](repeating: 0, count: rows * cols)
        withMatrix { m in
            out.withUnsafeMutableBufferPointer { o in
                for r in 0..<rows { fb_matrix_row(m, r, o.baseAddress! + r * cols) }
            }
        }
        return out
    }

    func bytes(_ range: Range<Int>) -> [UInt8] {
        let p = data.assumingMemoryBound(to: UInt8.self)
        return range.map { p[$0] }
    }
}

private func relativeRMSE(_ a: [Float], _ b: [Float]) -> Double {
    var e = 0.0, s = 0.0
    for i in a.indices {
        let d = Double(a[i]) - Double(b[i])
        e += d * d
        s += Double(b[i]) * Double(b[i])
    }
    return (e / s).squareRoot()
}

/// Float16 exists in Swift everywhere except macOS on Intel.
#if !(os(macOS) && arch(x86_64))
private let haveFloat16 = true
private func f16Bits(_ x: Float) -> UInt16 { Float16(x).bitPattern }
private func f16Value(_ h: UInt16) -> Float { Float(Float16(bitPattern: h)) }
#else
private let haveFloat16 = false
private func f16Bits(_ x: Float) -> UInt16 { fb_f32_to_f16(x) }
private func f16Value(_ h: UInt16) -> Float { fb_f16_to_f32(h) }
#endif

private func isHalfNaN(_ h: UInt16) -> Bool { (h & 0x7c00) == 0x7c00 && (h & 0x03ff) != 0 }

// MARK: - Tests

final class KernelsTests: XCTestCase {
    // MARK: Half precision

    func testF32ToF16MatchesSwiftFloat16() throws {
        try XCTSkipUnless(haveFloat16, "no Float16 on this platform")
        var values: [Float] = [
            0, -0.0, 1, -1, 0.1, 1.0 / 3, 2049, 4097, -2051,
            65504, 65519.996, 65520, 65536, 1e5, -1e5,  // largest half, last value below the tie, overflow
            6.1035156e-05, 6.0975552e-05,  // smallest normal, largest subnormal
            5.9604645e-08, 2.9802322e-08, 2.9802326e-08, 8.940697e-08,  // subnormal ties and near-ties
            1.00048828125, 1.00146484375, 1.0009765625,  // 1 + 2^-11 (tie to even 1), 1 + 3*2^-11 (tie up)
            Float.infinity, -Float.infinity, Float.leastNonzeroMagnitude, Float.greatestFiniteMagnitude,
            -Float.leastNormalMagnitude,
        ]
        var rng = LCG(seed: 1)
        for _ in 0..<20000 { values.append(Float(bitPattern: UInt32(truncatingIfNeeded: rng.next() >> 32))) }
        // Values near the half range, where rounding matters most.
        for _ in 0..<20000 {
            let e = UInt32(100 + rng.next() % 45) << 23, m = UInt32(truncatingIfNeeded: rng.next()) & 0x807f_ffff
            values.append(Float(bitPattern: e | m))
        }
        var converted = [UInt16](repeating: 0, count: values.count)
        fb_f32_to_f16_array(values, &converted, values.count)
        for (i, x) in values.enumerated() {
            let h = fb_f32_to_f16(x)
            if converted[i] != h {
                XCTFail("array path differs from scalar for \(x)")
                return
            }
            if x.isNaN {
                XCTAssertTrue(isHalfNaN(h), "NaN must stay NaN")
            } else if h != f16Bits(x) {
                XCTFail("f32 \(x) (0x\(String(x.bitPattern, radix: 16))): got 0x\(String(h, radix: 16)), Float16 gives 0x\(String(f16Bits(x), radix: 16))")
                return
            }
        }
        XCTAssertTrue(isHalfNaN(fb_f32_to_f16(.nan)))
        XCTAssertEqual(fb_f32_to_f16(65520), 0x7c00)  // ties to even past the largest half -> inf
        XCTAssertEqual(fb_f32_to_f16(2.9802322e-08), 0x0000)  // 2^-25: tie between 0 and 2^-24 -> 0
    }

    func testF16ToF32Exhaustive() {
        let all = (0...0xffff).map { UInt16($0) }
        var arr = [Float](repeating: 0, count: all.count)
        fb_f16_to_f32_array(all, &arr, all.count)
        for h in all {
            let f = fb_f16_to_f32(h)
            let name = "half 0x\(String(h, radix: 16))"
            if arr[Int(h)].bitPattern != f.bitPattern {
                XCTFail("\(name): array path differs from scalar")
                return
            }
            if isHalfNaN(h) {
                if !f.isNaN {
                    XCTFail("\(name): NaN must stay NaN")
                    return
                }
            } else if f.bitPattern != f16Value(h).bitPattern || fb_f32_to_f16(f) != h {
                XCTFail("\(name): got \(f), expected \(f16Value(h)), round trip 0x\(String(fb_f32_to_f16(f), radix: 16))")
                return
            }
        }
    }

    func testBF16() {
        let src: [UInt16] = [0x3f80, 0xc049, 0x0000, 0x8000, 0x7f80, 0x0001]
        var out = [Float](repeating: 0, count: src.count)
        fb_bf16_to_f32_array(src, &out, src.count)
        for i in src.indices { XCTAssertEqual(out[i].bitPattern, UInt32(src[i]) << 16) }
        XCTAssertEqual(out[0], 1)
        XCTAssertEqual(out[1], -3.140625)
    }

    // MARK: XXH64

    func testXXH64Vectors() {
        func h(_ bytes: [UInt8], _ seed: UInt64 = 0) -> UInt64 { fb_xxh64(bytes, bytes.count, seed) }
        XCTAssertEqual(h([]), 0xEF46DB3751D8E999)
        XCTAssertEqual(h(Array("a".utf8)), 0xD24EC4F1A98C6E5B)
        XCTAssertEqual(h(Array("abc".utf8)), 0x44BC2CF5AD770999)
        XCTAssertEqual(h([], 1), 0xD5AFBA1336A3BE4B)
        XCTAssertEqual(h(Array("abc".utf8), 1), 0xBEA9CA8199328908)
        XCTAssertEqual(h(Array("Nobody inspects the spammish repetition".utf8)), 0xFBCEA83C8A378BF1)
        // bytes 0, 1, 2, ...: lengths around the 32-byte stripe; values from the reference `xxhash` package.
        let data = (0..<100).map { UInt8($0) }
        let expected: [(Int, UInt64, UInt64)] = [
            (31, 0xC346D2B59B4D8EE1, 0xA3C5EC38A60B7EA1),
            (32, 0xCBF59C5116FF32B4, 0xBFB3E4EF6096C49C),
            (33, 0x0C535D1ACAFB8EAD, 0x702E2AA8B96740BD),
            (100, 0x6AC1E58032166597, 0x00278BDA0EE3F586),
        ]
        for (n, seed0, seedP1) in expected {
            XCTAssertEqual(h(Array(data[0..<n])), seed0, "length \(n)")
            XCTAssertEqual(h(Array(data[0..<n]), 0x9E3779B185EBCA87), seedP1, "length \(n), seed P1")
        }
    }

    // MARK: Quantization layouts

    func testSizes() {
        XCTAssertEqual(fb_quant_bytes(FB_F32, 3, 64), 3 * 64 * 4)
        XCTAssertEqual(fb_quant_bytes(FB_F16, 3, 64), 3 * 64 * 2)
        XCTAssertEqual(fb_quant_bytes(FB_Q8, 3, 64), 3 * 64)
        XCTAssertEqual(fb_quant_bytes(FB_Q4, 3, 64), 3 * 32)
        XCTAssertEqual(fb_quant_bytes(FB_Q4NL, 3, 64), 3 * 32)
        XCTAssertEqual(fb_scale_bytes(FB_Q4NL, 3, 64), 3 * 2 * 2)
        XCTAssertEqual(fb_scale_bytes(FB_F32, 3, 64), 0)
        XCTAssertEqual(fb_scale_bytes(FB_F16, 3, 64), 0)
        XCTAssertEqual(fb_scale_bytes(FB_Q8, 3, 64), 3 * 2 * 2)
        XCTAssertEqual(fb_scale_bytes(FB_Q4, 3, 64), 3 * 2 * 2)
    }

    func testQ4NibbleOrderExact() {
        // Grid values q: weights 0-15 are -8...7, weights 16-31 are 7...-8; with scale 0.5 the group is
        // reproduced exactly, so the error-minimising quantizer must pick scale 0.5 (f16 0x3800): a
        // negative scale cannot reach -4 = 0.5 * -8. Byte j = (q_j + 8) | (q_{j+16} + 8) << 4.
        let q = (0..<16).map { $0 - 8 } + (0..<16).map { 7 - $0 }
        let w = q.map { Float($0) * 0.5 }
        let m = StoredMatrix(FB_Q4, rows: 1, cols: 32, weights: w)
        XCTAssertEqual(m.scales[0], 0x3800)
        XCTAssertEqual(m.bytes(0..<16), (0..<16).map { UInt8($0 | ((15 - $0) << 4)) })
        XCTAssertEqual(m.dequantized(), w)
    }

    func testQ4BaselineIsLlamaCppQ40() {
        // w = i - 16: the largest magnitude is w[0] = -16, so d = -16 / -8 = 2, id = 0.5 and
        // q = min(15, trunc(w * 0.5 + 8.5)) = (i + 1) / 2, capped at 15.
        let w = (0..<32).map { Float($0 - 16) }
        let m = StoredMatrix(FB_Q4, rows: 1, cols: 32, weights: w, baseline: true)
        XCTAssertEqual(m.scales[0], 0x4000)  // 2.0
        let nib = (0..<32).map { min(15, ($0 + 1) / 2) }
        XCTAssertEqual(m.bytes(0..<16), (0..<16).map { UInt8(nib[$0] | (nib[$0 + 16] << 4)) })

        // The same formula, written out in Swift, on random groups.
        var rng = LCG(seed: 7)
        let rows = 8, cols = 64
        let r = rng.normals(rows * cols, scale: 0.05)
        let b = StoredMatrix(FB_Q4, rows: rows, cols: cols, weights: r, baseline: true)
        for g in 0..<(rows * cols / 32) {
            let x = Array(r[(g * 32)..<(g * 32 + 32)])
            var amax: Float = 0, mx: Float = 0
            for v in x where abs(v) > amax {
                amax = abs(v)
                mx = v
            }
            let d = mx / -8
            let id: Float = d != 0 ? 1 / d : 0
            XCTAssertEqual(b.scales[g], fb_f32_to_f16(d))
            let qs = x.map { min(15, Int($0 * id + 8.5)) }
            XCTAssertEqual(b.bytes((g * 16)..<(g * 16 + 16)), (0..<16).map { UInt8(qs[$0] | (qs[$0 + 16] << 4)) })
        }
    }

    func testQ8ExactGroupAndZeroGroup() {
        // Group 0: w = i - 16 (maxabs 16): d = f16(16 / 127), q = round-to-even(w / d), within +-127.
        // Group 1: all zero -> scale 0, quants 0.
        let w = (0..<32).map { Float($0 - 16) } + [Float](repeating: 0, count: 32)
        let m = StoredMatrix(FB_Q8, rows: 1, cols: 64, weights: w)
        let dh = fb_f32_to_f16(16 / 127)
        XCTAssertEqual(m.scales[0], dh)
        XCTAssertEqual(m.scales[1], 0)
        let d = fb_f16_to_f32(dh)
        let q = m.data.assumingMemoryBound(to: Int8.self)
        for i in 0..<32 {
            let expected = max(-127, min(127, (w[i] / d).rounded(.toNearestOrEven)))
            XCTAssertEqual(Float(q[i]), expected, "weight \(i)")
        }
        for i in 32..<64 { XCTAssertEqual(q[i], 0) }

        let z = StoredMatrix(FB_Q4, rows: 1, cols: 64, weights: [Float](repeating: 0, count: 64))
        XCTAssertEqual(z.scales[0], 0)
        XCTAssertEqual(z.bytes(0..<32), [UInt8](repeating: 0x88, count: 32))  // nibble 8 = q 0
    }

    // MARK: Quantization error

    func testQ8ErrorBound() {
        var rng = LCG(seed: 11)
        let rows = 32, cols = 256
        let w = rng.normals(rows * cols, scale: 0.02)
        let m = StoredMatrix(FB_Q8, rows: rows, cols: cols, weights: w)
        let dq = m.dequantized()
        var worst: Float = 0  // largest error / allowed error
        for i in w.indices {
            // Each weight is rounded to the nearest multiple of its group's stored scale s, and
            // maxabs / s <= 127 * (1 + 2^-11) (f16 rounding of the scale) still rounds to 127, so
            // nothing clips by more than rounding: |w - s q| <= s / 2, plus one f32 rounding of s * q.
            let s = fb_f16_to_f32(m.scales[i / 32])
            worst = max(worst, abs(dq[i] - w[i]) / (s / 2 * (1 + 1e-6) + abs(w[i]) * 1e-7))
        }
        XCTAssertLessThanOrEqual(worst, 1)
        // Uniform rounding error of s/2 ~ maxabs/254 gives ~0.005 relative RMSE on Gaussian data.
        XCTAssertLessThan(relativeRMSE(dq, w), 0.0065)
    }

    func testQ4BeatsBaselineAndRoundsToNearest() {
        var rng = LCG(seed: 12)
        let rows = 64, cols = 256
        let w = rng.normals(rows * cols, scale: 0.02)
        let q4 = StoredMatrix(FB_Q4, rows: rows, cols: cols, weights: w)
        let base = StoredMatrix(FB_Q4, rows: rows, cols: cols, weights: w, baseline: true)
        let e4 = relativeRMSE(q4.dequantized(), w), eb = relativeRMSE(base.dequantized(), w)
        // Measured on Gaussian weights: baseline ~0.0859, error-minimising search ~0.0809 (-6%).
        // 16k samples estimate these to well under 1%, so require a 3% improvement and sane levels.
        XCTAssertLessThan(e4, eb * 0.97, "q4 \(e4) vs baseline \(eb)")
        XCTAssertGreaterThan(eb, 0.08)
        XCTAssertLessThan(eb, 0.092)
        XCTAssertLessThan(e4, 0.084)

        // Given its stored scale, every weight sits on the nearest point of the clamped grid
        // (the quantizer rounds each weight optimally for the scale it chose).
        let dq = q4.dequantized()
        var violations = 0
        for i in w.indices {
            let s = fb_f16_to_f32(q4.scales[i / 32])
            var best = Float.infinity
            for k in -8...7 { best = min(best, abs(w[i] - s * Float(k))) }
            if abs(w[i] - dq[i]) > best + abs(s) * 1e-5 { violations += 1 }
        }
        XCTAssertEqual(violations, 0)
    }

    /// q4nl: the grid is ascending, within [-64, 63] (the x86 kernels' u8 operand is level + 64), denser near zero;
    /// a group made of grid points times 0.25 comes back exactly, with the nibble order of q4.
    func testQ4NLGridAndExactGroup() {
        let levels = withUnsafeBytes(of: fb_q4nl_levels) { Array($0.bindMemory(to: Int8.self)) }
        XCTAssertEqual(levels.count, 16)
        XCTAssertEqual(levels, levels.sorted())
        XCTAssertEqual(Set(levels).count, 16)
        XCTAssertTrue(levels.allSatisfy { $0 >= -64 && $0 <= 63 })
        XCTAssertTrue(levels.contains(0))
        let gaps = zip(levels.dropFirst(), levels).map { Int($0) - Int($1) }
        XCTAssertLessThan(gaps[7], gaps[0], "the grid should be finer near zero than at its ends")
        // Weights 0-15 on levels 0..15, weights 16-31 on levels 15..0, times 0.25: the best scale is exactly 0.25
        // (f16 0x3400) with zero error, and byte j = j | (15 - j) << 4 as in q4.
        let w = (0..<16).map { Float(levels[$0]) * 0.25 } + (0..<16).map { Float(levels[15 - $0]) * 0.25 }
        let m = StoredMatrix(FB_Q4NL, rows: 1, cols: 32, weights: w)
        XCTAssertEqual(m.scales[0], 0x3400)
        XCTAssertEqual(m.bytes(0..<16), (0..<16).map { UInt8($0 | ((15 - $0) << 4)) })
        XCTAssertEqual(m.dequantized(), w)
        // An all-zero group: scale 0 and every weight on level 0 (index 8).
        let z = StoredMatrix(FB_Q4NL, rows: 1, cols: 64, weights: [Float](repeating: 0, count: 64))
        XCTAssertEqual(z.scales[0], 0)
        XCTAssertEqual(z.bytes(0..<32), [UInt8](repeating: 0x88, count: 32))
        XCTAssertEqual(z.dequantized(), [Float](repeating: 0, count: 64))
    }

    /// On Gaussian weights q4nl beats the uniform q4 grid at the same bytes, and every weight sits on the level
    /// nearest to it for the scale its group stored.
    func testQ4NLBeatsUniformGridAndRoundsToNearest() {
        var rng = LCG(seed: 12)
        let rows = 64, cols = 256
        let w = rng.normals(rows * cols, scale: 0.02)
        let nl = StoredMatrix(FB_Q4NL, rows: rows, cols: cols, weights: w)
        let q4 = StoredMatrix(FB_Q4, rows: rows, cols: cols, weights: w)
        let enl = relativeRMSE(nl.dequantized(), w), e4 = relativeRMSE(q4.dequantized(), w)
        // Measured: q4 ~0.0809 (above), q4nl ~0.074; 16k samples pin these well under 1%.
        XCTAssertLessThan(enl, e4 * 0.95, "q4nl \(enl) vs q4 \(e4)")
        let levels = withUnsafeBytes(of: fb_q4nl_levels) { Array($0.bindMemory(to: Int8.self)) }
        let dq = nl.dequantized()
        var violations = 0
        for i in w.indices {
            let s = fb_f16_to_f32(nl.scales[i / 32])
            let best = levels.map { abs(w[i] - s * Float($0)) }.min()!
            if abs(w[i] - dq[i]) > best + abs(s) * 1e-4 { violations += 1 }
        }
        XCTAssertEqual(violations, 0)
    }

    // MARK: Matrix products

    /// fb_matmul against a double-precision reference computed from fb_matrix_row, for every dtype,
    /// several token counts, an odd row range and padded strides, on every kernel path available.
    func testMatmulAllPaths() {
        let original = String(cString: fb_kernels_name())
        defer { XCTAssertEqual(fb_kernels_select(original), 0) }
        XCTAssertEqual(fb_kernels_select("no-such-path"), -1)

        var rng = LCG(seed: 99)
        let rows = 21, rowRange = 3..<20
        // (type, cols): f32/f16 with cols not a multiple of 8 or 16 (vector tails); the wide f32
        // case makes the fast paths split rows into cache blocks for n > 4. q8/q4: odd group counts,
        // and (1056 = 33 groups) the decode kernels' blocks of 8 (x86) and 4 (ARM) groups plus tails.
        let cases: [(fb_dtype, Int)] = [(FB_F32, 100), (FB_F32, 4100), (FB_F16, 100), (FB_Q8, 96), (FB_Q4, 160),
                                        (FB_Q8, 1056), (FB_Q4, 1056), (FB_Q4NL, 160), (FB_Q4NL, 1056)]
        var available: [String] = []
        for path in ["scalar", "avx2", "avx2-vnni", "avx512", "avx512-vnni", "neon", "neon-dotprod"] {
            if fb_kernels_select(path) != 0 {
                XCTAssertNotEqual(path, "scalar", "the scalar path must always be available")
                continue
            }
            XCTAssertEqual(String(cString: fb_kernels_name()), path)
            available.append(path)
        }
        XCTAssertEqual(available.first, "scalar")
        print("[kernels] matmul paths on this CPU: \(available.joined(separator: ", "))")
        // What the tools check FB_KERNELS with agrees with what can be selected.
        XCTAssertEqual(String(cString: fb_kernels_list(1)), available.joined(separator: ","))
        let built = String(cString: fb_kernels_list(0)).split(separator: ",").map(String.init)
        XCTAssertEqual(built.first, "scalar")
        XCTAssertTrue(Set(available).isSubset(of: built))
        for path in built { XCTAssertEqual(fb_kernels_check(path), available.contains(path) ? 1 : 0, path) }
        XCTAssertEqual(fb_kernels_check("no-such-path"), -1)

        var int8Worst = 0.0, int8Err2 = 0.0, int8Ref2 = 0.0
        for (type, cols) in cases {
            let m = StoredMatrix(type, rows: rows, cols: cols, weights: rng.normals(rows * cols, scale: 0.05))
            let wd = m.dequantized()
            let quantized = type == FB_Q8 || type == FB_Q4 || type == FB_Q4NL
            for n in [1, 2, 3, 4, 5, 17] where cols < 4000 || n == 17 {
                let ldx = cols + 5, ldy = rows + 3
                let x = rng.normals(n * ldx)
                // The decode kernels' int8 activations (Kernels.h), reproduced here: per group of 32,
                // d = amax / 127 and q = round-to-nearest-even(x * (127 / amax)); xq = d * q (exact in
                // Double), and each group's d.
                var xq = [Double](repeating: 0, count: n * ldx), dq = [Double](repeating: 0, count: n * ldx)
                if quantized {
                    for t in 0..<n {
                        for g in 0..<(cols / 32) {
                            let base = t * ldx + g * 32
                            let amax = x[base..<(base + 32)].map(abs).max()!
                            let d = amax / 127, id: Float = amax >= 0x1p-100 ? 127 / amax : 0
                            for i in base..<(base + 32) {
                                xq[i] = Double(d) * Double((x[i] * id).rounded(.toNearestOrEven))
                                dq[i] = Double(d)
                            }
                        }
                    }
                }
                // References in double from the dequantized rows, with x (ref) and with the int8
                // activations (refQ), and the error scales.
                var ref = [Double](repeating: 0, count: n * ldy), mag = ref, refQ = ref, magQ = ref, bound = ref
                for t in 0..<n {
                    for r in rowRange {
                        var acc = 0.0, a = 0.0, accQ = 0.0, aQ = 0.0, b = 0.0
                        for c in 0..<cols {
                            let wv = Double(wd[r * cols + c]), xv = Double(x[t * ldx + c])
                            acc += wv * xv
                            a += abs(wv * xv)
                            if quantized {
                                let s = Double(abs(fb_f16_to_f32(m.scales[r * (cols / 32) + c / 32])))
                                accQ += wv * xq[t * ldx + c]
                                aQ += (abs(wv) + (type == FB_Q4 ? 8 * s : type == FB_Q4NL ? 64 * s : 0)) * abs(xq[t * ldx + c])
                                b += abs(wv) * dq[t * ldx + c] / 2
                            }
                        }
                        ref[t * ldy + r] = acc
                        mag[t * ldy + r] = a
                        refQ[t * ldy + r] = accQ
                        magQ[t * ldy + r] = aQ
                        bound[t * ldy + r] = b
                    }
                }
                var scalarResult: [Float] = []
                for path in available {
                    XCTAssertEqual(fb_kernels_select(path), 0)
                    let int8Activations = path != "scalar" && quantized && n <= 4
                    let sentinel: Float = -12345
                    var y = [Float](repeating: sentinel, count: n * ldy)
                    m.withMatrix { mp in
                        x.withUnsafeBufferPointer { xp in
                            y.withUnsafeMutableBufferPointer { yp in
                                fb_matmul(mp, xp.baseAddress, ldx, n, yp.baseAddress, ldy, rowRange.lowerBound, rowRange.upperBound)
                            }
                        }
                    }
                    let what = "\(path), type \(type.rawValue), cols \(cols), n \(n)"
                    var outside = 0, wrong = 0, offScalar = 0
                    for t in 0..<n {
                        for r in 0..<ldy {
                            let i = t * ldy + r, v = y[i]
                            guard rowRange.contains(r) else {
                                if v != sentinel { outside += 1 }
                                continue
                            }
                            // Float accumulation of `cols` products in any order (plus the group
                            // scale, and the f32 rounding of s*q in the reference). The worst case is
                            // (cols + 4) * 2^-24 * sum|w x|, but rounding errors add like a random
                            // walk: the largest error seen over ~58k such checks (all paths, cols up
                            // to 4096) was 0.71 * sqrt(cols + 4) * 2^-24 * sum|w x|, so allow 4x that.
                            // A wrong index or nibble changes a result by ~sum|w x| / cols, which is
                            // far larger (the rigorous bound would hide it for wide rows).
                            let tol = 4 * Double(cols + 4).squareRoot() * 0x1p-24 * mag[i]
                            if !int8Activations {
                                if !(abs(Double(v) - ref[i]) <= tol) {
                                    wrong += 1
                                    if wrong <= 3 { XCTFail("\(what), t \(t), r \(r): \(v) vs \(ref[i]) (tol \(tol))") }
                                }
                                // Fast paths vs scalar: both are within tol of the reference.
                                if path != "scalar" && !(abs(Double(v) - Double(scalarResult[i])) <= 2 * tol) { offScalar += 1 }
                                continue
                            }
                            // Decode kernels (q4/q8, n <= 4) quantize the activations to int8, so they
                            // compute sum w * xq, not sum w * x. Two checks:
                            // 1. Against sum w * xq, to float rounding: the group dots are exact in
                            //    int32, so only the scale products and the float sums round, as above;
                            //    but q4 kernels add (nibble = q + 8) * xq and subtract 8 * sum(xq) per
                            //    group, so their rounding scales with sum (|w| + 8|s|) |xq| (magQ); the x86
                            //    q4nl kernels likewise add (level + 64) * xq and take 64 * sum(xq) off.
                            //    This is what catches a wrong index, nibble or scale.
                            // 2. Against the exact product: each activation moves by at most half a
                            //    step, |x - d q| <= d / 2 = amax_g / 254 (x * 127/amax is within
                            //    [-127, 127], so nothing clips; the float roundings of d and 127/amax
                            //    add ~1e-6 relative, covered by the 1e-4), hence
                            //      |y - sum w x| <= sum_g (amax_g / 254) * sum_{i in g} |w_i|  (bound)
                            //    plus check 1's rounding. This is the ~(1/254) sum|w||x|-scale error
                            //    int8 activations cost (typically ~0.5% of |y|: random signs average
                            //    out, see int8Worst below); versus the scalar path it is the same bound
                            //    plus the scalar path's own float tolerance.
                            let tolQ = 4 * Double(cols + 4).squareRoot() * 0x1p-24 * magQ[i]
                            if !(abs(Double(v) - refQ[i]) <= tolQ) {
                                wrong += 1
                                if wrong <= 3 { XCTFail("\(what), t \(t), r \(r): \(v) vs \(refQ[i]) with int8 activations (tol \(tolQ))") }
                            }
                            let allowed = bound[i] * (1 + 1e-4) + tolQ
                            let e = abs(Double(v) - ref[i])
                            int8Worst = max(int8Worst, e / allowed)
                            int8Err2 += e * e
                            int8Ref2 += ref[i] * ref[i]
                            if !(e <= allowed) {
                                wrong += 1
                                if wrong <= 3 { XCTFail("\(what), t \(t), r \(r): \(v) vs \(ref[i]) beyond the int8 bound \(allowed)") }
                            }
                            if !(abs(Double(v) - Double(scalarResult[i])) <= allowed + tol) { offScalar += 1 }
                        }
                    }
                    XCTAssertEqual(outside, 0, "\(what): wrote outside the row range or stride")
                    XCTAssertEqual(wrong, 0, "\(what): results off the reference")
                    XCTAssertEqual(offScalar, 0, "\(what): results off the scalar path")
                    if path == "scalar" { scalarResult = y }
                }
            }
        }
        if int8Ref2 > 0 {
            print(String(format: "[kernels] int8 activations: worst error %.3f of the bound, relative RMS error %.5f",
                         int8Worst, (int8Err2 / int8Ref2).squareRoot()))
        }
    }
}
