import Foundation

/// Deterministic pseudo-random numbers (64-bit LCG, Box-Muller), so every run sees the same data.
struct LCG {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state = state &* 6364136223846793005 &+ 1442695040888963407
        return state
    }
    /// Uniform in (0, 1).
    mutating func uniform() -> Double { Double(next() >> 11) * 0x1p-53 + 0x1p-54 }
    mutating func normal() -> Float {
        let u = uniform(), v = uniform()
        return Float((-2 * log(u)).squareRoot() * cos(2 * Double.pi * v))
    }
    mutating func normals(_ n: Int, scale: Float = 1) -> [Float] { (0..<n).map { _ in normal() * scale } }
}

