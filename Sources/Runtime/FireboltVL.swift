import Foundation
import Kernels

// Firebolt-VL end to end (docs/model.md): image views → SigLIP → grid X_v; token ids → LFM2 embed_tokens →
// Cross-Modal Modulator (causal, incremental) → LFM2 decoder as inputs_embeds → logits. Every token, generated
// ones included, passes through the modulator before the decoder. Without an image the reference skips the
// modulator entirely (plain LFM2 on the token embeddings).

/// The three parts' weights.
public final class FireboltVLModel {
    public let config: ModelConfig
    public let vision: SigLIPVisionTower
    public let modulator: CrossModalModulator
    public let decoder: LFM2Model

    public init(weights: WeightStore, config: ModelConfig, threads: Int) throws {
        guard let visionConfig = config.vision, let cmmConfig = config.cmm else {
            throw FireboltError("the model has no vision tower / cross-modal modulator (architecture \(config.architecture))")
        }
        guard cmmConfig.textDim == config.text.hiddenSize, cmmConfig.visionDim == visionConfig.hiddenSize else {
            throw FireboltError("CMM sizes (text \(cmmConfig.textDim), vision \(cmmConfig.visionDim)) do not match the decoder (\(config.text.hiddenSize)) and vision tower (\(visionConfig.hiddenSize))")
        }
        self.config = config
        vision = try SigLIPVisionTower(weights: weights, config: visionConfig, threads: threads)
        modulator = try CrossModalModulator(weights: weights, config: cmmConfig)
        decoder = try LFM2Model(weights: weights, config: config.text)
    }

    /// The grid X_v (views.count × vision hidden, in the views' order) from views [C, S, S] each.
    public func encodeImage(views: [[Float]]) -> [Float] {
        vision.pooled(views: views).flatMap { $0 }
    }

    /// The grid from one preprocessed image [C, size, size] (size = the vision image size): global view + tiles.
    public func encodeImage(pixelValues: [Float]) -> [Float] {
        encodeImage(views: SiglipPreprocessor.views(pixelValues, size: vision.config.imageSize))
    }
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
    private let embeddings: FloatBuffer  // [maxBatch × Dt]

    public var position: Int { decoder.position }
    public var contextLength: Int { decoder.contextLength }

    public init(model: FireboltVLModel, contextLength: Int, maxBatch: Int = 64, threads: Int, kvCache: KVCacheType = .default) {
        self.model = model
        decoder = LFM2Session(model: model.decoder, contextLength: contextLength, maxBatch: maxBatch, threads: threads,
                              kvCache: kvCache)
        modulator = CMMSession(modulator: model.modulator, maxBatch: maxBatch, threads: threads)
        embeddings = FloatBuffer(count: max(1, maxBatch) * model.config.text.hiddenSize)
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

    /// Token ids at positions position..<position+count: embed → modulator (with an image) → decoder.
    /// Writes the last token's logits to `lastLogits` and every token's to `allLogits` (count × vocab) when given.
    public func forward(tokens: [Int32], lastLogits: UnsafeMutablePointer<Float>?, allLogits: UnsafeMutablePointer<Float>? = nil) throws {
        let c = model.config.text, h = c.hiddenSize, vocab = c.vocabSize
        try model.decoder.checkTokens(tokens)
        guard !tokens.isEmpty else { return }
        guard decoder.position + tokens.count <= decoder.contextLength else {
            throw FireboltError("the sequence needs \(decoder.position + tokens.count) positions but the context holds \(decoder.contextLength) (use --ctx)")
        }
        var done = 0
        while done < tokens.count {
            let t = min(decoder.maxBatch, tokens.count - done)
            for r in 0..<t { model.decoder.embed(tokens[done + r], into: embeddings.pointer + r * h) }
            if hasImage {
                let clock = Date()
                try modulator.forward(textEmbeddings: embeddings.pointer, count: t, output: embeddings.pointer)
                modulatorSeconds += Date().timeIntervalSince(clock)
            }
            let last = done + t == tokens.count
            try decoder.forward(embeddings: embeddings.pointer, count: t, lastLogits: last ? lastLogits : nil,
                                allLogits: allLogits.map { $0 + done * vocab })
            done += t
        }
    }
}
