import Converter
import Foundation
import Kernels
import Runtime
import TestSupport
import XCTest

/// The vision tower, the Cross-Modal Modulator and the whole Firebolt-VL path against the goldens of the tiny
/// fixture (golden/README.txt), from a 32-bit conversion.
///
/// Tolerance: max |Δ| ≤ 1e-4 × max |golden|. Both sides are float32 end to end (the goldens come from the authors'
/// PyTorch code in float32), so only summation order, the FFT-vs-direct S4 convolution and libm differ;
/// observed errors are around 1e-6 relative (printed by each check), two orders of magnitude below the bound.
final class VisionTests: XCTestCase {
    static let folder = TemporaryFolder("vision-tests")

    // Statics are never deinitialised: remove the folder when the class's tests are done.
    override class func tearDown() {
        folder.cleanup()
        super.tearDown()
    }
    static var loaded: (FBMFile, WeightStore, FireboltVLModel)?

    /// The fixture converted once at 32 bits, loaded, and the model built from it.
    func model() throws -> (FBMFile, WeightStore, FireboltVLModel) {
        if let loaded = Self.loaded { return loaded }
        var options = ConversionOptions()
        options.bits = 32
        let path = Self.folder.file("tiny-f32.fbm")
        _ = try FBMConverter.convert(input: Fixtures.tiny, output: path, options: options)
        let file = try FBMFile(path: path)
        let weights = try file.loadWeights()
        let model = try FireboltVLModel(weights: weights, config: file.config, threads: 1)
        Self.loaded = (file, weights, model)
        return Self.loaded!
    }

    /// Asserts max |actual − golden| ≤ relative × max |golden| and prints both.
    @discardableResult
    func check(_ name: String, _ actual: [Float], _ golden: [Float], relative: Float = 1e-4,
               file: StaticString = #filePath, line: UInt = #line) -> Float {
        XCTAssertEqual(actual.count, golden.count, "\(name): element count", file: file, line: line)
        guard actual.count == golden.count else { return .infinity }
        var maxError: Float = 0, maxGolden: Float = 0
        for (a, g) in zip(actual, golden) {
            maxError = max(maxError, abs(a - g))
            maxGolden = max(maxGolden, abs(g))
        }
        if actual.contains(where: { !$0.isFinite }) { maxError = .infinity }
        print("\(name): max |Δ| = \(maxError), max |golden| = \(maxGolden), relative \(maxError / max(maxGolden, .leastNormalMagnitude))")
        XCTAssertLessThanOrEqual(maxError, relative * maxGolden, "\(name)", file: file, line: line)
        return maxError
    }

    func pixelValues() throws -> [Float] {
        let pixels = try Fixtures.npy("pixel_values.npy")
        XCTAssertEqual(pixels.shape, [1, 3, 256, 256])
        return pixels.floats
    }

    func inputIds(_ name: String = "input_ids.npy") throws -> [Int32] {
        try Fixtures.npy(name).int64s.map { Int32($0) }
    }

    /// The CMM over `text` (T × Dt) for `grid`, as one batch; returns the output and the s4_in / s4_out rows.
    func runCMM(_ model: FireboltVLModel, text: [Float], grid: [Float], maxBatch: Int = 64)
        throws -> (out: [Float], s4In: [Float], s4Out: [Float]) {
        let dt = model.modulator.config.textDim, count = text.count / dt
        let session = CMMSession(modulator: model.modulator, maxBatch: maxBatch, threads: 1)
        grid.withUnsafeBufferPointer { session.setImage(grid: $0.baseAddress!) }
        var s4In = [Float](repeating: 0, count: text.count), s4Out = s4In, out = s4In
        session.debugHook = { stage, position, row in
            switch stage {
            case .s4Input: for i in 0..<dt { s4In[position * dt + i] = row[i] }
            case .s4Output: for i in 0..<dt { s4Out[position * dt + i] = row[i] }
            case .s4Convolution: break
            }
        }
        try text.withUnsafeBufferPointer { t in
            try out.withUnsafeMutableBufferPointer { try session.forward(textEmbeddings: t.baseAddress!, count: count, output: $0.baseAddress!) }
        }
        return (out, s4In, s4Out)
    }

    // MARK: Vision

    func testPositionTableResizedBicubically() throws {
        let (_, _, model) = try model()
        let golden = try Fixtures.npy("siglip_pos_interp_8x8.npy")
        XCTAssertEqual(golden.shape, [64, 32])
        check("siglip_pos_interp_8x8", model.vision.positionEmbeddings(gridSide: 8), golden.floats)
        // The trained grid uses the table as is.
        XCTAssertEqual(model.vision.positionEmbeddings(gridSide: 16).count, 256 * 32)
    }

    func testCropViews() throws {
        let pixels = try pixelValues()
        let views = SiglipPreprocessor.views(pixels, size: 256)
        XCTAssertEqual(views.count, 5)
        XCTAssertEqual(views[0], pixels)
        for (i, (y0, x0)) in [(0, 0), (0, 126), (126, 0), (126, 126)].enumerated() {
            let view = views[i + 1]
            XCTAssertEqual(view.count, 3 * 128 * 128)
            for (c, y, x) in [(0, 0, 0), (1, 127, 127), (2, 5, 100), (2, 127, 0)] {
                XCTAssertEqual(view[(c * 128 + y) * 128 + x], pixels[(c * 256 + y0 + y) * 256 + x0 + x])
            }
        }
    }

    func testVisionGridMatchesGolden() throws {
        let (_, _, model) = try model()
        let golden = try Fixtures.npy("vision_grid.npy")
        XCTAssertEqual(golden.shape, [1, 5, 32])
        let grid = model.encodeImage(pixelValues: try pixelValues())
        check("vision_grid", grid, golden.floats)
        // Per view too, so a failure says which view (global, or which tile).
        for v in 0..<5 {
            check("vision_grid view \(v)", Array(grid[v * 32..<(v + 1) * 32]), Array(golden.floats[v * 32..<(v + 1) * 32]))
        }
    }

    /// The one image path end to end (file → decode → the model's own processor settings → views → tower), through
    /// its entry point `LoadedModel.encodeImage(path:)`: the golden grid of the authors' code for the same file.
    /// The tolerance is the pixel-value one: the processor reproduces Pillow's resize exactly (ImageTests), so the
    /// grid differs from the golden only by float summation order, as from the golden pixel values.
    func testImageFileToGridMatchesGolden() throws {
        _ = try model()
        let loaded = try LoadedModel(path: Self.folder.file("tiny-f32.fbm"), threads: 1)
        let encoded = try loaded.encodeImage(path: Fixtures.tiny + "/image.png")
        check("vision_grid from image.png", encoded.grid, try Fixtures.npy("vision_grid.npy").floats)
        let image = try ImageDecoder.decode(path: Fixtures.tiny + "/image.png")
        XCTAssertEqual([encoded.width, encoded.height], [image.width, image.height])
        XCTAssertGreaterThan(encoded.decodeMs, 0)
        XCTAssertGreaterThan(encoded.visionMs, 0)
    }

    /// The views of an image go through the tower as one batch; each view alone gives the same vector.
    func testBatchedViewsEqualOneAtATime() throws {
        let (_, _, model) = try model()
        let views = SiglipPreprocessor.views(try pixelValues(), size: model.vision.config.imageSize)
        let batch = model.vision.pooled(views: views)
        for (i, view) in views.enumerated() {
            check("view \(i) alone vs in the batch", model.vision.pooled(view: view), batch[i], relative: 1e-6)
        }
    }

    /// Two threads split the products, attention heads and row loops (the 640-token prompt is long enough for
    /// every split to happen on this small model): same numbers as one thread up to float summation order.
    func testTwoThreadsMatchOne() throws {
        let (_, weights, one) = try model()
        let two = try FireboltVLModel(weights: weights, config: one.config, threads: 2)
        let pixels = try pixelValues()
        let grid = one.encodeImage(pixelValues: pixels)
        check("vision grid, 2 threads vs 1", two.encodeImage(pixelValues: pixels), grid, relative: 1e-6)
        let prompt = try inputIds()
        let ids = (0..<640).map { prompt[$0 % prompt.count] }
        let vocab = one.config.text.vocabSize
        var logits: [[Float]] = []
        for (model, threads) in [(one, 1), (two, 2)] {
            let session = FireboltVLSession(model: model, contextLength: ids.count, maxBatch: 256, threads: threads)
            try session.setImage(grid: grid)
            var all = [Float](repeating: 0, count: ids.count * vocab)
            try all.withUnsafeMutableBufferPointer { try session.forward(tokens: ids, lastLogits: nil, allLogits: $0.baseAddress!) }
            logits.append(all)
        }
        check("640-token logits, 2 threads vs 1", logits[1], logits[0], relative: 1e-5)
    }

    // MARK: Cross-Modal Modulator

    func testModulatorMatchesGoldenIntermediates() throws {
        let (_, _, model) = try model()
        let text = try Fixtures.npy("text_embeds.npy"), grid = try Fixtures.npy("vision_grid.npy")
        XCTAssertEqual(text.shape, [1, 26, 64])
        let result = try runCMM(model, text: text.floats, grid: grid.floats)
        check("s4_in", result.s4In, try Fixtures.npy("s4_in.npy").floats)
        check("s4_out", result.s4Out, try Fixtures.npy("s4_out.npy").floats)
        check("cmm_out", result.out, try Fixtures.npy("cmm_out.npy").floats)

        // The same from our own vision grid.
        let ownGrid = model.encodeImage(pixelValues: try pixelValues())
        check("cmm_out (own vision grid)", try runCMM(model, text: text.floats, grid: ownGrid).out, try Fixtures.npy("cmm_out.npy").floats)
    }

    func testModulatorTokenByTokenEqualsBatch() throws {
        let (_, _, model) = try model()
        let text = try Fixtures.npy("text_embeds.npy").floats, grid = try Fixtures.npy("vision_grid.npy").floats
        let batch = try runCMM(model, text: text, grid: grid).out
        let single = try runCMM(model, text: text, grid: grid, maxBatch: 1).out
        check("cmm_out one token at a time vs batch", single, batch, relative: 1e-6)
        // Uneven chunks: 26 = 7 + 7 + 7 + 5.
        check("cmm_out in chunks of 7 vs batch", try runCMM(model, text: text, grid: grid, maxBatch: 7).out, batch, relative: 1e-6)
    }

    /// Past L = 512 tokens the S4 uses only the last L inputs: checks the convolution rows against a direct sum,
    /// in steps of 64 rows (each written to the history ring before the lags run over them) on one thread and with
    /// the channels split across two.
    func testS4WindowBeyondTaps() throws {
        let (_, weights, model) = try model()
        let c = model.modulator.config, dt = c.textDim, taps = c.s4Taps
        XCTAssertEqual(taps, 512)
        let count = taps + 100
        let embeds = try Fixtures.npy("text_embeds.npy").floats
        var text = [Float](repeating: 0, count: count * dt)
        for t in 0..<count { for i in 0..<dt { text[t * dt + i] = embeds[(t * 7 % 26) * dt + i] } }
        let kernel = try weights.floats("cmm.s4.kernel_taps", shape: [dt, taps])
        let d = try weights.floats("cmm.s4.D", shape: [dt])
        for threads in [1, 2] {
            let session = CMMSession(modulator: model.modulator, maxBatch: 64, threads: threads)
            let grid = try Fixtures.npy("vision_grid.npy").floats
            grid.withUnsafeBufferPointer { session.setImage(grid: $0.baseAddress!) }
            var inputs = [Float](repeating: 0, count: count * dt), convolution = inputs
            session.debugHook = { stage, position, row in
                switch stage {
                case .s4Input: for i in 0..<dt { inputs[position * dt + i] = row[i] }
                case .s4Convolution: for i in 0..<dt { convolution[position * dt + i] = row[i] }
                case .s4Output: break
                }
            }
            var out = [Float](repeating: 0, count: count * dt)
            try text.withUnsafeBufferPointer { t in
                try out.withUnsafeMutableBufferPointer { try session.forward(textEmbeddings: t.baseAddress!, count: count, output: $0.baseAddress!) }
            }
            for p in [0, 1, 25, 63, 64, taps - 1, taps, taps + 1, 575, 576, count - 1] {
                var expected = [Float](repeating: 0, count: dt)
                for ch in 0..<dt {
                    var acc = 0.0
                    for j in 0..<min(p + 1, taps) { acc += Double(kernel[ch * taps + j]) * Double(inputs[(p - j) * dt + ch]) }
                    expected[ch] = Float(acc + Double(d[ch]) * Double(inputs[p * dt + ch]))
                }
                check("S4 convolution at position \(p), \(threads) thread(s)", Array(convolution[p * dt..<(p + 1) * dt]),
                      expected, relative: 1e-5)
            }
        }
    }

    // MARK: Whole model

    func testLogitsWithImageMatchGolden() throws {
        let (_, _, model) = try model()
        let ids = try inputIds()
        XCTAssertEqual(ids.count, 26)
        let golden = try Fixtures.npy("logits.npy").floats
        let grid = model.encodeImage(pixelValues: try pixelValues())
        let vocab = model.config.text.vocabSize
        // float32 throughout against the float32 reference; then the default f16 KV cache within its rounding bound
        // (2e-3 of the largest logit, derived in TextGenerationTests.testHalfPrecisionCacheStaysWithinItsRoundingBound).
        for (kvCache, bound) in [(KVCacheType.f32, Float(1e-4)), (.f16, 2e-3)] {
            let session = FireboltVLSession(model: model, contextLength: 64, threads: 1, kvCache: kvCache)
            try session.setImage(grid: grid)
            var logits = [Float](repeating: 0, count: ids.count * vocab)
            try logits.withUnsafeMutableBufferPointer { try session.forward(tokens: ids, lastLogits: nil, allLogits: $0.baseAddress!) }
            check("logits, \(kvCache) cache", logits, golden, relative: bound)
        }
    }

    func testTextOnlyLogitsMatchGolden() throws {
        let (_, _, model) = try model()
        let ids = try inputIds("text_only_input_ids.npy")
        let session = FireboltVLSession(model: model, contextLength: 64, threads: 1, kvCache: .f32)
        try session.setImage(grid: nil)
        var logits = [Float](repeating: 0, count: ids.count * model.config.text.vocabSize)
        try logits.withUnsafeMutableBufferPointer { try session.forward(tokens: ids, lastLogits: nil, allLogits: $0.baseAddress!) }
        check("text_only_logits", logits, try Fixtures.npy("text_only_logits.npy").floats)
    }

    /// Greedy decoding through the incremental path: prompt as one batch, then one token at a time, each new
    /// token's embedding through the modulator before the decoder.
    func testGreedyTokensWithImage() throws {
        let (_, _, model) = try model()
        let session = FireboltVLSession(model: model, contextLength: 64, threads: 1)
        try session.setImage(grid: model.encodeImage(pixelValues: try pixelValues()))
        let vocab = model.config.text.vocabSize
        var logits = [Float](repeating: 0, count: vocab)
        try logits.withUnsafeMutableBufferPointer { try session.forward(tokens: try inputIds(), lastLogits: $0.baseAddress!) }
        var generated: [Int64] = []
        for _ in 0..<12 {
            let next = Int32(logits.indices.max { logits[$0] < logits[$1] }!)
            generated.append(Int64(next))
            try logits.withUnsafeMutableBufferPointer { try session.forward(tokens: [next], lastLogits: $0.baseAddress!) }
        }
        XCTAssertEqual(generated, try Fixtures.npy("greedy_ids.npy").int64s)
    }

    /// A prompt longer than the S4's L = 512 taps: one full-sequence batch and one token at a time agree.
    func testLongPromptIncrementalEqualsBatch() throws {
        let (_, _, model) = try model()
        let prompt = try inputIds()
        let ids = (0..<640).map { prompt[$0 % prompt.count] }
        let grid = model.encodeImage(pixelValues: try pixelValues())
        let vocab = model.config.text.vocabSize

        let batch = FireboltVLSession(model: model, contextLength: ids.count, maxBatch: ids.count, threads: 1)
        try batch.setImage(grid: grid)
        var full = [Float](repeating: 0, count: ids.count * vocab)
        try full.withUnsafeMutableBufferPointer { try batch.forward(tokens: ids, lastLogits: nil, allLogits: $0.baseAddress!) }

        let incremental = FireboltVLSession(model: model, contextLength: ids.count, maxBatch: 8, threads: 1)
        try incremental.setImage(grid: grid)
        var stepped = [Float](repeating: 0, count: ids.count * vocab)
        try stepped.withUnsafeMutableBufferPointer { out in
            for (i, id) in ids.enumerated() { try incremental.forward(tokens: [id], lastLogits: out.baseAddress! + i * vocab) }
        }
        check("640-token logits, incremental vs batch", stepped, full)
        // The tail past the S4 window on its own (a wrong window would show here first).
        check("logits past position 512", Array(stepped[(520 * vocab)...]), Array(full[(520 * vocab)...]))
    }
}
