import Foundation
import Runtime

/// Which part of the model a tensor belongs to (for the summary and for `--vision-bits`).
public enum ModelPart: String, CaseIterable {
    case embeddings, decoder, vision, cmm
}

/// One tensor of the output file and where its values come from. The plan does all the renaming, reshaping,
/// splitting and precomputation ("sanitize"), so the runtime reads canonical tensors only.
public struct PlannedTensor {
    public enum Role {
        /// A weight matrix [out, in]: stored at the requested bits.
        case matrix
        /// Everything else (norms, biases, conv taps, gates, position tables, S4 taps): kept f32.
        case vector
    }

    public enum Source {
        /// The source tensor's values, reshaped to the planned shape (same element count).
        case copy(String)
        /// Rows [begin, end) of a 2-D source (or elements of a 1-D one), e.g. q/k/v out of a packed in_proj.
        case rows(String, Int, Int)
        /// The S4 FIR taps, computed from the S4 parameters in float64.
        case s4Taps(prefix: String, length: Int)
    }

    public let name: String
    public let part: ModelPart
    public let shape: [Int]
    public let role: Role
    public let source: Source
}

/// The canonical model: its config and its tensors, built from a checkpoint and checked against it.
public struct ModelPlan {
    public var config: ModelConfig
    public var tensors: [PlannedTensor]
    public var chatTemplate: String?
    public var preprocessor: PreprocessorConfig?

    // Source prefixes of the released Firebolt-VL layout (docs/model.md §5).
    static let fireboltLM = "base_lm."
    static let fireboltVision = "model.vision_encoder.encoder.model.vision_model."
    static let fireboltCMM = "model.fuser.fuser.model."
    /// Source tensors the runtime never uses.
    static let droppedPrefixes = [
        "model.vision_encoder.encoder.model.text_model.", "model.vision_encoder.encoder.model.logit_scale",
        "model.vision_encoder.encoder.model.logit_bias", "model.projector.", "model.fuser.fuser.importance.",
        "model.fuser.fuser.model.s4.layer.kernel.",
    ]

    public init(checkpoint ck: Checkpoint) throws {
        let root = JSONObject(ck.config, file: ck.folder + "/config.json")
        guard let modelType = root.string("model_type") else {
            throw FireboltError("config.json has no model_type (expected fireboltlm, lfm2_vl or lfm2)", file: ck.folder + "/config.json")
        }
        var builder = PlanBuilder(checkpoint: ck)
        let textModel: String, headName: String
        let textJSON: JSONObject
        var lfm2vl: LFM2VLLayout? = nil
        switch modelType {
        case "fireboltlm":
            if let strategy = root.string("fuse_strategy"), strategy != "cossm" {
                throw FireboltError("fuse_strategy '\(strategy)' is not supported (only cossm, the released strategy)", file: ck.folder + "/config.json")
            }
            (textModel, headName) = (Self.fireboltLM + "model.", Self.fireboltLM + "lm_head.weight")
            textJSON = root.object("text_config") ?? JSONObject([:])
        case "lfm2":
            (textModel, headName) = ("model.", "lm_head.weight")
            textJSON = root
        case "lfm2_vl":
            let layout = try LFM2VLLayout(checkpoint: ck, root: root)
            lfm2vl = layout
            (textModel, headName) = (layout.language, layout.head)
            textJSON = root.object("text_config") ?? JSONObject([:])
        default:
            throw FireboltError("unknown model_type '\(modelType)' (supported: fireboltlm, lfm2_vl, lfm2)", file: ck.folder + "/config.json")
        }

        let text = try builder.planLFM2(model: textModel, headName: headName, json: textJSON)
        var vision: VisionConfig? = nil
        var cmm: CMMConfig? = nil
        var projector: ProjectorConfig? = nil
        var imageProcessor: LFM2VLProcessorConfig? = nil
        var dropped: [String] = []
        if modelType == "fireboltlm" {
            vision = try builder.planVision(prefix: Self.fireboltVision, json: root.object("vision_config") ?? JSONObject([:]))
            cmm = try builder.planCMM(prefix: Self.fireboltCMM, textDim: text.hiddenSize, visionDim: vision!.hiddenSize)
            dropped = Self.droppedPrefixes
        }
        if let layout = lfm2vl {
            let visionJSON = root.object("vision_config") ?? JSONObject([:])
            let planned = try builder.planNaFlexVision(prefix: layout.vision, json: visionJSON, droppedLayers: layout.droppedLayers)
            vision = planned.config
            dropped = planned.dropped
            if let settings = ck.preprocessorConfig {
                imageProcessor = try LFM2VLLayout.processor(settings, file: ck.folder + "/preprocessor_config.json")
            } else {
                imageProcessor = try LFM2VLLayout.processor(ck.processorConfig?["image_processor"] as? [String: Any],
                                                            file: ck.folder + "/processor_config.json")
            }
            projector = try builder.planProjector(prefix: layout.projector, root: root, visionDim: planned.config.hiddenSize,
                                                  textDim: text.hiddenSize, factor: imageProcessor!.downsampleFactor)
        }
        try builder.checkEverySourceTensorIsAccounted(dropped: dropped)

        // The runtime's own tokenizer reads the file here, so whatever it would refuse (a model type other than
        // BPE, a normalizer it lacks, bad or duplicated ids) is refused now, not after the conversion.
        let tokenizerPath = ck.folder + "/tokenizer.json"
        let tokens: Tokenizer
        do { tokens = try Tokenizer(json: Data(ck.tokenizerJSON.utf8)) } catch let error as TokenizerError {
            throw FireboltError(error.message, file: tokenizerPath)
        }
        let special = try Self.specialTokens(root: root, text: textJSON, tokenizerConfig: JSONObject(ck.tokenizerConfig, file: ck.folder + "/tokenizer_config.json"), tokens: tokens)
        config = ModelConfig(architecture: modelType, text: text, vision: vision, cmm: cmm, projector: projector,
                             imageProcessor: imageProcessor, specialTokens: special)
        tensors = builder.tensors
        chatTemplate = ck.tokenizerConfig["chat_template"] as? String ?? ck.chatTemplateFile
        if modelType == "fireboltlm" {
            preprocessor = try Self.preprocessor(ck.preprocessorConfig.map { JSONObject($0, file: ck.folder + "/preprocessor_config.json") }, imageSize: vision!.imageSize)
        }
        do { try config.validate() } catch let error as FireboltError { throw error.inFile(ck.folder + "/config.json") }
        do {
            if let vision { try preprocessor?.validate(imageSize: vision.imageSize) }
        } catch let error as FireboltError { throw error.inFile(ck.folder + "/preprocessor_config.json") }
        guard tokens.vocabularySize <= text.vocabSize else {
            throw FireboltError("tokenizer has \(tokens.vocabularySize) tokens but the embedding has only \(text.vocabSize) rows", file: tokenizerPath)
        }
    }

    private static func specialTokens(root: JSONObject, text: JSONObject, tokenizerConfig: JSONObject, tokens: Tokenizer) throws -> SpecialTokens {
        func tokenId(_ key: String) -> Int32? {
            if let name = tokenizerConfig.string(key) { return tokens.id(forToken: name) }
            if let obj = tokenizerConfig.object(key), let name = obj.string("content") { return tokens.id(forToken: name) }
            return nil
        }
        func id32(_ value: Int?, _ key: String) throws -> Int32? {
            guard let value else { return nil }
            guard let id = Int32(exactly: value), id >= 0 else { throw FireboltError("config.json: \(key) \(value) is not a token id") }
            return id
        }
        let bos = try id32(root.int("bos_token_id") ?? text.int("bos_token_id"), "bos_token_id") ?? tokenId("bos_token")
        var eos = try (root.ints("eos_token_id") ?? text.ints("eos_token_id") ?? []).map { try id32($0, "eos_token_id")! }
        if let fromTokenizer = tokenId("eos_token"), !eos.contains(fromTokenizer) { eos.append(fromTokenizer) }
        if let imEnd = tokens.id(forToken: "<|im_end|>"), !eos.contains(imEnd) { eos.append(imEnd) }
        guard !eos.isEmpty else { throw FireboltError("no end-of-sequence token: config.json has no eos_token_id and the tokenizer no <|im_end|>") }
        let pad = try id32(root.int("pad_token_id") ?? text.int("pad_token_id"), "pad_token_id") ?? tokenId("pad_token")
        let image = try id32(root.int("image_token_id") ?? root.int("image_token_index"), "image_token_id") ?? tokens.id(forToken: "<image>")
        return SpecialTokens(bos: bos, eos: eos, pad: pad, image: image)
    }

    private static func preprocessor(_ json: JSONObject?, imageSize: Int) throws -> PreprocessorConfig {
        var p = PreprocessorConfig.siglipDefault
        p.width = imageSize
        p.height = imageSize
        guard let json else { return p }
        if let size = json.object("size") {
            p.width = try size.int("width") ?? size.int("shortest_edge") ?? p.width
            p.height = try size.int("height") ?? size.int("shortest_edge") ?? p.height
        }
        p.resample = try json.int("resample") ?? p.resample
        guard p.resample == 2 || p.resample == 3 else {
            throw FireboltError("preprocessor resample \(p.resample) is not supported (2 bilinear, 3 bicubic)")
        }
        p.rescaleFactor = try json.double("rescale_factor") ?? p.rescaleFactor
        if let mean = json.values["image_mean"] as? [NSNumber], mean.count == 3 { p.imageMean = mean.map(\.doubleValue) }
        if let std = json.values["image_std"] as? [NSNumber], std.count == 3 { p.imageStd = std.map(\.doubleValue) }
        p.doResize = (json.values["do_resize"] as? Bool) ?? true
        p.doRescale = (json.values["do_rescale"] as? Bool) ?? true
        p.doNormalize = (json.values["do_normalize"] as? Bool) ?? true
        return p
    }
}

/// Accumulates planned tensors while checking every source shape.
struct PlanBuilder {
    let ck: Checkpoint
    var tensors: [PlannedTensor] = []
    var used = Set<String>()

    init(checkpoint: Checkpoint) { ck = checkpoint }

    /// The source's shape, which must equal `expected`.
    mutating func source(_ name: String, _ expected: [Int]) throws -> String {
        let shape = try ck.shape(name)
        guard shape == expected else { throw FireboltError("tensor \(name) has shape \(shape), expected \(expected)") }
        used.insert(name)
        return name
    }

    mutating func add(_ name: String, _ part: ModelPart, _ shape: [Int], _ role: PlannedTensor.Role, from source: String, sourceShape: [Int]? = nil) throws {
        let src = try self.source(source, sourceShape ?? shape)
        tensors.append(PlannedTensor(name: name, part: part, shape: shape, role: role, source: .copy(src)))
    }

    func shape(_ name: String) throws -> [Int] { try ck.shape(name) }

    /// Layer indices present under `prefix` + "N.".
    func layerIndices(_ prefix: String) -> [Int] {
        var indices = Set<Int>()
        for name in ck.tensorNames where name.hasPrefix(prefix) {
            if let n = Int(name.dropFirst(prefix.count).prefix { $0 != "." }) { indices.insert(n) }
        }
        return indices.sorted()
    }

    // MARK: LFM2

    /// `m` holds embed_tokens, layers and embedding_norm (Lfm2Model); `headName` is the (tied) lm_head's name.
    mutating func planLFM2(model m: String, headName: String, json: JSONObject) throws -> LFM2Config {
        let embedName = m + "embed_tokens.weight"
        let embedShape = try shape(embedName)
        guard embedShape.count == 2 else { throw FireboltError("tensor \(embedName) has shape \(embedShape), expected [vocab, hidden]") }
        let (vocab, hidden) = (embedShape[0], embedShape[1])
        if let v = try json.int("vocab_size"), v != vocab {
            throw FireboltError("config vocab_size \(v) does not match \(embedName) rows \(vocab)")
        }
        let layers = layerIndices(m + "layers.")
        guard !layers.isEmpty, layers == Array(0..<layers.count) else {
            throw FireboltError("decoder layers under \(m)layers. are missing or not numbered 0..<n (found \(layers))")
        }
        // Layer kinds come from the tensors; the config, in either spelling, must agree.
        let kinds = layers.map { ck.has(m + "layers.\($0).self_attn.q_proj.weight") ? "attention" : "conv" }
        if let declared = json.strings("layer_types") {
            let normalized = declared.map { $0 == "full_attention" || $0 == "attention" ? "attention" : $0 }
            guard normalized == kinds else { throw FireboltError("config layer_types \(declared) does not match the checkpoint's layers \(kinds)") }
        } else if let attentionLayers = try json.ints("full_attn_idxs") {
            guard attentionLayers.sorted() == kinds.indices.filter({ kinds[$0] == "attention" }) else {
                throw FireboltError("config full_attn_idxs \(attentionLayers) does not match the checkpoint's attention layers")
            }
        }
        if let n = try json.int("num_hidden_layers"), n != layers.count {
            throw FireboltError("config num_hidden_layers \(n) but the checkpoint has \(layers.count) layers")
        }
        let firstAttention = kinds.firstIndex(of: "attention")
        let firstConv = kinds.firstIndex(of: "conv")
        var headDim = try json.int("head_dim") ?? 0
        var heads = try json.int("num_attention_heads") ?? 0
        var kvHeads = try json.int("num_key_value_heads") ?? 0
        if let a = firstAttention {
            let lp = m + "layers.\(a).self_attn."
            headDim = try shape(lp + "q_layernorm.weight").first ?? 0
            guard headDim > 0 else { throw FireboltError("tensor \(lp)q_layernorm.weight has no length") }
            let qRows = try shape(lp + "q_proj.weight").first ?? 0
            let kRows = try shape(lp + "k_proj.weight").first ?? 0
            guard qRows % headDim == 0, kRows % headDim == 0 else {
                throw FireboltError("attention projections of layer \(a) are not multiples of head_dim \(headDim)")
            }
            if heads != 0, heads != qRows / headDim {
                throw FireboltError("config num_attention_heads \(heads) does not match q_proj rows \(qRows) / head_dim \(headDim)")
            }
            heads = qRows / headDim
            kvHeads = kRows / headDim
        } else {
            if heads == 0 { heads = 16 }
            if kvHeads == 0 { kvHeads = heads }
            if headDim == 0 { headDim = hidden / heads }
        }
        let mlpWidth = try shape(m + "layers.0.feed_forward.w1.weight").first ?? 0
        var kernelSize = try json.int("conv_L_cache") ?? 3
        if let c = firstConv { kernelSize = try shape(m + "layers.\(c).conv.conv.weight").last ?? kernelSize }
        let ropeTheta = try json.double("rope_theta") ?? json.object("rope_parameters")?.double("rope_theta") ?? 1_000_000

        let config = LFM2Config(vocabSize: vocab, hiddenSize: hidden, intermediateSize: mlpWidth, numHiddenLayers: layers.count,
                                numAttentionHeads: heads, numKeyValueHeads: kvHeads, headDim: headDim, layerTypes: kinds,
                                convKernelSize: kernelSize, normEps: Float(try json.double("norm_eps") ?? 1e-5), ropeTheta: ropeTheta,
                                maxPositionEmbeddings: try json.int("max_position_embeddings") ?? 128_000)
        try config.validate()

        try add("model.embed_tokens.weight", .embeddings, [vocab, hidden], .matrix, from: embedName)
        for i in layers {
            let s = m + "layers.\(i)."
            let d = "model.layers.\(i)."
            try add(d + "operator_norm.weight", .decoder, [hidden], .vector, from: s + "operator_norm.weight")
            try add(d + "ffn_norm.weight", .decoder, [hidden], .vector, from: s + "ffn_norm.weight")
            if kinds[i] == "attention" {
                let q = heads * headDim, kv = kvHeads * headDim
                try add(d + "self_attn.q_proj.weight", .decoder, [q, hidden], .matrix, from: s + "self_attn.q_proj.weight")
                try add(d + "self_attn.k_proj.weight", .decoder, [kv, hidden], .matrix, from: s + "self_attn.k_proj.weight")
                try add(d + "self_attn.v_proj.weight", .decoder, [kv, hidden], .matrix, from: s + "self_attn.v_proj.weight")
                try add(d + "self_attn.out_proj.weight", .decoder, [hidden, q], .matrix, from: s + "self_attn.out_proj.weight")
                try add(d + "self_attn.q_layernorm.weight", .decoder, [headDim], .vector, from: s + "self_attn.q_layernorm.weight")
                try add(d + "self_attn.k_layernorm.weight", .decoder, [headDim], .vector, from: s + "self_attn.k_layernorm.weight")
            } else {
                try add(d + "conv.in_proj.weight", .decoder, [3 * hidden, hidden], .matrix, from: s + "conv.in_proj.weight")
                try add(d + "conv.conv.weight", .decoder, [hidden, kernelSize], .vector, from: s + "conv.conv.weight",
                        sourceShape: [hidden, 1, kernelSize])
                try add(d + "conv.out_proj.weight", .decoder, [hidden, hidden], .matrix, from: s + "conv.out_proj.weight")
            }
            try add(d + "feed_forward.w1.weight", .decoder, [mlpWidth, hidden], .matrix, from: s + "feed_forward.w1.weight")
            try add(d + "feed_forward.w3.weight", .decoder, [mlpWidth, hidden], .matrix, from: s + "feed_forward.w3.weight")
            try add(d + "feed_forward.w2.weight", .decoder, [hidden, mlpWidth], .matrix, from: s + "feed_forward.w2.weight")
        }
        try add("model.embedding_norm.weight", .decoder, [hidden], .vector, from: m + "embedding_norm.weight")
        // The output head is tied to the embedding (docs/model.md §3). A separate lm_head is accepted only if identical.
        if ck.has(headName) {
            let head = try source(headName, [vocab, hidden])
            let a = try ck.file(for: head), b = try ck.file(for: embedName)
            let ta = try a.tensor(head), tb = try b.tensor(embedName)
            let (x, y) = (a.bytes(ta), b.bytes(tb))
            let same = ta.dtype == tb.dtype && x.count == y.count && memcmp(x.baseAddress!, y.baseAddress!, x.count) == 0
            a.release(ta)
            b.release(tb)
            guard same else { throw FireboltError("\(headName) differs from \(embedName): untied output heads are not supported") }
        }
        return config
    }

    // MARK: SigLIP vision tower

    mutating func planVision(prefix p: String, json: JSONObject) throws -> VisionConfig {
        let patchName = p + "embeddings.patch_embedding.weight"
        let patch = try shape(patchName)
        guard patch.count == 4, patch[2] == patch[3] else { throw FireboltError("tensor \(patchName) has shape \(patch), expected [hidden, channels, patch, patch]") }
        let (hidden, channels, patchSize) = (patch[0], patch[1], patch[2])
        let positionsName = p + "embeddings.position_embedding.weight"
        let positions = try shape(positionsName).first ?? 0
        let side = Int(Double(positions).squareRoot().rounded())
        guard side * side == positions else { throw FireboltError("tensor \(positionsName) has \(positions) rows, not a square grid") }
        let layers = layerIndices(p + "encoder.layers.")
        guard !layers.isEmpty, layers == Array(0..<layers.count) else { throw FireboltError("vision encoder layers are missing or not numbered 0..<n") }
        let mlp = try shape(p + "encoder.layers.0.mlp.fc1.weight").first ?? 0
        // Head count is not visible in the shapes; SigLIP uses 64-wide heads (base: 768 / 12).
        let heads = try json.int("num_attention_heads") ?? max(1, hidden / 64)
        guard heads > 0, hidden % heads == 0 else {
            throw FireboltError("vision hidden size \(hidden) is not a multiple of \(heads) heads", file: json.file)
        }
        let config = VisionConfig(hiddenSize: hidden, intermediateSize: mlp, numHiddenLayers: layers.count, numAttentionHeads: heads,
                                  numChannels: channels, imageSize: side * patchSize, patchSize: patchSize,
                                  layerNormEps: Float(try json.double("layer_norm_eps") ?? 1e-6),
                                  hiddenAct: json.string("hidden_act") ?? "gelu_pytorch_tanh")
        if let declared = try json.int("hidden_size"), declared != hidden {
            throw FireboltError("vision_config hidden_size \(declared) does not match \(patchName)")
        }
        let v = "vision_model."
        try add(v + "embeddings.patch_embedding.weight", .vision, [hidden, channels * patchSize * patchSize], .matrix,
                from: patchName, sourceShape: patch)
        try add(v + "embeddings.patch_embedding.bias", .vision, [hidden], .vector, from: p + "embeddings.patch_embedding.bias")
        try add(v + "embeddings.position_embedding.weight", .vision, [positions, hidden], .vector, from: positionsName)
        try addEncoder(from: p, to: v, layers: layers.count, hidden: hidden, width: mlp)
        // Attention-pooling head: the packed in_proj is split into q/k/v so each can be used on its own.
        let h = p + "head.", d = v + "head."
        try add(d + "probe", .vision, [1, hidden], .vector, from: h + "probe", sourceShape: [1, 1, hidden])
        let packed = try source(h + "attention.in_proj_weight", [3 * hidden, hidden])
        let packedBias = try source(h + "attention.in_proj_bias", [3 * hidden])
        for (k, name) in ["q_proj", "k_proj", "v_proj"].enumerated() {
            tensors.append(PlannedTensor(name: d + "attention.\(name).weight", part: .vision, shape: [hidden, hidden], role: .matrix,
                                         source: .rows(packed, k * hidden, (k + 1) * hidden)))
            tensors.append(PlannedTensor(name: d + "attention.\(name).bias", part: .vision, shape: [hidden], role: .vector,
                                         source: .rows(packedBias, k * hidden, (k + 1) * hidden)))
        }
        try add(d + "attention.out_proj.weight", .vision, [hidden, hidden], .matrix, from: h + "attention.out_proj.weight")
        try add(d + "attention.out_proj.bias", .vision, [hidden], .vector, from: h + "attention.out_proj.bias")
        try add(d + "layernorm.weight", .vision, [hidden], .vector, from: h + "layernorm.weight")
        try add(d + "layernorm.bias", .vision, [hidden], .vector, from: h + "layernorm.bias")
        try addMLP(from: h + "mlp.", to: d + "mlp.", hidden: hidden, width: try shape(h + "mlp.fc1.weight").first ?? 0)
        return config
    }

    // MARK: SigLIP2 NaFlex vision tower (LFM2-VL)

    /// The NaFlex tower under `p` (embeddings, encoder, post_layernorm): the config's `num_hidden_layers` layers are
    /// kept (the model never runs the layers past them, nor the pooling head, whose tensors are dropped).
    mutating func planNaFlexVision(prefix p: String, json: JSONObject, droppedLayers: Int = 0) throws -> (config: VisionConfig, dropped: [String]) {
        let patchName = p + "embeddings.patch_embedding.weight"
        let patch = try shape(patchName)
        guard patch.count == 2 else { throw FireboltError("tensor \(patchName) has shape \(patch), expected [hidden, channels × patch²] (a Linear)") }
        let hidden = patch[0], channels = try json.int("num_channels") ?? 3
        let patchSize = try json.int("patch_size") ?? 16
        guard channels == 3, patch[1] == channels * patchSize * patchSize else {
            throw FireboltError("tensor \(patchName) has \(patch[1]) columns, expected \(channels) × patch_size² (\(patchSize))")
        }
        let positionsName = p + "embeddings.position_embedding.weight"
        let positions = try shape(positionsName).first ?? 0
        let side = Int(Double(positions).squareRoot().rounded())
        guard side * side == positions else { throw FireboltError("tensor \(positionsName) has \(positions) rows, not a square grid") }
        let present = layerIndices(p + "encoder.layers.")
        guard !present.isEmpty, present == Array(0..<present.count) else { throw FireboltError("vision encoder layers are missing or not numbered 0..<n") }
        let declared = try json.int("num_hidden_layers") ?? present.count
        let count = declared - droppedLayers
        guard declared <= present.count, count >= 1 else {
            throw FireboltError("vision_config num_hidden_layers \(declared) (vision_feature_layer drops \(droppedLayers)) but the checkpoint has \(present.count) layers", file: json.file)
        }
        if let declared = try json.int("hidden_size"), declared != hidden {
            throw FireboltError("vision_config hidden_size \(declared) does not match \(patchName)")
        }
        let mlp = try shape(p + "encoder.layers.0.mlp.fc1.weight").first ?? 0
        let heads = try json.int("num_attention_heads") ?? max(1, hidden / 64)
        guard heads > 0, hidden % heads == 0 else {
            throw FireboltError("vision hidden size \(hidden) is not a multiple of \(heads) heads", file: json.file)
        }
        let act = json.string("hidden_act") ?? "gelu_pytorch_tanh"
        let config = VisionConfig(hiddenSize: hidden, intermediateSize: mlp, numHiddenLayers: count, numAttentionHeads: heads,
                                  numChannels: channels, imageSize: side * patchSize, patchSize: patchSize,
                                  layerNormEps: Float(try json.double("layer_norm_eps") ?? 1e-6), hiddenAct: act,
                                  variant: VisionConfig.naflex)
        let v = "vision_model."
        try add(v + "embeddings.patch_embedding.weight", .vision, [hidden, patch[1]], .matrix, from: patchName)
        try add(v + "embeddings.patch_embedding.bias", .vision, [hidden], .vector, from: p + "embeddings.patch_embedding.bias")
        try add(v + "embeddings.position_embedding.weight", .vision, [positions, hidden], .vector, from: positionsName)
        try addEncoder(from: p, to: v, layers: count, hidden: hidden, width: mlp)
        let unused = (count..<present.count).map { p + "encoder.layers.\($0)." } + [p + "head."]
        return (config, unused)
    }

    /// LFM2-VL's projector under `p`: layer_norm (if the config uses it), linear_1, linear_2, with their biases.
    mutating func planProjector(prefix p: String, root: JSONObject, visionDim: Int, textDim: Int, factor: Int) throws -> ProjectorConfig {
        if let declared = try root.int("downsample_factor"), declared != factor {
            throw FireboltError("config downsample_factor \(declared) differs from the image processor's \(factor)", file: root.file)
        }
        let input = visionDim * factor * factor
        let hiddenSize = try shape(p + "linear_1.weight").first ?? 0
        if let declared = try root.int("projector_hidden_size"), declared != hiddenSize {
            throw FireboltError("config projector_hidden_size \(declared) does not match \(p)linear_1.weight")
        }
        if let act = root.string("projector_hidden_act"), act != "gelu" {
            throw FireboltError("projector_hidden_act '\(act)' is not supported (gelu)", file: root.file)
        }
        if let bias = root.values["projector_bias"] as? Bool, !bias {
            throw FireboltError("projector_bias false is not supported (the released models have biases)", file: root.file)
        }
        let useNorm = (root.values["projector_use_layernorm"] as? Bool) ?? true
        let m = "multi_modal_projector."
        if useNorm {
            try add(m + "layer_norm.weight", .vision, [input], .vector, from: p + "layer_norm.weight")
            try add(m + "layer_norm.bias", .vision, [input], .vector, from: p + "layer_norm.bias")
        }
        try add(m + "linear_1.weight", .vision, [hiddenSize, input], .matrix, from: p + "linear_1.weight")
        try add(m + "linear_1.bias", .vision, [hiddenSize], .vector, from: p + "linear_1.bias")
        try add(m + "linear_2.weight", .vision, [textDim, hiddenSize], .matrix, from: p + "linear_2.weight")
        try add(m + "linear_2.bias", .vision, [textDim], .vector, from: p + "linear_2.bias")
        return ProjectorConfig(inputSize: input, hiddenSize: hiddenSize, outputSize: textDim, downsampleFactor: factor,
                               useLayerNorm: useNorm)
    }

    /// The first `layers` pre-LN encoder layers under `p` + "encoder.layers.", then post_layernorm (SigLIP and SigLIP2
    /// name them alike).
    private mutating func addEncoder(from p: String, to v: String, layers: Int, hidden: Int, width: Int) throws {
        for i in 0..<layers {
            let s = p + "encoder.layers.\(i).", d = v + "encoder.layers.\(i)."
            for norm in ["layer_norm1", "layer_norm2"] {
                try add(d + norm + ".weight", .vision, [hidden], .vector, from: s + norm + ".weight")
                try add(d + norm + ".bias", .vision, [hidden], .vector, from: s + norm + ".bias")
            }
            for proj in ["q_proj", "k_proj", "v_proj", "out_proj"] {
                try add(d + "self_attn.\(proj).weight", .vision, [hidden, hidden], .matrix, from: s + "self_attn.\(proj).weight")
                try add(d + "self_attn.\(proj).bias", .vision, [hidden], .vector, from: s + "self_attn.\(proj).bias")
            }
            try addMLP(from: s + "mlp.", to: d + "mlp.", hidden: hidden, width: width)
        }
        try add(v + "post_layernorm.weight", .vision, [hidden], .vector, from: p + "post_layernorm.weight")
        try add(v + "post_layernorm.bias", .vision, [hidden], .vector, from: p + "post_layernorm.bias")
    }

    private mutating func addMLP(from s: String, to d: String, hidden: Int, width: Int) throws {
        try add(d + "fc1.weight", .vision, [width, hidden], .matrix, from: s + "fc1.weight")
        try add(d + "fc1.bias", .vision, [width], .vector, from: s + "fc1.bias")
        try add(d + "fc2.weight", .vision, [hidden, width], .matrix, from: s + "fc2.weight")
        try add(d + "fc2.bias", .vision, [hidden], .vector, from: s + "fc2.bias")
    }

    // MARK: Cross-Modal Modulator

    mutating func planCMM(prefix p: String, textDim: Int, visionDim: Int) throws -> CMMConfig {
        let inner = try shape(p + "q_proj.weight").first ?? 0
        let heads = 4  // fixed in the reference TokenGridCorrFiLMS4 (docs/model.md §2)
        guard inner % heads == 0 else { throw FireboltError("CMM q_proj has \(inner) rows, not a multiple of \(heads) heads") }
        let ffn = try shape(p + "ffn.1.weight").first ?? 0
        let lName = p + "s4.layer.kernel.l_kernel"
        let lValues = try ck.file(for: lName).int64Array(lName)
        guard lValues.count == 1, let length = lValues.first, length > 0, length <= 1 << 16 else {
            throw FireboltError("tensor \(lName) must be one positive length, found \(lValues)")
        }
        let config = CMMConfig(textDim: textDim, visionDim: visionDim, numHeads: heads, headDim: inner / heads, topK: 4,
                               numGrids: 5, ffnDim: ffn, s4Taps: Int(length))
        let c = "cmm."
        try add(c + "q_proj.weight", .cmm, [inner, textDim], .matrix, from: p + "q_proj.weight")
        try add(c + "k_proj.weight", .cmm, [inner, visionDim], .matrix, from: p + "k_proj.weight")
        try add(c + "v_proj.weight", .cmm, [textDim, visionDim], .matrix, from: p + "v_proj.weight")
        for film in ["film_in", "film_out"] {
            try add(c + film + ".weight", .cmm, [2 * textDim, textDim], .matrix, from: p + film + ".weight")
            try add(c + film + ".bias", .cmm, [2 * textDim], .vector, from: p + film + ".bias")
        }
        for norm in ["norm_in", "norm_out", "ffn.0"] {
            try add(c + norm + ".weight", .cmm, [textDim], .vector, from: p + norm + ".weight")
            try add(c + norm + ".bias", .cmm, [textDim], .vector, from: p + norm + ".bias")
        }
        try add(c + "ffn.1.weight", .cmm, [ffn, textDim], .matrix, from: p + "ffn.1.weight")
        try add(c + "ffn.1.bias", .cmm, [ffn], .vector, from: p + "ffn.1.bias")
        try add(c + "ffn.4.weight", .cmm, [textDim, ffn], .matrix, from: p + "ffn.4.weight")
        try add(c + "ffn.4.bias", .cmm, [textDim], .vector, from: p + "ffn.4.bias")
        try add(c + "mod_gate", .cmm, [1], .vector, from: p + "mod_gate", sourceShape: [])
        try add(c + "s4.D", .cmm, [textDim], .vector, from: p + "s4.layer.D", sourceShape: [1, textDim])
        tensors.append(PlannedTensor(name: c + "s4.kernel_taps", part: .cmm, shape: [textDim, Int(length)], role: .vector,
                                     source: .s4Taps(prefix: p + "s4.layer.kernel.", length: Int(length))))
        try add(c + "s4.output_linear.weight", .cmm, [2 * textDim, textDim], .matrix, from: p + "s4.output_linear.0.weight",
                sourceShape: [2 * textDim, textDim, 1])
        try add(c + "s4.output_linear.bias", .cmm, [2 * textDim], .vector, from: p + "s4.output_linear.0.bias")
        return config
    }

    /// Every source tensor must be used or deliberately dropped: anything else means a layout we do not know.
    func checkEverySourceTensorIsAccounted(dropped: [String]) throws {
        for name in ck.tensorNames where !used.contains(name) {
            if dropped.contains(where: { name.hasPrefix($0) }) { continue }
            throw FireboltError("unexpected tensor \(name): not part of the Firebolt-VL / LFM2 layout this converter knows",
                                file: try? ck.file(for: name).path)
        }
    }
}

/// Where an LFM2-VL checkpoint keeps its parts: transformers 5 saves `model.language_model.`, `model.vision_tower.`
/// and `model.multi_modal_projector.`; older saves put the vision tower one level deeper (`vision_model.`), and the
/// first releases used `language_model.model.` / `vision_tower.vision_model.` / `multi_modal_projector.`.
struct LFM2VLLayout {
    let language: String, head: String, vision: String, projector: String
    /// Vision encoder layers after the feature layer, which the model never runs.
    let droppedLayers: Int

    init(checkpoint ck: Checkpoint, root: JSONObject) throws {
        func first(_ candidates: [String], holding suffix: String, what: String) throws -> String {
            guard let p = candidates.first(where: { ck.has($0 + suffix) }) else {
                throw FireboltError("no \(what) found (looked for \(candidates.map { $0 + suffix }.joined(separator: ", ")))",
                                    file: ck.folder)
            }
            return p
        }
        language = try first(["model.language_model.", "language_model.model."], holding: "embed_tokens.weight", what: "LFM2 decoder")
        head = language == "language_model.model." ? "language_model.lm_head.weight" : "lm_head.weight"
        vision = try first(["model.vision_tower.vision_model.", "model.vision_tower.", "vision_tower.vision_model."],
                           holding: "embeddings.patch_embedding.weight", what: "SigLIP2 vision tower")
        projector = try first(["model.multi_modal_projector.", "multi_modal_projector."], holding: "linear_1.weight",
                              what: "multi-modal projector")
        // vision_feature_layer (Python index into the tower's hidden states; -1, the last layer, when absent): the
        // layers after it are dropped and post_layernorm still applies, as the first LFM2-VL code did and llama.cpp
        // does. transformers 5.25 no longer reads the key (it runs vision_config's num_hidden_layers), so for a value
        // other than -1 this follows the model's original code, not transformers 5.25.
        let layer = try root.int("vision_feature_layer") ?? -1
        guard layer < 0 else {
            throw FireboltError("vision_feature_layer \(layer) is not supported (a negative index: -1 the last layer, -2 the one before)",
                                file: root.file)
        }
        droppedLayers = -(layer + 1)
        if let strategy = root.string("vision_feature_select_strategy"), !["full", "default"].contains(strategy) {
            throw FireboltError("vision_feature_select_strategy '\(strategy)' is not supported", file: root.file)
        }
    }

    /// The image processor's settings from preprocessor_config.json (transformers' defaults where it has none).
    static func processor(_ json: [String: Any]?, file: String) throws -> LFM2VLProcessorConfig {
        var p = LFM2VLProcessorConfig()
        if let json {
            do {
                let data = try JSONSerialization.data(withJSONObject: json)
                p = try JSONDecoder().decode(LFM2VLProcessorConfig.self, from: data)
            } catch {
                throw FireboltError("cannot read the LFM2-VL image processor settings: \(error)", file: file)
            }
        }
        if let problem = p.unsupported() { throw FireboltError("image processor setting not supported: \(problem)", file: file) }
        return p
    }
}
