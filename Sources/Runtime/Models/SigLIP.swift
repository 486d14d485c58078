import Foundation
import Kernels

// SigLIP vision tower (transformers `SiglipVisionModel`, v1, with the attention-pooling head), docs/model.md §1.
// Views in (channels first, [C, S, S]), one pooled vector per view out; the views of an image run as one batch of
// patches (attention stays within each view). Written in the style of LFM2.swift: weights are found by their
// canonical names (Converter/ModelPlan.swift) and shape-checked at load, products go through `Parallel.matmul`
// (batched: fb_matmul_pool's GEMMs), and the scratch space is allocated once (and regrown only for a larger batch).
//
//   patches (row-major grid, each flattened [c][ky][kx]) ─► patch_embedding (+ bias) ─► + position table
//   (bicubic-resized when the grid is not the table's) ─► encoder layers (pre-LN attention, pre-LN MLP)
//   ─► post_layernorm ─► pooling head: probe attends over all tokens (nn.MultiheadAttention) = r;
//   r + MLP(layernorm(r)) ─► pooler_output
//
// The same class runs LFM2-VL's SigLIP2 NaFlex tower (`VisionConfig.isNaFlex`): images arrive already cut into
// patches (LFM2VLImageProcessor, each flattened (y, x, c), which is how its patch_embedding Linear reads them), of any
// rows × cols grid; the position table is resized to that grid bilinearly with antialiasing; there is no head, and
// `features` returns the post-layernorm patch features.

/// The vision tower's weights, scratch, and per-grid position tables. One call at a time (the scratch and the
/// position-table cache are not shared across threads; products and attention use `threads` internally).
public final class SigLIPVisionTower {
    public let config: VisionConfig
    /// Keeps the memory the matrices point into alive.
    public let weights: WeightStore

    struct Attention {
        let q: fb_matrix, k: fb_matrix, v: fb_matrix, out: fb_matrix
        let qBias: [Float], kBias: [Float], vBias: [Float], outBias: [Float]
    }

    struct MLP {
        let fc1: fb_matrix, fc1Bias: [Float]
        let fc2: fb_matrix, fc2Bias: [Float]
    }

    struct Layer {
        let norm1Weight: [Float], norm1Bias: [Float]
        let attention: Attention
        let norm2Weight: [Float], norm2Bias: [Float]
        let mlp: MLP
    }

    enum Activation { case tanh, erf }

    let patchEmbedding: fb_matrix
    let patchBias: [Float]
    /// The learned position table [side² × hidden], rows in row-major grid order.
    let positionTable: [Float]
    /// Grid side the table was trained for (image_size / patch_size).
    public let tableSide: Int
    let layers: [Layer]
    let postNormWeight: [Float], postNormBias: [Float]

    /// The attention-pooling head (SigLIP; NaFlex towers have none).
    struct Head {
        let probe: [Float]
        let attention: Attention
        let normWeight: [Float], normBias: [Float]
        let mlp: MLP
    }
    let head: Head?
    let activation: Activation
    let parallel: Parallel

    /// Position tables per grid (rows, cols), resized once and kept.
    private var positionCache: [GridSize: [Float]] = [:]
    struct GridSize: Hashable { let rows: Int, cols: Int }
    private var scratch: Scratch

    /// Buffers for a batch of views of `tokens` patches in all, none of more than `viewTokens`.
    struct Scratch {
        let tokens: Int, viewTokens: Int
        let patches: FloatBuffer   // [N × C·p·p]
        let hidden: FloatBuffer    // residual stream [N × D]
        let normed: FloatBuffer    // layer-norm output [N × D]
        let q: FloatBuffer, k: FloatBuffer, v: FloatBuffer  // [N × D]
        let context: FloatBuffer   // attention output before out_proj [N × D]
        let projected: FloatBuffer // out_proj / fc2 output [N × D]
        let mlp: FloatBuffer       // fc1 output [N × I]
        let scores: FloatBuffer    // attention weights of one (view, head), per thread [threads × n × n]

        init(tokens: Int, viewTokens: Int, config c: VisionConfig, threads: Int) {
            self.tokens = tokens
            self.viewTokens = viewTokens
            let d = c.hiddenSize, n = tokens
            patches = FloatBuffer(count: n * c.numChannels * c.patchSize * c.patchSize, zeroed: false)
            hidden = FloatBuffer(count: n * d, zeroed: false)
            normed = FloatBuffer(count: n * d, zeroed: false)
            q = FloatBuffer(count: n * d, zeroed: false)
            k = FloatBuffer(count: n * d, zeroed: false)
            v = FloatBuffer(count: n * d, zeroed: false)
            context = FloatBuffer(count: n * d, zeroed: false)
            projected = FloatBuffer(count: n * d, zeroed: false)
            mlp = FloatBuffer(count: n * max(c.intermediateSize, d), zeroed: false)
            scores = FloatBuffer(count: max(1, threads) * viewTokens * viewTokens, zeroed: false)
        }
    }

    public init(weights: WeightStore, config: VisionConfig, threads: Int) throws {
        let d = config.hiddenSize, mlpWidth = config.intermediateSize, p = config.patchSize
        guard d > 0, mlpWidth > 0, p > 0, config.numChannels > 0, config.numHiddenLayers >= 0,
              config.numAttentionHeads > 0, d % config.numAttentionHeads == 0, config.imageSize >= p else {
            throw FireboltError("invalid vision config: hidden \(d) must be a positive multiple of \(config.numAttentionHeads) heads, patch \(p) ≤ image \(config.imageSize)")
        }
        switch config.hiddenAct {
        case "gelu_pytorch_tanh", "gelu_new", "gelu_fast": activation = .tanh
        case "gelu": activation = .erf
        default: throw FireboltError("vision hidden_act '\(config.hiddenAct)' is not supported (gelu_pytorch_tanh or gelu)")
        }
        self.config = config
        self.weights = weights
        parallel = Parallel(threads: threads)
        let v = "vision_model."
        patchEmbedding = try weights.matrix(v + "embeddings.patch_embedding.weight", rows: d, cols: config.numChannels * p * p)
        patchBias = try weights.floats(v + "embeddings.patch_embedding.bias", shape: [d])
        tableSide = config.imageSize / p
        positionTable = try weights.floats(v + "embeddings.position_embedding.weight", shape: [tableSide * tableSide, d])

        func attention(_ prefix: String) throws -> Attention {
            Attention(q: try weights.matrix(prefix + "q_proj.weight", rows: d, cols: d),
                      k: try weights.matrix(prefix + "k_proj.weight", rows: d, cols: d),
                      v: try weights.matrix(prefix + "v_proj.weight", rows: d, cols: d),
                      out: try weights.matrix(prefix + "out_proj.weight", rows: d, cols: d),
                      qBias: try weights.floats(prefix + "q_proj.bias", shape: [d]),
                      kBias: try weights.floats(prefix + "k_proj.bias", shape: [d]),
                      vBias: try weights.floats(prefix + "v_proj.bias", shape: [d]),
                      outBias: try weights.floats(prefix + "out_proj.bias", shape: [d]))
        }
        func mlp(_ prefix: String, width: Int) throws -> MLP {
            MLP(fc1: try weights.matrix(prefix + "fc1.weight", rows: width, cols: d),
                fc1Bias: try weights.floats(prefix + "fc1.bias", shape: [width]),
                fc2: try weights.matrix(prefix + "fc2.weight", rows: d, cols: width),
                fc2Bias: try weights.floats(prefix + "fc2.bias", shape: [d]))
        }
        layers = try (0..<config.numHiddenLayers).map { i in
            let l = v + "encoder.layers.\(i)."
            return Layer(norm1Weight: try weights.floats(l + "layer_norm1.weight", shape: [d]),
                         norm1Bias: try weights.floats(l + "layer_norm1.bias", shape: [d]),
                         attention: try attention(l + "self_attn."),
                         norm2Weight: try weights.floats(l + "layer_norm2.weight", shape: [d]),
                         norm2Bias: try weights.floats(l + "layer_norm2.bias", shape: [d]),
                         mlp: try mlp(l + "mlp.", width: mlpWidth))
        }
        postNormWeight = try weights.floats(v + "post_layernorm.weight", shape: [d])
        postNormBias = try weights.floats(v + "post_layernorm.bias", shape: [d])
        if config.isNaFlex {
            head = nil
        } else {
            let h = v + "head."
            // The head's MLP width is its own tensor's (it equals intermediate_size in SigLIP, but need not).
            let headWidth = try weights.entry(h + "mlp.fc1.weight").info.shape.first ?? mlpWidth
            head = Head(probe: try weights.floats(h + "probe", shape: [1, d]), attention: try attention(h + "attention."),
                        normWeight: try weights.floats(h + "layernorm.weight", shape: [d]),
                        normBias: try weights.floats(h + "layernorm.bias", shape: [d]), mlp: try mlp(h + "mlp.", width: headWidth))
        }
        scratch = Scratch(tokens: tableSide * tableSide, viewTokens: tableSide * tableSide, config: config, threads: threads)
    }

    /// Number of patches along one side of a view of `size` pixels (the stride-p convolution drops a remainder).
    public func gridSide(forViewSize size: Int) -> Int { size / config.patchSize }

    /// The position embeddings for a `side × side` patch grid ([side² × hidden], row-major): the table itself for
    /// the trained grid, otherwise the table bicubically resized (computed once per side, then cached).
    public func positionEmbeddings(gridSide side: Int) -> [Float] {
        if side == tableSide { return positionTable }
        let key = GridSize(rows: side, cols: side)
        if let cached = positionCache[key] { return cached }
        let table = Self.bicubicResize(positionTable, side: tableSide, channels: config.hiddenSize, to: side)
        positionCache[key] = table
        return table
    }

    /// NaFlex: the position embeddings for a `rows × cols` grid ([rows·cols × hidden], row-major), the table resized
    /// as Siglip2VisionEmbeddings does it — `F.interpolate(mode="bilinear", align_corners=False, antialias=True)`,
    /// which transformers writes out as separable triangle weights: per output index i along an axis of `out` from
    /// `in`, scale = in/out, support = max(scale, 1), centre = (i + ½)·scale − ½, weight of source j =
    /// max(0, 1 − |j − centre| / support), normalised to sum 1; output = Σ wrow·wcol·table (float32).
    public func positionEmbeddings(rows: Int, cols: Int) -> [Float] {
        let key = GridSize(rows: rows, cols: cols)
        if let cached = positionCache[key] { return cached }
        let table = Self.antialiasedBilinearResize(positionTable, side: tableSide, channels: config.hiddenSize, rows: rows, cols: cols)
        positionCache[key] = table
        return table
    }

    public static func antialiasedBilinearResize(_ input: [Float], side: Int, channels: Int, rows: Int, cols: Int) -> [Float] {
        precondition(input.count == side * side * channels && side > 0 && rows > 0 && cols > 0)
        func axisWeights(_ out: Int) -> [[Float]] {
            let scale = Float(side) / Float(out), support = max(scale, 1)
            return (0..<out).map { i in
                let centre = (Float(i) + 0.5) * scale - 0.5
                var w = (0..<side).map { j in max(0, 1 - abs(Float(j) - centre) / support) }
                let total = w.reduce(0, +)
                for j in w.indices { w[j] /= total }
                return w
            }
        }
        let wr = axisWeights(rows), wc = axisWeights(cols)
        var out = [Float](repeating: 0, count: rows * cols * channels)
        input.withUnsafeBufferPointer { src in
            out.withUnsafeMutableBufferPointer { dst in
                for i in 0..<rows {
                    for j in 0..<cols {
                        let o = dst.baseAddress! + (i * cols + j) * channels
                        for a in 0..<side where wr[i][a] != 0 {
                            for b in 0..<side where wc[j][b] != 0 {
                                fb_axpy(wr[i][a] * wc[j][b], src.baseAddress! + (a * side + b) * channels, o, channels)
                            }
                        }
                    }
                }
            }
        }
        return out
    }

    /// Resizes a square grid of vectors ([side² × channels], channels last) to `outSide × outSide` as
    /// `F.interpolate(mode="bicubic", align_corners=False, antialias=False)` with an explicit `size` does in
    /// PyTorch (CPU, float32): source coordinate (dst + 0.5)·(in/out) − 0.5 (not clamped), base index
    /// min(floor(src), in−1), fraction clamped to [0, 1], Keys cubic with a = −0.75, the four taps' indices
    /// clamped to the border; along x first, then the four row results combined along y.
    public static func bicubicResize(_ input: [Float], side: Int, channels: Int, to outSide: Int) -> [Float] {
        precondition(input.count == side * side * channels && side > 0 && outSide > 0)
        let a: Float = -0.75
        func near(_ x: Float) -> Float { ((a + 2) * x - (a + 3)) * x * x + 1 }          // |x| ≤ 1
        func far(_ x: Float) -> Float { ((a * x - 5 * a) * x + 8 * a) * x - 4 * a }     // 1 < |x| < 2
        let scale = Float(side) / Float(outSide)
        // Per output index: the four clamped source indices and their weights (same for both axes).
        var taps = [(Int, Float)](repeating: (0, 0), count: outSide * 4)
        for o in 0..<outSide {
            let source = scale * (Float(o) + 0.5) - 0.5
            let base = min(Int(source.rounded(.down)), side - 1)
            let t = min(max(source - Float(base), 0), 1)
            let w = [far(t + 1), near(t), near(1 - t), far(2 - t)]
            for j in 0..<4 { taps[o * 4 + j] = (min(max(base - 1 + j, 0), side - 1), w[j]) }
        }
        var out = [Float](repeating: 0, count: outSide * outSide * channels)
        var row = [Float](repeating: 0, count: 4 * channels)
        input.withUnsafeBufferPointer { src in
            out.withUnsafeMutableBufferPointer { dst in
                for oy in 0..<outSide {
                    for ox in 0..<outSide {
                        // Interpolate along x in each of the four source rows.
                        for i in 0..<4 {
                            let y = taps[oy * 4 + i].0
                            for c in 0..<channels {
                                var acc: Float = 0
                                for j in 0..<4 {
                                    let (x, w) = taps[ox * 4 + j]
                                    acc += w * src[(y * side + x) * channels + c]
                                }
                                row[i * channels + c] = acc
                            }
                        }
                        let o = (oy * outSide + ox) * channels
                        for c in 0..<channels {
                            var acc: Float = 0
                            for i in 0..<4 { acc += taps[oy * 4 + i].1 * row[i * channels + c] }
                            dst[o + c] = acc
                        }
                    }
                }
            }
        }
        return out
    }

    /// One view [C, size, size] (channels first) through the tower; writes the pooled vector (hidden floats).
    public func pooled(view: UnsafePointer<Float>, size: Int, into out: UnsafeMutablePointer<Float>) {
        pooled(views: [(view, size)], into: out)
    }

    /// Several views ([C, size, size] each, channels first, sizes may differ) through the tower as one batch:
    /// every per-patch step (patch embedding, layer norms, projections, MLPs) runs on all the views' patches
    /// together, so each weight is read once for all of them; attention stays within each view. Writes one
    /// pooled vector (hidden floats) per view, in order, to `out` (views.count × hidden).
    public func pooled(views: [(pixels: UnsafePointer<Float>, size: Int)], into out: UnsafeMutablePointer<Float>) {
        let c = config, d = c.hiddenSize, p = c.patchSize, channels = c.numChannels
        guard !views.isEmpty else { return }
        guard let head else { preconditionFailure("a NaFlex tower has no pooling head: use features(images:)") }
        var segments: [Segment] = []
        var total = 0
        for view in views {
            let side = gridSide(forViewSize: view.size)
            precondition(side > 0, "a view of \(view.size) pixels is smaller than one \(p)-pixel patch")
            segments.append(Segment(start: total, count: side * side))
            total += side * side
        }
        reserve(tokens: total, largest: segments.map(\.count).max()!)
        let s = scratch

        // Patchify: patch (py, px) in row-major order, flattened [c][ky][kx] like the reshaped conv weight.
        let patchWidth = channels * p * p
        for (view, segment) in zip(views, segments) {
            let side = gridSide(forViewSize: view.size), size = view.size
            for py in 0..<side {
                for px in 0..<side {
                    let row = s.patches.pointer + (segment.start + py * side + px) * patchWidth
                    for ch in 0..<channels {
                        for ky in 0..<p {
                            memcpy(row + (ch * p + ky) * p, view.pixels + (ch * size + py * p + ky) * size + px * p, p * 4)
                        }
                    }
                }
            }
        }
        encode(segments, total: total) { i in positionEmbeddings(gridSide: gridSide(forViewSize: views[i].size)) }

        // Pooling head (nn.MultiheadAttention with the probe as the only query), then r + MLP(layernorm(r)); the
        // probe's projection is the same for every view.
        let count = views.count
        head.probe.withUnsafeBufferPointer { parallel.matmul(head.attention.q, $0.baseAddress!, 1, s.q.pointer) }
        fb_add_bias(s.q.pointer, head.attention.qBias, 1, d)
        projectKeysValues(head.attention, from: s.normed.pointer, total)
        attend(segments, sharedQuery: true)  // context row i = view i
        parallel.matmul(head.attention.out, s.context.pointer, count, out)
        fb_add_bias(out, head.attention.outBias, count, d)
        layerNorm(out, head.normWeight, head.normBias, into: s.normed.pointer, rows: count)
        runMLP(head.mlp, input: s.normed.pointer, count, output: s.projected.pointer)
        fb_add(out, s.projected.pointer, count * d)
    }

    /// NaFlex: the post-layernorm patch features of each image (LFM2VLPatchedImage, patches flattened (y, x, c)),
    /// as one batch (attention within each image). Writes images.map { rows·cols } × hidden floats to `out`, the
    /// images one after another, patches row-major.
    public func features(images: [LFM2VLPatchedImage], into out: UnsafeMutablePointer<Float>) {
        let c = config, d = c.hiddenSize, width = c.numChannels * c.patchSize * c.patchSize
        guard !images.isEmpty else { return }
        var segments: [Segment] = []
        var total = 0
        for image in images {
            precondition(image.patchSize == c.patchSize && image.values.count == image.patchRows * image.patchCols * width,
                         "patches of \(image.patchSize) pixels for a tower of \(c.patchSize)")
            segments.append(Segment(start: total, count: image.patchRows * image.patchCols))
            total += image.patchRows * image.patchCols
        }
        reserve(tokens: total, largest: segments.map(\.count).max()!)
        for (image, segment) in zip(images, segments) {
            image.values.withUnsafeBufferPointer {
                _ = memcpy(scratch.patches.pointer + segment.start * width, $0.baseAddress!, $0.count * 4)
            }
        }
        encode(segments, total: total) { i in positionEmbeddings(rows: images[i].patchRows, cols: images[i].patchCols) }
        memcpy(out, scratch.normed.pointer, total * d * 4)
    }

    /// Scratch for `tokens` patches in all, the largest image or view `largest` of them.
    private func reserve(tokens: Int, largest: Int) {
        if scratch.tokens < tokens || scratch.viewTokens < largest {
            scratch = Scratch(tokens: max(tokens, scratch.tokens), viewTokens: max(largest, scratch.viewTokens), config: config,
                              threads: parallel.threads)
        }
    }

    /// From the patches in scratch to the post-layernorm features in scratch `normed`: patch embedding (+ bias), each
    /// segment's position embeddings, the encoder layers (attention within each segment), post_layernorm.
    private func encode(_ segments: [Segment], total: Int, positions: (Int) -> [Float]) {
        let d = config.hiddenSize, s = scratch
        parallel.matmul(patchEmbedding, s.patches.pointer, total, s.hidden.pointer)
        fb_add_bias(s.hidden.pointer, patchBias, total, d)
        for (i, segment) in segments.enumerated() {
            positions(i).withUnsafeBufferPointer {
                fb_add(s.hidden.pointer + segment.start * d, $0.baseAddress!, segment.count * d)
            }
        }
        for layer in layers {
            layerNorm(s.hidden.pointer, layer.norm1Weight, layer.norm1Bias, into: s.normed.pointer, rows: total)
            parallel.matmul(layer.attention.q, s.normed.pointer, total, s.q.pointer)
            fb_add_bias(s.q.pointer, layer.attention.qBias, total, d)
            projectKeysValues(layer.attention, from: s.normed.pointer, total)
            attend(segments, sharedQuery: false)
            parallel.matmul(layer.attention.out, s.context.pointer, total, s.projected.pointer)
            fb_add_bias(s.projected.pointer, layer.attention.outBias, total, d)
            fb_add(s.hidden.pointer, s.projected.pointer, total * d)

            layerNorm(s.hidden.pointer, layer.norm2Weight, layer.norm2Bias, into: s.normed.pointer, rows: total)
            runMLP(layer.mlp, input: s.normed.pointer, total, output: s.projected.pointer)
            fb_add(s.hidden.pointer, s.projected.pointer, total * d)
        }
        layerNorm(s.hidden.pointer, postNormWeight, postNormBias, into: s.normed.pointer, rows: total)
    }

    /// Convenience: the pooled vector of one view given as an array ([C, size, size]).
    public func pooled(view: [Float]) -> [Float] { pooled(views: [view])[0] }

    /// Convenience: the pooled vectors of several views given as arrays ([C, size, size] each), as one batch.
    public func pooled(views: [[Float]]) -> [[Float]] {
        let d = config.hiddenSize
        var sizes: [Int] = [], offsets: [Int] = [], all: [Float] = []
        for view in views {
            let size = Int((Double(view.count / config.numChannels)).squareRoot().rounded())
            precondition(size * size * config.numChannels == view.count, "a view must hold \(config.numChannels) square channels")
            sizes.append(size)
            offsets.append(all.count)
            all += view
        }
        var out = [Float](repeating: 0, count: views.count * d)
        all.withUnsafeBufferPointer { pixels in
            out.withUnsafeMutableBufferPointer { o in
                pooled(views: views.indices.map { (pixels.baseAddress! + offsets[$0], sizes[$0]) }, into: o.baseAddress!)
            }
        }
        return views.indices.map { Array(out[$0 * d ..< ($0 + 1) * d]) }
    }

    /// One view's patches: rows start..<start+count of the batch.
    struct Segment {
        let start: Int, count: Int
    }

    /// LayerNorm of `rows` rows of hidden floats, rows split across threads.
    private func layerNorm(_ x: UnsafePointer<Float>, _ w: [Float], _ b: [Float], into y: UnsafeMutablePointer<Float>, rows: Int) {
        let d = config.hiddenSize, eps = config.layerNormEps
        let xs = UnsafeSendable(x), ys = UnsafeSendable(y)
        w.withUnsafeBufferPointer { wb in
            b.withUnsafeBufferPointer { bb in
                let ws = UnsafeSendable(wb.baseAddress!), bs = UnsafeSendable(bb.baseAddress!)
                parallel.forEachChunk(rows, work: rows * d * 8) { begin, end in
                    for r in begin..<end { fb_layernorm(xs.value + r * d, ws.value, bs.value, ys.value + r * d, d, eps) }
                }
            }
        }
    }

    /// k = x Wkᵀ + bk and v = x Wvᵀ + bv for the n rows of x, into the scratch k and v.
    private func projectKeysValues(_ a: Attention, from x: UnsafePointer<Float>, _ n: Int) {
        let d = config.hiddenSize
        parallel.matmul(a.k, x, n, scratch.k.pointer)
        fb_add_bias(scratch.k.pointer, a.kBias, n, d)
        parallel.matmul(a.v, x, n, scratch.v.pointer)
        fb_add_bias(scratch.v.pointer, a.vBias, n, d)
    }

    /// Multi-head softmax(q kᵀ / √head_dim) v within each view: the queries are the view's rows of scratch q (or,
    /// with `sharedQuery`, row 0 of scratch q for every view), the keys and values its rows of scratch k / v (no
    /// mask). Output: the view's rows of scratch context (with `sharedQuery`, row i for view i). Per (view, head)
    /// two single-threaded sgemms, scores = q kᵀ / √hd then softmax(scores) v; the (head, view) pairs are split
    /// across threads, heads outermost so every thread gets a share of each view.
    private func attend(_ segments: [Segment], sharedQuery: Bool) {
        let d = config.hiddenSize, heads = config.numAttentionHeads, hd = d / heads
        let scale = 1 / Float(hd).squareRoot()
        let s = scratch, slab = s.viewTokens * s.viewTokens
        let q = UnsafeSendable(s.q.pointer), k = UnsafeSendable(s.k.pointer), v = UnsafeSendable(s.v.pointer)
        let context = UnsafeSendable(s.context.pointer), scores = UnsafeSendable(s.scores.pointer)
        let work = segments.reduce(0) { $0 + (sharedQuery ? 1 : $1.count) * $1.count } * d * 2
        segments.withUnsafeBufferPointer { segs in
            let views = UnsafeSendable(segs.baseAddress!), count = segs.count
            parallel.forEachIndexedChunk(heads * count, work: work) { chunk, begin, end in
                let row = scores.value + chunk * slab
                for unit in begin..<end {
                    let head = unit / count, view = unit % count
                    let segment = views.value[view], n = segment.count
                    let keys = k.value + segment.start * d + head * hd, values = v.value + segment.start * d + head * hd
                    let m = sharedQuery ? 1 : n
                    let query = (sharedQuery ? q.value : q.value + segment.start * d) + head * hd
                    let out = context.value + (sharedQuery ? view : segment.start) * d + head * hd
                    fb_sgemm(1, m, n, hd, scale, query, d, keys, d, 0, row, n)
                    for r in 0..<m { fb_softmax(row + r * n, n) }
                    fb_sgemm(0, m, hd, n, 1, row, n, values, d, 0, out, d)
                }
            }
        }
    }

    /// fc2(gelu(fc1 x + b1)) + b2 for n rows.
    private func runMLP(_ m: MLP, input: UnsafePointer<Float>, _ n: Int, output: UnsafeMutablePointer<Float>) {
        let width = m.fc1.rows
        let hidden = scratch.mlp.pointer
        parallel.matmul(m.fc1, input, n, hidden)
        let h = UnsafeSendable(hidden), act = activation
        m.fc1Bias.withUnsafeBufferPointer { bias in
            let b = UnsafeSendable(bias.baseAddress!)
            parallel.forEachChunk(n, work: n * width * 16) { begin, end in
                let rows = h.value + begin * width
                fb_add_bias(rows, b.value, end - begin, width)
                switch act {
                case .tanh: fb_gelu_tanh(rows, (end - begin) * width)
                case .erf: fb_gelu_erf(rows, (end - begin) * width)
                }
            }
        }
        parallel.matmul(m.fc2, hidden, n, output)
        fb_add_bias(output, m.fc2Bias, n, config.hiddenSize)
    }
}
