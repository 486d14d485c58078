import Foundation
import Kernels

// LFM2-VL (transformers `Lfm2VlForConditionalGeneration`): the image → LFM2VLImageProcessor (tiles and a thumbnail,
// or one resized image; patches) → SigLIP2 NaFlex tower (SigLIPVisionTower, post-layernorm patch features) → per
// image, pixel unshuffle (each downsample_factor² block of patches concatenated, row by row, into one token) →
// projector (LayerNorm, linear_1, GELU, linear_2) → one row per image token. The prompt's `<image>` is expanded to
// the layout's placeholder (markers and image tokens); at each image token the decoder's input is the next feature
// row instead of the token's embedding (transformers' masked_scatter); everything else is plain LFM2.

/// The tower, the projector and the decoder, with the processor settings the model was trained with.
public final class LFM2VLModel {
    public let config: ModelConfig
    public let processor: LFM2VLProcessorConfig
    public let projectorConfig: ProjectorConfig
    public let vision: SigLIPVisionTower
    public let decoder: LFM2Model
    public let imageTokenId: Int32

    struct Projector {
        let normWeight: [Float]?, normBias: [Float]?
        let linear1: fb_matrix, bias1: [Float]
        let linear2: fb_matrix, bias2: [Float]
    }
    let projector: Projector
    let parallel: Parallel

    public init(weights: WeightStore, config: ModelConfig, threads: Int) throws {
        guard config.isLFM2VL, let visionConfig = config.vision, let p = config.projector, let processor = config.imageProcessor,
              let image = config.specialTokens.image else {
            throw FireboltError("the model is not an LFM2-VL model (architecture \(config.architecture))")
        }
        self.config = config
        self.processor = processor
        projectorConfig = p
        imageTokenId = image
        parallel = Parallel(threads: threads)
        vision = try SigLIPVisionTower(weights: weights, config: visionConfig, threads: threads)
        decoder = try LFM2Model(weights: weights, config: config.text)
        let m = "multi_modal_projector."
        var normWeight: [Float]? = nil, normBias: [Float]? = nil
        if p.useLayerNorm {
            normWeight = try weights.floats(m + "layer_norm.weight", shape: [p.inputSize])
            normBias = try weights.floats(m + "layer_norm.bias", shape: [p.inputSize])
        }
        projector = Projector(
            normWeight: normWeight, normBias: normBias,
            linear1: try weights.matrix(m + "linear_1.weight", rows: p.hiddenSize, cols: p.inputSize),
            bias1: try weights.floats(m + "linear_1.bias", shape: [p.hiddenSize]),
            linear2: try weights.matrix(m + "linear_2.weight", rows: p.outputSize, cols: p.hiddenSize),
            bias2: try weights.floats(m + "linear_2.bias", shape: [p.outputSize]))
    }

    /// The image through the processor, the tower and the projector: one row (decoder width) per image token, in
    /// the order the placeholder's image tokens take them, with the layout the prompt needs.
    public func encode(image: RGBImage) throws -> EncodedImage {
        var clock = Date()
        let (layout, images) = try LFM2VLImageProcessor.process(image, config: processor)
        let preprocessMs = Date().timeIntervalSince(clock) * 1000
        clock = Date()
        let features = try encode(patchedImages: images)
        guard features.count == layout.imageTokens * projectorConfig.outputSize else {
            throw FireboltError("the image gives \(features.count / projectorConfig.outputSize) feature rows but its layout has \(layout.imageTokens) image tokens")
        }
        var encoded = EncodedImage(grid: [], width: image.width, height: image.height, decodeMs: 0, preprocessMs: preprocessMs,
                                   visionMs: Date().timeIntervalSince(clock) * 1000)
        encoded.features = features
        encoded.layout = layout
        return encoded
    }

    /// Processor output (already cut into patches, e.g. transformers' pixel_values) → projected features, images in order.
    public func encode(patchedImages images: [LFM2VLPatchedImage]) throws -> [Float] {
        let d = vision.config.hiddenSize, f = projectorConfig.downsampleFactor
        for image in images where image.patchRows % f != 0 || image.patchCols % f != 0 {
            throw FireboltError("an image of \(image.patchRows)×\(image.patchCols) patches cannot be downsampled by \(f)")
        }
        var patchFeatures = [Float](repeating: 0, count: images.map { $0.patchRows * $0.patchCols }.reduce(0, +) * d)
        patchFeatures.withUnsafeMutableBufferPointer { vision.features(images: images, into: $0.baseAddress!) }
        // Pixel unshuffle: token (i, j) of an image = patches (f·i + a, f·j + b), a then b, each d wide.
        let tokens = images.map { ($0.patchRows / f) * ($0.patchCols / f) }.reduce(0, +)
        var unshuffled = [Float](repeating: 0, count: tokens * f * f * d)
        var start = 0, row = 0
        for image in images {
            let cols = image.patchCols
            for i in 0..<image.patchRows / f {
                for j in 0..<cols / f {
                    for a in 0..<f {
                        for b in 0..<f {
                            let src = (start + (f * i + a) * cols + f * j + b) * d
                            let dst = (row * f * f + a * f + b) * d
                            unshuffled.replaceSubrange(dst..<dst + d, with: patchFeatures[src..<src + d])
                        }
                    }
                    row += 1
                }
            }
            start += image.patchRows * cols
        }
        return project(unshuffled, rows: tokens)
    }

    /// linear_2(gelu(linear_1(layer_norm(x)))) for `rows` rows of the unshuffled features.
    func project(_ x: [Float], rows: Int) -> [Float] {
        let p = projectorConfig
        var input = x
        if let w = projector.normWeight, let b = projector.normBias {
            x.withUnsafeBufferPointer { src in
                input.withUnsafeMutableBufferPointer { dst in
                    for r in 0..<rows {
                        fb_layernorm(src.baseAddress! + r * p.inputSize, w, b, dst.baseAddress! + r * p.inputSize, p.inputSize, p.layerNormEps)
                    }
                }
            }
        }
        var hidden = [Float](repeating: 0, count: rows * p.hiddenSize)
        var out = [Float](repeating: 0, count: rows * p.outputSize)
        input.withUnsafeBufferPointer { xin in
            hidden.withUnsafeMutableBufferPointer { h in
                parallel.matmul(projector.linear1, xin.baseAddress!, rows, h.baseAddress!)
                fb_add_bias(h.baseAddress!, projector.bias1, rows, p.hiddenSize)
                fb_gelu_erf(h.baseAddress!, rows * p.hiddenSize)
                out.withUnsafeMutableBufferPointer { o in
                    parallel.matmul(projector.linear2, h.baseAddress!, rows, o.baseAddress!)
                    fb_add_bias(o.baseAddress!, projector.bias2, rows, p.outputSize)
                }
            }
        }
        return out
    }

    /// The token ids `<image>` expands to for `layout`, from the tokenizer's marker tokens.
    public func placeholderIds(_ layout: LFM2VLImageLayout, tokenizer: Tokenizer) throws -> [Int32] {
        try layout.placeholderIds(tokenizer: tokenizer, imageToken: imageTokenId)
    }
}

/// One LFM2-VL sequence: the decoder's caches and the current image's feature rows. Image tokens in the input take
/// the next unused feature row (in order, counted from the sequence's start); once all are used, image tokens are
/// plain embeddings again (as in transformers, where only the prompt's placeholders are replaced).
public final class LFM2VLSession {
    public let model: LFM2VLModel
    public let decoder: LFM2Session
    private var features: [Float] = []
    private var used = 0

    public var position: Int { decoder.position }
    public var contextLength: Int { decoder.contextLength }

    public init(model: LFM2VLModel, contextLength: Int, maxBatch: Int = 64, threads: Int, kvCache: KVCacheType = .default) {
        self.model = model
        decoder = LFM2Session(model: model.decoder, contextLength: contextLength, maxBatch: maxBatch, threads: threads,
                              kvCache: kvCache)
    }

    /// The image's projected features (rows of the decoder's width), or nil for text only. Resets the sequence.
    public func setImage(features: [Float]?) throws {
        let h = model.config.text.hiddenSize
        if let features, features.count % h != 0 {
            throw FireboltError("image features of \(features.count) values are not rows of \(h)")
        }
        self.features = features ?? []
        reset()
    }

    public func reset() {
        decoder.reset()
        used = 0
    }

    public func forward(tokens: [Int32], lastLogits: UnsafeMutablePointer<Float>?, allLogits: UnsafeMutablePointer<Float>? = nil) throws {
        let h = model.config.text.hiddenSize, rows = features.count / h, image = model.imageTokenId
        try model.decoder.checkTokens(tokens)
        let wanted = tokens.lazy.filter { $0 == image }.count
        if wanted > 0 && used < rows && wanted > rows - used {
            throw FireboltError("the prompt has \(wanted) image tokens but the image gives \(rows - used) feature rows")
        }
        try decoder.forward(count: tokens.count, lastLogits: lastLogits, allLogits: allLogits) { start, t, destination in
            for r in 0..<t {
                let token = tokens[start + r]
                if token == image && used < rows {
                    features.withUnsafeBufferPointer { _ = memcpy(destination + r * h, $0.baseAddress! + used * h, h * 4) }
                    used += 1
                } else {
                    model.decoder.embed(token, into: destination + r * h)
                }
            }
        }
    }
}

extension LFM2VLSession: SequenceSession {
    /// Generated tokens are plain embeddings (the image's rows go in with the prompt), so the sessions decode together
    /// as LFM2 sessions do.
    public func decodeTogether(_ sessions: [SequenceSession], tokens: [Int32], logits: UnsafeMutablePointer<Float>) throws {
        let sequences = try sessions.map { s -> LFM2VLSession in
            guard let s = s as? LFM2VLSession, s.model === model else {
                throw FireboltError("sessions of different kinds or models cannot decode together")
            }
            return s
        }
        try decoder.decodeTogether(sequences.map { $0.decoder as SequenceSession }, tokens: tokens, logits: logits)
    }
}
