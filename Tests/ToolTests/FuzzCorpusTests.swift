import Converter
import Foundation
import TestSupport
import XCTest

/// The fuzz targets' seeds and every input fuzzing ever crashed on (Tests/Fixtures/fuzz/regressions/TARGET),
/// replayed through the plain build of fbfuzz: each must be refused or accepted, never crash the parser.
/// scripts/fuzz.sh does the fuzzing itself (CI runs it for a bounded time).
final class FuzzCorpusTests: XCTestCase {
    let folder = TemporaryFolder("fuzz-corpus")
    override func tearDown() {
        folder.cleanup()
        super.tearDown()
    }

    static let fuzzFixtures = Fixtures.repositoryRoot.appendingPathComponent("Tests/Fixtures/fuzz").path

    func replay(_ target: String, _ inputs: [String], expecting count: Int, file: StaticString = #filePath, line: UInt = #line) throws {
        var arguments = [target, "--checkpoint", Fixtures.tiny] + inputs
        let regressions = Self.fuzzFixtures + "/regressions/" + target
        var expected = count
        if let found = try? FileManager.default.contentsOfDirectory(atPath: regressions), !found.isEmpty {
            arguments.append(regressions)
            expected += found.count
        }
        let result = try Tools.run("fbfuzz", arguments)
        XCTAssertEqual(result.status, 0, "fbfuzz \(target) failed: \(result.stderr)", file: file, line: line)
        XCTAssertTrue(result.stdout.contains("fbfuzz \(target): \(expected) inputs replayed without a crash"),
                      result.stdout + result.stderr, file: file, line: line)
    }

    func testSeedsAndRegressionsReplayWithoutACrash() throws {
        let seeds = Self.fuzzFixtures + "/seeds"
        try replay("image", [seeds + "/image", Fixtures.tiny + "/image.png"], expecting: 10)
        try replay("safetensors", [seeds + "/safetensors", Fixtures.tiny + "/model.safetensors"], expecting: 3)
        try replay("npy", [seeds + "/npy", Fixtures.golden + "/input_ids.npy"], expecting: 5)
        try replay("tokenizer", [Fixtures.tiny + "/tokenizer.json", Fixtures.shapesModel + "/tokenizer.json"], expecting: 2)
        try replay("config", [Fixtures.tiny + "/config.json", Fixtures.shapesModel + "/config.json"], expecting: 2)
        try replay("request", [seeds + "/request"], expecting: 4)
        let model = folder.file("tiny-q4.fbm")
        _ = try FBMConverter.convert(input: Fixtures.tiny, output: model, options: ConversionOptions())
        try replay("fbm", [model], expecting: 1)
    }

    /// The replay tool itself: an unknown target is a usage error, a missing file an error naming it.
    func testReplayToolErrors() throws {
        let unknown = try Tools.run("fbfuzz", ["gif", "x"])
        XCTAssertEqual(unknown.status, 64)
        XCTAssertTrue(unknown.stderr.contains("unknown target 'gif'"), unknown.stderr)
        let missing = try Tools.run("fbfuzz", ["npy", folder.file("absent.npy")])
        XCTAssertEqual(missing.status, 1)
        XCTAssertTrue(missing.stderr.contains("absent.npy: no such file or folder"), missing.stderr)
    }
}
