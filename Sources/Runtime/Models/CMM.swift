import Foundation
import Kernels

// Cross-Modal Modulator (reference `TokenGridCorrFiLMS4` inside `GridS4Fuser`), docs/model.md §2, per token:
//
//   Q = X_t W_qᵀ; K = X_v W_kᵀ, V = X_v W_vᵀ (once per image)      4 heads of 32, scores / √32
//   per head keep the top-4 of 5 scores (others −∞), softmax; mean over heads = w [5]; c = w · V
//   x = LN_in(X_t) ⊙ (1 + g·s_in) + g·b_in,  [s_in | b_in] = film_in(c)
//   z = Σ_{j<min(t+1, L)} taps[j] ⊙ x_{t−j} + D ⊙ x_t;  y = GLU(output_linear(gelu_erf(z)))      (S4Block)
//   y = y ⊙ (1 + g·s_out) + g·b_out,  [s_out | b_out] = film_out(c)
//   h = X_t + y;  h = h + ffn.4(gelu_erf(ffn.1(LN_ffn0(h))));  out = LN_out(h)
//
// Everything except the S4 is per token, and the S4 is causal, so running tokens one at a time with the
// last L−1 S4 inputs kept (`CMMSession`) gives the reference's numbers (it recomputes the whole sequence at every
// generated token). Sequences longer than L use an L-tap window, as the reference's FFT convolution does.

/// The modulator's weights (shared, read-only); a `CMMSession` holds one sequence's state.
public final class CrossModalModulator {
    public let config: CMMConfig
    /// Keeps the memory the matrices point into alive.
    public let weights: WeightStore

    let qProj: fb_matrix, kProj: fb_matrix, vProj: fb_matrix
    let filmIn: fb_matrix, filmInBias: [Float]
    let filmOut: fb_matrix, filmOutBias: [Float]
    let normInWeight: [Float], normInBias: [Float]
    let normOutWeight: [Float], normOutBias: [Float]
    let ffnNormWeight: [Float], ffnNormBias: [Float]
    let ffnUp: fb_matrix, ffnUpBias: [Float]
    let ffnDown: fb_matrix, ffnDownBias: [Float]
    /// The scalar `mod_gate` g.
    public let gate: Float
    let s4D: [Float]
    /// S4 FIR taps by lag: tapsByLag[j·Dt + ch] = taps[ch][j] (the file stores [Dt, L]; lag-major makes each lag
    /// one contiguous multiply-add over the channels).
    let tapsByLag: [Float]
    let s4Output: fb_matrix, s4OutputBias: [Float]

    /// Bytes of weights read per text token: the products a token runs through (K and V are made once per image)
    /// and the S4 taps.
    public var bytesPerToken: Int {
        [qProj, filmIn, filmOut, s4Output, ffnUp, ffnDown].reduce(0) { $0 + $1.storedBytes } + tapsByLag.count * 4
    }

    public init(weights: WeightStore, config: CMMConfig) throws {
        let dt = config.textDim, dv = config.visionDim, inner = config.numHeads * config.headDim
        let ffn = config.ffnDim, taps = config.s4Taps
        guard dt > 0, dv > 0, inner > 0, ffn > 0, taps > 0, config.numGrids > 0, config.topK > 0 else {
            throw FireboltError("invalid CMM config: sizes must be positive")
        }
        self.config = config
        self.weights = weights
        let c = "cmm."
        qProj = try weights.matrix(c + "q_proj.weight", rows: inner, cols: dt)
        kProj = try weights.matrix(c + "k_proj.weight", rows: inner, cols: dv)
        vProj = try weights.matrix(c + "v_proj.weight", rows: dt, cols: dv)
        filmIn = try weights.matrix(c + "film_in.weight", rows: 2 * dt, cols: dt)
        filmInBias = try weights.floats(c + "film_in.bias", shape: [2 * dt])
        filmOut = try weights.matrix(c + "film_out.weight", rows: 2 * dt, cols: dt)
        filmOutBias = try weights.floats(c + "film_out.bias", shape: [2 * dt])
        normInWeight = try weights.floats(c + "norm_in.weight", shape: [dt])
        normInBias = try weights.floats(c + "norm_in.bias", shape: [dt])
        normOutWeight = try weights.floats(c + "norm_out.weight", shape: [dt])
        normOutBias = try weights.floats(c + "norm_out.bias", shape: [dt])
        ffnNormWeight = try weights.floats(c + "ffn.0.weight", shape: [dt])
        ffnNormBias = try weights.floats(c + "ffn.0.bias", shape: [dt])
        ffnUp = try weights.matrix(c + "ffn.1.weight", rows: ffn, cols: dt)
        ffnUpBias = try weights.floats(c + "ffn.1.bias", shape: [ffn])
        ffnDown = try weights.matrix(c + "ffn.4.weight", rows: dt, cols: ffn)
        ffnDownBias = try weights.floats(c + "ffn.4.bias", shape: [dt])
        gate = try weights.floats(c + "mod_gate", shape: [1])[0]
        s4D = try weights.floats(c + "s4.D", shape: [dt])
        let channelMajor = try weights.floats(c + "s4.kernel_taps", shape: [dt, taps])
        var byLag = [Float](repeating: 0, count: taps * dt)
        for ch in 0..<dt { for j in 0..<taps { byLag[j * dt + ch] = channelMajor[ch * taps + j] } }
        tapsByLag = byLag
        s4Output = try weights.matrix(c + "s4.output_linear.weight", rows: 2 * dt, cols: dt)
        s4OutputBias = try weights.floats(c + "s4.output_linear.bias", shape: [2 * dt])
    }
}

/// Intermediate rows a `CMMSession` can report (for tests and debugging), token-major, Dt floats each.
public enum CMMStage {
    /// The FiLM-modulated LayerNorm'ed text that enters the S4 block (golden `s4_in`).
    case s4Input
    /// The S4 convolution plus the D skip, before GELU.
    case s4Convolution
    /// The S4 block's output after GELU, output_linear and GLU (golden `s4_out`).
    case s4Output
}

/// One sequence through the modulator: the image's K and V, the S4 input history, and scratch.
/// `forward` advances `position`; feeding tokens one at a time gives the same outputs as one batch.
public final class CMMSession {
    public let modulator: CrossModalModulator
    /// Tokens per step: bounds the scratch memory; longer inputs run in several steps.
    public let maxBatch: Int
    public private(set) var position = 0
    public private(set) var hasImage = false
    /// Called with (stage, absolute token position, row of Dt floats) for every token, when set.
    public var debugHook: ((CMMStage, Int, UnsafePointer<Float>) -> Void)?
    let parallel: Parallel

    private let keys: FloatBuffer       // K [G × inner]
    private let values: FloatBuffer     // V [G × Dt]
    /// Ring of past S4 inputs: the input of position p is row p mod historyRows. L + maxBatch rows, so a step can
    /// write all its rows before any is convolved without overwriting a position an earlier row still reads.
    private let history: FloatBuffer    // [historyRows × Dt]
    private let historyRows: Int
    /// Per row of a step: its ring, ring length and position (fb_causal_conv's arguments; filled per step).
    private let ringPointers: UnsafeMutablePointer<UnsafePointer<Float>?>
    private let ringLengths: UnsafeMutablePointer<Int>
    private let ringPositions: UnsafeMutablePointer<Int>

    private let query: FloatBuffer      // Q [B × inner]
    private let context: FloatBuffer    // c [B × Dt]
    private let film: FloatBuffer       // film_in / film_out [B × 2Dt]
    private let modulated: FloatBuffer  // x entering the S4 [B × Dt]
    private let mixed: FloatBuffer      // S4 convolution, then the S4 block's output y [B × Dt]
    private let glu: FloatBuffer        // output_linear [B × 2Dt]
    private let residual: FloatBuffer   // h [B × Dt]
    private let normed: FloatBuffer     // LN_ffn0(h) [B × Dt]
    private let ffn: FloatBuffer        // ffn.1 [B × F]
    private let gridWeights: FloatBuffer // per-token grid weights [G], per-head scores [G]

    public init(modulator: CrossModalModulator, maxBatch: Int = 64, threads: Int) {
        self.modulator = modulator
        self.maxBatch = max(1, maxBatch)
        parallel = Parallel(threads: threads)
        let c = modulator.config, dt = c.textDim, inner = c.numHeads * c.headDim, b = self.maxBatch
        keys = FloatBuffer(count: c.numGrids * inner)
        values = FloatBuffer(count: c.numGrids * dt)
        historyRows = c.s4Taps + b
        history = FloatBuffer(count: historyRows * dt)
        ringPointers = .allocate(capacity: b)
        ringLengths = .allocate(capacity: b)
        ringPositions = .allocate(capacity: b)
        query = FloatBuffer(count: b * inner)
        context = FloatBuffer(count: b * dt)
        film = FloatBuffer(count: b * 2 * dt)
        modulated = FloatBuffer(count: b * dt)
        mixed = FloatBuffer(count: b * dt)
        glu = FloatBuffer(count: b * 2 * dt)
        residual = FloatBuffer(count: b * dt)
        normed = FloatBuffer(count: b * dt)
        ffn = FloatBuffer(count: b * c.ffnDim)
        gridWeights = FloatBuffer(count: 2 * c.numGrids)
    }

    deinit {
        ringPointers.deallocate()
        ringLengths.deallocate()
        ringPositions.deallocate()
    }

    /// The image's grid vectors (numGrids × visionDim, global view first): computes K and V once.
    /// Does not move `position`; call `reset()` to start a new sequence.
    public func setImage(grid: UnsafePointer<Float>) {
        let m = modulator, g = m.config.numGrids
        parallel.matmul(m.kProj, grid, g, keys.pointer)
        parallel.matmul(m.vProj, grid, g, values.pointer)
        hasImage = true
    }

    /// Starts a new sequence (the image stays). The history needs no clearing: position p reads only rows
    /// written at positions ≤ p of the same sequence.
    public func reset() { position = 0 }

    /// Runs `count` text embeddings (rows of Dt floats) at positions position..<position+count and writes the
    /// modulated embeddings (what the decoder receives as inputs_embeds) to `output` (count × Dt).
    /// `output` may be the same memory as `textEmbeddings`.
    public func forward(textEmbeddings: UnsafePointer<Float>, count: Int, output: UnsafeMutablePointer<Float>) throws {
        guard hasImage else { throw FireboltError("the cross-modal modulator needs an image (setImage) before text") }
        let dt = modulator.config.textDim
        var done = 0
        while done < count {
            let t = min(maxBatch, count - done)
            step(textEmbeddings + done * dt, t, output + done * dt)
            done += t
        }
    }

    /// The exact (erf) GELU in place, split across threads: libm's erff is ~10 ns an element, so a 512-token prompt's
    /// two GELUs (2.6 M elements) took ~25 ms on one thread.
    private func geluErf(_ x: UnsafeMutablePointer<Float>, _ count: Int) {
        parallel.forEachChunk(count, work: count * 16) { begin, end in fb_gelu_erf(x + begin, end - begin) }
    }

    /// Per-token grid weights (top-k softmax per head, averaged over heads) for the query row `q`, into `w`.
    private func gridAttention(_ q: UnsafePointer<Float>, keys: FloatBuffer, into w: UnsafeMutablePointer<Float>) {
        let c = modulator.config, g = c.numGrids, hd = c.headDim, inner = c.numHeads * hd
        let keep = min(c.topK, g)
        let scale = 1 / Float(hd).squareRoot()
        let scores = gridWeights.pointer + g
        for i in 0..<g { w[i] = 0 }
        for head in 0..<c.numHeads {
            for i in 0..<g { scores[i] = fb_dot(q + head * hd, keys.pointer + i * inner + head * hd, hd) * scale }
            // Keep the `keep` largest scores; the others become −∞. Among equal scores the lower grid index is
            // kept (torch.topk leaves the order of ties unspecified; exact ties do not occur in practice).
            for _ in 0..<(g - keep) {
                var smallest = -1
                for i in 0..<g where scores[i] != -Float.infinity {
                    if smallest < 0 || scores[i] <= scores[smallest] { smallest = i }
                }
                if smallest >= 0 { scores[smallest] = -Float.infinity }
            }
            fb_softmax(scores, g)
            for i in 0..<g { w[i] += scores[i] }
        }
        for i in 0..<g { w[i] /= Float(c.numHeads) }
    }

    /// One token for each of `sessions` (this modulator's; each at most once; this one may be among them), row r of
    /// `textEmbeddings` for session r at its own position, against its own image and S4 history; the products run
    /// on all rows at once, on this session's scratch. `output` may be the same memory as `textEmbeddings`.
    public func forwardTogether(_ sessions: [CMMSession], textEmbeddings: UnsafePointer<Float>,
                                output: UnsafeMutablePointer<Float>) throws {
        guard sessions.count <= maxBatch else { throw FireboltError("\(sessions.count) sequences at once, but a step holds \(maxBatch) rows") }
        guard Set(sessions.map { ObjectIdentifier($0) }).count == sessions.count else { throw FireboltError("a sequence appears twice in one step") }
        for s in sessions {
            guard s.modulator === modulator else { throw FireboltError("sequences of different models cannot decode together") }
            guard s.hasImage else { throw FireboltError("the cross-modal modulator needs an image (setImage) before text") }
        }
        step(textEmbeddings, sessions.count, output, together: sessions)
    }

    /// The whole modulator for t ≤ maxBatch rows: at positions position..<position+t of this sequence, or with
    /// `together`, row r at the next position of session r (its image's K and V, its S4 history).
    private func step(_ text: UnsafePointer<Float>, _ t: Int, _ output: UnsafeMutablePointer<Float>,
                      together: [CMMSession]? = nil) {
        let m = modulator, c = m.config, dt = c.textDim, inner = c.numHeads * c.headDim, g = c.numGrids
        let eps = c.layerNormEps, gate = m.gate, taps = c.s4Taps
        func owner(_ r: Int) -> CMMSession { together?[r] ?? self }
        func positionOf(_ r: Int) -> Int { together.map { $0[r].position } ?? position + r }

        // Correlation with the grid → per-token context c.
        parallel.matmul(m.qProj, text, t, query.pointer)
        let w = gridWeights.pointer
        for r in 0..<t {
            let image = owner(r)
            gridAttention(query.pointer + r * inner, keys: image.keys, into: w)
            let row = context.pointer + r * dt
            memset(row, 0, dt * 4)
            for i in 0..<g { fb_axpy(w[i], image.values.pointer + i * dt, row, dt) }
        }

        // x = LN_in(text) ⊙ (1 + g·s_in) + g·b_in.
        parallel.matmul(m.filmIn, context.pointer, t, film.pointer)
        fb_add_bias(film.pointer, m.filmInBias, t, 2 * dt)
        for r in 0..<t {
            let x = modulated.pointer + r * dt, f = film.pointer + r * 2 * dt
            fb_layernorm(text + r * dt, m.normInWeight, m.normInBias, x, dt, eps)
            for i in 0..<dt { x[i] = x[i] * (1 + gate * f[i]) + gate * f[dt + i] }
        }

        // S4 convolution through the history rings: z = Σ_j taps[j] ⊙ x_{p−j} + D ⊙ x_p. Every row's input goes
        // into its ring first, then the lags run over all rows, split by channel across threads.
        var lagTerms = 0
        for r in 0..<t {
            let p = positionOf(r), sequence = owner(r)
            memcpy(sequence.history.pointer + (p % sequence.historyRows) * dt, modulated.pointer + r * dt, dt * 4)
            ringPointers[r] = UnsafePointer(sequence.history.pointer)
            ringLengths[r] = sequence.historyRows
            ringPositions[r] = p
            lagTerms += min(p + 1, taps)
        }
        memset(mixed.pointer, 0, t * dt * 4)
        m.tapsByLag.withUnsafeBufferPointer { lags in
            parallel.forEachChunk(dt, work: lagTerms * dt) { c0, c1 in
                fb_causal_conv(lags.baseAddress!, taps, ringPointers, ringLengths, ringPositions, t, dt, c0, c1,
                               mixed.pointer)
            }
        }
        m.s4D.withUnsafeBufferPointer { d in
            for r in 0..<t {
                let x = modulated.pointer + r * dt, z = mixed.pointer + r * dt
                for ch in 0..<dt { z[ch] += d[ch] * x[ch] }
                debugHook?(.s4Input, positionOf(r), x)
                debugHook?(.s4Convolution, positionOf(r), z)
            }
        }
        // GELU, output_linear (Dt → 2Dt), GLU.
        geluErf(mixed.pointer, t * dt)
        parallel.matmul(m.s4Output, mixed.pointer, t, glu.pointer)
        fb_add_bias(glu.pointer, m.s4OutputBias, t, 2 * dt)
        for r in 0..<t {
            let y = mixed.pointer + r * dt, a = glu.pointer + r * 2 * dt
            for i in 0..<dt { y[i] = a[i] * (1 / (1 + expf(-a[dt + i]))) }
            debugHook?(.s4Output, positionOf(r), y)
        }

        // y ⊙ (1 + g·s_out) + g·b_out; h = text + y.
        parallel.matmul(m.filmOut, context.pointer, t, film.pointer)
        fb_add_bias(film.pointer, m.filmOutBias, t, 2 * dt)
        for r in 0..<t {
            let y = mixed.pointer + r * dt, f = film.pointer + r * 2 * dt, h = residual.pointer + r * dt
            let x = text + r * dt
            for i in 0..<dt { h[i] = x[i] + (y[i] * (1 + gate * f[i]) + gate * f[dt + i]) }
            fb_layernorm(h, m.ffnNormWeight, m.ffnNormBias, normed.pointer + r * dt, dt, eps)
        }

        // h + ffn.4(gelu(ffn.1(LN(h)))), then LN_out.
        parallel.matmul(m.ffnUp, normed.pointer, t, ffn.pointer)
        fb_add_bias(ffn.pointer, m.ffnUpBias, t, c.ffnDim)
        geluErf(ffn.pointer, t * c.ffnDim)
        parallel.matmul(m.ffnDown, ffn.pointer, t, normed.pointer)
        fb_add_bias(normed.pointer, m.ffnDownBias, t, dt)
        fb_add(residual.pointer, normed.pointer, t * dt)
        for r in 0..<t {
            fb_layernorm(residual.pointer + r * dt, m.normOutWeight, m.normOutBias, output + r * dt, dt, eps)
        }
        if let together { for s in together { s.position += 1 } } else { position += t }
    }
}
