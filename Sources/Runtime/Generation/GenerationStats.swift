import Foundation

/// What one generation took: tokens, time per phase (the time to first token in its parts), peak memory.
public struct GenerationStats: Codable {
    public var loadMs: Double = 0
    public var promptTokens = 0
    public var prefillMs: Double = 0
    public var generatedTokens = 0
    public var decodeMs: Double = 0
    public var peakRSSBytes: UInt64 = 0
    public var stopReason = ""
    /// Time to first token and its parts (image parts are 0 without an image; prefill includes the CMM).
    public var imageDecodeMs: Double = 0
    public var preprocessMs: Double = 0
    public var visionMs: Double = 0
    public var cmmMs: Double = 0
    public var ttftMs: Double { imageDecodeMs + preprocessMs + visionMs + prefillMs }

    public var prefillTokensPerSecond: Double { prefillMs > 0 ? Double(promptTokens) / (prefillMs / 1000) : 0 }
    /// Tokens after the first (the first comes from the prefill's logits) over the time spent decoding.
    public var decodeTokensPerSecond: Double { decodeMs > 0 ? Double(max(0, generatedTokens - 1)) / (decodeMs / 1000) : 0 }

    enum CodingKeys: String, CodingKey {
        case loadMs = "load_ms", promptTokens = "prompt_tokens", prefillMs = "prefill_ms", generatedTokens = "generated_tokens"
        case decodeMs = "decode_ms", peakRSSBytes = "peak_rss_bytes", stopReason = "stop_reason"
        case imageDecodeMs = "image_decode_ms", preprocessMs = "preprocess_ms", visionMs = "vision_ms", cmmMs = "cmm_ms", ttftMs = "ttft_ms"
        case prefillTokensPerSecond = "prefill_tokens_per_s", decodeTokensPerSecond = "decode_tokens_per_s"
    }

    public func encode(to encoder: Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(loadMs, forKey: .loadMs)
        try c.encode(promptTokens, forKey: .promptTokens)
        try c.encode(prefillMs, forKey: .prefillMs)
        try c.encode(prefillTokensPerSecond, forKey: .prefillTokensPerSecond)
        try c.encode(generatedTokens, forKey: .generatedTokens)
        try c.encode(decodeMs, forKey: .decodeMs)
        try c.encode(decodeTokensPerSecond, forKey: .decodeTokensPerSecond)
        try c.encode(peakRSSBytes, forKey: .peakRSSBytes)
        try c.encode(stopReason, forKey: .stopReason)
        try c.encode(imageDecodeMs, forKey: .imageDecodeMs)
        try c.encode(preprocessMs, forKey: .preprocessMs)
        try c.encode(visionMs, forKey: .visionMs)
        try c.encode(cmmMs, forKey: .cmmMs)
        try c.encode(ttftMs, forKey: .ttftMs)
    }

    public init() {}
    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        loadMs = try c.decode(Double.self, forKey: .loadMs)
        promptTokens = try c.decode(Int.self, forKey: .promptTokens)
        prefillMs = try c.decode(Double.self, forKey: .prefillMs)
        generatedTokens = try c.decode(Int.self, forKey: .generatedTokens)
        decodeMs = try c.decode(Double.self, forKey: .decodeMs)
        peakRSSBytes = try c.decode(UInt64.self, forKey: .peakRSSBytes)
        stopReason = try c.decode(String.self, forKey: .stopReason)
        imageDecodeMs = try c.decodeIfPresent(Double.self, forKey: .imageDecodeMs) ?? 0
        preprocessMs = try c.decodeIfPresent(Double.self, forKey: .preprocessMs) ?? 0
        visionMs = try c.decodeIfPresent(Double.self, forKey: .visionMs) ?? 0
        cmmMs = try c.decodeIfPresent(Double.self, forKey: .cmmMs) ?? 0
    }
}
