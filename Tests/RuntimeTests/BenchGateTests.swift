import Foundation
import Benchmarks
import Runtime
import XCTest

/// The CI gate's comparison: passes on the baseline itself, fails on each kind of injected regression.
final class BenchGateTests: XCTestCase {
    let baseline = BenchResult(
        model: "lfm2-350m-q4.fbm", architecture: "lfm2", threads: 2, kernels: "avx2", promptTokens: 512, generatedTokens: 128,
        image: false, loadMs: 100, visionMs: Spread([0]), cmmMs: Spread([0]), prefillTokensPerSecond: Spread([900, 950, 1000]),
        decodeTokensPerSecond: Spread([150, 160, 170]), ttftMs: Spread([500]), peakRSSBytes: 250 << 20, modelBytes: 200 << 20,
        weightBytesPerToken: 190 << 20, bandwidthBytesPerSecond: 48e9, computeGflops: 4, decodeEfficiency: 0.66,
        prefillPerComputeGflop: 237.5)

    func failing(_ r: BenchResult) -> [String] { BenchGate.compare(r, baseline: baseline).filter { !$0.passed }.map(\.figure) }

    func testBaselinePassesAndSmallNoisePasses() {
        XCTAssertEqual(failing(baseline), [])
        var noisy = baseline
        noisy.peakRSSBytes = UInt64(Double(baseline.peakRSSBytes) * 1.04)
        noisy.decodeEfficiency *= 0.82
        noisy.prefillPerComputeGflop *= 0.88
        XCTAssertEqual(failing(noisy), [])
    }

    func testEachRegressionFails() {
        var r = baseline
        r.peakRSSBytes = UInt64(Double(baseline.peakRSSBytes) * 1.06)
        XCTAssertEqual(failing(r), ["peak_rss_bytes"])
        r = baseline
        r.decodeEfficiency *= 0.78
        r.decodeTokensPerSecond = baseline.decodeTokensPerSecond.scaled(by: 0.78)
        XCTAssertEqual(failing(r), ["decode_tokens_per_s", "decode_efficiency"])
        r = baseline
        r.prefillPerComputeGflop *= 0.8
        XCTAssertEqual(failing(r), ["prefill_per_compute_gflop"])
        r = baseline
        r.modelBytes += 1
        XCTAssertEqual(failing(r), ["model_bytes"])
        let table = BenchGate.table(BenchGate.compare(r, baseline: baseline))
        XCTAssertTrue(table.contains("model_bytes") && table.contains("REGRESSION"), table)
    }

    /// The CI run that motivated the two-figure rule: decode ran faster than the baseline while the triad probe read
    /// 2.2× higher, so efficiency alone fell 26%. Either figure holding is enough; both dropping fails.
    func testDecodeFailsOnlyWhenSpeedAndEfficiencyBothDrop() {
        var fasterMachine = baseline
        fasterMachine.decodeTokensPerSecond = baseline.decodeTokensPerSecond.scaled(by: 1.5)
        fasterMachine.decodeEfficiency *= 0.74
        XCTAssertEqual(failing(fasterMachine), [])
        var slowerMachine = baseline
        slowerMachine.decodeTokensPerSecond = baseline.decodeTokensPerSecond.scaled(by: 0.7)
        XCTAssertEqual(failing(slowerMachine), [])
        var lostSIMD = fasterMachine
        lostSIMD.decodeTokensPerSecond = baseline.decodeTokensPerSecond.scaled(by: 0.75)
        XCTAssertEqual(failing(lostSIMD), ["decode_tokens_per_s", "decode_efficiency"])
        XCTAssertTrue(BenchGate.table(BenchGate.compare(lostSIMD, baseline: baseline)).contains("both its figures"))
    }

    func testSpreadIsMedianMinMax() {
        XCTAssertEqual(Spread([3, 1, 2]), Spread(median: 2, min: 1, max: 3))
        XCTAssertEqual(Spread([4, 1, 2, 3]).median, 2.5)
    }

    func testResultRoundTripsThroughJSON() throws {
        let data = try JSONEncoder().encode(baseline)
        let object = try JSONSerialization.jsonObject(with: data) as! [String: Any]
        for key in ["load_ms", "vision_ms", "cmm_ms", "prefill_tokens_per_s", "decode_tokens_per_s", "ttft_ms", "peak_rss_bytes",
                    "model_bytes", "bandwidth_bytes_per_s", "decode_efficiency", "threads", "kernels"] {
            XCTAssertNotNil(object[key], "missing key \(key)")
        }
        XCTAssertEqual(try JSONDecoder().decode(BenchResult.self, from: data), baseline)
    }
}

private extension Spread {
    func scaled(by factor: Double) -> Spread { Spread(median: median * factor, min: min * factor, max: max * factor) }
}
