import Foundation
import Runtime

/// Random-weight checkpoints at real sizes, in the released Hugging Face layout, so the whole convert → run path
/// can be exercised (and benchmarked) without downloading anything. Speed and memory do not depend on the
/// weight values; answers from these models are meaningless text.
public enum Synth {
    public struct Preset {
        public let name: String
        public let text: LFM2Config
        public let vision: VisionConfig?
        public let cmmFFN: Int
        /// LFM2-VL presets: the projector's width and the config's vision_feature_layer (`vision` is the NaFlex tower).
        public var lfm2vl: (projectorHidden: Int, featureLayer: Int)? = nil
    }

    static func lfm2(hidden: Int, heads: Int, mlp: Int, vocab: Int = 65_536) -> LFM2Config {
        let attention: Set<Int> = [2, 5, 8, 10, 12, 14]
        return LFM2Config(vocabSize: vocab, hiddenSize: hidden, intermediateSize: mlp, numHiddenLayers: 16,
                          numAttentionHeads: heads, numKeyValueHeads: 8, headDim: hidden / heads,
                          layerTypes: (0..<16).map { attention.contains($0) ? "attention" : "conv" })
    }

    static let siglipBase = VisionConfig(hiddenSize: 768, intermediateSize: 3072, numHiddenLayers: 12, numAttentionHeads: 12,
                                         imageSize: 256, patchSize: 16)

    // LFM2-VL's towers: SigLIP2 NaFlex base (450M) and so400m (1.6B), a 16 × 16 position table of 16-pixel patches.
    static let naflexBase = VisionConfig(hiddenSize: 768, intermediateSize: 3072, numHiddenLayers: 12, numAttentionHeads: 12,
                                         imageSize: 256, patchSize: 16, variant: VisionConfig.naflex)
    static let naflexSo400m = VisionConfig(hiddenSize: 1152, intermediateSize: 4304, numHiddenLayers: 27, numAttentionHeads: 16,
                                           imageSize: 256, patchSize: 16, variant: VisionConfig.naflex)

    public static let presets: [String: Preset] = [
        "lfm2-vl-450m": Preset(name: "lfm2-vl-450m", text: lfm2(hidden: 1024, heads: 16, mlp: 4608), vision: naflexBase, cmmFFN: 0,
                               lfm2vl: (projectorHidden: 2560, featureLayer: -1)),
        "lfm2-vl-1.6b": Preset(name: "lfm2-vl-1.6b", text: lfm2(hidden: 2048, heads: 32, mlp: 8192), vision: naflexSo400m, cmmFFN: 0,
                               lfm2vl: (projectorHidden: 2560, featureLayer: -2)),
        "lfm2-350m": Preset(name: "lfm2-350m", text: lfm2(hidden: 1024, heads: 16, mlp: 4608), vision: nil, cmmFFN: 0),
        "lfm2-700m": Preset(name: "lfm2-700m", text: lfm2(hidden: 1536, heads: 24, mlp: 6912), vision: nil, cmmFFN: 0),
        "lfm2-1.2b": Preset(name: "lfm2-1.2b", text: lfm2(hidden: 2048, heads: 32, mlp: 8192), vision: nil, cmmFFN: 0),
        "firebolt-vl": Preset(name: "firebolt-vl", text: lfm2(hidden: 1024, heads: 16, mlp: 4608), vision: siglipBase, cmmFFN: 4096),
        "tiny": Preset(name: "tiny",
                       text: LFM2Config(vocabSize: 1024, hiddenSize: 64, intermediateSize: 128, numHiddenLayers: 4,
                                        numAttentionHeads: 4, numKeyValueHeads: 2, headDim: 16,
                                        layerTypes: ["conv", "attention", "conv", "attention"]),
                       vision: VisionConfig(hiddenSize: 32, intermediateSize: 64, numHiddenLayers: 2, numAttentionHeads: 2,
                                            imageSize: 256, patchSize: 16),
                       cmmFFN: 256),
    ]

    public static var presetNames: [String] { presets.keys.sorted() }

    /// Writes model.safetensors, config.json, tokenizer.json, tokenizer_config.json (and preprocessor_config.json
    /// for vision presets) into `folder`.
    public static func write(preset name: String, seed: UInt64, to folder: String) throws {
        guard let preset = presets[name] else {
            throw FireboltError("unknown preset '\(name)' (known: \(presetNames.joined(separator: ", ")))")
        }
        do { try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true) } catch {
            var isDirectory: ObjCBool = false
            let exists = FileManager.default.fileExists(atPath: folder, isDirectory: &isDirectory)
            throw FireboltError(exists && !isDirectory.boolValue ? "exists and is not a folder" : "cannot create the folder", file: folder)
        }
        let tensors = plan(preset)
        try SafetensorsWriter.write(tensors: tensors, seed: seed, to: folder + "/model.safetensors")
        let tokenizer = try SynthTokenizer.make(vocabSize: preset.text.vocabSize, seed: seed, withImageToken: preset.vision != nil,
                                                imageMarkers: preset.lfm2vl != nil)
        try AtomicFile.write(tokenizer.json, to: folder + "/tokenizer.json")
        try AtomicFile.write(try json(tokenizerConfig()), to: folder + "/tokenizer_config.json")
        try AtomicFile.write(try json(config(preset, imageToken: tokenizer.imageId)), to: folder + "/config.json")
        if preset.lfm2vl != nil {
            // transformers' Lfm2VlImageProcessor defaults, written out.
            let p = LFM2VLProcessorConfig()
            let pre: [String: Any] = ["image_processor_type": "Lfm2VlImageProcessor", "downsample_factor": p.downsampleFactor,
                                      "do_image_splitting": p.doImageSplitting, "min_tiles": p.minTiles, "max_tiles": p.maxTiles,
                                      "use_thumbnail": p.useThumbnail, "min_image_tokens": p.minImageTokens,
                                      "max_image_tokens": p.maxImageTokens, "encoder_patch_size": p.encoderPatchSize,
                                      "tile_size": p.tileSize, "max_pixels_tolerance": p.maxPixelsTolerance, "resample": p.resample,
                                      "do_rescale": true, "rescale_factor": p.rescaleFactor, "do_normalize": true,
                                      "image_mean": p.imageMean, "image_std": p.imageStd]
            try AtomicFile.write(try json(pre), to: folder + "/preprocessor_config.json")
        } else if preset.vision != nil {
            let pre: [String: Any] = ["image_processor_type": "SiglipImageProcessor", "do_resize": true,
                                      "size": ["height": 256, "width": 256], "resample": 2, "do_rescale": true,
                                      "rescale_factor": 1.0 / 255, "do_normalize": true, "image_mean": [0.5, 0.5, 0.5],
                                      "image_std": [0.5, 0.5, 0.5], "do_convert_rgb": true]
            try AtomicFile.write(try json(pre), to: folder + "/preprocessor_config.json")
        }
    }

    static func json(_ object: Any) throws -> Data {
        try JSONSerialization.data(withJSONObject: object, options: [.prettyPrinted, .sortedKeys])
    }

    static func tokenizerConfig() -> [String: Any] {
        let template = "{{- bos_token -}}{%- for message in messages -%}{{- '<|im_start|>' + message['role'] + '\\n' -}}" +
            "{{- message['content'] -}}{{- '<|im_end|>\\n' -}}{%- endfor -%}{%- if add_generation_prompt -%}" +
            "{{- '<|im_start|>assistant\\n' -}}{%- endif -%}"
        return ["bos_token": "<|startoftext|>", "eos_token": "<|im_end|>", "pad_token": "<|pad|>",
                "tokenizer_class": "PreTrainedTokenizerFast", "chat_template": template, "add_bos_token": true]
    }

    static func textConfig(_ t: LFM2Config) -> [String: Any] {
        ["model_type": "lfm2", "architectures": ["Lfm2ForCausalLM"], "vocab_size": t.vocabSize, "hidden_size": t.hiddenSize,
         "intermediate_size": t.intermediateSize, "block_auto_adjust_ff_dim": false, "num_hidden_layers": t.numHiddenLayers,
         "num_attention_heads": t.numAttentionHeads, "num_key_value_heads": t.numKeyValueHeads, "norm_eps": 1e-5,
         "conv_L_cache": t.convKernelSize, "conv_bias": false, "max_position_embeddings": 128_000,
         "rope_parameters": ["rope_theta": 1_000_000.0, "rope_type": "default"],
         "layer_types": t.layerTypes.map { $0 == "attention" ? "full_attention" : "conv" },
         "bos_token_id": SynthTokenizer.bos, "eos_token_id": SynthTokenizer.imEnd, "pad_token_id": SynthTokenizer.pad,
         "tie_word_embeddings": true]
    }

    static func config(_ p: Preset, imageToken: Int?) -> [String: Any] {
        guard let v = p.vision else { return textConfig(p.text) }
        if let vl = p.lfm2vl {
            return ["model_type": "lfm2_vl", "architectures": ["Lfm2VlForConditionalGeneration"],
                    "image_token_index": imageToken ?? 0, "downsample_factor": 2, "projector_hidden_size": vl.projectorHidden,
                    "projector_hidden_act": "gelu", "projector_bias": true, "projector_use_layernorm": true,
                    "vision_feature_layer": vl.featureLayer, "tie_word_embeddings": true, "text_config": textConfig(p.text),
                    "vision_config": ["model_type": "siglip2_vision_model", "hidden_size": v.hiddenSize,
                                      "intermediate_size": v.intermediateSize, "num_hidden_layers": v.numHiddenLayers,
                                      "num_attention_heads": v.numAttentionHeads, "num_channels": 3, "patch_size": v.patchSize,
                                      "num_patches": (v.imageSize / v.patchSize) * (v.imageSize / v.patchSize),
                                      "hidden_act": "gelu_pytorch_tanh", "layer_norm_eps": 1e-6, "vision_use_head": false] as [String: Any]]
        }
        return ["model_type": "fireboltlm", "architectures": ["FireboltLMForCausalLM"], "fuse_strategy": "cossm",
                "bos_token_id": SynthTokenizer.bos, "eos_token_id": SynthTokenizer.imEnd, "pad_token_id": SynthTokenizer.pad,
                "image_token_id": imageToken ?? 0, "vocab_size": p.text.vocabSize, "tie_word_embeddings": true,
                "vision_hidden_size": v.hiddenSize, "text_config": textConfig(p.text),
                "vision_config": ["model_type": "siglip_vision_model", "hidden_size": v.hiddenSize,
                                  "intermediate_size": v.intermediateSize, "num_hidden_layers": v.numHiddenLayers,
                                  "num_attention_heads": v.numAttentionHeads, "num_channels": 3, "image_size": v.imageSize,
                                  "patch_size": v.patchSize, "hidden_act": "gelu_pytorch_tanh", "layer_norm_eps": 1e-6] as [String: Any]]
    }

    /// How a synthetic tensor's values are drawn.
    enum Fill {
        case normal(std: Float)     // N(0, std²)
        case around(Float, Float)   // mean + std·N(0,1): norm weights near 1, biases near 0
        case s4ARealLog             // log(0.5): Re Λ = −1/2 (S4D-Lin)
        case s4AImag                // π·n per state (S4D-Lin)
        case s4InvDt                // log dt, dt log-uniform in [0.001, 0.1]
        case zero
        case int64(Int64)
    }

    struct Tensor {
        let name: String
        let shape: [Int]
        let fill: Fill
        var isInt: Bool { if case .int64 = fill { return true }; return false }
    }

    /// The released checkpoint's tensor names and shapes (docs/model.md §5) for a preset.
    static func plan(_ p: Preset) -> [Tensor] {
        var out: [Tensor] = []
        let t = p.text, h = t.hiddenSize
        // Where Lfm2Model's tensors live: plain LFM2, Firebolt-VL's base_lm, LFM2-VL's language_model (transformers 5).
        let textModel = p.lfm2vl != nil ? "model.language_model." : (p.vision == nil ? "model." : "base_lm.model.")
        func linear(_ name: String, _ rows: Int, _ cols: Int) { out.append(Tensor(name: name, shape: [rows, cols], fill: .normal(std: 1 / Float(cols).squareRoot()))) }
        func norm(_ name: String, _ n: Int) { out.append(Tensor(name: name, shape: [n], fill: .around(1, 0.05))) }
        func bias(_ name: String, _ n: Int) { out.append(Tensor(name: name, shape: [n], fill: .around(0, 0.02))) }
        out.append(Tensor(name: textModel + "embed_tokens.weight", shape: [t.vocabSize, h], fill: .normal(std: 1)))
        for i in 0..<t.numHiddenLayers {
            let l = textModel + "layers.\(i)."
            norm(l + "operator_norm.weight", h)
            norm(l + "ffn_norm.weight", h)
            if t.isAttention(layer: i) {
                linear(l + "self_attn.q_proj.weight", t.numAttentionHeads * t.headDim, h)
                linear(l + "self_attn.k_proj.weight", t.numKeyValueHeads * t.headDim, h)
                linear(l + "self_attn.v_proj.weight", t.numKeyValueHeads * t.headDim, h)
                linear(l + "self_attn.out_proj.weight", h, t.numAttentionHeads * t.headDim)
                norm(l + "self_attn.q_layernorm.weight", t.headDim)
                norm(l + "self_attn.k_layernorm.weight", t.headDim)
            } else {
                linear(l + "conv.in_proj.weight", 3 * h, h)
                out.append(Tensor(name: l + "conv.conv.weight", shape: [h, 1, t.convKernelSize], fill: .normal(std: 0.5)))
                linear(l + "conv.out_proj.weight", h, h)
            }
            linear(l + "feed_forward.w1.weight", t.intermediateSize, h)
            linear(l + "feed_forward.w3.weight", t.intermediateSize, h)
            linear(l + "feed_forward.w2.weight", h, t.intermediateSize)
        }
        norm(textModel + "embedding_norm.weight", h)
        guard let v = p.vision else { return out }
        /// The vision encoder's layers and post_layernorm under `vp` (SigLIP and SigLIP2 name them alike).
        func encoder(_ vp: String, _ v: VisionConfig) {
            let d = v.hiddenSize
            for i in 0..<v.numHiddenLayers {
                let l = vp + "encoder.layers.\(i)."
                for n in ["layer_norm1", "layer_norm2"] { norm(l + n + ".weight", d); bias(l + n + ".bias", d) }
                for proj in ["q_proj", "k_proj", "v_proj", "out_proj"] { linear(l + "self_attn.\(proj).weight", d, d); bias(l + "self_attn.\(proj).bias", d) }
                linear(l + "mlp.fc1.weight", v.intermediateSize, d); bias(l + "mlp.fc1.bias", v.intermediateSize)
                linear(l + "mlp.fc2.weight", d, v.intermediateSize); bias(l + "mlp.fc2.bias", d)
            }
            norm(vp + "post_layernorm.weight", d); bias(vp + "post_layernorm.bias", d)
        }
        if let vl = p.lfm2vl {
            let vp = "model.vision_tower.", d = v.hiddenSize, patchFan = v.numChannels * v.patchSize * v.patchSize
            linear(vp + "embeddings.patch_embedding.weight", d, patchFan); bias(vp + "embeddings.patch_embedding.bias", d)
            let side = v.imageSize / v.patchSize
            out.append(Tensor(name: vp + "embeddings.position_embedding.weight", shape: [side * side, d], fill: .normal(std: 0.5)))
            encoder(vp, v)
            let m = "model.multi_modal_projector.", input = 4 * d
            norm(m + "layer_norm.weight", input); bias(m + "layer_norm.bias", input)
            linear(m + "linear_1.weight", vl.projectorHidden, input); bias(m + "linear_1.bias", vl.projectorHidden)
            linear(m + "linear_2.weight", h, vl.projectorHidden); bias(m + "linear_2.bias", h)
            return out
        }

        let vp = "model.vision_encoder.encoder.model.vision_model.", d = v.hiddenSize
        let patchFan = v.numChannels * v.patchSize * v.patchSize
        out.append(Tensor(name: vp + "embeddings.patch_embedding.weight", shape: [d, v.numChannels, v.patchSize, v.patchSize],
                          fill: .normal(std: 1 / Float(patchFan).squareRoot())))
        bias(vp + "embeddings.patch_embedding.bias", d)
        let side = v.imageSize / v.patchSize
        out.append(Tensor(name: vp + "embeddings.position_embedding.weight", shape: [side * side, d], fill: .normal(std: 0.5)))
        encoder(vp, v)
        out.append(Tensor(name: vp + "head.probe", shape: [1, 1, d], fill: .normal(std: 1)))
        linear(vp + "head.attention.in_proj_weight", 3 * d, d); bias(vp + "head.attention.in_proj_bias", 3 * d)
        linear(vp + "head.attention.out_proj.weight", d, d); bias(vp + "head.attention.out_proj.bias", d)
        norm(vp + "head.layernorm.weight", d); bias(vp + "head.layernorm.bias", d)
        linear(vp + "head.mlp.fc1.weight", v.intermediateSize, d); bias(vp + "head.mlp.fc1.bias", v.intermediateSize)
        linear(vp + "head.mlp.fc2.weight", d, v.intermediateSize); bias(vp + "head.mlp.fc2.bias", d)

        let c = "model.fuser.fuser.model.", inner = 128, halfState = 32
        linear(c + "q_proj.weight", inner, h)
        linear(c + "k_proj.weight", inner, d)
        linear(c + "v_proj.weight", h, d)
        for film in ["film_in", "film_out"] { linear(c + film + ".weight", 2 * h, h); bias(c + film + ".bias", 2 * h) }
        for n in ["norm_in", "norm_out", "ffn.0"] { norm(c + n + ".weight", h); bias(c + n + ".bias", h) }
        linear(c + "ffn.1.weight", p.cmmFFN, h); bias(c + "ffn.1.bias", p.cmmFFN)
        linear(c + "ffn.4.weight", h, p.cmmFFN); bias(c + "ffn.4.bias", h)
        out.append(Tensor(name: c + "mod_gate", shape: [], fill: .around(0.5, 0.1)))
        let k = c + "s4.layer."
        out.append(Tensor(name: k + "D", shape: [1, h], fill: .normal(std: 1)))
        out.append(Tensor(name: k + "kernel.inv_dt", shape: [h, 1], fill: .s4InvDt))
        out.append(Tensor(name: k + "kernel.A_real", shape: [h, halfState], fill: .s4ARealLog))
        out.append(Tensor(name: k + "kernel.A_imag", shape: [h, halfState], fill: .s4AImag))
        out.append(Tensor(name: k + "kernel.B", shape: [1, h, halfState, 2], fill: .normal(std: 0.5)))
        out.append(Tensor(name: k + "kernel.C", shape: [1, h, halfState, 2], fill: .normal(std: 0.5)))
        out.append(Tensor(name: k + "kernel.P", shape: [1, h, halfState, 2], fill: .zero))
        out.append(Tensor(name: k + "kernel.l_kernel", shape: [], fill: .int64(512)))
        linear(c + "s4.output_linear.0.weight", 2 * h, h)
        out[out.count - 1] = Tensor(name: c + "s4.output_linear.0.weight", shape: [2 * h, h, 1], fill: .normal(std: 1 / Float(h).squareRoot()))
        bias(c + "s4.output_linear.0.bias", 2 * h)
        return out
    }
}

/// Streams a safetensors file: the header first (all shapes are known), then each tensor generated in turn.
enum SafetensorsWriter {
    static func write(tensors: [Synth.Tensor], seed: UInt64, to path: String) throws {
        var entries: [String: Any] = ["__metadata__": ["format": "pt"]]
        var offset = 0
        for t in tensors {
            let bytes = t.shape.reduce(1, *) * (t.isInt ? 8 : 4)
            entries[t.name] = ["dtype": t.isInt ? "I64" : "F32", "shape": t.shape, "data_offsets": [offset, offset + bytes]] as [String: Any]
            offset += bytes
        }
        var header = try JSONSerialization.data(withJSONObject: entries, options: [.sortedKeys])
        header.append(contentsOf: [UInt8](repeating: 0x20, count: (8 - header.count % 8) % 8))
        let writer = try AtomicFileWriter(destination: path)
        var length = UInt64(header.count).littleEndian
        try withUnsafeBytes(of: &length) { try writer.write($0) }
        try writer.write(header)
        let pool = WorkSplitter(threads: ProcessInfo.processInfo.activeProcessorCount)
        for (index, t) in tensors.enumerated() {
            let count = t.shape.reduce(1, *)
            if case .int64(let v) = t.fill {
                var value = v.littleEndian
                try withUnsafeBytes(of: &value) { try writer.write($0) }
                continue
            }
            let buffer = FloatBuffer(count: count)
            let out = UnsafeSendable(buffer.pointer)
            let cols = t.shape.last ?? 1
            _ = pool.map(count: count) { begin, end in
                var rng = SplitMix64(seed: seed &+ UInt64(index) &* 0x9E37_79B9_7F4A_7C15 &+ UInt64(begin))
                for i in begin..<end { out.value[i] = value(t.fill, index: i % max(cols, 1), rng: &rng) }
            }
            try writer.write(UnsafeRawBufferPointer(start: buffer.pointer, count: count * 4))
        }
        try writer.finish()
    }

    static func value(_ fill: Synth.Fill, index: Int, rng: inout SplitMix64) -> Float {
        switch fill {
        case .normal(let std): return std * rng.normal()
        case .around(let mean, let std): return mean + std * rng.normal()
        case .s4ARealLog: return Float(log(0.5))
        case .s4AImag: return Float.pi * Float(index)
        case .s4InvDt: return Float(log(0.001) + rng.uniform() * (log(0.1) - log(0.001)))
        case .zero: return 0
        case .int64: return 0
        }
    }
}

/// A byte-level BPE tokenizer.json with LFM2's layout: special tokens first, then the 256 byte symbols, then merges
/// up to the vocabulary size. The merges are random but valid, so encoding exercises a real-size merge table.
enum SynthTokenizer {
    static let pad = 0, bos = 1, eos = 2, imStart = 6, imEnd = 7
    static let specials = ["<|pad|>", "<|startoftext|>", "<|endoftext|>", "<|fim_pre|>", "<|fim_mid|>", "<|fim_suf|>",
                           "<|im_start|>", "<|im_end|>"]
    static let reservedCount = 512  // ids below this are special / reserved, as in LFM2
    static let imageTokenId = 396

    /// With `imageMarkers`, LFM2-VL's markers take reserved ids after the image token: `<|image_start|>`,
    /// `<|image_end|>`, `<|img_thumbnail|>` and `<|img_row_R_col_C|>` for R, C up to 10.
    static let imageMarkers = ["<|image_start|>", "<|image_end|>", "<|img_thumbnail|>"] +
        (1...10).flatMap { r in (1...10).map { c in "<|img_row_\(r)_col_\(c)|>" } }

    static func make(vocabSize: Int, seed: UInt64, withImageToken: Bool, imageMarkers: Bool = false) throws -> (json: Data, imageId: Int?) {
        var added: [[String: Any]] = []
        var vocab: [String: Int] = [:]
        let reserved = min(reservedCount, max(16, vocabSize / 4))
        guard vocabSize >= reserved + ByteLevelAlphabet.symbols.count else {
            throw FireboltError("a synthetic tokenizer needs at least \(reserved + ByteLevelAlphabet.symbols.count) entries, got \(vocabSize)")
        }
        for id in 0..<reserved {
            let image = min(imageTokenId, reserved - 1 - (imageMarkers ? Self.imageMarkers.count : 0))
            var content = id < specials.count ? specials[id]
                : (withImageToken && id == image ? "<image>" : "<|reserved_\(id)|>")
            if imageMarkers && id > image && id - image - 1 < Self.imageMarkers.count { content = Self.imageMarkers[id - image - 1] }
            vocab[content] = id
            added.append(["id": id, "content": content, "single_word": false, "lstrip": false, "rstrip": false,
                          "normalized": false, "special": true])
        }
        let byteSymbols = ByteLevelAlphabet.symbols
        var tokens: [String] = []
        for s in byteSymbols { vocab[s] = reserved + tokens.count; tokens.append(s) }
        var merges: [String] = []
        var rng = SplitMix64(seed: seed ^ 0x746F_6B65_6E69_7A65)
        // Frequent symbols: letters, digits, space (Ġ); merges draw mostly from them and from earlier merges.
        let common = tokens.filter { $0.count == 1 && ($0.first!.isLetter || $0.first!.isNumber || $0 == "Ġ") }
        var attempts = 0
        while reserved + tokens.count < vocabSize && attempts < vocabSize * 50 {
            attempts += 1
            func pick() -> String {
                let r = rng.uniform()
                if r < 0.5 || tokens.count <= byteSymbols.count { return common[Int(rng.next() % UInt64(common.count))] }
                let learned = tokens.count - byteSymbols.count
                return tokens[byteSymbols.count + Int(Double(learned) * rng.uniform() * rng.uniform())]
            }
            let a = pick(), b = pick()
            if b.hasPrefix("Ġ") { continue }  // keep spaces at word starts, like real byte-level merges
            let merged = a + b
            if merged.count > 16 || vocab[merged] != nil { continue }
            vocab[merged] = reserved + tokens.count
            tokens.append(merged)
            merges.append(a + " " + b)
        }
        let pattern = "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"
        let object: [String: Any] = [
            "version": "1.0", "truncation": NSNull(), "padding": NSNull(), "added_tokens": added, "normalizer": NSNull(),
            "pre_tokenizer": ["type": "Sequence", "pretokenizers": [
                ["type": "Split", "pattern": ["Regex": pattern], "behavior": "Isolated", "invert": false],
                ["type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": false],
            ]],
            "post_processor": ["type": "TemplateProcessing",
                               "single": [["SpecialToken": ["id": "<|startoftext|>", "type_id": 0]], ["Sequence": ["id": "A", "type_id": 0]]],
                               "pair": [["SpecialToken": ["id": "<|startoftext|>", "type_id": 0]], ["Sequence": ["id": "A", "type_id": 0]],
                                        ["SpecialToken": ["id": "<|startoftext|>", "type_id": 0]], ["Sequence": ["id": "B", "type_id": 1]]],
                               "special_tokens": ["<|startoftext|>": ["id": "<|startoftext|>", "ids": [bos], "tokens": ["<|startoftext|>"]]]],
            "decoder": ["type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true],
            "model": ["type": "BPE", "dropout": NSNull(), "unk_token": NSNull(), "continuing_subword_prefix": NSNull(),
                      "end_of_word_suffix": NSNull(), "fuse_unk": false, "byte_fallback": false, "ignore_merges": false,
                      "vocab": vocab, "merges": merges],
        ]
        let data = (try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys])) ?? Data()
        return (data, withImageToken ? vocab["<image>"] : nil)
    }
}

/// GPT-2's byte → printable-character table used by byte-level BPE.
enum ByteLevelAlphabet {
    static let symbols: [String] = {
        var printable = Array(33...126) + Array(161...172) + Array(174...255)
        var mapped = printable
        var extra = 0
        for b in 0..<256 where !printable.contains(b) {
            printable.append(b)
            mapped.append(256 + extra)
            extra += 1
        }
        var table = [String](repeating: "", count: 256)
        for (b, c) in zip(printable, mapped) { table[b] = String(Character(Unicode.Scalar(UInt32(c))!)) }
        return table
    }()
}
