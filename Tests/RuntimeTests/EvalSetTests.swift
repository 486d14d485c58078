import Foundation
import Runtime
import TestSupport
import XCTest

/// Question files for `fbrun eval`, and the exact-match score.
final class EvalSetTests: XCTestCase {
    func write(_ text: String) throws -> (TemporaryFolder, String) {
        let folder = TemporaryFolder("evalset")
        let path = folder.file("questions.jsonl")
        try text.write(toFile: path, atomically: true, encoding: .utf8)
        return (folder, path)
    }

    func testLoadsLinesResolvesImagesAndFamilies() throws {
        let (folder, path) = try write("""
            {"image": "a.png", "question": "How many shapes are there?", "answer": "two", "family": "count"}

            {"image": "/abs/b.png", "question": "What color is the circle?", "answer": "red"}
            """)
        let qs = try EvalSet.load(path: path)
        XCTAssertEqual(qs.count, 2, "the blank line is skipped")
        XCTAssertEqual(qs[0], EvalQuestion(image: folder.file("a.png"), question: "How many shapes are there?",
                                           answer: "two", family: "count"))
        XCTAssertEqual(qs[1].image, "/abs/b.png")
        XCTAssertEqual(qs[1].family, "What color", "without a family field, the question's first two words")
    }

    func testBadLinesNameTheFileAndLine() throws {
        let cases: [(String, String)] = [
            ("{\"image\": \"a.png\", \"question\": \"q\", \"answer\": \"a\"}\nnot json", "line 2: not a JSON object"),
            ("{\"image\": \"a.png\", \"question\": \"q\"}", "line 1: 'answer' must be a non-empty string"),
            ("{\"image\": 3, \"question\": \"q\", \"answer\": \"a\"}", "line 1: 'image' must be a non-empty string"),
            ("\n\n", "no questions"),
        ]
        for (text, message) in cases {
            let (folder, path) = try write(text)
            defer { folder.cleanup() }  // keeps the folder alive until the file has been read
            XCTAssertThrowsError(try EvalSet.load(path: path)) { error in
                XCTAssertEqual("\(error)", "\(path): \(message)")
            }
        }
        XCTAssertThrowsError(try EvalSet.load(path: "/nonexistent/q.jsonl")) { error in
            XCTAssertEqual("\(error)", "/nonexistent/q.jsonl: cannot read the question file: file not found")
        }
    }

    func testScoreCountsExactMatchesAndAgreement() {
        let q = { (family: String, answer: String) in EvalQuestion(image: "i", question: "q", answer: answer, family: family) }
        var score = EvalScore()
        score.add(q("count", "two"), answer: "two", other: "two")
        score.add(q("count", "three"), answer: "three ", other: "three")   // not an exact match, and disagrees
        score.add(q("color", "red"), answer: "blue", other: "blue")        // wrong, but the models agree
        XCTAssertEqual(score.overall.questions, 3)
        XCTAssertEqual(score.overall.correct, 1)
        XCTAssertEqual(score.overall.agreed, 2)
        XCTAssertEqual(score.families["count"]?.accuracy, 0.5)
        XCTAssertEqual(score.families["color"]?.agreement, 1)
    }
}
