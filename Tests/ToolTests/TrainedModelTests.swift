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

    /// The demo's questions at 4 bits, about the shipped example image (a red, a yellow and a green triangle and a blue
    /// circle; training/shapes_world.py image --seed 21 prints every question's answer): every answer must be the
    /// world's, and float32's. Held out, this model answers 92.7% of "where" and 79.8% of "describe" questions right
    /// (README); on this image it answers all of them right at 32, 8 and 4 bits on every x86 kernel set, so a kernel
    /// or model change that flips one is seen.
    func testDemoQuestionsAreAnsweredAtFourBits() throws {
        let image = Fixtures.repositoryRoot.appendingPathComponent("assets/example.png").path
        func answer(_ question: String, bits: Int) throws -> String {
            let r = try Tools.run("fbrun", ["--model", try model(bits: bits), "--image", image, "--prompt", question,
                                            "--temperature", "0"])
            XCTAssertEqual(r.status, 0, r.stderr)
            return r.stdout
        }
        for (question, expected) in [("How many shapes are there?", "four"), ("What color is the circle?", "blue"),
                                     ("What shape is the red one?", "triangle"), ("Is there a green triangle?", "yes"),
                                     ("Is there a red square?", "no"), ("Where is the red triangle?", "top left"),
                                     ("Where is the blue circle?", "bottom left"),
                                     ("What is in the picture?", "a red triangle, a yellow triangle, a blue circle and a green triangle")] {
            let q4 = try answer(question, bits: 4)
            XCTAssertEqual(q4, expected + "\n", question)
            XCTAssertEqual(q4, try answer(question, bits: 32), "\(question): 4 bits and float32 differ")
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
    /// (README): float32 94.9% overall; count, color, shape and exists 99-100%, where 92.7%, describe 79.8%. The
    /// floors are the targets the model was trained to (90% overall, 75% in every family), which the measured figures
    /// clear by 5 points overall and by 4.8 on "describe", the closest: room for another kernel set's rounding, which
    /// moves a few uncertain answers, but not for a real regression. int8 and int4 are held to within 0.5 and 1.5
    /// points of float32, the targets (measured here: +0.2 and −0.5).
    func testHeldOutAccuracyAtEveryPrecision() throws {
        let questions = try EvalSet.load(path: try questionFile)
        XCTAssertGreaterThanOrEqual(questions.count, 600)
        let (f32, answers32) = try score(bits: 32, questions: questions)
        print(String(format: "[shapes] float32 held-out accuracy %.4f", f32.overall.accuracy))
        XCTAssertGreaterThanOrEqual(f32.overall.accuracy, 0.90)
        XCTAssertEqual(f32.families.count, 6, "every question family is in the held-out set")
        for (family, score) in f32.families {
            XCTAssertGreaterThanOrEqual(score.accuracy, 0.75, "float32 accuracy of the '\(family)' questions")
        }
        for (bits, allowed) in [(8, 0.005), (4, 0.015)] {
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
