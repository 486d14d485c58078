import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// A loaded .fbm model: config, tokenizer, the decoder, and for Firebolt-VL the vision tower and the CMM.
public final class LoadedModel {
    public let file: FBMFile
    public let config: ModelConfig
    public let tokenizer: Tokenizer
    public let decoder: LFM2Model
    /// Present for `fireboltlm` models.
    public let vision: FireboltVLModel?
    public let loadSeconds: Double
    public let threads: Int

    public init(path: String, verify: Bool = true, threads: Int = ProcessInfo.processInfo.activeProcessorCount) throws {
        self.threads = threads
        let start = Date()
        file = try FBMFile(path: path)
        config = file.config
        let weights = try file.loadWeights(verify: verify, parallel: Parallel(threads: threads))
        do {
            tokenizer = try Tokenizer(jsonString: file.header.tokenizer)
        } catch {
            throw FireboltError("the embedded tokenizer is unusable: \(error)", file: path)
        }
        do {
            if config.hasVision {
                let vl = try FireboltVLModel(weights: weights, config: config, threads: threads)
                vision = vl
                decoder = vl.decoder
            } else {
                vision = nil
                decoder = try LFM2Model(weights: weights, config: config.text)
            }
        } catch let e as FireboltError {
            throw e.inFile(path)
        }
        loadSeconds = Date().timeIntervalSince(start)
    }

    /// docs/model.md §4: one user turn with the generation prompt; `<image>\n` first when an image is given.
    public func chatPromptIds(question: String, withImage: Bool) -> [Int32] {
        let content = withImage ? "<image>\n" + question : question
        return tokenizer.encode(Tokenizer.chatPrompt(user: content), addBOS: false)
    }

    /// Decode, preprocess (the model's own settings) and run the vision tower: the grid X_v the CMM attends to.
    public func encodeImage(path: String, maxPixels: Int = ImageDecoder.defaultMaxPixels) throws -> EncodedImage {
        guard let vision else {
            throw FireboltError("this model is text-only (\(config.architecture)): it cannot take an image", file: path)
        }
        var clock = Date()
        let image = try ImageDecoder.decode(path: path, maxPixels: maxPixels)
        let decodeMs = Date().timeIntervalSince(clock) * 1000
        clock = Date()
        var settings = file.header.preprocessor ?? .siglipDefault
        if settings.width != settings.height {
            throw FireboltError("image preprocessing to \(settings.width)×\(settings.height) is not square; the vision grid needs a square image", file: file.path)
        }
        settings.doResize = true
        let pixels = SiglipPreprocessor.pixelValues(image, config: settings)
        let preprocessMs = Date().timeIntervalSince(clock) * 1000
        clock = Date()
        let grid = vision.encodeImage(views: SiglipPreprocessor.views(pixels, size: settings.width, globalSize: vision.vision.config.imageSize))
        return EncodedImage(grid: grid, width: image.width, height: image.height, decodeMs: decodeMs, preprocessMs: preprocessMs,
                            visionMs: Date().timeIntervalSince(clock) * 1000)
    }

    public func checkTokenIds(_ ids: [Int32]) throws { try decoder.checkTokens(ids) }
}

/// An image turned into the CMM's grid, with where the time went.
public struct EncodedImage {
    public let grid: [Float]
    public let width: Int, height: Int
    public let decodeMs: Double, preprocessMs: Double, visionMs: Double
}

public enum ProcessMemory {
    /// Peak resident set size of this process (VmHWM), in bytes.
    public static var peakResidentBytes: UInt64 { field("VmHWM:") }
    /// Current resident set size (VmRSS), in bytes.
    public static var residentBytes: UInt64 { field("VmRSS:") }

    private static func field(_ name: String) -> UInt64 {
        guard let text = try? String(contentsOfFile: "/proc/self/status", encoding: .utf8) else { return 0 }
        for line in text.split(separator: "\n") where line.hasPrefix(name) {
            let digits = line.dropFirst(name.count).trimmingCharacters(in: .whitespaces).split(separator: " ").first ?? ""
            return (UInt64(digits) ?? 0) * 1024
        }
        return 0
    }
}

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

/// What generation needs of a sequence: token ids in, logits out, caches kept between calls.
public protocol SequenceSession: AnyObject {
    var contextLength: Int { get }
    func reset()
    func forward(tokens: [Int32], lastLogits: UnsafeMutablePointer<Float>?, allLogits: UnsafeMutablePointer<Float>?) throws
}

extension LFM2Session: SequenceSession {}
extension FireboltVLSession: SequenceSession {}

/// Prompt (and image) in, tokens out, one at a time: prefill as a batch, then decode with the caches.
public final class TextGenerator {
    public let model: LoadedModel
    public let session: SequenceSession
    public let kvCache: KVCacheType
    private let vlSession: FireboltVLSession?
    private let logits: UnsafeMutablePointer<Float>

    public init(model: LoadedModel, contextLength: Int, threads: Int, kvCache: KVCacheType = .default) {
        self.model = model
        self.kvCache = kvCache
        if let vision = model.vision {
            let s = FireboltVLSession(model: vision, contextLength: contextLength, threads: threads, kvCache: kvCache)
            vlSession = s
            session = s
        } else {
            vlSession = nil
            session = LFM2Session(model: model.decoder, contextLength: contextLength, threads: threads, kvCache: kvCache)
        }
        logits = .allocate(capacity: model.config.text.vocabSize)
    }

    /// The image grid (from `LoadedModel.encodeImage`) the following sequences are about; nil for text only.
    public func setImage(grid: [Float]?) throws {
        guard let vlSession else {
            if grid == nil { return }
            throw FireboltError("this model is text-only (\(model.config.architecture)): it cannot take an image")
        }
        try vlSession.setImage(grid: grid)
    }

    deinit { logits.deallocate() }

    /// Generates after `prompt`; `onToken(id)` is called for each generated token and may return false to stop.
    /// End-of-sequence tokens stop generation and are not passed on.
    /// `ignoreEOS` keeps generating past end-of-sequence tokens (benchmarks want a fixed token count).
    public func generate(prompt: [Int32], maxTokens: Int, sampling: SamplingOptions, ignoreEOS: Bool = false,
                         onToken: (Int32) throws -> Bool) throws -> GenerationStats {
        try model.checkTokenIds(prompt)
        guard !prompt.isEmpty else { throw FireboltError("the prompt is empty") }
        guard prompt.count + maxTokens <= session.contextLength + 1 else {
            throw FireboltError("prompt (\(prompt.count) tokens) + --max-tokens \(maxTokens) exceed the context of \(session.contextLength) tokens (use --ctx)")
        }
        var stats = GenerationStats()
        stats.loadMs = model.loadSeconds * 1000
        stats.promptTokens = prompt.count
        session.reset()
        let sampler = Sampler(options: sampling, vocabularySize: model.config.text.vocabSize)
        sampler.observe(prompt)
        let eos = ignoreEOS ? [] : Set(model.config.specialTokens.eos)

        var clock = Date()
        try session.forward(tokens: prompt, lastLogits: logits, allLogits: nil)
        stats.prefillMs = Date().timeIntervalSince(clock) * 1000
        stats.cmmMs = (vlSession?.modulatorSeconds ?? 0) * 1000
        clock = Date()
        stats.stopReason = "max_tokens"
        var single: [Int32] = [0]
        while stats.generatedTokens < maxTokens {
            let next = sampler.sample(logits)
            if eos.contains(next) { stats.stopReason = "eos"; break }
            stats.generatedTokens += 1
            sampler.observe(next)
            if try !onToken(next) { stats.stopReason = "stopped"; break }
            if stats.generatedTokens == maxTokens { break }
            single[0] = next
            try session.forward(tokens: single, lastLogits: logits, allLogits: nil)
        }
        stats.decodeMs = Date().timeIntervalSince(clock) * 1000
        stats.peakRSSBytes = ProcessMemory.peakResidentBytes
        return stats
    }

    /// Logits for every position of `ids` (count × vocab), through one batched forward.
    public func allLogits(_ ids: [Int32]) throws -> [Float] {
        try model.checkTokenIds(ids)
        session.reset()
        var out = [Float](repeating: 0, count: ids.count * model.config.text.vocabSize)
        try out.withUnsafeMutableBufferPointer { try session.forward(tokens: ids, lastLogits: nil, allLogits: $0.baseAddress!) }
        return out
    }

    /// Logits for every position, one token at a time through the caches (the decode path).
    public func incrementalLogits(_ ids: [Int32]) throws -> [Float] {
        try model.checkTokenIds(ids)
        session.reset()
        let vocab = model.config.text.vocabSize
        var out = [Float](repeating: 0, count: ids.count * vocab)
        for (i, id) in ids.enumerated() {
            try session.forward(tokens: [id], lastLogits: logits, allLogits: nil)
            out.withUnsafeMutableBufferPointer { _ = memcpy($0.baseAddress! + i * vocab, logits, vocab * 4) }
        }
        return out
    }
}
