import Converter
import Foundation
import Runtime
import TestSupport
import XCTest

/// Firebolt-VL with the image at reduced precision (vision tower, CMM and decoder all quantized), against the
/// reference logits. Why these bounds: as for the text-only path (TextGenerationTests), the logit error is linear
/// in the per-matrix weight error (≈ 2.1e-4 f16, 5.5e-3 q8, 8.1e-2 q4 relative RMS); with the image the path adds
/// the vision tower, the pooling head and the CMM's matrices; on this fixture the logits' relative RMS error
/// measures 4.1–4.5× the weight error at every precision (the worst logit ~5.4×). The bounds allow 8× for the RMS
/// and 10× for the worst logit: a wrong op or a broken quantized kernel lands far outside them.
final class QuantizedVisionTests: XCTestCase {
    func testImageLogitsAtReducedPrecision() throws {
        let folder = TemporaryFolder("vlq")
        let golden = try Fixtures.npy("logits.npy").floats
        let ids = try Fixtures.npy("input_ids.npy").int64s.map { Int32($0) }
        let vocab = 512
        let bounds: [(bits: Int, rms: Double, max: Double, agreement: Double)] = [(16, 1.7e-3, 2.1e-3, 1.0), (8, 0.044, 0.055, 0.8), (4, 0.65, 0.8, 0.35)]
        for b in bounds {
            var options = ConversionOptions()
            options.bits = b.bits
            let path = folder.file("vl-\(b.bits).fbm")
            _ = try FBMConverter.convert(input: Fixtures.tiny, output: path, options: options)
            let model = try LoadedModel(path: path, threads: 2)
            XCTAssertEqual(model.file.tensor(named: "vision_model.encoder.layers.0.mlp.fc1.weight")?.type,
                           b.bits == 4 ? .q4nl : b.bits == 8 ? .q8 : .f16, "the vision tower is quantized too")
            let generator = TextGenerator(model: model, contextLength: 64, threads: 2)
            try generator.setImage(try model.encodeImage(path: Fixtures.tiny + "/image.png"))
            let c = LogitComparison(try generator.allLogits(ids), golden: golden, vocab: vocab)
            print("[vl] \(b.bits)-bit with image: \(c)")
            XCTAssertLessThan(c.rmsRelative, b.rms, "\(b.bits) bits")
            XCTAssertLessThan(c.maxRelative, b.max, "\(b.bits) bits")
            XCTAssertGreaterThanOrEqual(c.agreement, b.agreement, "\(b.bits) bits")
        }
    }
}
