import Converter
import Foundation
import Kernels
import Runtime
import TestSupport
import XCTest

/// Converting the tiny Firebolt-VL fixture at every precision, and reading it back with the runtime's reader.
final class ConversionTests: XCTestCase {
    static let folder = TemporaryFolder("fbconvert")

    // Statics are never deinitialised: remove the folder when the class's tests are done.
    override class func tearDown() {
        folder.cleanup()
        super.tearDown()
    }
    static var converted: [Int: String] = [:]

    /// Converts the fixture once per precision for all tests in this class.
    func model(bits: Int, compression: Compression = .zstd) throws -> String {
        let key = bits * 10 + (compression == .zstd ? 1 : 0)
        if let path = Self.converted[key] { return path }
        var options = ConversionOptions()
        options.bits = bits
        options.compression = compression
        let path = Self.folder.file("tiny-\(bits)-\(compression.rawValue).fbm")
        _ = try FBMConverter.convert(input: Fixtures.tiny, output: path, options: options)
        Self.converted[key] = path
        return path
    }

    /// The source values of a runtime tensor, after the converter's documented renaming and reshaping.
    func sourceValues(_ name: String, _ source: SafetensorsFile) throws -> [Float]? {
        let map: [(String, String)] = [("model.", "base_lm.model."), ("vision_model.", "model.vision_encoder.encoder.model.vision_model."),
                                       ("cmm.", "model.fuser.fuser.model.")]
        for (canonical, released) in map where name.hasPrefix(canonical) {
            var sourceName = released + name.dropFirst(canonical.count)
            if name.hasPrefix("vision_model.head.attention.") && !name.contains("out_proj") { return nil }  // split from in_proj
            if name == "cmm.s4.kernel_taps" { return nil }  // computed, checked against its own golden
            if name == "cmm.s4.D" { sourceName = "model.fuser.fuser.model.s4.layer.D" }
            if name.hasPrefix("cmm.s4.output_linear.") { sourceName = sourceName.replacingOccurrences(of: "output_linear.", with: "output_linear.0.") }
            return try source.floatArray(sourceName)
        }
        return nil
    }

    func testThirtyTwoBitsReadsBackBitIdentical() throws {
        let file = try FBMFile(path: model(bits: 32))
        let weights = try file.loadWeights()
        let source = try SafetensorsFile(path: Fixtures.tiny + "/model.safetensors")
        var compared = 0
        for t in file.tensors {
            XCTAssertEqual(t.type, .f32, t.name)
            let stored = try weights.floats(t.name, shape: t.shape)
            if let expected = try sourceValues(t.name, source) {
                XCTAssertEqual(stored.map(\.bitPattern), expected.map(\.bitPattern), "\(t.name) differs from the checkpoint")
                compared += 1
            }
        }
        // The pooling head's q/k/v come out of the packed in_proj: rows [0,D), [D,2D), [2D,3D).
        let packed = try source.floatArray("model.vision_encoder.encoder.model.vision_model.head.attention.in_proj_weight")
        let d = file.config.vision!.hiddenSize
        for (k, name) in ["q_proj", "k_proj", "v_proj"].enumerated() {
            let stored = try weights.floats("vision_model.head.attention.\(name).weight", shape: [d, d])
            XCTAssertEqual(stored.map(\.bitPattern), Array(packed[k * d * d ..< (k + 1) * d * d]).map(\.bitPattern))
            compared += 1
        }
        XCTAssertGreaterThan(compared, 100, "too few tensors compared: the name mapping is off")
        // Nothing the runtime never uses is carried.
        XCTAssertFalse(file.tensors.contains { $0.name.contains("text_model") || $0.name.contains("projector") || $0.name.contains("importance") })
    }

    func testS4TapsInTheFileMatchTheGoldenKernel() throws {
        let file = try FBMFile(path: model(bits: 4))
        let weights = try file.loadWeights()
        let golden = try Fixtures.npy("s4_kernel.npy")
        XCTAssertEqual(golden.shape, [1, 64, 512])
        let taps = try weights.floats("cmm.s4.kernel_taps", shape: [64, 512])
        let g = golden.floats
        let maxTap = g.map(abs).max()!
        let maxDiff = zip(taps, g).map { abs($0 - $1) }.max()!
        // The golden is the reference's float32 FFT/Cauchy output; an exact float64 evaluation differs from it by
        // about 5e-5 (the fixture's README measured the same with its own recurrence). 2e-4 of the largest tap
        // leaves room for float32 storage and nothing more.
        XCTAssertLessThan(maxDiff, 2e-4 * maxTap)
        XCTAssertEqual(file.tensor(named: "cmm.s4.kernel_taps")?.type, .f32)
    }

    /// Reconstruction error of every quantized matrix, relative to its f32 source, within the bound of its type.
    func testReconstructionErrorAtEachPrecision() throws {
        let reference = try FBMFile(path: model(bits: 32)).loadWeights()
        // Bounds on relative RMS error per matrix, with why:
        //  f16: 11-bit significand, rounding error ≤ 2^-12 relative per value → RMS well under 4e-4.
        //  q8: error ≤ scale/2 = max|w|/254 per value; for Gaussian-like groups of 32 that is about 0.6% RMS → 0.01.
        //  4 bits (q4nl): 16 levels per group; measured ~7.4% RMS on Gaussian weights (q4's uniform grid ~8%) → 0.1.
        let bounds: [Int: Double] = [16: 4e-4, 8: 0.01, 4: 0.10]
        for (bits, bound) in bounds.sorted(by: { $0.key > $1.key }) {
            let file = try FBMFile(path: model(bits: bits))
            let weights = try file.loadWeights()
            var worst = 0.0
            for t in file.tensors where t.shape.count == 2 && t.type != .f32 {
                let original = try reference.floats(t.name, shape: t.shape)
                let restored = try weights.floats(t.name, shape: t.shape)
                var err = 0.0, norm = 0.0
                for (a, b) in zip(original, restored) { err += Double((a - b) * (a - b)); norm += Double(a * a) }
                let rel = (err / norm).squareRoot()
                worst = max(worst, rel)
                XCTAssertLessThan(rel, bound, "\(t.name) at \(bits) bits")
            }
            XCTAssertGreaterThan(worst, 0, "\(bits)-bit file has no lossy matrices: the policy is not applied")
            print("[conversion] worst relative RMS error at \(bits) bits: \(worst)")
        }
    }

    func testQuantizationPolicyIsRecordedPerTensor() throws {
        let file = try FBMFile(path: model(bits: 4))
        for t in file.tensors {
            let isMatrix = t.shape.count == 2 && !t.name.hasSuffix("position_embedding.weight") && !t.name.hasSuffix("conv.conv.weight")
                && !t.name.hasSuffix("kernel_taps") && !t.name.hasSuffix("probe")
            XCTAssertEqual(t.type, isMatrix ? .q4nl : .f32, t.name)
            XCTAssertEqual(t.groupSize, isMatrix ? 32 : nil, t.name)
        }
        XCTAssertEqual(file.header.quantization.bits, 4)
        XCTAssertEqual(file.tensor(named: "model.embed_tokens.weight")?.type, .q4nl, "the tied embedding is quantized too")
    }

    func testKeepPatternAndVisionBits() throws {
        var options = ConversionOptions()
        options.bits = 4
        options.visionBits = 8
        options.keep = ["*.feed_forward.w2.weight"]
        let path = Self.folder.file("policy.fbm")
        _ = try FBMConverter.convert(input: Fixtures.tiny, output: path, options: options)
        let file = try FBMFile(path: path)
        XCTAssertEqual(file.tensor(named: "model.layers.0.feed_forward.w2.weight")?.type, .f16)
        XCTAssertEqual(file.tensor(named: "model.layers.0.feed_forward.w1.weight")?.type, .q4nl)
        XCTAssertEqual(file.tensor(named: "vision_model.encoder.layers.0.mlp.fc1.weight")?.type, .q8)
        XCTAssertEqual(file.header.quantization.visionBits, 8)
    }

    func testUncompressedFileIsMemoryMappedAndEqualsCompressedOne() throws {
        let raw = try FBMFile(path: model(bits: 4, compression: .none))
        XCTAssertTrue(raw.tensors.allSatisfy { $0.compression == .none && $0.storedBytes == $0.rawBytes })
        let mapped = try raw.loadWeights()
        XCTAssertTrue(mapped.isMemoryMapped)
        let packed = try FBMFile(path: model(bits: 4)).loadWeights()
        XCTAssertFalse(packed.isMemoryMapped)
        for name in mapped.names {
            let a = try mapped.entry(name), b = try packed.entry(name)
            XCTAssertEqual(a.info.rawBytes, b.info.rawBytes)
            XCTAssertEqual(memcmp(a.pointer, b.pointer, Int(a.info.rawBytes)), 0, name)
            XCTAssertEqual(Int(bitPattern: a.pointer) % 64, 0, "\(name) is not 64-byte aligned in memory")
        }
    }

    /// Loading on several threads (runs of tensors of about equal bytes) brings in the same bytes as one thread, and a
    /// corrupt file fails the same way: the first corrupt tensor in file order is named, whichever thread found it.
    func testParallelLoadEqualsSerialAndNamesTheFirstCorruptTensor() throws {
        let path = try model(bits: 4)
        let file = try FBMFile(path: path)
        let serial = try file.loadWeights()
        for threads in [2, 3] {
            let loaded = try file.loadWeights(parallel: Parallel(threads: threads))
            XCTAssertEqual(loaded.names, serial.names)
            for name in serial.names {
                let a = try serial.entry(name), b = try loaded.entry(name)
                XCTAssertEqual(memcmp(a.pointer, b.pointer, Int(a.info.rawBytes)), 0, "\(name), \(threads) threads")
                XCTAssertEqual(Int(bitPattern: b.pointer) % 64, 0, "\(name) is not 64-byte aligned in memory")
            }
        }
        // Corrupt one tensor in the first half of the file and one in the last: every thread count reports the first.
        var bytes = try Data(contentsOf: URL(fileURLWithPath: path))
        let tensors = file.tensors
        let early = tensors[tensors.count / 3], late = tensors[tensors.count - 2]
        for t in [early, late] { bytes[Int(file.prefix.dataOffset + t.offset + t.storedBytes / 2)] ^= 0x20 }
        let corrupt = Self.folder.file("corrupt-two-tensors.fbm")
        try bytes.write(to: URL(fileURLWithPath: corrupt))
        for parallel in [nil, Parallel(threads: 2), Parallel(threads: 3)] {
            XCTAssertThrowsError(try FBMFile(path: corrupt).loadWeights(parallel: parallel)) { error in
                let message = "\(error)"
                XCTAssertTrue(message.contains("tensor \(early.name):"), message)
                XCTAssertTrue(message.contains("checksum mismatch"), message)
                XCTAssertTrue(message.contains("corrupt-two-tensors.fbm"), message)
            }
        }
    }

    func testConfigAndTokenizerAreCarried() throws {
        let file = try FBMFile(path: model(bits: 8))
        let c = file.config
        XCTAssertEqual(c.architecture, "fireboltlm")
        XCTAssertEqual(c.text.layerTypes, ["conv", "attention", "conv", "attention"])
        XCTAssertEqual(c.text.headDim, 16)
        XCTAssertEqual(c.text.numKeyValueHeads, 2)
        XCTAssertEqual(c.text.intermediateSize, 128)
        XCTAssertEqual(c.vision?.hiddenSize, 32)
        XCTAssertEqual(c.vision?.numAttentionHeads, 2)
        XCTAssertEqual(c.cmm?.s4Taps, 512)
        XCTAssertEqual(c.cmm?.ffnDim, 256)
        XCTAssertEqual(c.specialTokens.bos, 1)
        XCTAssertEqual(c.specialTokens.eos, [4])
        XCTAssertEqual(c.specialTokens.image, 5)
        XCTAssertEqual(file.header.preprocessor?.resample, 2)
        let tokenizer = try String(contentsOfFile: Fixtures.tiny + "/tokenizer.json", encoding: .utf8)
        XCTAssertEqual(file.header.tokenizer, tokenizer)
        XCTAssertNotNil(file.header.chatTemplate)
    }

    func testDefaultOutputName() {
        XCTAssertEqual(FBMConverter.defaultOutputPath(input: "/a/b/model.safetensors", bits: 4), "/a/b/model-q4.fbm")
        XCTAssertEqual(FBMConverter.defaultOutputPath(input: "/a/b/model.safetensors.index.json", bits: 8), "/a/b/model-q8.fbm")
        XCTAssertEqual(FBMConverter.defaultOutputPath(input: "/a/b/m.safetensors", bits: 16), "/a/b/m-f16.fbm")
    }
}
