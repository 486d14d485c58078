import Foundation
import Kernels

// Firebolt-VL end to end (docs/model.md): image views → SigLIP → grid X_v; token ids → LFM2 embed_tokens →
// Cross-Modal Modulator (causal, incremental) → LFM2 decoder as inputs_embeds → logits. Every token, generated
// ones included, passes through the modulator before the decoder. Without an image the reference skips the
// modulator entirely (plain LFM2 on the token embeddings).

/// The three parts' weights, and the image processor's settings they were trained with.
public final class FireboltVLModel {
    public let config: ModelConfig
    public let vision: SigLIPVisionTower
    public let modulator: CrossModalModulator
    public let decoder: LFM2Model
    /// The file's `preprocessor_config` (SigLIP's defaults when it has none), at the tower's image size.
    public let preprocessor: PreprocessorConfig

    public init(weights: WeightStore, config: ModelConfig, preprocessor: PreprocessorConfig? = nil, threads: Int) throws {
        guard let visionConfig = config.vision, let cmmConfig = config.cmm else {
            throw FireboltError("the model has no vision tower / cross-modal modulator (architecture \(config.architecture))")
        }
        guard cmmConfig.textDim == config.text.hiddenSize, cmmConfig.visionDim == visionConfig.hiddenSize else {
            throw FireboltError("CMM sizes (text \(cmmConfig.textDim), vision \(cmmConfig.visionDim)) do not match the decoder (\(config.text.hiddenSize)) and vision tower (\(visionConfig.hiddenSize))")
        }
        var settings = preprocessor ?? PreprocessorConfig.siglipDefault.resized(to: visionConfig.imageSize)
        try settings.validate(imageSize: visionConfig.imageSize)
        settings.doResize = true   // the views need exactly the tower's size, whatever the file says
        self.config = config
        self.preprocessor = settings
        vision = try SigLIPVisionTower(weights: weights, config: visionConfig, threads: threads)
        modulator = try CrossModalModulator(weights: weights, config: cmmConfig)
        decoder = try LFM2Model(weights: weights, config: config.text)
    }

    /// The image path, docs/model.md §1: an RGB image through the processor with the model's own settings, then
    /// `encodeImage(pixelValues:)`. Everything that turns an image into the grid comes through here.
    public func encode(image: RGBImage) -> EncodedImage {
        var clock = Date()
        let pixels = SiglipPreprocessor.pixelValues(image, config: preprocessor)
        let preprocessMs = Date().timeIntervalSince(clock) * 1000
        clock = Date()
        let grid = encodeImage(pixelValues: pixels)
        return EncodedImage(grid: grid, width: image.width, height: image.height, decodeMs: 0, preprocessMs: preprocessMs,
                            visionMs: Date().timeIntervalSince(clock) * 1000)
    }

    /// The grid X_v (5 × vision hidden) from the processor's output [3, S, S] (S = the tower's image size): the whole
    /// image and its four tiles, each through the vision tower and its pooling head.
    public func encodeImage(pixelValues: [Float]) -> [Float] {
        let size = vision.config.imageSize
        return vision.pooled(views: SiglipPreprocessor.views(pixelValues, size: size, globalSize: size)).flatMap { $0 }
    }
}

/// An image through the model's image path, with where the time went: for Firebolt-VL the CMM's grid, for LFM2-VL
/// the projected feature rows and the layout its placeholder follows.
public struct EncodedImage {
    public let grid: [Float]
    public let width: Int, height: Int
    public var decodeMs: Double
    public let preprocessMs: Double, visionMs: Double
    /// LFM2-VL: one row (decoder width) per image token.
    public var features: [Float] = []
    /// LFM2-VL: how `<image>` expands in the prompt.
    public var layout: LFM2VLImageLayout? = nil
}

/// One sequence: the modulator's state next to the decoder's caches. `forward` advances both.
public final class FireboltVLSession {
    public let model: FireboltVLModel
    public let decoder: LFM2Session
    public let modulator: CMMSession
    /// Whether tokens go through the modulator (an image was set) or straight to the decoder.
    public private(set) var hasImage = false
    /// Time spent in the modulator since the last reset (for the time-to-first-token breakdown).
    public private(set) var modulatorSeconds = 0.0

    public var position: Int { decoder.position }
    public var contextLength: Int { decoder.contextLength }

    public init(model: FireboltVLModel, contextLength: Int, maxBatch: Int = 64, threads: Int, kvCache: KVCacheType = .default) {
        self.model = model
        decoder = LFM2Session(model: model.decoder, contextLength: contextLength, maxBatch: maxBatch, threads: threads,
                              kvCache: kvCache)
        modulator = CMMSession(modulator: model.modulator, maxBatch: maxBatch, threads: threads)
    }

    /// The image grid (numGrids × vision hidden) for the sequence, or nil for text only. Resets the sequence.
    public func setImage(grid: [Float]?) throws {
        reset()
        guard let grid else { hasImage = false; return }
        let cmm = model.modulator.config
        guard grid.count == cmm.numGrids * cmm.visionDim else {
            throw FireboltError("image grid has \(grid.count) values, expected \(cmm.numGrids) × \(cmm.visionDim)")
        }
        grid.withUnsafeBufferPointer { modulator.setImage(grid: $0.baseAddress!) }
        hasImage = true
    }

    /// Forget the sequence (the image stays).
    public func reset() {
        decoder.reset()
        modulator.reset()
        modulatorSeconds = 0
    }

    /// One token for each of `sessions` (distinct sessions of this model; this one may be among them) in one pass
    /// through the decoder (`LFM2Session.decodeTogether`): each token through its own session's modulator, then all
    /// rows through the layers at once. Session r's logits go to `logits + r × vocab`.
    public func decodeTogether(_ sessions: [FireboltVLSession], tokens: [Int32], logits: UnsafeMutablePointer<Float>) throws {
        guard sessions.count == tokens.count else { throw FireboltError("\(sessions.count) sessions but \(tokens.count) tokens") }
        try model.decoder.checkTokens(tokens)
        for s in sessions where s.model !== model { throw FireboltError("sessions of different models cannot decode together") }
        let h = model.config.text.hiddenSize
        try decoder.decodeTogether(sessions.map(\.decoder), logits: logits) { rows in
            for r in 0..<sessions.count { model.decoder.embed(tokens[r], into: rows + r * h) }
            // Each run of consecutive sessions with an image goes through the modulator at once (one read of its
            // weights for the run; a step is usually one run).
            var r = 0
            while r < sessions.count {
                guard sessions[r].hasImage else { r += 1; continue }
                var end = r + 1
                while end < sessions.count && sessions[end].hasImage { end += 1 }
                let clock = Date()
                try modulator.forwardTogether(sessions[r..<end].map(\.modulator), textEmbeddings: rows + r * h, output: rows + r * h)
                let seconds = Date().timeIntervalSince(clock) / Double(end - r)
                for s in sessions[r..<end] { s.modulatorSeconds += seconds }
                r = end
            }
        }
    }

    /// Token ids at positions position..<position+count: embed → modulator (with an image) → decoder, in the
    /// decoder's chunks (its one loop). Writes the last token's logits to `lastLogits` and every token's to
    /// `allLogits` (count × vocab) when given.
    public func forward(tokens: [Int32], lastLogits: UnsafeMutablePointer<Float>?, allLogits: UnsafeMutablePointer<Float>? = nil) throws {
        let h = model.config.text.hiddenSize
        try model.decoder.checkTokens(tokens)
        try decoder.forward(count: tokens.count, lastLogits: lastLogits, allLogits: allLogits) { start, t, rows in
            for r in 0..<t { model.decoder.embed(tokens[start + r], into: rows + r * h) }
            if hasImage {
                let clock = Date()
                try modulator.forward(textEmbeddings: rows, count: t, output: rows)
                modulatorSeconds += Date().timeIntervalSince(clock)
            }
        }
    }
}
