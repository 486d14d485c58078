import Converter
import Foundation
import Runtime
import TestSupport
import XCTest

/// The trained model the repository ships (models/firebolt-shapes), converted as a user converts it, answering
/// questions about images it never saw in training (models/firebolt-shapes/eval, another seed's images).
final class TrainedModelTests: XCTestCase {
    static let folder = TemporaryFolder("shapes")

    override class func tearDown() {
        folder.cleanup()
        super.tearDown()
    }

    static var converted: [Int: String] = [:]

    /// models/firebolt-shapes converted at `bits` (once per test run).
    func model(bits: Int) throws -> String {
        if let path = Self.converted[bits] { return path }
        var options = ConversionOptions()
        options.bits = bits
        let path = Self.folder.file("shapes-\(bits).fbm")
        _ = try FBMConverter.convert(input: try Fixtures.require(Fixtures.shapesModel + "/model.safetensors"),
                                     output: path, options: options)
        Self.converted[bits] = path
        return path
    }

    var questionFile: String { get throws { try Fixtures.require(Fixtures.shapesModel + "/eval/questions.jsonl") } }

    func score(bits: Int, questions: [EvalQuestion]) throws -> (EvalScore, [String]) {
        let evaluator = Evaluator(model: try LoadedModel(path: try model(bits: bits), threads: 2), threads: 2)
        var score = EvalScore(), answers: [String] = []
        for q in questions {
            let a = try evaluator.answer(q)
            score.add(q, answer: a)
            answers.append(a)
        }
        return (score, answers)
    }

    /// The demo's questions at 4 bits, about the shipped example image (a yellow circle, a blue triangle and a yellow
    /// triangle; training/shapes_world.py image --seed 16 prints every question's answer). The five the model answers
    /// reliably (count, colour, shape, exists: 98–100% held out) must be right. The demo also asks a "where" and the
    /// "describe" question, the families this model gets right only 50% and 72% of the time (README; on this image it
    /// gets both wrong, and the demo says so): for those the 4-bit answer must be float32's, so a kernel change that
    /// flips them is seen.
    func testDemoQuestionsAreAnsweredAtFourBits() throws {
        let image = Fixtures.repositoryRoot.appendingPathComponent("assets/example.png").path
        func answer(_ question: String, bits: Int) throws -> String {
            let r = try Tools.run("fbrun", ["--model", try model(bits: bits), "--image", image, "--prompt", question,
                                            "--temperature", "0"])
            XCTAssertEqual(r.status, 0, r.stderr)
            return r.stdout
        }
        for (question, expected) in [("How many shapes are there?", "three"), ("What color is the circle?", "yellow"),
                                     ("What shape is the blue one?", "triangle"), ("Is there a yellow triangle?", "yes"),
                                     ("Is there a red square?", "no")] {
            XCTAssertEqual(try answer(question, bits: 4), expected + "\n", question)
        }
        for (question, truth) in [("Where is the yellow circle?", "bottom left"),
                                  ("What is in the picture?", "a yellow circle, a blue triangle and a yellow triangle")] {
            let q4 = try answer(question, bits: 4)
            XCTAssertEqual(q4, try answer(question, bits: 32), "\(question): 4 bits and float32 differ")
            print("[demo] \(question) -> \(q4.dropLast()) (\(q4 == truth + "\n" ? "right" : "wrong; the answer is \(truth)"))")
        }
    }

    /// The library's example (Examples/ask, the public `ChatModel` API only) answers as fbrun does, and its
    /// `answer` gives the same text in one string.
    func testLibraryExampleAnswersAsFbrunDoes() throws {
        let image = Fixtures.repositoryRoot.appendingPathComponent("assets/example.png").path
        let question = "What shape is the blue one?"
        let viaLibrary = try Tools.run("ask", [try model(bits: 4), question, image])
        XCTAssertEqual(viaLibrary.status, 0, viaLibrary.stderr)
        let viaTool = try Tools.run("fbrun", ["--model", try model(bits: 4), "--image", image, "--prompt", question,
                                              "--temperature", "0"])
        XCTAssertEqual(viaLibrary.stdout, viaTool.stdout)
        XCTAssertEqual(try ChatModel(path: try model(bits: 4), threads: 2).answer(question, image: image) + "\n", viaTool.stdout)
        let usage = try Tools.run("ask", [try model(bits: 4)])
        XCTAssertEqual(usage.status, 64)
    }

    /// Held-out accuracy at every precision (653 questions, about 20 s per precision in a debug build). Measured
    /// (README): float32 86.5% overall; count, color, shape and exists 98-100%, describe 72.5%, where 50.5% (chance 25%).
    /// The floors below are those figures less a margin for other kernel sets' rounding; they guard against
    /// regressions and are not the targets (90% overall, 75% per family), which this model does not reach yet.
    /// int8 and int4 are held to within 1 and 2.5 points of float32 (measured here: −0.1 and +0.6; the "where" and
    /// "describe" answers are the least certain, so rounding moves them more than the others).
    func testHeldOutAccuracyAtEveryPrecision() throws {
        let questions = try EvalSet.load(path: try questionFile)
        XCTAssertGreaterThanOrEqual(questions.count, 600)
        let (f32, answers32) = try score(bits: 32, questions: questions)
        print(String(format: "[shapes] float32 held-out accuracy %.4f", f32.overall.accuracy))
        XCTAssertGreaterThanOrEqual(f32.overall.accuracy, 0.84)
        for family in ["count", "color", "shape", "exists"] {
            XCTAssertGreaterThanOrEqual(f32.families[family]?.accuracy ?? 0, 0.95, "float32 accuracy of the '\(family)' questions")
        }
        XCTAssertGreaterThanOrEqual(f32.families["describe"]?.accuracy ?? 0, 0.67, "float32 accuracy of the 'describe' questions")
        XCTAssertGreaterThanOrEqual(f32.families["where"]?.accuracy ?? 0, 0.45, "float32 accuracy of the 'where' questions")
        for (bits, allowed) in [(8, 0.01), (4, 0.025)] {
            let (q, answers) = try score(bits: bits, questions: questions)
            let agreement = Double(zip(answers, answers32).filter { $0 == $1 }.count) / Double(questions.count)
            print(String(format: "[shapes] %d-bit held-out accuracy %.4f, agreement with float32 %.4f", bits,
                         q.overall.accuracy, agreement))
            XCTAssertGreaterThanOrEqual(q.overall.accuracy, f32.overall.accuracy - allowed - 1e-9, "\(bits)-bit accuracy")
        }
    }

    /// `fbrun eval` end to end: a table per family, JSON with --compare, and a clear error for a broken file.
    func testEvalCommand() throws {
        let q4 = try model(bits: 4), q8 = try model(bits: 8)
        let table = try Tools.run("fbrun", ["eval", "--model", q4, "--data", try questionFile, "--limit", "24"])
        XCTAssertEqual(table.status, 0, table.stderr)
        for word in ["family", "count", "color", "overall", "accuracy"] { XCTAssertTrue(table.stdout.contains(word), table.stdout) }
        XCTAssertTrue(table.stderr.contains("24/24"), "the progress bar reaches the end: \(table.stderr)")

        let r = try Tools.run("fbrun", ["eval", "--model", q4, "--compare", q8, "--data", try questionFile, "--limit", "24", "--json"])
        XCTAssertEqual(r.status, 0, r.stderr)
        let out = try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as! [String: Any]
        XCTAssertEqual(out["questions"] as? Int, 24)
        let score = out["score"] as! [String: Any], overall = score["overall"] as! [String: Any]
        XCTAssertEqual(overall["questions"] as? Int, 24)
        let agreed = overall["agreed"] as! Int, correct = overall["correct"] as! Int
        XCTAssertGreaterThan(correct, 12, "a trained model gets most of them right")
        XCTAssertGreaterThan(agreed, 12, "the 8-bit model gives the same answers as the 4-bit one")
        XCTAssertNotNil(out["compare_score"])

        let broken = Self.folder.file("broken.jsonl")
        try "{\"image\": \"x.png\", \"question\": \"q\"}\n".write(toFile: broken, atomically: true, encoding: .utf8)
        let bad = try Tools.run("fbrun", ["eval", "--model", q4, "--data", broken])
        XCTAssertEqual(bad.status, 1)
        XCTAssertTrue(bad.stderr.contains("\(broken): line 1: 'answer' must be a non-empty string"), bad.stderr)
        let missing = try Tools.run("fbrun", ["eval", "--model", q4])
        XCTAssertEqual(missing.status, 64, missing.stderr)
    }
}
