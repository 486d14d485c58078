import Foundation

// The model configuration as the .fbm header stores it: every dimension the runtime needs, already resolved by
// the converter (no defaults are guessed at run time). Keys are snake_case in the file (formats/fbm.md).

/// LFM2 decoder (transformers `Lfm2ForCausalLM`).
public struct LFM2Config: Codable, Equatable {
    public var vocabSize: Int
    public var hiddenSize: Int
    /// The real MLP width, taken from the weight shapes (not the config's `intermediate_size`).
    public var intermediateSize: Int
    public var numHiddenLayers: Int
    public var numAttentionHeads: Int
    public var numKeyValueHeads: Int
    public var headDim: Int
    /// One entry per layer: "conv" or "attention".
    public var layerTypes: [String]
    public var convKernelSize: Int
    public var normEps: Float
    public var ropeTheta: Double
    public var maxPositionEmbeddings: Int

    enum CodingKeys: String, CodingKey {
        case vocabSize = "vocab_size", hiddenSize = "hidden_size", intermediateSize = "intermediate_size"
        case numHiddenLayers = "num_hidden_layers", numAttentionHeads = "num_attention_heads"
        case numKeyValueHeads = "num_key_value_heads", headDim = "head_dim", layerTypes = "layer_types"
        case convKernelSize = "conv_kernel_size", normEps = "norm_eps", ropeTheta = "rope_theta"
        case maxPositionEmbeddings = "max_position_embeddings"
    }

    public init(vocabSize: Int, hiddenSize: Int, intermediateSize: Int, numHiddenLayers: Int, numAttentionHeads: Int,
                numKeyValueHeads: Int, headDim: Int, layerTypes: [String], convKernelSize: Int = 3,
                normEps: Float = 1e-5, ropeTheta: Double = 1_000_000, maxPositionEmbeddings: Int = 128_000) {
        self.vocabSize = vocabSize; self.hiddenSize = hiddenSize; self.intermediateSize = intermediateSize
        self.numHiddenLayers = numHiddenLayers; self.numAttentionHeads = numAttentionHeads
        self.numKeyValueHeads = numKeyValueHeads; self.headDim = headDim; self.layerTypes = layerTypes
        self.convKernelSize = convKernelSize; self.normEps = normEps; self.ropeTheta = ropeTheta
        self.maxPositionEmbeddings = maxPositionEmbeddings
    }

    public func isAttention(layer: Int) -> Bool { layerTypes[layer] == "attention" }

    /// Checks the relations the runtime relies on; the message names the offending field.
    public func validate() throws {
        func require(_ ok: Bool, _ what: String) throws { if !ok { throw FireboltError("invalid text config: \(what)") } }
        for (name, value) in [("vocab_size", vocabSize), ("hidden_size", hiddenSize), ("intermediate_size", intermediateSize),
                              ("num_hidden_layers", numHiddenLayers)] {
            try require(value > 0, "\(name) is \(value); sizes must be positive")
        }
        try require(layerTypes.count == numHiddenLayers, "layer_types has \(layerTypes.count) entries for \(numHiddenLayers) layers")
        try require(layerTypes.allSatisfy { $0 == "conv" || $0 == "attention" }, "layer_types entries must be conv or attention")
        try require(numAttentionHeads > 0 && numKeyValueHeads > 0 && numAttentionHeads % numKeyValueHeads == 0,
                    "num_attention_heads (\(numAttentionHeads)) must be a multiple of num_key_value_heads (\(numKeyValueHeads))")
        try require(headDim > 0 && headDim % 2 == 0, "head_dim must be positive and even")
        try require(convKernelSize >= 1, "conv_kernel_size must be positive")
        try require(normEps.isFinite && normEps > 0, "norm_eps must be positive and finite (\(normEps))")
        try require(ropeTheta.isFinite && ropeTheta > 0, "rope_theta must be positive and finite")
        let limit = ModelConfig.sizeLimit
        try require(vocabSize <= 1 << 24 && hiddenSize <= limit && intermediateSize <= limit && numHiddenLayers <= 1024 &&
                    numAttentionHeads <= 1024 && headDim <= 4096, "a size is beyond what any model has")
    }
}

/// SigLIP vision tower (transformers `SiglipVisionModel`, with the attention-pooling head), or for LFM2-VL the
/// SigLIP2 NaFlex tower (`Siglip2VisionModel`: patches of any grid, position table resized to it, no head).
public struct VisionConfig: Codable, Equatable {
    public var hiddenSize: Int
    public var intermediateSize: Int
    public var numHiddenLayers: Int
    public var numAttentionHeads: Int
    public var numChannels: Int
    public var imageSize: Int
    public var patchSize: Int
    public var layerNormEps: Float
    public var hiddenAct: String
    /// nil: SigLIP (square views, conv patch weights [c][y][x], bicubic position table, pooling head);
    /// "siglip2_naflex": patch weights over (y, x, c), the table resized bilinearly (antialiased) to each image's
    /// grid, the post-layernorm patch features as output. `imageSize` is then the table's side × patch.
    public var variant: String?

    enum CodingKeys: String, CodingKey {
        case hiddenSize = "hidden_size", intermediateSize = "intermediate_size", numHiddenLayers = "num_hidden_layers"
        case numAttentionHeads = "num_attention_heads", numChannels = "num_channels", imageSize = "image_size"
        case patchSize = "patch_size", layerNormEps = "layer_norm_eps", hiddenAct = "hidden_act", variant
    }

    public static let naflex = "siglip2_naflex"
    public var isNaFlex: Bool { variant == Self.naflex }

    public init(hiddenSize: Int, intermediateSize: Int, numHiddenLayers: Int, numAttentionHeads: Int,
                numChannels: Int = 3, imageSize: Int, patchSize: Int, layerNormEps: Float = 1e-6,
                hiddenAct: String = "gelu_pytorch_tanh", variant: String? = nil) {
        self.hiddenSize = hiddenSize; self.intermediateSize = intermediateSize; self.numHiddenLayers = numHiddenLayers
        self.numAttentionHeads = numAttentionHeads; self.numChannels = numChannels; self.imageSize = imageSize
        self.patchSize = patchSize; self.layerNormEps = layerNormEps; self.hiddenAct = hiddenAct; self.variant = variant
    }
}

/// LFM2-VL's projector: pixel unshuffle (each `downsample_factor`² block of patch features concatenated, row by row),
/// LayerNorm (when `use_layer_norm`), linear_1, GELU (exact), linear_2 to the decoder's width.
public struct ProjectorConfig: Codable, Equatable {
    public var inputSize: Int
    public var hiddenSize: Int
    public var outputSize: Int
    public var downsampleFactor: Int
    public var useLayerNorm: Bool
    public var layerNormEps: Float

    enum CodingKeys: String, CodingKey {
        case inputSize = "input_size", hiddenSize = "hidden_size", outputSize = "output_size"
        case downsampleFactor = "downsample_factor", useLayerNorm = "use_layer_norm", layerNormEps = "layer_norm_eps"
    }

    public init(inputSize: Int, hiddenSize: Int, outputSize: Int, downsampleFactor: Int, useLayerNorm: Bool,
                layerNormEps: Float = 1e-5) {
        self.inputSize = inputSize; self.hiddenSize = hiddenSize; self.outputSize = outputSize
        self.downsampleFactor = downsampleFactor; self.useLayerNorm = useLayerNorm; self.layerNormEps = layerNormEps
    }
}

/// The Cross-Modal Modulator (`TokenGridCorrFiLMS4`) and its S4 block.
public struct CMMConfig: Codable, Equatable {
    public var textDim: Int
    public var visionDim: Int
    public var numHeads: Int
    public var headDim: Int
    public var topK: Int
    public var numGrids: Int
    public var ffnDim: Int
    /// S4 FIR taps per channel (the stored `l_kernel`, 512 in released checkpoints).
    public var s4Taps: Int
    public var layerNormEps: Float

    enum CodingKeys: String, CodingKey {
        case textDim = "text_dim", visionDim = "vision_dim", numHeads = "num_heads", headDim = "head_dim"
        case topK = "top_k", numGrids = "num_grids", ffnDim = "ffn_dim", s4Taps = "s4_taps"
        case layerNormEps = "layer_norm_eps"
    }

    public init(textDim: Int, visionDim: Int, numHeads: Int = 4, headDim: Int = 32, topK: Int = 4, numGrids: Int = 5,
                ffnDim: Int, s4Taps: Int, layerNormEps: Float = 1e-5) {
        self.textDim = textDim; self.visionDim = visionDim; self.numHeads = numHeads; self.headDim = headDim
        self.topK = topK; self.numGrids = numGrids; self.ffnDim = ffnDim; self.s4Taps = s4Taps
        self.layerNormEps = layerNormEps
    }
}

/// SigLIP image preprocessing, from `preprocessor_config.json`.
public struct PreprocessorConfig: Codable, Equatable {
    public var width: Int
    public var height: Int
    /// PIL resample filter: 2 bilinear, 3 bicubic.
    public var resample: Int
    public var rescaleFactor: Double
    public var imageMean: [Double]
    public var imageStd: [Double]
    public var doResize: Bool
    public var doRescale: Bool
    public var doNormalize: Bool

    enum CodingKeys: String, CodingKey {
        case width, height, resample, rescaleFactor = "rescale_factor", imageMean = "image_mean", imageStd = "image_std"
        case doResize = "do_resize", doRescale = "do_rescale", doNormalize = "do_normalize"
    }

    public static let siglipDefault = PreprocessorConfig(width: 256, height: 256, resample: 2, rescaleFactor: 1.0 / 255,
                                                         imageMean: [0.5, 0.5, 0.5], imageStd: [0.5, 0.5, 0.5],
                                                         doResize: true, doRescale: true, doNormalize: true)

    /// The same settings at `size` × `size`.
    public func resized(to size: Int) -> PreprocessorConfig {
        var copy = self
        copy.width = size
        copy.height = size
        return copy
    }
}

/// Token ids the runtime needs to know by role.
public struct SpecialTokens: Codable, Equatable {
    public var bos: Int32?
    public var eos: [Int32]
    public var pad: Int32?
    public var image: Int32?

    public init(bos: Int32?, eos: [Int32], pad: Int32?, image: Int32?) {
        self.bos = bos; self.eos = eos; self.pad = pad; self.image = image
    }
}

/// Everything about the model in one value: the `config` object of the .fbm header.
public struct ModelConfig: Codable, Equatable {
    /// "fireboltlm" (vision + CMM + LFM2), "lfm2_vl" (SigLIP2 NaFlex + projector + LFM2) or "lfm2" (text only).
    public var architecture: String
    public var text: LFM2Config
    public var vision: VisionConfig?
    public var cmm: CMMConfig?
    /// LFM2-VL only: the projector and the image processor's settings.
    public var projector: ProjectorConfig?
    public var imageProcessor: LFM2VLProcessorConfig?
    public var specialTokens: SpecialTokens

    enum CodingKeys: String, CodingKey {
        case architecture, text, vision, cmm, projector, imageProcessor = "image_processor", specialTokens = "special_tokens"
    }

    public init(architecture: String, text: LFM2Config, vision: VisionConfig?, cmm: CMMConfig?,
                projector: ProjectorConfig? = nil, imageProcessor: LFM2VLProcessorConfig? = nil, specialTokens: SpecialTokens) {
        self.architecture = architecture; self.text = text; self.vision = vision; self.cmm = cmm
        self.projector = projector; self.imageProcessor = imageProcessor
        self.specialTokens = specialTokens
    }

    /// Firebolt-VL's image path (vision tower + CMM).
    public var hasVision: Bool { vision != nil && cmm != nil }
    /// LFM2-VL's image path (NaFlex tower + projector, features in place of the image tokens).
    public var isLFM2VL: Bool { architecture == "lfm2_vl" }
    /// Takes images at all.
    public var takesImages: Bool { hasVision || isLFM2VL }

    /// Every number the runtime sizes buffers or indexes with, checked before anything is allocated: a forged
    /// or mistaken header (negative heads, a 30000-pixel image, a token id past the vocabulary) is an error
    /// naming the field, never a crash. The converter runs the same checks, so it refuses what cannot run.
    public func validate() throws {
        try text.validate()
        let vocab = text.vocabSize
        func require(_ ok: Bool, _ what: String) throws { if !ok { throw FireboltError("invalid config: \(what)") } }
        let ids = [specialTokens.bos, specialTokens.pad, specialTokens.image].compactMap { $0 } + specialTokens.eos
        for id in ids { try require(id >= 0 && Int(id) < vocab, "special token id \(id) is outside the vocabulary of \(vocab)") }
        try require(["lfm2", "fireboltlm", "lfm2_vl"].contains(architecture), "unknown architecture '\(architecture)'")
        if architecture == "lfm2_vl" {
            guard let vision, let projector, let imageProcessor, vision.isNaFlex else {
                throw FireboltError("invalid config: an lfm2_vl model needs a siglip2_naflex vision section, a projector and an image processor")
            }
            try vision.validate()
            if let problem = imageProcessor.unsupported() { throw FireboltError("invalid config: image processor: \(problem)") }
            let f = projector.downsampleFactor
            try require(f >= 1 && f == imageProcessor.downsampleFactor && projector.inputSize == vision.hiddenSize * f * f,
                        "projector input \(projector.inputSize) must be the vision width \(vision.hiddenSize) × downsample factor² (\(f))")
            try require(projector.outputSize == text.hiddenSize && projector.hiddenSize > 0 && projector.hiddenSize <= ModelConfig.sizeLimit,
                        "projector sizes (hidden \(projector.hiddenSize), output \(projector.outputSize) for a decoder of \(text.hiddenSize))")
            try require(imageProcessor.encoderPatchSize == vision.patchSize, "image processor encoder_patch_size \(imageProcessor.encoderPatchSize) ≠ vision patch_size \(vision.patchSize)")
            try require(specialTokens.image != nil, "an lfm2_vl model needs the image token id")
            return
        }
        guard architecture == "fireboltlm" else { return }
        guard let vision, let cmm else { throw FireboltError("invalid config: a fireboltlm model needs vision and cmm sections") }
        try vision.validate()
        let limit = ModelConfig.sizeLimit
        try require(cmm.textDim == text.hiddenSize && cmm.visionDim == vision.hiddenSize,
                    "cmm text_dim / vision_dim (\(cmm.textDim) / \(cmm.visionDim)) must match the decoder and the vision tower")
        try require(cmm.numHeads > 0 && cmm.headDim > 0 && cmm.numHeads <= 64 && cmm.headDim <= 1024, "cmm heads / head_dim out of range")
        try require(cmm.numGrids == 5 && cmm.topK >= 1 && cmm.topK <= cmm.numGrids, "cmm needs 5 views and 1 <= top_k <= 5")
        try require(cmm.ffnDim > 0 && cmm.ffnDim <= limit, "cmm ffn_dim out of range")
        try require(cmm.s4Taps >= 1 && cmm.s4Taps <= 8192, "cmm s4_taps must be 1...8192 (released: 512)")
        try require(cmm.layerNormEps.isFinite && cmm.layerNormEps > 0, "cmm layer_norm_eps must be positive")
    }

    /// The largest width of any layer the runtime accepts (far above every released size).
    public static let sizeLimit = 1 << 16
}

extension VisionConfig {
    public func validate() throws {
        func require(_ ok: Bool, _ what: String) throws { if !ok { throw FireboltError("invalid vision config: \(what)") } }
        let limit = ModelConfig.sizeLimit
        try require(hiddenSize > 0 && hiddenSize <= limit && intermediateSize > 0 && intermediateSize <= limit,
                    "hidden_size / intermediate_size out of range")
        try require(numHiddenLayers > 0 && numHiddenLayers <= 1024, "num_hidden_layers out of range")
        try require(numAttentionHeads > 0 && hiddenSize % numAttentionHeads == 0,
                    "hidden_size (\(hiddenSize)) must be a multiple of num_attention_heads (\(numAttentionHeads))")
        try require(numChannels == 3, "num_channels must be 3")
        if isNaFlex {
            try require(patchSize > 0 && patchSize <= 64 && imageSize % patchSize == 0 && imageSize / patchSize <= 256,
                        "patch_size \(patchSize) / position table side \(imageSize / max(patchSize, 1))")
        } else {
            try require(variant == nil, "unknown vision variant '\(variant ?? "")'")
            try require(imageSize == 256 && patchSize > 0 && 128 % patchSize == 0,
                        "image_size \(imageSize) / patch_size \(patchSize): the five views need a 256-pixel image and patches that divide 128")
        }
        try require(layerNormEps.isFinite && layerNormEps > 0, "layer_norm_eps must be positive")
        try require(["gelu_pytorch_tanh", "gelu_new", "gelu_fast", "gelu"].contains(hiddenAct),
                    "hidden_act '\(hiddenAct)' is not supported (gelu_pytorch_tanh or gelu)")
    }
}

extension PreprocessorConfig {
    /// The views are cut from an image of the vision tower's own size: anything else cannot run.
    public func validate(imageSize: Int) throws {
        func require(_ ok: Bool, _ what: String) throws { if !ok { throw FireboltError("invalid preprocessor config: \(what)") } }
        try require(width == imageSize && height == imageSize,
                    "size \(width)x\(height): the model's five views need \(imageSize)x\(imageSize)")
        try require(resample == 2 || resample == 3, "resample \(resample) (2 bilinear, 3 bicubic)")
        try require(rescaleFactor.isFinite && imageMean.count == 3 && imageStd.count == 3 &&
                    imageMean.allSatisfy(\.isFinite) && imageStd.allSatisfy { $0.isFinite && $0 != 0 },
                    "rescale_factor, image_mean and image_std must be finite, the std non-zero, 3 channels")
    }
}
