import Foundation
import Kernels
import Runtime
#if canImport(Glibc)
import Glibc
#endif

/// The CI gate: a new result against the committed baseline.
public enum BenchGate {
    public struct Check: Equatable {
        public let figure: String
        public let baseline: Double
        public let value: Double
        public let limit: String
        public let passed: Bool
    }

    /// Peak RSS may grow ≤ 5%; decode efficiency may drop ≤ 20% and prefill per compute ≤ 15%; the file may not grow.
    /// Decode efficiency gets the wider band because both of its terms (decode speed, the triad probe) move with
    /// the neighbours' load: identical code gave 0.70–0.85 on the Firebolt-VL entry across runs on this machine kind,
    /// while the regressions the gate is for (a lost SIMD path, a serial loop) cost 2× or more.
    public static func compare(_ new: BenchResult, baseline old: BenchResult) -> [Check] {
        [
            Check(figure: "peak_rss_bytes", baseline: Double(old.peakRSSBytes), value: Double(new.peakRSSBytes), limit: "≤ +5%",
                  passed: Double(new.peakRSSBytes) <= Double(old.peakRSSBytes) * 1.05),
            Check(figure: "decode_efficiency", baseline: old.decodeEfficiency, value: new.decodeEfficiency, limit: "≥ −20%",
                  passed: new.decodeEfficiency >= old.decodeEfficiency * 0.80),
            Check(figure: "prefill_per_compute_gflop", baseline: old.prefillPerComputeGflop, value: new.prefillPerComputeGflop,
                  limit: "≥ −15%", passed: new.prefillPerComputeGflop >= old.prefillPerComputeGflop * 0.85),
            Check(figure: "model_bytes", baseline: Double(old.modelBytes), value: Double(new.modelBytes), limit: "no growth",
                  passed: new.modelBytes <= old.modelBytes),
        ]
    }

    public static func table(_ checks: [Check]) -> String {
        var lines = ["figure                      baseline          new   limit       result"]
        for c in checks {
            lines.append(c.figure.padding(toLength: 26, withPad: " ", startingAt: 0) +
                         String(format: " %12.4g %12.4g   ", c.baseline, c.value) +
                         c.limit.padding(toLength: 10, withPad: " ", startingAt: 0) + "  " + (c.passed ? "ok" : "REGRESSION"))
        }
        return lines.joined(separator: "\n")
    }
}
