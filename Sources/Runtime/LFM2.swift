import Foundation
import Kernels

// LFM2 decoder (transformers `Lfm2ForCausalLM`), MODEL-SPEC §3, written top to bottom like llama2.c's run.c:
// weights are found by their canonical names and shape-checked at load; all state is preallocated in
// `LFM2Session`, so a generated token allocates nothing. Intermediate buffers are named after the reference
// modules (operator_norm, in_proj, conv, q_proj, ...).

/// The decoder's weights.
public final class LFM2Model {
    public let config: LFM2Config

    enum Operator {
        case conv(inProj: fb_matrix, convWeight: [Float], outProj: fb_matrix)
        case attention(qProj: fb_matrix, kProj: fb_matrix, vProj: fb_matrix, outProj: fb_matrix, qNorm: [Float], kNorm: [Float])
    }

    struct Layer {
        let operatorNorm: [Float]
        let op: Operator
        let ffnNorm: [Float]
        let w1: fb_matrix, w3: fb_matrix, w2: fb_matrix
    }

    let embedTokens: fb_matrix
    let embeddingNorm: [Float]
    let layers: [Layer]
    /// Keeps the memory the matrices point into alive.
    public let weights: WeightStore

    public init(weights: WeightStore, config: LFM2Config) throws {
        try config.validate()
        self.config = config
        self.weights = weights
        let h = config.hiddenSize, hd = config.headDim
        let q = config.numAttentionHeads * hd, kv = config.numKeyValueHeads * hd, mlp = config.intermediateSize
        embedTokens = try weights.matrix("model.embed_tokens.weight", rows: config.vocabSize, cols: h)
        embeddingNorm = try weights.floats("model.embedding_norm.weight", shape: [h])
        layers = try (0..<config.numHiddenLayers).map { i in
            let p = "model.layers.\(i)."
            let op: Operator
            if config.isAttention(layer: i) {
                op = .attention(qProj: try weights.matrix(p + "self_attn.q_proj.weight", rows: q, cols: h),
                                kProj: try weights.matrix(p + "self_attn.k_proj.weight", rows: kv, cols: h),
                                vProj: try weights.matrix(p + "self_attn.v_proj.weight", rows: kv, cols: h),
                                outProj: try weights.matrix(p + "self_attn.out_proj.weight", rows: h, cols: q),
                                qNorm: try weights.floats(p + "self_attn.q_layernorm.weight", shape: [hd]),
                                kNorm: try weights.floats(p + "self_attn.k_layernorm.weight", shape: [hd]))
            } else {
                op = .conv(inProj: try weights.matrix(p + "conv.in_proj.weight", rows: 3 * h, cols: h),
                           convWeight: try weights.floats(p + "conv.conv.weight", shape: [h, config.convKernelSize]),
                           outProj: try weights.matrix(p + "conv.out_proj.weight", rows: h, cols: h))
            }
            return Layer(operatorNorm: try weights.floats(p + "operator_norm.weight", shape: [h]), op: op,
                         ffnNorm: try weights.floats(p + "ffn_norm.weight", shape: [h]),
                         w1: try weights.matrix(p + "feed_forward.w1.weight", rows: mlp, cols: h),
                         w3: try weights.matrix(p + "feed_forward.w3.weight", rows: mlp, cols: h),
                         w2: try weights.matrix(p + "feed_forward.w2.weight", rows: h, cols: mlp))
        }
    }

    /// Bytes of weights read per decoded token (every matrix once, the output head included).
    public var bytesPerToken: Int {
        func size(_ m: fb_matrix) -> Int { fb_quant_bytes(m.type, m.rows, m.cols) + fb_scale_bytes(m.type, m.rows, m.cols) }
        var total = size(embedTokens)
        for l in layers {
            total += size(l.w1) + size(l.w2) + size(l.w3)
            switch l.op {
            case .conv(let a, _, let b): total += size(a) + size(b)
            case .attention(let q, let k, let v, let o, _, _): total += size(q) + size(k) + size(v) + size(o)
            }
        }
        return total
    }

    /// The token's embedding row (dequantized), as `inputs_embeds` would hold it.
    public func embed(_ token: Int32, into out: UnsafeMutablePointer<Float>) {
        var m = embedTokens
        fb_matrix_row(&m, Int(token), out)
    }
}

/// One sequence's caches and scratch space. `forward` advances `position`.
public final class LFM2Session {
    public let model: LFM2Model
    public let contextLength: Int
    /// Tokens per prefill step: bounds the scratch memory; longer inputs run in several steps.
    public let maxBatch: Int
    public private(set) var position = 0
    let parallel: Parallel

    // Caches: per conv layer the last (kernel − 1) inputs of the depthwise conv; per attention layer K and V.
    private var convState: [FloatBuffer?]
    private var keyCache: [LazyFloatBuffer?]
    private var valueCache: [LazyFloatBuffer?]

    // Scratch, sized for maxBatch tokens.
    private let hidden: FloatBuffer       // residual stream x [T × H]
    private let normed: FloatBuffer       // operator_norm / ffn_norm output [T × H]
    private let projected: FloatBuffer    // in_proj (B|C|x) or q|k|v [T × max(3H, q+2kv)]
    private let convInput: FloatBuffer    // conv history + B⊙x [(K−1+T) × H]
    private let mixed: FloatBuffer        // C⊙conv or attention output [T × max(H, q)]
    private let operatorOut: FloatBuffer  // out_proj [T × H]
    private let gate: FloatBuffer         // w1 [T × I]
    private let up: FloatBuffer           // w3 [T × I]
    private let scores: FloatBuffer       // attention weights [ctx]
    private let ropeCos: FloatBuffer, ropeSin: FloatBuffer
    private let inverseFrequency: [Float]

    public init(model: LFM2Model, contextLength: Int, maxBatch: Int = 64, threads: Int) {
        self.model = model
        self.contextLength = contextLength
        self.maxBatch = maxBatch
        parallel = Parallel(threads: threads)
        let c = model.config, h = c.hiddenSize, hd = c.headDim
        let q = c.numAttentionHeads * hd, kv = c.numKeyValueHeads * hd
        convState = (0..<c.numHiddenLayers).map { c.isAttention(layer: $0) ? nil : FloatBuffer(count: (c.convKernelSize - 1) * h) }
        keyCache = (0..<c.numHiddenLayers).map { c.isAttention(layer: $0) ? LazyFloatBuffer(count: contextLength * kv) : nil }
        valueCache = (0..<c.numHiddenLayers).map { c.isAttention(layer: $0) ? LazyFloatBuffer(count: contextLength * kv) : nil }
        hidden = FloatBuffer(count: maxBatch * h)
        normed = FloatBuffer(count: maxBatch * h)
        projected = FloatBuffer(count: maxBatch * max(3 * h, q + 2 * kv))
        convInput = FloatBuffer(count: (c.convKernelSize - 1 + maxBatch) * h)
        mixed = FloatBuffer(count: maxBatch * max(h, q))
        operatorOut = FloatBuffer(count: maxBatch * h)
        gate = FloatBuffer(count: maxBatch * c.intermediateSize)
        up = FloatBuffer(count: maxBatch * c.intermediateSize)
        scores = FloatBuffer(count: contextLength)
        ropeCos = FloatBuffer(count: hd / 2)
        ropeSin = FloatBuffer(count: hd / 2)
        // As transformers computes it, in float32: 1 / θ^(2i/d).
        inverseFrequency = (0..<hd / 2).map { i in 1 / powf(Float(c.ropeTheta), Float(2 * i) / Float(hd)) }
    }

    /// Forget the sequence (caches are overwritten as positions are reused).
    public func reset() {
        position = 0
        for s in convState { if let s { memset(s.pointer, 0, s.count * 4) } }
    }

    /// Runs `count` input embeddings (rows of H floats) at positions position..<position+count.
    /// Writes the logits of the last input to `lastLogits` (vocab floats), and of every input to
    /// `allLogits` (count × vocab) when given.
    public func forward(embeddings: UnsafePointer<Float>, count: Int, lastLogits: UnsafeMutablePointer<Float>?,
                        allLogits: UnsafeMutablePointer<Float>? = nil) throws {
        let h = model.config.hiddenSize
        try run(count: count, lastLogits: lastLogits, allLogits: allLogits) { start, t, destination in
            memcpy(destination, embeddings + start * h, t * h * 4)
        }
    }

    /// Token ids in: their embedding rows are looked up straight into the residual stream (no allocation).
    public func forward(tokens: [Int32], lastLogits: UnsafeMutablePointer<Float>?, allLogits: UnsafeMutablePointer<Float>? = nil) throws {
        let h = model.config.hiddenSize, vocab = model.config.vocabSize
        for t in tokens where t < 0 || Int(t) >= vocab {
            throw FireboltError("token id \(t) is out of range (vocabulary has \(vocab) entries)")
        }
        try run(count: tokens.count, lastLogits: lastLogits, allLogits: allLogits) { start, t, destination in
            for r in 0..<t { model.embed(tokens[start + r], into: destination + r * h) }
        }
    }

    private func run(count: Int, lastLogits: UnsafeMutablePointer<Float>?, allLogits: UnsafeMutablePointer<Float>?,
                     load: (Int, Int, UnsafeMutablePointer<Float>) -> Void) throws {
        guard count > 0 else { return }
        guard position + count <= contextLength else {
            throw FireboltError("the sequence needs \(position + count) positions but the context holds \(contextLength) (use --ctx)")
        }
        let vocab = model.config.vocabSize
        var done = 0
        while done < count {
            let t = min(maxBatch, count - done)
            load(done, t, hidden.pointer)
            step(t)
            if let allLogits { outputHead(rows: t, from: 0, into: allLogits + done * vocab) }
            if done + t == count, let lastLogits {
                if let allLogits {
                    memcpy(lastLogits, allLogits + (count - 1) * vocab, vocab * 4)
                } else {
                    outputHead(rows: 1, from: t - 1, into: lastLogits)
                }
            }
            done += t
        }
    }

    /// embedding_norm, then the tied output head, for `rows` rows of the residual stream starting at `from`.
    private func outputHead(rows: Int, from: Int = 0, into logits: UnsafeMutablePointer<Float>) {
        let c = model.config, h = c.hiddenSize
        for r in 0..<rows {
            fb_rmsnorm(hidden.pointer + (from + r) * h, model.embeddingNorm, normed.pointer + r * h, h, c.normEps)
        }
        parallel.matmul(model.embedTokens, normed.pointer, rows, logits)
    }

    /// All decoder layers over the t rows in `hidden`, at positions position..<position+t.
    private func step(_ t: Int) {
        let c = model.config, h = c.hiddenSize
        for (i, layer) in model.layers.enumerated() {
            for r in 0..<t { fb_rmsnorm(hidden.pointer + r * h, layer.operatorNorm, normed.pointer + r * h, h, c.normEps) }
            switch layer.op {
            case .conv(let inProj, let convWeight, let outProj):
                shortConv(t, inProj: inProj, convWeight: convWeight, outProj: outProj, state: convState[i]!)
            case .attention(let q, let k, let v, let o, let qNorm, let kNorm):
                attention(t, qProj: q, kProj: k, vProj: v, outProj: o, qNorm: qNorm, kNorm: kNorm,
                          keys: keyCache[i]!, values: valueCache[i]!)
            }
            fb_add(hidden.pointer, operatorOut.pointer, t * h)
            // feed_forward: w2(silu(w1 x) ⊙ w3 x) on ffn_norm(h)
            for r in 0..<t { fb_rmsnorm(hidden.pointer + r * h, layer.ffnNorm, normed.pointer + r * h, h, c.normEps) }
            parallel.matmul(layer.w1, normed.pointer, t, gate.pointer)
            parallel.matmul(layer.w3, normed.pointer, t, up.pointer)
            fb_silu_mul(gate.pointer, up.pointer, gate.pointer, t * c.intermediateSize)
            parallel.matmul(layer.w2, gate.pointer, t, operatorOut.pointer)
            fb_add(hidden.pointer, operatorOut.pointer, t * h)
        }
        position += t
    }

    /// ShortConv: in_proj → [B | C | x]; B⊙x through a causal depthwise conv (kernel K, last tap = current step);
    /// C ⊙ conv; out_proj. `state` holds the previous K−1 values of B⊙x.
    private func shortConv(_ t: Int, inProj: fb_matrix, convWeight: [Float], outProj: fb_matrix, state: FloatBuffer) {
        let h = model.config.hiddenSize, k = model.config.convKernelSize, history = k - 1
        parallel.matmul(inProj, normed.pointer, t, projected.pointer)
        let bx = convInput.pointer
        memcpy(bx, state.pointer, history * h * 4)
        for r in 0..<t {
            let row = projected.pointer + r * 3 * h
            fb_mul(row, row + 2 * h, bx + (history + r) * h, h)  // B ⊙ x
        }
        convWeight.withUnsafeBufferPointer { w in
            for r in 0..<t {
                let out = mixed.pointer + r * h
                let cGate = projected.pointer + r * 3 * h + h
                for ch in 0..<h {
                    var acc: Float = 0
                    for j in 0..<k { acc += w[ch * k + j] * bx[(r + j) * h + ch] }
                    out[ch] = cGate[ch] * acc
                }
            }
        }
        memcpy(state.pointer, bx + t * h, history * h * 4)
        parallel.matmul(outProj, mixed.pointer, t, operatorOut.pointer)
    }

    /// GQA attention with per-head RMSNorm on q and k, rotate-half RoPE, and the KV cache.
    private func attention(_ t: Int, qProj: fb_matrix, kProj: fb_matrix, vProj: fb_matrix, outProj: fb_matrix,
                           qNorm: [Float], kNorm: [Float], keys: LazyFloatBuffer, values: LazyFloatBuffer) {
        let c = model.config, hd = c.headDim, heads = c.numAttentionHeads, kvHeads = c.numKeyValueHeads
        let qWidth = heads * hd, kvWidth = kvHeads * hd, stride = qWidth + 2 * kvWidth
        let q = projected.pointer
        parallel.matmul(qProj, normed.pointer, ldx: c.hiddenSize, t, q, ldy: stride)
        parallel.matmul(kProj, normed.pointer, ldx: c.hiddenSize, t, q + qWidth, ldy: stride)
        parallel.matmul(vProj, normed.pointer, ldx: c.hiddenSize, t, q + qWidth + kvWidth, ldy: stride)
        let scale = 1 / Float(hd).squareRoot()
        for r in 0..<t {
            let pos = position + r
            let row = q + r * stride
            for head in 0..<heads { fb_rmsnorm(row + head * hd, qNorm, row + head * hd, hd, c.normEps) }
            for head in 0..<kvHeads { fb_rmsnorm(row + qWidth + head * hd, kNorm, row + qWidth + head * hd, hd, c.normEps) }
            for i in 0..<hd / 2 {
                let angle = Float(pos) * inverseFrequency[i]  // float32 product, as the reference computes it
                ropeCos.pointer[i] = Float(cos(Double(angle)))
                ropeSin.pointer[i] = Float(sin(Double(angle)))
            }
            fb_rope(row, heads, hd, ropeCos.pointer, ropeSin.pointer)
            fb_rope(row + qWidth, kvHeads, hd, ropeCos.pointer, ropeSin.pointer)
            memcpy(keys.pointer + pos * kvWidth, row + qWidth, kvWidth * 4)
            memcpy(values.pointer + pos * kvWidth, row + qWidth + kvWidth, kvWidth * 4)
        }
        // Causal attention: token r sees positions 0...position+r.
        let groups = heads / kvHeads
        for r in 0..<t {
            let pos = position + r
            let row = q + r * stride
            let out = mixed.pointer + r * qWidth
            for head in 0..<heads {
                let kvHead = head / groups
                let query = row + head * hd
                for j in 0...pos { scores.pointer[j] = fb_dot(query, keys.pointer + j * kvWidth + kvHead * hd, hd) * scale }
                fb_softmax(scores.pointer, pos + 1)
                let o = out + head * hd
                memset(o, 0, hd * 4)
                for j in 0...pos { fb_axpy(scores.pointer[j], values.pointer + j * kvWidth + kvHead * hd, o, hd) }
            }
        }
        parallel.matmul(outProj, mixed.pointer, t, operatorOut.pointer)
    }
}
