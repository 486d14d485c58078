import Converter
import Foundation
import Runtime
import TestSupport
import XCTest

/// LFM2-VL against what transformers computes (Tests/Fixtures/lfm2-vl-tiny, made by its make_fixture.py): a tiny
/// random model of the released structure, converted by fbconvert, on three images (one scaled up, one scaled
/// down, one split into tiles with a thumbnail).
///
/// Tolerances: the processor's 8-bit images must be identical (both sides compute the same integer arithmetic);
/// float outputs within 1e-4 × max |golden| — both sides run float32, only summation order and libm differ (the
/// observed errors are printed, around 1e-6 relative) — and greedy ids identical.
final class LFM2VLTests: XCTestCase {
    static let folder = TemporaryFolder("lfm2vl-tests")
    override class func tearDown() {
        folder.cleanup()
        super.tearDown()
    }
    static let fixture = Fixtures.root + "/lfm2-vl-tiny"
    static var models: [Int: LoadedModel] = [:]

    struct ImageCase: Decodable {
        let file: String
        let width: Int, height: Int
        let spatial_shapes: [[Int]]
        let rows: Int, cols: Int
        let resized: [Int]
        let prompt: String
        let greedy_ids: [Int]
    }
    struct Meta: Decodable {
        let question: String
        let images: [ImageCase]
    }

    func meta() throws -> Meta {
        try JSONDecoder().decode(Meta.self, from: Data(contentsOf: URL(fileURLWithPath: try Fixtures.require(Self.fixture + "/golden/meta.json"))))
    }

    func golden(_ name: String) throws -> NumpyArray {
        try NumpyArray(contentsOf: try Fixtures.require(Self.fixture + "/golden/" + name))
    }

    /// The fixture converted at `bits`, loaded on one thread (cached per bits).
    func model(bits: Int = 32) throws -> LoadedModel {
        if let m = Self.models[bits] { return m }
        var options = ConversionOptions()
        options.bits = bits
        let path = Self.folder.file("lfm2vl-\(bits).fbm")
        _ = try FBMConverter.convert(input: try Fixtures.require(Self.fixture + "/model"), output: path, options: options)
        let m = try LoadedModel(path: path, threads: 1)
        Self.models[bits] = m
        return m
    }

    @discardableResult
    func check(_ name: String, _ actual: [Float], _ golden: [Float], relative: Float = 1e-4,
               file: StaticString = #filePath, line: UInt = #line) -> Float {
        XCTAssertEqual(actual.count, golden.count, "\(name): element count", file: file, line: line)
        guard actual.count == golden.count, !golden.isEmpty else { return .infinity }
        var maxError: Float = 0, maxGolden: Float = 0
        for (a, g) in zip(actual, golden) {
            maxError = max(maxError, a.isFinite ? abs(a - g) : .infinity)
            maxGolden = max(maxGolden, abs(g))
        }
        let rel = maxError / max(maxGolden, .leastNormalMagnitude)
        print("\(name): max |Δ| = \(maxError), max |golden| = \(maxGolden), relative \(rel)")
        XCTAssertLessThanOrEqual(maxError, relative * maxGolden, name, file: file, line: line)
        return rel
    }

    /// transformers' pixel values for image i, as the patched images the tower takes.
    func goldenPatchedImages(_ i: Int, _ c: ImageCase, patch: Int) throws -> [LFM2VLPatchedImage] {
        let u8 = try golden("image-\(i)-pixels.npy").int64s
        var out: [LFM2VLPatchedImage] = [], start = 0
        for shape in c.spatial_shapes {
            let count = shape[0] * shape[1] * patch * patch * 3
            let values = u8[start..<start + count].map { (Float($0) - 127.5) / 127.5 }
            out.append(LFM2VLPatchedImage(patchRows: shape[0], patchCols: shape[1], patchSize: patch, values: values))
            start += count
        }
        XCTAssertEqual(start, u8.count, "image \(i): pixel values beyond the spatial shapes")
        return out
    }

    // MARK: the processor

    /// The layout at the released processor settings (tile 512, patch 16, 64–256 tokens, 2–10 tiles) for 292 image
    /// sizes, against transformers' own `_get_split_layout` and token counts.
    func testLayoutsAtReleasedSettingsMatchTransformers() throws {
        struct Row: Decodable {
            let width: Int, height: Int, split: Bool, rows: Int, cols: Int
            let resized_height: Int, resized_width: Int, tokens_per_tile: Int, tokens_for_image: Int
        }
        let rows = try JSONDecoder().decode([Row].self, from: Data(contentsOf: URL(fileURLWithPath: try Fixtures.require(Self.fixture + "/golden/layouts-released.json"))))
        XCTAssertGreaterThan(rows.count, 200)
        var splits = 0
        for r in rows {
            let l = try LFM2VLImageLayout(width: r.width, height: r.height, config: LFM2VLProcessorConfig())
            let what = "\(r.width)×\(r.height)"
            XCTAssertEqual(l.split, r.split, what)
            XCTAssertEqual(l.gridRows, r.rows, what)
            XCTAssertEqual(l.gridCols, r.cols, what)
            XCTAssertEqual(l.resizedHeight, r.resized_height, what)
            XCTAssertEqual(l.resizedWidth, r.resized_width, what)
            XCTAssertEqual(l.tokensPerTile, r.tokens_per_tile, what)
            XCTAssertEqual(l.tokensForImage, r.tokens_for_image, what)
            if r.split { splits += 1 }
        }
        XCTAssertGreaterThan(splits, 50, "the table must exercise the tile grids")
    }

    /// Decoding each PNG and running our processor gives transformers' images exactly (same tiles, same thumbnail,
    /// same 8-bit values after its antialiased resizes) and the same prompt ids, placeholder expansion included.
    func testProcessorAndPromptMatchTransformers() throws {
        let model = try model()
        let meta = try meta()
        for (i, c) in meta.images.enumerated() {
            let image = try ImageDecoder.decode(path: try Fixtures.require(Self.fixture + "/" + c.file))
            let config = try XCTUnwrap(model.config.imageProcessor)
            let (layout, images) = try LFM2VLImageProcessor.process(image, config: config)
            XCTAssertEqual(layout.gridRows, c.rows, "image \(i) rows")
            XCTAssertEqual(layout.gridCols, c.cols, "image \(i) cols")
            XCTAssertEqual([layout.resizedHeight, layout.resizedWidth], c.resized, "image \(i) resized size")
            XCTAssertEqual(images.map { [$0.patchRows, $0.patchCols] }, c.spatial_shapes, "image \(i) patch grids")
            let ours = images.flatMap(\.values).map { Int64(($0 * 127.5 + 127.5).rounded()) }
            let theirs = try golden("image-\(i)-pixels.npy").int64s
            XCTAssertEqual(ours.count, theirs.count, "image \(i) pixel count")
            let differing = zip(ours, theirs).filter { $0 != $1 }.count
            XCTAssertEqual(differing, 0, "image \(i): \(differing) of \(theirs.count) pixel values differ")

            let encoded = try model.encodeImage(path: Self.fixture + "/" + c.file)
            let ids = try model.promptIds(question: meta.question, image: encoded)
            XCTAssertEqual(ids.map(Int64.init), try golden("image-\(i)-input-ids.npy").int64s, "image \(i) prompt ids")
        }
    }

    // MARK: the model

    /// transformers' pixel values through our NaFlex tower and projector: the tower's last hidden state (post
    /// layernorm) and the projected features.
    func testVisionTowerAndProjectorMatchTransformers() throws {
        let model = try model()
        let vl = try XCTUnwrap(model.lfm2vl)
        for (i, c) in try meta().images.enumerated() {
            let images = try goldenPatchedImages(i, c, patch: vl.vision.config.patchSize)
            let d = vl.vision.config.hiddenSize
            var vision = [Float](repeating: 0, count: images.map { $0.patchRows * $0.patchCols }.reduce(0, +) * d)
            vision.withUnsafeMutableBufferPointer { vl.vision.features(images: images, into: $0.baseAddress!) }
            check("image \(i) vision tower", vision, try golden("image-\(i)-vision.npy").floats)
            check("image \(i) projector", try vl.encode(patchedImages: images), try golden("image-\(i)-features.npy").floats)
        }
    }

    /// The whole model: every position's logits for transformers' prompt ids and pixel values, and 8 greedy tokens
    /// from the image file itself (our processor, tower, projector, placement and decoder).
    func testLogitsAndGreedyTokensMatchTransformers() throws {
        let model = try model()
        let vl = try XCTUnwrap(model.lfm2vl)
        for (i, c) in try meta().images.enumerated() {
            let ids = try golden("image-\(i)-input-ids.npy").int64s.map { Int32($0) }
            let generator = TextGenerator(model: model, contextLength: 512, threads: 1, kvCache: .f32)
            var encoded = try model.encodeImage(path: Self.fixture + "/" + c.file)
            encoded.features = try vl.encode(patchedImages: try goldenPatchedImages(i, c, patch: vl.vision.config.patchSize))
            try generator.setImage(encoded)
            check("image \(i) logits", try generator.allLogits(ids), try golden("image-\(i)-logits.npy").floats)
            check("image \(i) logits, one token at a time", try generator.incrementalLogits(ids), try golden("image-\(i)-logits.npy").floats)

            let chat = TextGenerator(model: model, contextLength: 512, threads: 1)
            let fromFile = try model.encodeImage(path: Self.fixture + "/" + c.file)
            try chat.setImage(fromFile)
            var generated: [Int] = []
            _ = try chat.generate(prompt: try model.promptIds(question: try meta().question, image: fromFile),
                                  maxTokens: c.greedy_ids.count, sampling: .greedy, ignoreEOS: true) {
                generated.append(Int($0)); return true
            }
            XCTAssertEqual(generated, c.greedy_ids, "image \(i) greedy tokens")
        }
    }

    /// Two sequences about different images decoded together (one pass through the layers, as fbserve does) give the
    /// logits each gives alone: exactly, since every row takes the same arithmetic.
    func testSessionsAboutDifferentImagesDecodeTogetherAsAlone() throws {
        let model = try model()
        let vocab = model.config.text.vocabSize
        let question = try meta().question
        var sessions: [LFM2VLSession] = [], alone: [[Float]] = [], prompts: [[Int32]] = []
        for file in ["image-0.png", "image-2.png"] {
            let image = try model.encodeImage(path: Self.fixture + "/" + file)
            let prompt = try model.promptIds(question: question, image: image)
            let session = try XCTUnwrap(model.makeSession(contextLength: 512, threads: 1) as? LFM2VLSession)
            try session.setImage(features: image.features)
            var logits = [Float](repeating: 0, count: 2 * vocab)
            try logits.withUnsafeMutableBufferPointer { buffer in
                try session.forward(tokens: prompt, lastLogits: buffer.baseAddress!)
                try session.forward(tokens: [17], lastLogits: buffer.baseAddress! + vocab)
            }
            alone.append(Array(logits[vocab...]))
            try session.setImage(features: image.features)
            try session.forward(tokens: prompt, lastLogits: nil)
            sessions.append(session)
            prompts.append(prompt)
        }
        XCTAssertNotEqual(prompts[0].count, prompts[1].count, "the two images take different numbers of tokens")
        var together = [Float](repeating: 0, count: 2 * vocab)
        try together.withUnsafeMutableBufferPointer {
            try sessions[0].decodeTogether(sessions, tokens: [17, 17], logits: $0.baseAddress!)
        }
        XCTAssertEqual(Array(together[..<vocab]), alone[0])
        XCTAssertEqual(Array(together[vocab...]), alone[1])
        XCTAssertThrowsError(try sessions[0].decodeTogether(sessions, tokens: [17], logits: &together), "a token per session")
    }

    /// int8 and int4 conversions against our float32 model on the split image: the relative RMS error of every
    /// position's logits, printed, bounded well above quantization noise but far below what a wrong scale, layout or
    /// feature placement gives (errors of the logits' own size, relative RMS near 1 or more).
    func testQuantizedModelsStayClose() throws {
        let c = try meta().images[2]
        let ids = try golden("image-2-input-ids.npy").int64s.map { Int32($0) }
        func logits(_ bits: Int, image: Bool = true) throws -> [Float] {
            let model = try model(bits: bits)
            let generator = TextGenerator(model: model, contextLength: 512, threads: 1)
            var encoded = try model.encodeImage(path: Self.fixture + "/" + c.file)
            if !image { encoded.features = [] }   // image tokens as plain embeddings: what a lost image gives
            try generator.setImage(encoded)
            return try generator.allLogits(ids)
        }
        func relativeRMS(_ a: [Float], _ reference: [Float]) -> Double {
            var error = 0.0, norm = 0.0
            for (q, r) in zip(a, reference) {
                error += Double(q - r) * Double(q - r)
                norm += Double(r) * Double(r)
            }
            return (error / norm).squareRoot()
        }
        let reference = try logits(32)
        let withoutImage = relativeRMS(try logits(32, image: false), reference)
        print("float32 without the image's features: relative RMS \(withoutImage) against with them")
        for (bits, bound) in [(8, 0.15), (4, 0.8)] {
            let relative = relativeRMS(try logits(bits), reference)
            print("int\(bits) logits (image 2, \(ids.count) positions): relative RMS error \(relative) against float32")
            XCTAssertLessThan(relative, bound, "int\(bits)")
            XCTAssertGreaterThan(relative, 0, "int\(bits): identical to float32 means nothing was quantized")
            XCTAssertGreaterThan(withoutImage, bound, "the bound must be below what losing the image costs")
        }
    }

    /// vision_feature_layer −2 (as some released configs say): the last encoder layer is dropped from the file and
    /// the tower runs one layer fewer (post_layernorm still applied).
    func testFeatureLayerDropsTheLayersAfterIt() throws {
        let dir = Self.folder.file("feature-layer")
        try FileManager.default.copyItem(atPath: try Fixtures.require(Self.fixture + "/model"), toPath: dir)
        let configPath = dir + "/config.json"
        var json = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: configPath))) as! [String: Any]
        json["vision_feature_layer"] = -2
        try JSONSerialization.data(withJSONObject: json).write(to: URL(fileURLWithPath: configPath))
        var options = ConversionOptions()
        options.bits = 32
        _ = try FBMConverter.convert(input: dir, output: dir + "/out.fbm", options: options)
        let file = try FBMFile(path: dir + "/out.fbm")
        XCTAssertEqual(file.config.vision?.numHiddenLayers, 1)
        XCTAssertFalse(file.header.tensors.contains { $0.name.hasPrefix("vision_model.encoder.layers.1.") })
        XCTAssertTrue(file.header.tensors.contains { $0.name == "vision_model.post_layernorm.weight" })
    }

    /// What fbconvert refuses in an LFM2-VL folder, with the file named.
    func testConverterRefusesWhatItDoesNotSupport() throws {
        let source = try Fixtures.require(Self.fixture + "/model")
        func edited(_ name: String, _ edit: (inout [String: Any]) -> Void) throws -> String {
            let dir = Self.folder.file("edited-\(UUID().uuidString.prefix(6))")
            try FileManager.default.copyItem(atPath: source, toPath: dir)
            let path = dir + "/" + name
            var json = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: path))) as! [String: Any]
            edit(&json)
            try JSONSerialization.data(withJSONObject: json).write(to: URL(fileURLWithPath: path))
            return dir
        }
        let cases: [(String, (inout [String: Any]) -> Void, String)] = [
            ("config.json", { $0["vision_feature_layer"] = 1 }, "vision_feature_layer"),
            ("config.json", { $0["vision_feature_layer"] = -3 }, "vision_feature_layer"),
            ("config.json", { $0["projector_hidden_act"] = "relu" }, "projector_hidden_act"),
            ("config.json", { $0["downsample_factor"] = 4 }, "downsample_factor"),
            ("processor_config.json", { var p = $0["image_processor"] as! [String: Any]; p["min_tiles"] = 1; $0["image_processor"] = p }, "min_tiles"),
        ]
        for (file, edit, expected) in cases {
            let dir = try edited(file, edit)
            var options = ConversionOptions()
            options.bits = 32
            XCTAssertThrowsError(try FBMConverter.convert(input: dir, output: dir + "/out.fbm", options: options), expected) { error in
                XCTAssertTrue("\(error)".contains(expected), "\(error)")
                XCTAssertTrue("\(error)".contains(dir), "the error names the file: \(error)")
            }
            XCTAssertFalse(FileManager.default.fileExists(atPath: dir + "/out.fbm"), "no output after a refusal")
        }
    }
}
