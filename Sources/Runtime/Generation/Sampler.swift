import Foundation
import Kernels

public struct SamplingOptions: Equatable {
    /// 0 = greedy (argmax); otherwise logits are divided by it.
    public var temperature: Float = 0.3
    /// Keep the k most likely tokens (0 = off).
    public var topK = 0
    /// Keep the smallest set whose probability reaches p (1 = off).
    public var topP: Float = 1
    /// Drop tokens less likely than minP × the most likely one (0 = off).
    public var minP: Float = 0.15
    /// Divide positive / multiply negative logits of tokens already in the sequence (1 = off), as transformers does.
    public var repeatPenalty: Float = 1.05
    public var seed: UInt64 = 0

    public init() {}

    /// The defaults for `temperature`: at 0 the pure argmax (no repeat penalty, no min-p), as greedy decoding is in
    /// transformers and llama.cpp; otherwise the sampling defaults above. Options given explicitly go on top.
    public init(temperature: Float) {
        self.init()
        self.temperature = temperature
        if temperature <= 0 {
            repeatPenalty = 1
            minP = 0
        }
    }

    public static var greedy: SamplingOptions { SamplingOptions(temperature: 0) }
}

/// Picks the next token from logits. All buffers are allocated once, for the vocabulary size.
public final class Sampler {
    public let options: SamplingOptions
    private var rng: SplitMix64
    private let vocab: Int
    private let probabilities: UnsafeMutablePointer<Float>
    private let candidates: UnsafeMutablePointer<Int32>
    private let seen: UnsafeMutablePointer<Bool>
    private var seenList: [Int32] = []

    public init(options: SamplingOptions, vocabularySize: Int) {
        self.options = options
        rng = SplitMix64(seed: options.seed)
        vocab = vocabularySize
        probabilities = .allocate(capacity: vocabularySize)
        candidates = .allocate(capacity: vocabularySize)
        seen = .allocate(capacity: vocabularySize)
        seen.initialize(repeating: false, count: vocabularySize)
        seenList.reserveCapacity(8192)
    }

    deinit {
        probabilities.deallocate()
        candidates.deallocate()
        seen.deallocate()
    }

    /// Tokens the repetition penalty applies to (the prompt and everything generated).
    public func observe(_ tokens: [Int32]) { for t in tokens { observe(t) } }

    public func observe(_ token: Int32) {
        guard token >= 0, Int(token) < vocab, !seen[Int(token)] else { return }
        seen[Int(token)] = true
        seenList.append(token)
    }

    /// Chooses a token; `logits` (vocab floats) may be modified.
    public func sample(_ logits: UnsafeMutablePointer<Float>) -> Int32 {
        let o = options
        if o.repeatPenalty != 1 {
            for t in seenList {
                let l = logits[Int(t)]
                logits[Int(t)] = l > 0 ? l / o.repeatPenalty : l * o.repeatPenalty
            }
        }
        if o.temperature <= 0 { return argmax(logits) }
        for i in 0..<vocab { probabilities[i] = logits[i] / o.temperature }
        fb_softmax(probabilities, vocab)
        var count = 0
        var maxP: Float = 0
        for i in 0..<vocab where probabilities[i] > maxP { maxP = probabilities[i] }
        let floor = o.minP > 0 ? o.minP * maxP : 0
        for i in 0..<vocab where probabilities[i] > 0 && probabilities[i] >= floor {
            candidates[count] = Int32(i)
            count += 1
        }
        let probs = probabilities
        if (o.topK > 0 && count > o.topK) || o.topP < 1 {
            var list = UnsafeMutableBufferPointer(start: candidates, count: count)
            list.sort { probs[Int($0)] > probs[Int($1)] }
            if o.topK > 0 { count = min(count, o.topK) }
            if o.topP < 1 {
                var total: Float = 0
                for i in 0..<count { total += probs[Int(candidates[i])] }
                var cumulative: Float = 0
                for i in 0..<count {
                    cumulative += probs[Int(candidates[i])] / total
                    if cumulative >= o.topP { count = i + 1; break }
                }
            }
        }
        var total: Float = 0
        for i in 0..<count { total += probs[Int(candidates[i])] }
        var r = Float(rng.uniform()) * total
        for i in 0..<count {
            r -= probs[Int(candidates[i])]
            if r <= 0 { return candidates[i] }
        }
        return candidates[max(0, count - 1)]
    }

    func argmax(_ logits: UnsafePointer<Float>) -> Int32 {
        var best = 0
        for i in 1..<vocab where logits[i] > logits[best] { best = i }
        return Int32(best)
    }
}

/// A small, fast, deterministic generator (SplitMix64) with a Box–Muller normal.
public struct SplitMix64 {
    private var state: UInt64
    private var spare: Float? = nil

    public init(seed: UInt64) { state = seed }

    public mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    public mutating func uniform() -> Double { Double(next() >> 11) * (1.0 / 9_007_199_254_740_992.0) }

    public mutating func normal() -> Float {
        if let s = spare { spare = nil; return s }
        let u1 = max(uniform(), 1e-300), u2 = uniform()
        let r = (-2 * log(u1)).squareRoot()
        spare = Float(r * sin(2 * .pi * u2))
        return Float(r * cos(2 * .pi * u2))
    }
}
