import Converter
import Foundation
import Runtime
import TestSupport
import XCTest

/// Sequences decoded together (fbserve --parallel) give each sequence the logits it gets decoded alone: the rows
/// share the weights' reads but not their caches, positions or modulator state.
final class DecodeTogetherTests: XCTestCase {
    static let folder = TemporaryFolder("together")

    override class func tearDown() {
        folder.cleanup()
        super.tearDown()
    }

    func model(bits: Int) throws -> LoadedModel {
        var options = ConversionOptions()
        options.bits = bits
        let path = Self.folder.file("tiny-\(bits).fbm")
        if !FileManager.default.fileExists(atPath: path) {
            _ = try FBMConverter.convert(input: Fixtures.tiny, output: path, options: options)
        }
        return try LoadedModel(path: path, threads: 2)
    }

    /// Three sequences with prompts of different lengths (so different positions), the first two about the image
    /// (they go through the modulator together), the third text only: four tokens decoded together against the same
    /// tokens decoded one sequence at a time.
    func check(bits: Int, kvCache: KVCacheType, textOnlyDecoder: Bool) throws {
        let m = try model(bits: bits)
        let vocab = m.config.text.vocabSize
        let image = try m.encodeImage(path: Fixtures.tiny + "/image.png")
        let prompts: [[Int32]] = [m.chatPromptIds(question: "How many shapes are there?", withImage: !textOnlyDecoder),
                                  m.chatPromptIds(question: "What?", withImage: !textOnlyDecoder),
                                  m.chatPromptIds(question: "Is there a red square in the picture at all?", withImage: false)]
        let steps: [[Int32]] = [[5, 9, 17], [33, 2, 8], [100, 101, 102], [7, 7, 7]]

        func makeSessions() throws -> [SequenceSession] {
            try prompts.indices.map { i -> SequenceSession in
                if textOnlyDecoder {
                    return LFM2Session(model: m.decoder, contextLength: 128, threads: 2, kvCache: kvCache)
                }
                let s = FireboltVLSession(model: m.vision!, contextLength: 128, threads: 2, kvCache: kvCache)
                try s.setImage(grid: i < 2 ? image.grid : nil)
                return s
            }
        }
        // Alone.
        var alone: [[Float]] = []
        for (i, session) in try makeSessions().enumerated() {
            var logits = [Float](repeating: 0, count: vocab)
            try session.forward(tokens: prompts[i], lastLogits: &logits, allLogits: nil)
            for step in steps {
                try session.forward(tokens: [step[i]], lastLogits: &logits, allLogits: nil)
                alone.append(logits)
            }
        }
        // Together.
        let sessions = try makeSessions()
        var prefill = [Float](repeating: 0, count: vocab)
        for (i, session) in sessions.enumerated() { try session.forward(tokens: prompts[i], lastLogits: &prefill, allLogits: nil) }
        var together = [[Float]](repeating: [], count: alone.count)
        var block = [Float](repeating: 0, count: 3 * vocab)
        for (k, step) in steps.enumerated() {
            try sessions[0].decodeTogether(sessions, tokens: step, logits: &block)
            for i in 0..<3 { together[i * steps.count + k] = Array(block[i * vocab..<(i + 1) * vocab]) }
        }
        for i in 0..<3 { XCTAssertEqual(sessions[i].position, prompts[i].count + steps.count) }
        // Each row's arithmetic is the single-row arithmetic except in the products, which run three rows through one
        // kernel call (the same per-row sums, possibly in another order): float32 rounding, ~1e-6 of the largest logit.
        for (a, b) in zip(alone, together) {
            let scale = a.map(abs).max()!
            let error = zip(a, b).map { abs($0 - $1) }.max()!
            XCTAssertLessThan(error, 1e-5 * scale, "bits \(bits), \(kvCache), text-only decoder \(textOnlyDecoder)")
            XCTAssertEqual(a.indices.max { a[$0] < a[$1] }, b.indices.max { b[$0] < b[$1] })
        }
    }

    func testFireboltVLSequencesDecodedTogetherMatchAlone() throws {
        try check(bits: 32, kvCache: .f32, textOnlyDecoder: false)
        try check(bits: 8, kvCache: .f16, textOnlyDecoder: false)
        try check(bits: 4, kvCache: .f16, textOnlyDecoder: false)
    }

    func testDecoderSequencesDecodedTogetherMatchAlone() throws {
        try check(bits: 32, kvCache: .f32, textOnlyDecoder: true)
        try check(bits: 4, kvCache: .f16, textOnlyDecoder: true)
    }

    func testMismatchedSequencesAreRefused() throws {
        let m = try model(bits: 8)
        let a = LFM2Session(model: m.decoder, contextLength: 64, threads: 1)
        let b = LFM2Session(model: m.decoder, contextLength: 32, threads: 1)
        var logits = [Float](repeating: 0, count: 2 * m.config.text.vocabSize)
        XCTAssertThrowsError(try a.decodeTogether([a, b], tokens: [1, 2], logits: &logits))
        XCTAssertThrowsError(try a.decodeTogether([a, a], tokens: [1, 2], logits: &logits))
        XCTAssertThrowsError(try a.decodeTogether([a], tokens: [1, 2], logits: &logits))
    }
}
