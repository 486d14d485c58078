import CommandLineKit
import XCTest

final class ArgumentParserTests: XCTestCase {
    let spec = CommandSpec(name: "tool", usage: "tool [options] INPUT", summary: "Does things.", options: [
        .value("bits", "B", "precision"),
        .value("output", short: "o", "OUT", "output"),
        .value("keep", "PATTERN", "keep", repeatable: true),
        .flag("quiet", short: "q", "quiet"),
    ], positionals: 1...1)

    func parse(_ args: [String]) throws -> ParsedArguments { try ArgumentParser.parse(args, spec: spec) }

    func testValuesFlagsAndPositionals() throws {
        let a = try parse(["--bits", "8", "-o", "x.fbm", "--keep=a*", "--keep", "b*", "-q", "in.safetensors"])
        XCTAssertEqual(try a.int("bits"), 8)
        XCTAssertEqual(a.string("output"), "x.fbm")
        XCTAssertEqual(a.strings("keep"), ["a*", "b*"])
        XCTAssertTrue(a.flag("quiet"))
        XCTAssertEqual(a.positionals, ["in.safetensors"])
        XCTAssertNil(a.string("missing"))
    }

    func testDoubleDashEndsOptionsAndValuesMayLookLikeOptions() throws {
        let a = try parse(["-o", "-weird", "--", "--input-named-like-an-option"])
        XCTAssertEqual(a.string("output"), "-weird")
        XCTAssertEqual(a.positionals, ["--input-named-like-an-option"])
    }

    func testUsageErrors() {
        let cases: [([String], String)] = [
            (["--nope", "x"], "unknown option --nope"),
            (["-z", "x"], "unknown option -z"),
            (["x", "--bits"], "--bits needs a value"),
            (["--quiet=yes", "x"], "--quiet takes no value"),
            (["--bits", "4", "--bits", "8", "x"], "more than once"),
            ([], "missing argument"),
            (["a", "b"], "unexpected argument 'b'"),
        ]
        for (args, message) in cases {
            XCTAssertThrowsError(try parse(args), "\(args)") { error in
                guard let usage = error as? UsageError else { return XCTFail("\(args): \(error) is not a UsageError") }
                XCTAssertTrue(usage.message.contains(message), "\(args): '\(usage.message)' lacks '\(message)'")
            }
        }
    }

    func testTypedValuesAreChecked() throws {
        XCTAssertThrowsError(try parse(["--bits", "four", "x"]).int("bits")) { XCTAssertTrue("\($0)".contains("whole number")) }
        XCTAssertThrowsError(try parse(["--bits", "3", "x"]).int("bits", range: 4...32)) { XCTAssertTrue("\($0)".contains("between 4 and 32")) }
        XCTAssertEqual(try parse(["x"]).int("bits", default: 4), 4)
        XCTAssertThrowsError(try parse(["--bits", "nan", "x"]).double("bits"))
        XCTAssertThrowsError(try parse(["--output", "zip", "x"]).choice("output", ["zstd", "none"], default: "zstd")) {
            XCTAssertTrue("\($0)".contains("one of zstd, none"))
        }
    }

    func testHelpListsEveryOption() {
        XCTAssertThrowsError(try parse(["--help"])) { error in
            guard let help = error as? HelpRequested else { return XCTFail("not a help request") }
            for option in ["--bits B", "-o, --output OUT", "--keep PATTERN", "-q, --quiet", "--help", "usage: tool"] {
                XCTAssertTrue(help.text.contains(option), "help lacks \(option):\n\(help.text)")
            }
        }
        XCTAssertThrowsError(try parse(["x", "-h"])) { XCTAssertTrue($0 is HelpRequested) }
    }
}
