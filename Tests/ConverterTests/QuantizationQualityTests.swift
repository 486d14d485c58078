import Converter
import Foundation
import Kernels
import Runtime
import TestSupport
import XCTest

/// The int4 layout against the Q4_0-style baseline on real trained weights (random weights flatter every scheme).
final class QuantizationQualityTests: XCTestCase {
    func relativeRMS(_ w: [Float], rows: Int, cols: Int, _ quantize: (UnsafePointer<Float>, Int, Int, Int, UnsafeMutablePointer<UInt8>, UnsafeMutablePointer<UInt16>) -> Void, type: fb_dtype) -> Double {
        var quants = [UInt8](repeating: 0, count: fb_quant_bytes(type, rows, cols))
        var scales = [UInt16](repeating: 0, count: fb_scale_bytes(type, rows, cols) / 2)
        w.withUnsafeBufferPointer { quantize($0.baseAddress!, cols, 0, rows, &quants, &scales) }
        var err = 0.0, norm = 0.0
        var row = [Float](repeating: 0, count: cols)
        quants.withUnsafeBytes { q in
            scales.withUnsafeBufferPointer { s in
                var m = fb_matrix(type: type, rows: rows, cols: cols, data: q.baseAddress, scales: s.baseAddress)
                for r in 0..<rows {
                    fb_matrix_row(&m, r, &row)
                    for c in 0..<cols {
                        let d = Double(w[r * cols + c] - row[c])
                        err += d * d
                        norm += Double(w[r * cols + c]) * Double(w[r * cols + c])
                    }
                }
            }
        }
        return (err / norm).squareRoot()
    }

    func testInt4BeatsQ4_0BaselineOnRealWeights() throws {
        let file = try SafetensorsFile(path: Fixtures.realWeights)
        var ours: [Double] = [], baseline: [Double] = [], int8: [Double] = [], grid: [Double] = []
        for name in file.tensorNames() {
            let shape = try file.shape(name)
            guard shape.count == 2, shape[1] % 32 == 0 else { continue }
            let w = try file.floatArray(name)
            ours.append(relativeRMS(w, rows: shape[0], cols: shape[1], { fb_quantize_q4($0, $1, $2, $3, $4, $5) }, type: FB_Q4))
            grid.append(relativeRMS(w, rows: shape[0], cols: shape[1], { fb_quantize_q4nl($0, $1, $2, $3, $4, $5) }, type: FB_Q4NL))
            baseline.append(relativeRMS(w, rows: shape[0], cols: shape[1], { fb_quantize_q4_baseline($0, $1, $2, $3, $4, $5) }, type: FB_Q4))
            int8.append(relativeRMS(w, rows: shape[0], cols: shape[1], { w, c, b, e, q, s in
                q.withMemoryRebound(to: Int8.self, capacity: 1) { fb_quantize_q8(w, c, b, e, $0, s) } }, type: FB_Q8))
        }
        XCTAssertEqual(ours.count, 13, "expected the 13 real matrices")
        let meanOurs = ours.reduce(0, +) / Double(ours.count)
        let meanBaseline = baseline.reduce(0, +) / Double(baseline.count)
        let meanInt8 = int8.reduce(0, +) / Double(int8.count)
        let meanGrid = grid.reduce(0, +) / Double(grid.count)
        print(String(format: "[quantization] mean relative RMS on 13 real matrices: q4nl %.4f, q4 %.4f, Q4_0-style baseline %.4f, q8 %.4f",
                     meanGrid, meanOurs, meanBaseline, meanInt8))
        // q4nl, the --bits 4 default, at the same 4.5 bits: the target is 0.077 or less (IQ4_NL's grid: ~0.0753), and
        // every matrix better than Q4_0 and than the uniform grid.
        XCTAssertLessThanOrEqual(meanGrid, 0.077)
        for (i, g) in grid.enumerated() {
            XCTAssertLessThan(g, baseline[i], "q4nl lost to the Q4_0-style baseline on matrix \(i)")
            XCTAssertLessThan(g, ours[i], "q4nl lost to the uniform grid on matrix \(i)")
        }
        // The documented figures (Tests/Fixtures/README.md): baseline 0.0897, an error-minimising scale ≈ 0.085.
        XCTAssertLessThan(meanOurs, meanBaseline, "q4 must reconstruct real weights better than the Q4_0-style baseline")
        XCTAssertLessThan(meanOurs, 0.088)
        XCTAssertGreaterThan(meanBaseline, 0.085, "the baseline itself looks wrong: it should be about 0.0897")
        for (a, b) in zip(ours, baseline) { XCTAssertLessThanOrEqual(a, b * 1.0001, "q4 lost to the baseline on one matrix") }
        XCTAssertLessThan(meanInt8, 0.007)  // Tests/Fixtures/README.md: Q8_0-style 0.0057
    }
}
