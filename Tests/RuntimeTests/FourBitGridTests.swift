import Converter
import Foundation
import Runtime
import TestSupport
import XCTest

/// The two 4-bit grids on the tiny fixture, against its golden logits: the default non-uniform grid (q4nl) must give
/// smaller logit errors than the uniform one (q4) on the text-only and on the image path, and files of the uniform
/// grid (`--grid uniform`, and every 4-bit file written before q4nl existed) must still load and run.
/// Why a strict comparison is meaningful here: both files hold the same matrices at the same 4.5 bits, and q4nl's
/// weight error is ~9% lower on these Gaussian-like weights (0.074 against 0.081 relative RMS); the logit error is
/// linear in the weight error on this fixture (TextGenerationTests), so a kernel or lookup that mixed up levels would
/// land far above q4, not below it.
final class FourBitGridTests: XCTestCase {
    static let folder = TemporaryFolder("grid")

    override class func tearDown() {
        folder.cleanup()
        super.tearDown()
    }

    func convert(uniform: Bool) throws -> LoadedModel {
        var options = ConversionOptions()
        options.bits = 4
        options.uniformGrid = uniform
        let path = Self.folder.file(uniform ? "q4.fbm" : "q4nl.fbm")
        _ = try FBMConverter.convert(input: Fixtures.tiny, output: path, options: options)
        return try LoadedModel(path: path, threads: 2)
    }

    func testNonUniformGridLowersLogitError() throws {
        let vocab = 512
        let textIds = try Fixtures.npy("text_only_input_ids.npy").int64s.map { Int32($0) }
        let textGolden = try Fixtures.npy("text_only_logits.npy").floats
        let imageIds = try Fixtures.npy("input_ids.npy").int64s.map { Int32($0) }
        let imageGolden = try Fixtures.npy("logits.npy").floats
        var errors: [String: [Double]] = [:]
        for uniform in [true, false] {
            let model = try convert(uniform: uniform)
            let matrix = model.file.tensor(named: "model.layers.0.feed_forward.w1.weight")
            XCTAssertEqual(matrix?.type, uniform ? .q4 : .q4nl)
            XCTAssertEqual(model.file.tensor(named: "vision_model.encoder.layers.0.mlp.fc1.weight")?.type, uniform ? .q4 : .q4nl)
            let text = TextGenerator(model: model, contextLength: 64, threads: 2)
            let batched = LogitComparison(try text.allLogits(textIds), golden: textGolden, vocab: vocab)
            let decode = LogitComparison(try text.incrementalLogits(textIds), golden: textGolden, vocab: vocab)
            let vision = TextGenerator(model: model, contextLength: 64, threads: 2)
            try vision.setImage(try model.encodeImage(path: Fixtures.tiny + "/image.png"))
            let image = LogitComparison(try vision.allLogits(imageIds), golden: imageGolden, vocab: vocab)
            let name = uniform ? "q4" : "q4nl"
            print("[grid] \(name): text batched \(batched), text decode \(decode), image \(image)")
            errors[name] = [batched.rmsRelative, decode.rmsRelative, image.rmsRelative]
            // The uniform grid keeps its old bounds (TextGenerationTests, QuantizedVisionTests): old files still work.
            for c in [batched, decode, image] { XCTAssertLessThan(c.rmsRelative, 0.65, name) }
        }
        for (i, what) in ["text batched", "text decode", "image"].enumerated() {
            XCTAssertLessThan(errors["q4nl"]![i], errors["q4"]![i], "q4nl's logit error is not below q4's (\(what))")
        }
    }
}
