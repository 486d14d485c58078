import Foundation
import Kernels

// LFM2 decoder (transformers `Lfm2ForCausalLM`), docs/model.md §3, written top to bottom like llama2.c's run.c:
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
        var total = embedTokens.storedBytes
        for l in layers {
            total += l.w1.storedBytes + l.w2.storedBytes + l.w3.storedBytes
            switch l.op {
            case .conv(let a, _, let b): total += a.storedBytes + b.storedBytes
            case .attention(let q, let k, let v, let o, _, _):
                total += q.storedBytes + k.storedBytes + v.storedBytes + o.storedBytes
            }
        }
        return total
    }

    /// Every id must name a row of the embedding (and of the output head).
    public func checkTokens(_ ids: [Int32]) throws {
        for id in ids where id < 0 || Int(id) >= config.vocabSize {
            throw FireboltError("token id \(id) is out of range (vocabulary has \(config.vocabSize) entries)")
        }
    }

    /// The token's embedding row (dequantized), as `inputs_embeds` would hold it.
    public func embed(_ token: Int32, into out: UnsafeMutablePointer<Float>) {
        var m = embedTokens
        fb_matrix_row(&m, Int(token), out)
    }
}

/// How the attention layers keep their keys and values.
public enum KVCacheType: String, CaseIterable, Sendable {
    /// IEEE binary16 (rounded to nearest even as written): half the memory and half the bytes decode attention reads
    /// per token, for a relative rounding error of at most 2⁻¹¹ per cached value. The default, as in llama.cpp.
    /// Its range ends at ±65504: LFM2's keys are RMS-normalised per head and its values are projections of
    /// RMS-normalised inputs, orders of magnitude below that.
    case f16
    /// float32: the reference's arithmetic (the parity tests against the goldens use it).
    case f32

    public static let `default` = KVCacheType.f16
    public var bytesPerValue: Int { self == .f16 ? 2 : 4 }
}

/// One sequence's caches and scratch space. `forward` advances `position`.
public final class LFM2Session {
    public let model: LFM2Model
    public let contextLength: Int
    /// Tokens per prefill step: bounds the scratch memory; longer inputs run in several steps. Large steps make the
    /// batched products efficient (each weight is converted once per step).
    public let maxBatch: Int
    public private(set) var position = 0
    public let kvCache: KVCacheType
    let parallel: Parallel

    // Caches: per conv layer the last (kernel − 1) inputs of the depthwise conv; per attention layer K and V, head-major
    // [kv head][position][hd] in `kvCache`'s type.
    private var convState: [FloatBuffer?]
    private var keyCache: [LazyBuffer?]
    private var valueCache: [LazyBuffer?]

    // Scratch, sized for maxBatch tokens; mapped lazily, so only the rows a step uses become resident.
    private let hidden: LazyFloatBuffer       // residual stream x [T × H]
    private let normed: LazyFloatBuffer       // operator_norm / ffn_norm output [T × H]
    private let projected: LazyFloatBuffer    // in_proj (B|C|x) or q|k|v [T × max(3H, q+2kv)]
    private let convInput: LazyFloatBuffer    // conv history + B⊙x [(K−1+T) × H]
    private let mixed: LazyFloatBuffer        // C⊙conv or attention output [T × max(H, q)]
    private let operatorOut: LazyFloatBuffer  // out_proj [T × H]
    private let gate: LazyFloatBuffer         // w1 [T × I]
    private let up: LazyFloatBuffer           // w3 [T × I]
    private let decodeScores: LazyFloatBuffer  // decode attention weights, per thread [threads × groups × ctx]
    private let batchScores: LazyFloatBuffer  // batched attention weights, per thread [threads × maxBatch × ctx]
    private let widenedCache: LazyFloatBuffer?  // f16 cache: one K and one V head widened for sgemm, per thread [threads × 2 × ctx × hd]
    private let ropeCos: FloatBuffer, ropeSin: FloatBuffer
    private let inverseFrequency: [Float]

    /// maxBatch 256: prefill buffers for 512-token steps cost 18 MiB more peak RSS for 3–10% more prefill speed.
    public init(model: LFM2Model, contextLength: Int, maxBatch: Int = 256, threads: Int, kvCache: KVCacheType = .default) {
        self.model = model
        self.contextLength = contextLength
        self.maxBatch = maxBatch
        self.kvCache = kvCache
        parallel = Parallel(threads: threads)
        let c = model.config, h = c.hiddenSize, hd = c.headDim
        let q = c.numAttentionHeads * hd, kv = c.numKeyValueHeads * hd
        convState = (0..<c.numHiddenLayers).map { c.isAttention(layer: $0) ? nil : FloatBuffer(count: (c.convKernelSize - 1) * h) }
        let cacheBytes = contextLength * kv * kvCache.bytesPerValue
        keyCache = (0..<c.numHiddenLayers).map { c.isAttention(layer: $0) ? LazyBuffer(bytes: cacheBytes) : nil }
        valueCache = (0..<c.numHiddenLayers).map { c.isAttention(layer: $0) ? LazyBuffer(bytes: cacheBytes) : nil }
        widenedCache = kvCache == .f16 ? LazyFloatBuffer(count: max(1, threads) * 2 * contextLength * hd) : nil
        hidden = LazyFloatBuffer(count: maxBatch * h)
        normed = LazyFloatBuffer(count: maxBatch * h)
        projected = LazyFloatBuffer(count: maxBatch * max(3 * h, q + 2 * kv))
        convInput = LazyFloatBuffer(count: (c.convKernelSize - 1 + maxBatch) * h)
        mixed = LazyFloatBuffer(count: maxBatch * max(h, q))
        operatorOut = LazyFloatBuffer(count: maxBatch * h)
        gate = LazyFloatBuffer(count: maxBatch * c.intermediateSize)
        up = LazyFloatBuffer(count: maxBatch * c.intermediateSize)
        decodeScores = LazyFloatBuffer(count: max(1, threads) * (c.numAttentionHeads / max(1, c.numKeyValueHeads)) * contextLength)
        batchScores = LazyFloatBuffer(count: max(1, threads) * maxBatch * contextLength)
        ropeCos = FloatBuffer(count: max(1, threads) * hd / 2)  // one table per thread
        ropeSin = FloatBuffer(count: max(1, threads) * hd / 2)
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
        try forward(count: count, lastLogits: lastLogits, allLogits: allLogits) { start, t, destination in
            memcpy(destination, embeddings + start * h, t * h * 4)
        }
    }

    /// Token ids in: their embedding rows are looked up straight into the residual stream (no allocation).
    public func forward(tokens: [Int32], lastLogits: UnsafeMutablePointer<Float>?, allLogits: UnsafeMutablePointer<Float>? = nil) throws {
        let h = model.config.hiddenSize
        try model.checkTokens(tokens)
        try forward(count: tokens.count, lastLogits: lastLogits, allLogits: allLogits) { start, t, destination in
            for r in 0..<t { model.embed(tokens[start + r], into: destination + r * h) }
        }
    }

    /// The one loop over a sequence in chunks of at most `maxBatch` positions: `load(start, count, destination)` writes
    /// the input rows start..<start+count (H floats each) into the residual stream, then all layers run on them.
    /// Firebolt-VL's session loads its rows through the modulator this way.
    public func forward(count: Int, lastLogits: UnsafeMutablePointer<Float>?, allLogits: UnsafeMutablePointer<Float>?,
                        load: (Int, Int, UnsafeMutablePointer<Float>) throws -> Void) throws {
        guard count > 0 else { return }
        guard position + count <= contextLength else {
            throw FireboltError("the sequence needs \(position + count) positions but the context holds \(contextLength) (use --ctx)")
        }
        let vocab = model.config.vocabSize
        var done = 0
        while done < count {
            let t = min(maxBatch, count - done)
            try load(done, t, hidden.pointer)
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

    /// body(begin, end) over contiguous ranges of rows 0..<t, split across threads when there are enough of them
    /// (`width` floats per row; one token runs inline).
    private func rows(_ t: Int, width: Int, _ body: (Int, Int) -> Void) {
        parallel.forEachChunk(t, work: t * width * 8, body)
    }

    /// Decodes one token for each of `sequences` (sessions of this model, each at most once; this one may be among
    /// them) in one pass through the layers, so every weight is read once for all of them. `load(rows)` writes the
    /// inputs, row r (H floats at rows + r × H) for sequence r; row r goes at that sequence's own next position,
    /// against its own caches. Runs on this session's scratch; writes sequence r's logits to `logits + r × vocab`.
    public func decodeTogether(_ sequences: [LFM2Session], logits: UnsafeMutablePointer<Float>,
                               load: (UnsafeMutablePointer<Float>) throws -> Void) throws {
        let t = sequences.count
        guard t > 0 else { return }
        guard t <= maxBatch else { throw FireboltError("\(t) sequences at once, but a step holds \(maxBatch) rows") }
        guard Set(sequences.map { ObjectIdentifier($0) }).count == t else { throw FireboltError("a sequence appears twice in one step") }
        for s in sequences {
            guard s.model === model, s.kvCache == kvCache, s.contextLength == contextLength else { throw FireboltError("only sequences of one model, cache type and context length decode together")
            }
            guard s.position + 1 <= s.contextLength else {
                throw FireboltError("the sequence needs \(s.position + 1) positions but the context holds \(s.contextLength) (use --ctx)")
            }
        }
        try load(hidden.pointer)
        step(t, together: sequences)
        outputHead(rows: t, into: logits)
    }

    /// All decoder layers over the t rows in `hidden`: at positions position..<position+t of this sequence, or with
    /// `together`, row r at the next position of sequence r.
    private func step(_ t: Int, together: [LFM2Session]? = nil) {
        let c = model.config, h = c.hiddenSize, mlp = c.intermediateSize, eps = c.normEps
        let hidden = self.hidden.pointer, normed = self.normed.pointer, operatorOut = self.operatorOut.pointer
        let gate = self.gate.pointer, up = self.up.pointer
        for (i, layer) in model.layers.enumerated() {
            layer.operatorNorm.withUnsafeBufferPointer { w in
                rows(t, width: h) { b, e in for r in b..<e { fb_rmsnorm(hidden + r * h, w.baseAddress!, normed + r * h, h, eps) } }
            }
            switch (layer.op, together) {
            case (.conv(let inProj, let convWeight, let outProj), nil):
                shortConv(t, inProj: inProj, convWeight: convWeight, outProj: outProj, state: convState[i]!)
            case (.conv(let inProj, let convWeight, let outProj), let sequences?):
                shortConvTogether(sequences.map { $0.convState[i]! }, inProj: inProj, convWeight: convWeight, outProj: outProj)
            case (.attention(let q, let k, let v, let o, let qNorm, let kNorm), nil):
                let start = position, cache = CacheView(keys: keyCache[i]!, values: valueCache[i]!)
                attention(t, qProj: q, kProj: k, vProj: v, outProj: o, qNorm: qNorm, kNorm: kNorm,
                          rows: RowPlacement(sameSequence: true, position: { start + $0 }, cache: { _ in cache }))
            case (.attention(let q, let k, let v, let o, let qNorm, let kNorm), let sequences?):
                let positions = sequences.map(\.position)
                let caches = sequences.map { CacheView(keys: $0.keyCache[i]!, values: $0.valueCache[i]!) }
                attention(t, qProj: q, kProj: k, vProj: v, outProj: o, qNorm: qNorm, kNorm: kNorm,
                          rows: RowPlacement(sameSequence: false, position: { positions[$0] }, cache: { caches[$0] }))
            }
            // h += operator output; feed_forward: w2(silu(w1 x) ⊙ w3 x) on ffn_norm(h)
            layer.ffnNorm.withUnsafeBufferPointer { w in
                rows(t, width: h) { b, e in
                    fb_add(hidden + b * h, operatorOut + b * h, (e - b) * h)
                    for r in b..<e { fb_rmsnorm(hidden + r * h, w.baseAddress!, normed + r * h, h, eps) }
                }
            }
            parallel.matmul(layer.w1, normed, t, gate)
            parallel.matmul(layer.w3, normed, t, up)
            rows(t, width: mlp) { b, e in fb_silu_mul(gate + b * mlp, up + b * mlp, gate + b * mlp, (e - b) * mlp) }
            parallel.matmul(layer.w2, gate, t, operatorOut)
            rows(t, width: h) { b, e in fb_add(hidden + b * h, operatorOut + b * h, (e - b) * h) }
        }
        if let together { for s in together { s.position += 1 } } else { position += t }
    }

    /// ShortConv: in_proj → [B | C | x]; B⊙x through a causal depthwise conv (kernel K, last tap = current step);
    /// C ⊙ conv; out_proj. `state` holds the previous K−1 values of B⊙x.
    private func shortConv(_ t: Int, inProj: fb_matrix, convWeight: [Float], outProj: fb_matrix, state: FloatBuffer) {
        let h = model.config.hiddenSize, k = model.config.convKernelSize, history = k - 1
        let projected = self.projected.pointer, mixed = self.mixed.pointer
        parallel.matmul(inProj, normed.pointer, t, projected)
        let bx = convInput.pointer
        memcpy(bx, state.pointer, history * h * 4)
        rows(t, width: h) { b, e in
            for r in b..<e {
                let row = projected + r * 3 * h
                fb_mul(row, row + 2 * h, bx + (history + r) * h, h)  // B ⊙ x
            }
        }
        // Every output row reads B⊙x rows r..<r+K, all computed above, so rows are independent.
        convWeight.withUnsafeBufferPointer { w in
            rows(t, width: h * k) { b, e in
                for r in b..<e {
                    let out = mixed + r * h
                    let cGate = projected + r * 3 * h + h
                    for ch in 0..<h {
                        var acc: Float = 0
                        for j in 0..<k { acc += w[ch * k + j] * bx[(r + j) * h + ch] }
                        out[ch] = cGate[ch] * acc
                    }
                }
            }
        }
        memcpy(state.pointer, bx + t * h, history * h * 4)
        parallel.matmul(outProj, mixed, t, operatorOut.pointer)
    }

    /// ShortConv for rows of different sequences (one row each): row r's B⊙x meets sequence r's conv history
    /// `states[r]`, summed in the same order as `shortConv`, then the history moves on by one.
    private func shortConvTogether(_ states: [FloatBuffer], inProj: fb_matrix, convWeight: [Float], outProj: fb_matrix) {
        let t = states.count, h = model.config.hiddenSize, k = model.config.convKernelSize, history = k - 1
        let projected = self.projected.pointer, mixed = self.mixed.pointer, bxRows = convInput.pointer
        parallel.matmul(inProj, normed.pointer, t, projected)
        convWeight.withUnsafeBufferPointer { w in
            rows(t, width: h * k) { b, e in
                for r in b..<e {
                    let row = projected + r * 3 * h, cGate = row + h, out = mixed + r * h
                    let bx = bxRows + r * h, state = states[r].pointer
                    fb_mul(row, row + 2 * h, bx, h)  // B ⊙ x
                    for ch in 0..<h {
                        var acc: Float = 0
                        for j in 0..<history { acc += w[ch * k + j] * state[j * h + ch] }
                        acc += w[ch * k + history] * bx[ch]
                        out[ch] = cGate[ch] * acc
                    }
                    if history > 0 {
                        memmove(state, state + h, (history - 1) * h * 4)
                        memcpy(state + (history - 1) * h, bx, h * 4)
                    }
                }
            }
        }
        parallel.matmul(outProj, mixed, t, operatorOut.pointer)
    }

    /// Where each new row of an attention layer goes: its position and the caches it writes and reads.
    private struct RowPlacement {
        /// All rows are consecutive positions of one sequence (prefill may then attend as one batch).
        let sameSequence: Bool
        let position: (Int) -> Int
        let cache: (Int) -> CacheView
    }

    /// GQA attention with per-head RMSNorm on q and k, rotate-half RoPE, and the KV cache: the t new rows' keys and
    /// values go into the cache, then each new row attends over the cache up to its own position.
    private func attention(_ t: Int, qProj: fb_matrix, kProj: fb_matrix, vProj: fb_matrix, outProj: fb_matrix,
                           qNorm: [Float], kNorm: [Float], rows placement: RowPlacement) {
        let c = model.config, stride = c.numAttentionHeads * c.headDim + 2 * c.numKeyValueHeads * c.headDim
        let qkv = projected.pointer  // per row: [q (heads × hd) | k (kvHeads × hd) | v (kvHeads × hd)]
        parallel.matmul(qProj, normed.pointer, ldx: c.hiddenSize, t, qkv, ldy: stride)
        parallel.matmul(kProj, normed.pointer, ldx: c.hiddenSize, t, qkv + c.numAttentionHeads * c.headDim, ldy: stride)
        parallel.matmul(vProj, normed.pointer, ldx: c.hiddenSize, t, qkv + (c.numAttentionHeads + c.numKeyValueHeads) * c.headDim,
                        ldy: stride)
        normalizeRotateAndCache(t, qkv: qkv, qNorm: qNorm, kNorm: kNorm, rows: placement)
        if placement.sameSequence && t >= fb_batched_min_tokens() {
            batchedAttention(t, qkv: qkv, cache: placement.cache(0))
        } else {
            tokenAttention(t, qkv: qkv, rows: placement)
        }
        parallel.matmul(outProj, mixed.pointer, t, operatorOut.pointer)
    }

    /// The caches are head-major ([kv head][position][hd], `contextLength` positions per head), so attention streams
    /// one contiguous run per head; f32 or f16 (`kvCache`).
    private struct CacheView {
        let k32: UnsafeMutablePointer<Float>, v32: UnsafeMutablePointer<Float>
        let k16: UnsafeMutablePointer<UInt16>, v16: UnsafeMutablePointer<UInt16>
        init(keys: LazyBuffer, values: LazyBuffer) {
            k32 = keys.raw.assumingMemoryBound(to: Float.self); v32 = values.raw.assumingMemoryBound(to: Float.self)
            k16 = keys.raw.assumingMemoryBound(to: UInt16.self); v16 = values.raw.assumingMemoryBound(to: UInt16.self)
        }
    }

    /// Per new row: RMSNorm per head on q and k, RoPE at its position, then its keys and values into the cache.
    private func normalizeRotateAndCache(_ t: Int, qkv q: UnsafeMutablePointer<Float>, qNorm: [Float], kNorm: [Float],
                                         rows placement: RowPlacement) {
        let c = model.config, hd = c.headDim, heads = c.numAttentionHeads, kvHeads = c.numKeyValueHeads
        let qWidth = heads * hd, kvWidth = kvHeads * hd, stride = qWidth + 2 * kvWidth
        let headSpan = contextLength, eps = c.normEps, half = hd / 2
        let ropeCos = self.ropeCos.pointer, ropeSin = self.ropeSin.pointer
        let f16 = kvCache == .f16
        qNorm.withUnsafeBufferPointer { qn in
            kNorm.withUnsafeBufferPointer { kn in
                inverseFrequency.withUnsafeBufferPointer { frequency in
                    parallel.forEachIndexedChunk(t, work: t * stride * 16) { chunk, b, e in
                        let cosTable = ropeCos + chunk * half, sinTable = ropeSin + chunk * half
                        for r in b..<e {
                            let pos = placement.position(r), cache = placement.cache(r)
                            let row = q + r * stride
                            for head in 0..<heads { fb_rmsnorm(row + head * hd, qn.baseAddress!, row + head * hd, hd, eps) }
                            for head in 0..<kvHeads { fb_rmsnorm(row + qWidth + head * hd, kn.baseAddress!, row + qWidth + head * hd, hd, eps) }
                            for i in 0..<half {
                                let angle = Float(pos) * frequency[i]  // float32 product, as the reference computes it
                                cosTable[i] = Float(cos(Double(angle)))
                                sinTable[i] = Float(sin(Double(angle)))
                            }
                            fb_rope(row, heads, hd, cosTable, sinTable)
                            fb_rope(row + qWidth, kvHeads, hd, cosTable, sinTable)
                            for head in 0..<kvHeads {
                                let at = (head * headSpan + pos) * hd, k = row + qWidth + head * hd, v = k + kvWidth
                                if f16 {
                                    fb_f32_to_f16_array(k, cache.k16 + at, hd)
                                    fb_f32_to_f16_array(v, cache.v16 + at, hd)
                                } else {
                                    memcpy(cache.k32 + at, k, hd * 4)
                                    memcpy(cache.v32 + at, v, hd * 4)
                                }
                            }
                        }
                    }
                }
            }
        }
    }

    /// Many new rows (prefill): per head, scores = q kᵀ over all position+t keys (sgemm), row r softmaxed over its
    /// first position+r+1 and zeroed after them, then out = scores v (sgemm); heads split across threads. An f16
    /// cache is widened one key/value head at a time into the thread's scratch (once per head a thread meets: span × hd
    /// values, against t × span × hd multiply-adds of the products).
    private func batchedAttention(_ t: Int, qkv: UnsafeMutablePointer<Float>, cache: CacheView) {
        let c = model.config, hd = c.headDim, heads = c.numAttentionHeads, kvHeads = c.numKeyValueHeads
        let qWidth = heads * hd, stride = qWidth + 2 * kvHeads * hd, groups = heads / kvHeads
        let scale = 1 / Float(hd).squareRoot(), headSpan = contextLength
        let qs = UnsafeSendable(qkv), out = UnsafeSendable(mixed.pointer)
        let caches = UnsafeSendable(cache)
        let span = position + t
        let slabs = UnsafeSendable(batchScores.pointer)
        let start = position, slab = maxBatch * contextLength
        let widened = UnsafeSendable(widenedCache?.pointer), widenedSlab = 2 * contextLength * hd
        parallel.forEachIndexedChunk(heads, work: heads * t * span * hd * 2) { chunk, begin, end in
            let s = slabs.value + chunk * slab
            var widenedHead = -1
            for head in begin..<end {
                let kvHead = head / groups, at = kvHead * headSpan * hd
                let keyRows: UnsafePointer<Float>, valueRows: UnsafePointer<Float>
                if let w = widened.value {
                    let k = w + chunk * widenedSlab, v = k + contextLength * hd
                    if kvHead != widenedHead {
                        fb_f16_to_f32_array(caches.value.k16 + at, k, span * hd)
                        fb_f16_to_f32_array(caches.value.v16 + at, v, span * hd)
                        widenedHead = kvHead
                    }
                    (keyRows, valueRows) = (UnsafePointer(k), UnsafePointer(v))
                } else {
                    (keyRows, valueRows) = (UnsafePointer(caches.value.k32 + at), UnsafePointer(caches.value.v32 + at))
                }
                fb_sgemm(1, t, span, hd, scale, qs.value + head * hd, stride, keyRows, hd, 0, s, span)
                for r in 0..<t {
                    let valid = start + r + 1
                    fb_softmax(s + r * span, valid)
                    if valid < span { memset(s + r * span + valid, 0, (span - valid) * 4) }
                }
                fb_sgemm(0, t, hd, span, 1, s, span, valueRows, hd, 0, out.value + head * hd, qWidth)
            }
        }
    }

    /// Few new rows (decode, or sequences decoded together): per row, each key/value head with its `groups` query
    /// heads reads its cache rows once (fb_attend); the key/value heads are split across threads.
    private func tokenAttention(_ t: Int, qkv: UnsafeMutablePointer<Float>, rows placement: RowPlacement) {
        let c = model.config, hd = c.headDim, heads = c.numAttentionHeads, kvHeads = c.numKeyValueHeads
        let qWidth = heads * hd, stride = qWidth + 2 * kvHeads * hd, groups = heads / kvHeads
        let scale = 1 / Float(hd).squareRoot(), headSpan = contextLength, f16 = kvCache == .f16
        let qs = UnsafeSendable(qkv), out = UnsafeSendable(mixed.pointer)
        let slabs = UnsafeSendable(decodeScores.pointer), slab = groups * contextLength
        for r in 0..<t {
            let span = placement.position(r) + 1
            let caches = UnsafeSendable(placement.cache(r))
            parallel.forEachIndexedChunk(kvHeads, work: kvHeads * groups * span * hd * 4) { chunk, begin, end in
                let s = slabs.value + chunk * slab
                for kvHead in begin..<end {
                    let query = qs.value + r * stride + kvHead * groups * hd, at = kvHead * headSpan * hd
                    let output = out.value + r * qWidth + kvHead * groups * hd
                    if f16 {
                        fb_attend_f16(query, groups, hd, caches.value.k16 + at, caches.value.v16 + at, hd, span, scale, s, output)
                    } else {
                        fb_attend(query, groups, hd, caches.value.k32 + at, caches.value.v32 + at, hd, span, scale, s, output)
                    }
                }
            }
        }
    }
}
