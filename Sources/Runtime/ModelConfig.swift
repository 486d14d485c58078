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
        try require(vocabSize > 0 && hiddenSize > 0 && intermediateSize > 0 && numHiddenLayers > 0, "sizes must be positive")
        try require(layerTypes.count == numHiddenLayers, "layer_types has \(layerTypes.count) entries for \(numHiddenLayers) layers")
        try require(layerTypes.allSatisfy { $0 == "conv" || $0 == "attention" }, "layer_types entries must be conv or attention")
        try require(numAttentionHeads > 0 && numKeyValueHeads > 0 && numAttentionHeads % numKeyValueHeads == 0,
                    "num_attention_heads (\(numAttentionHeads)) must be a multiple of num_key_value_heads (\(numKeyValueHeads))")
        try require(headDim > 0 && headDim % 2 == 0, "head_dim must be positive and even")
        try require(convKernelSize >= 1, "conv_kernel_size must be positive")
    }
}

/// SigLIP vision tower (transformers `SiglipVisionModel`, with the attention-pooling head).
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

    enum CodingKeys: String, CodingKey {
        case hiddenSize = "hidden_size", intermediateSize = "intermediate_size", numHiddenLayers = "num_hidden_layers"
        case numAttentionHeads = "num_attention_heads", numChannels = "num_channels", imageSize = "image_size"
        case patchSize = "patch_size", layerNormEps = "layer_norm_eps", hiddenAct = "hidden_act"
    }

    public init(hiddenSize: Int, intermediateSize: Int, numHiddenLayers: Int, numAttentionHeads: Int,
                numChannels: Int = 3, imageSize: Int, patchSize: Int, layerNormEps: Float = 1e-6,
                hiddenAct: String = "gelu_pytorch_tanh") {
        self.hiddenSize = hiddenSize; self.intermediateSize = intermediateSize; self.numHiddenLayers = numHiddenLayers
        self.numAttentionHeads = numAttentionHeads; self.numChannels = numChannels; self.imageSize = imageSize
        self.patchSize = patchSize; self.layerNormEps = layerNormEps; self.hiddenAct = hiddenAct
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
    /// "fireboltlm" (vision + CMM + LFM2) or "lfm2" (text only).
    public var architecture: String
    public var text: LFM2Config
    public var vision: VisionConfig?
    public var cmm: CMMConfig?
    public var specialTokens: SpecialTokens

    enum CodingKeys: String, CodingKey {
        case architecture, text, vision, cmm, specialTokens = "special_tokens"
    }

    public init(architecture: String, text: LFM2Config, vision: VisionConfig?, cmm: CMMConfig?, specialTokens: SpecialTokens) {
        self.architecture = architecture; self.text = text; self.vision = vision; self.cmm = cmm
        self.specialTokens = specialTokens
    }

    public var hasVision: Bool { vision != nil && cmm != nil }
}
