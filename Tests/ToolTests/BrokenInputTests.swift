import Converter
import Foundation
import Kernels
import Runtime
import TestSupport
import XCTest

/// Every kind of broken input gets a clear error naming the file and the problem, a non-zero exit,
/// and leaves no output file (nor a temporary one) behind.
final class BrokenInputTests: XCTestCase {
    let folder = TemporaryFolder("broken")

    // XCTest keeps every test case instance until the run ends, so deinit comes too late (or never).
    override func tearDown() {
        folder.cleanup()
        super.tearDown()
    }

    /// A checkpoint folder: the fixture's JSON files beside `weights`, with `config` edits applied.
    func checkpoint(_ name: String, weights: Data, config: ((inout [String: Any]) -> Void)? = nil) throws -> String {
        let dir = folder.file(name)
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        for f in ["tokenizer.json", "tokenizer_config.json", "preprocessor_config.json", "special_tokens_map.json"] {
            try FileManager.default.copyItem(atPath: Fixtures.tiny + "/" + f, toPath: dir + "/" + f)
        }
        var json = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: Fixtures.tiny + "/config.json"))) as! [String: Any]
        config?(&json)
        try JSONSerialization.data(withJSONObject: json).write(to: URL(fileURLWithPath: dir + "/config.json"))
        try weights.write(to: URL(fileURLWithPath: dir + "/model.safetensors"))
        return dir
    }

    /// The fixture's tensors as raw entries, to be edited.
    func fixtureEntries() throws -> [(String, String, [Int], Data)] {
        let file = try SafetensorsFile(path: Fixtures.tiny + "/model.safetensors")
        return try file.tensorNames().map { name in
            let t = try file.tensor(name)
            return (name, t.dtype.rawValue, t.shape, Data(file.bytes(t)))
        }
    }

    /// Runs fbconvert on `input` and checks the failure: exit status, message, and that nothing was written.
    func assertConversionFails(_ input: String, mentions expected: [String], file: StaticString = #filePath, line: UInt = #line) throws {
        let output = folder.file("out.fbm")
        let before = Set(folder.contents)
        let result = try Tools.run("fbconvert", ["--bits", "4", "-q", "-o", output, input])
        XCTAssertNotEqual(result.status, 0, "fbconvert accepted a broken input", file: file, line: line)
        XCTAssertNotEqual(result.status, 64, "a broken file is not a usage error", file: file, line: line)
        XCTAssertLessThan(result.status, 128, "fbconvert crashed: \(result.stderr)", file: file, line: line)
        for word in expected {
            XCTAssertTrue(result.stderr.contains(word), "error '\(result.stderr)' does not mention '\(word)'", file: file, line: line)
        }
        XCTAssertEqual(result.stderr.split(separator: "\n").count, 1, "the error should be one line: \(result.stderr)", file: file, line: line)
        XCTAssertFalse(FileManager.default.fileExists(atPath: output), "a failed conversion left an output file", file: file, line: line)
        XCTAssertEqual(Set(folder.contents), before, "a failed conversion left files behind", file: file, line: line)
    }

    /// Inputs that are not regular files: a FIFO used to block open() forever, /dev/zero to read without end, a
    /// directory to be called "file not found". Each is now one line naming the file and what it is.
    func testInputsThatAreNotRegularFiles() throws {
        let weights = try Data(contentsOf: URL(fileURLWithPath: Fixtures.tiny + "/model.safetensors"))
        let fifoWeights = try checkpoint("fifo-weights", weights: weights)
        try FileManager.default.removeItem(atPath: fifoWeights + "/model.safetensors")
        XCTAssertEqual(mkfifo(fifoWeights + "/model.safetensors", 0o600), 0)
        try assertConversionFails(fifoWeights + "/model.safetensors", mentions: ["model.safetensors", "not a regular file (a FIFO)"])

        let dirConfig = try checkpoint("dir-config", weights: weights)
        try FileManager.default.removeItem(atPath: dirConfig + "/config.json")
        try FileManager.default.createDirectory(atPath: dirConfig + "/config.json", withIntermediateDirectories: false)
        try assertConversionFails(dirConfig, mentions: ["config.json", "not a regular file (a directory)"])

        let fifoModel = folder.file("model-fifo.fbm")
        XCTAssertEqual(mkfifo(fifoModel, 0o600), 0)
        let model = folder.file("tiny.fbm")
        XCTAssertEqual(try Tools.run("fbconvert", ["--bits", "8", "-q", "-o", model, Fixtures.tiny]).status, 0)
        for (args, expected) in [(["--model", fifoModel, "--prompt", "hi"], "\(fifoModel): cannot open model: not a regular file (a FIFO)"),
                                 (["--model", model, "--image", "/dev/zero", "--prompt", "hi"], "/dev/zero: not a regular file (a character device)"),
                                 (["--model", model, "--image", folder.path, "--prompt", "hi"], "not a regular file (a directory)")] {
            let r = try Tools.run("fbrun", args)
            XCTAssertEqual(r.status, 1, r.stderr)
            XCTAssertTrue(r.stderr.contains(expected), r.stderr)
        }
    }

    /// Where a conversion may write: never over a device, a folder or its own input; through a symlink to its
    /// target; keeping a replaced file's mode; a temporary file left by a killed run is cleaned up.
    func testOutputDestinations() throws {
        let weights = try Data(contentsOf: URL(fileURLWithPath: Fixtures.tiny + "/model.safetensors"))
        let dir = try checkpoint("dest", weights: weights)
        func convert(_ output: String) throws -> ToolResult { try Tools.run("fbconvert", ["--bits", "8", "-q", "-o", output, dir]) }

        let input = try convert(dir + "/model.safetensors")
        XCTAssertEqual(input.status, 1)
        XCTAssertTrue(input.stderr.contains("is an input of this conversion: refusing to overwrite it"), input.stderr)
        XCTAssertEqual(try Data(contentsOf: URL(fileURLWithPath: dir + "/model.safetensors")), weights)

        if getuid() == 0 {  // only root could replace /dev/null
            let device = try convert("/dev/null")
            XCTAssertEqual(device.status, 1)
            XCTAssertTrue(device.stderr.contains("/dev/null: exists and is not a regular file (a character device)"), device.stderr)
            var st = stat()
            XCTAssertEqual(stat("/dev/null", &st), 0)
            XCTAssertEqual(st.st_mode & S_IFMT, S_IFCHR, "/dev/null is still a device")
        }
        let folderOut = try convert(folder.path + "/")
        XCTAssertEqual(folderOut.status, 1)
        XCTAssertTrue(folderOut.stderr.contains("names a folder"), folderOut.stderr)
        let existingDir = folder.file("a-dir")
        try FileManager.default.createDirectory(atPath: existingDir, withIntermediateDirectories: false)
        let dirOut = try convert(existingDir)
        XCTAssertTrue(dirOut.stderr.contains("not a regular file (a directory)"), dirOut.stderr)

        // A symlink is written through; a replaced file keeps its mode; a dead process's temporary file goes.
        let target = folder.file("target.fbm"), link = folder.file("link.fbm")
        try Data("old".utf8).write(to: URL(fileURLWithPath: target))
        XCTAssertEqual(chmod(target, 0o600), 0)
        try FileManager.default.createSymbolicLink(atPath: link, withDestinationPath: target)
        let stale = folder.file(".target.fbm.tmp-4194300")
        try Data(count: 100).write(to: URL(fileURLWithPath: stale))
        XCTAssertEqual(try convert(link).status, 0)
        XCTAssertEqual(try FileManager.default.destinationOfSymbolicLink(atPath: link), target, "the link is still a link")
        XCTAssertNoThrow(try FBMFile(path: target), "the target holds the model")
        var st = stat()
        XCTAssertEqual(stat(target, &st), 0)
        XCTAssertEqual(st.st_mode & 0o777, 0o600, "the replaced file keeps its mode")
        XCTAssertFalse(FileManager.default.fileExists(atPath: stale), "the dead process's temporary file is removed")
    }

    /// Numbers the runtime would size buffers or index with are checked at conversion: ids that do not fit a token
    /// id trapped in the converter, a negative or huge image size converted and then crashed (or allocated 30 GB
    /// in) fbrun, and tokenizer ids that are not whole numbers converted to files fbrun refused.
    func testOutOfRangeNumbersAreRefusedAtConversion() throws {
        let weights = try Data(contentsOf: URL(fileURLWithPath: Fixtures.tiny + "/model.safetensors"))
        let ids: [(String, Any, String)] = [("eos_token_id", 1 << 40, "eos_token_id 1099511627776 is not a token id"),
                                             ("bos_token_id", -3, "bos_token_id -3 is not a token id"),
                                             ("image_token_id", 600, "special token id 600 is outside the vocabulary of 512")]
        for (key, value, message) in ids {
            let dir = try checkpoint("id-\(key)", weights: weights) { $0[key] = value }
            try assertConversionFails(dir, mentions: [message])
        }
        for (key, value) in [("norm_eps", 1e300), ("rope_theta", -1.0)] {
            let dir = try checkpoint("text-\(key)", weights: weights) { json in
                var text = json["text_config"] as! [String: Any]
                text[key] = value
                json["text_config"] = text
            }
            try assertConversionFails(dir, mentions: ["invalid text config", key])
        }
        for (size, message) in [(["height": -8, "width": -8], "size -8x-8"), (["shortest_edge": 100000], "size 100000x100000"),
                                (["height": 256, "width": 300], "size 300x256")] {
            let dir = try checkpoint("pre-\(size.values.first!)", weights: weights)
            var pre = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: dir + "/preprocessor_config.json"))) as! [String: Any]
            pre["size"] = size
            try JSONSerialization.data(withJSONObject: pre).write(to: URL(fileURLWithPath: dir + "/preprocessor_config.json"))
            try assertConversionFails(dir, mentions: ["invalid preprocessor config", message, "need 256x256"])
        }
        for (id, shown) in [(2147483648.0, "2147483648"), (-1.0, "-1"), (3.5, "3.5")] {
            let dir = try checkpoint("tok-\(shown)", weights: weights)
            var tok = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: dir + "/tokenizer.json"))) as! [String: Any]
            var model = tok["model"] as! [String: Any]
            var vocab = model["vocab"] as! [String: Any]
            vocab["zz"] = id
            model["vocab"] = vocab
            tok["model"] = model
            try JSONSerialization.data(withJSONObject: tok).write(to: URL(fileURLWithPath: dir + "/tokenizer.json"))
            try assertConversionFails(dir, mentions: ["tokenizer.json", "entry \"zz\" has id \(shown), not a valid token id"])
        }
        // Converted, then refused by fbrun: now refused at conversion.
        for (key, value, message): (String, Any, String) in [("hidden_act", "relu", "hidden_act 'relu' is not supported"),
                                                              ("layer_norm_eps", 1e300, "layer_norm_eps"),
                                                              ("num_attention_heads", -1, "not a multiple of -1 heads")] {
            let dir = try checkpoint("vision-\(key)", weights: weights) { json in
                var vision = json["vision_config"] as! [String: Any]
                vision[key] = value
                json["vision_config"] = vision
            }
            try assertConversionFails(dir, mentions: ["config.json", message])
        }
        // A number past Int's range used to be read as 0 (NSNumber.intValue); true is not a number.
        for (key, value, shown, reason): (String, Any, String, String) in [
            ("num_hidden_layers", Double(1 << 62) * 256 as Any, "text_config.num_hidden_layers is 1180591620717411", "not a whole number in range"),
            ("vocab_size", true as Any, "text_config.vocab_size is 1", "not a number")] {
            let dir = try checkpoint("text-\(key)", weights: weights) { json in
                var text = json["text_config"] as! [String: Any]
                text[key] = value
                json["text_config"] = text
            }
            try assertConversionFails(dir, mentions: ["config.json", shown, reason])
        }
    }

    /// What the runtime's tokenizer cannot run is refused at conversion (the converter reads tokenizer.json with
    /// the runtime's own reader): a repeated key, on which JSON readers disagree (one took 300000000, the other 7,
    /// and the runtime then allocated 6 GB); an id far past the tokens listed; a model type other than BPE.
    func testTokenizersTheRuntimeCannotRunAreRefused() throws {
        let weights = try Data(contentsOf: URL(fileURLWithPath: Fixtures.tiny + "/model.safetensors"))
        let original = try String(contentsOfFile: Fixtures.tiny + "/tokenizer.json", encoding: .utf8)
        XCTAssertTrue(original.contains("\"vocab\": {") || original.contains("\"vocab\":{"))
        let cases: [(String, String, String)] = [
            ("duplicate", #""vocab": {"zz": 300000000, "zz": 7, "#, "model.vocab lists \"zz\" more than once"),
            ("forged-id", #""vocab": {"zz": 300000000, "#, "token id 300000000 is far beyond"),
        ]
        for (name, replacement, message) in cases {
            let dir = try checkpoint("tokenizer-\(name)", weights: weights)
            let edited = original.replacingOccurrences(of: "\"vocab\": {", with: replacement)
                .replacingOccurrences(of: "\"vocab\":{", with: replacement)
            try edited.write(toFile: dir + "/tokenizer.json", atomically: true, encoding: .utf8)
            try assertConversionFails(dir, mentions: ["tokenizer.json", message])
        }
        let edits: [(String, (inout [String: Any]) -> Void, String)] = [
            ("unigram", { tok in
                var model = tok["model"] as! [String: Any]
                model["type"] = "Unigram"
                tok["model"] = model
            }, "unsupported model type \"Unigram\""),
            ("nfc", { $0["normalizer"] = ["type": "NFC"] }, "unsupported normalizer \"NFC\""),
            ("no-pre-tokenizer", { $0["pre_tokenizer"] = NSNull() }, "unsupported pre_tokenizer: null"),
        ]
        for (name, edit, message) in edits {
            let dir = try checkpoint("tokenizer-\(name)", weights: weights)
            var tok = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: dir + "/tokenizer.json"))) as! [String: Any]
            edit(&tok)
            try JSONSerialization.data(withJSONObject: tok).write(to: URL(fileURLWithPath: dir + "/tokenizer.json"))
            try assertConversionFails(dir, mentions: ["tokenizer.json", message])
        }
    }

    func testTruncatedSafetensors() throws {
        let whole = try Data(contentsOf: URL(fileURLWithPath: Fixtures.tiny + "/model.safetensors"))
        let dir = try checkpoint("truncated", weights: whole.prefix(whole.count / 2))
        try assertConversionFails(dir, mentions: ["model.safetensors", "outside the data section"])
        let tiny = try checkpoint("tiny-file", weights: whole.prefix(5))
        try assertConversionFails(tiny, mentions: ["model.safetensors", "too short"])
    }

    func testHugeHeaderLength() throws {
        let dir = try checkpoint("huge", weights: SafetensorsBuilder.bytes(headerJSON: "{}", data: Data(), declaredLength: 1 << 40))
        try assertConversionFails(dir, mentions: ["model.safetensors", "implausibly large"])
        let past = try checkpoint("past-end", weights: SafetensorsBuilder.bytes(headerJSON: "{}", data: Data(), declaredLength: 4096))
        try assertConversionFails(past, mentions: ["model.safetensors", "past the end"])
    }

    func testBadJSONHeader() throws {
        let dir = try checkpoint("badjson", weights: SafetensorsBuilder.bytes(headerJSON: "{\"a\": [1, 2", data: Data()))
        try assertConversionFails(dir, mentions: ["model.safetensors", "not valid JSON"])
    }

    /// An S4 l_kernel of 65536 made conversion take minutes (the taps cost grows faster than the length): lengths
    /// past 8192 (released: 512) are refused before any work, naming the limit.
    func testHugeS4LengthIsRefusedAtOnce() throws {
        var entries = try fixtureEntries()
        let index = try XCTUnwrap(entries.firstIndex { $0.0.hasSuffix("s4.layer.kernel.l_kernel") })
        var length = Int64(65536)
        entries[index].3 = Data(bytes: &length, count: 8)
        let dir = try checkpoint("l-kernel", weights: SafetensorsBuilder.raw(entries))
        let start = Date()
        try assertConversionFails(dir, mentions: ["s4_taps", "8192"])
        XCTAssertLessThan(Date().timeIntervalSince(start), 10, "refusing took as long as converting")
    }

    func testUnknownDType() throws {
        var entries = try fixtureEntries()
        entries[0].1 = "Q7"
        let dir = try checkpoint("dtype", weights: SafetensorsBuilder.raw(entries))
        try assertConversionFails(dir, mentions: ["model.safetensors", "unknown dtype Q7"])
    }

    /// A NaN or infinite weight is refused at conversion, naming the tensor (a NaN embedding converted silently,
    /// reported "rel. RMS err 0.00000", and the model emitted token 0 forever).
    func testNonFiniteWeightsAreRefused() throws {
        for (bits, value) in [(4, Float.nan), (32, -Float.infinity)] {
            var entries = try fixtureEntries()
            let index = try XCTUnwrap(entries.firstIndex { $0.0 == "base_lm.model.embed_tokens.weight" })
            var data = entries[index].3
            withUnsafeBytes(of: value.bitPattern.littleEndian) { data.replaceSubrange(40..<44, with: $0) }   // element 10
            entries[index].3 = data
            let dir = try checkpoint("nonfinite-\(bits)", weights: SafetensorsBuilder.raw(entries))
            let output = folder.file("out.fbm")
            let r = try Tools.run("fbconvert", ["--bits", "\(bits)", "-q", "-o", output, dir])
            XCTAssertEqual(r.status, 1, r.stderr)
            XCTAssertTrue(r.stderr.contains("tensor base_lm.model.embed_tokens.weight: value \(value) at flat index 10 is not finite"), r.stderr)
            XCTAssertFalse(FileManager.default.fileExists(atPath: output))
        }
        let usage = try Tools.run("fbconvert", ["--bits", "4", "--group-size", "64", "-o", folder.file("g.fbm"), Fixtures.tiny])
        XCTAssertEqual(usage.status, 64, "an unsupported --group-size is a usage error: \(usage.stderr)")
    }

    /// --grid picks the 4-bit grid: nl (the default, q4nl) or uniform (q4); anything else is a usage error.
    func testGridOption() throws {
        for (args, type) in [([String](), TensorType.q4nl), (["--grid", "nl"], .q4nl), (["--grid", "uniform"], .q4)] {
            let output = folder.file("grid.fbm")
            let r = try Tools.run("fbconvert", ["--bits", "4", "-q", "-o", output] + args + [Fixtures.tiny])
            XCTAssertEqual(r.status, 0, r.stderr)
            XCTAssertEqual(try FBMFile(path: output).tensor(named: "model.layers.0.feed_forward.w1.weight")?.type, type, "\(args)")
        }
        let bad = try Tools.run("fbconvert", ["--bits", "4", "--grid", "fine", "-o", folder.file("bad.fbm"), Fixtures.tiny])
        XCTAssertEqual(bad.status, 64, bad.stderr)
        XCTAssertTrue(bad.stderr.contains("--grid"), bad.stderr)
        XCTAssertFalse(FileManager.default.fileExists(atPath: folder.file("bad.fbm")))
    }

    func testOverlappingAndOutOfRangeOffsets() throws {
        let overlap = "{\"a\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]},\"b\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[8,24]}}"
        let dir = try checkpoint("overlap", weights: SafetensorsBuilder.bytes(headerJSON: overlap, data: Data(count: 24)))
        try assertConversionFails(dir, mentions: ["model.safetensors", "overlap"])
        let outside = "{\"a\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]},\"b\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[16,32]}}"
        let dir2 = try checkpoint("outside", weights: SafetensorsBuilder.bytes(headerJSON: outside, data: Data(count: 24)))
        try assertConversionFails(dir2, mentions: ["model.safetensors", "outside the data section"])
        let size = "{\"a\":{\"dtype\":\"F32\",\"shape\":[5],\"data_offsets\":[0,16]}}"
        let dir3 = try checkpoint("size", weights: SafetensorsBuilder.bytes(headerJSON: size, data: Data(count: 16)))
        try assertConversionFails(dir3, mentions: ["model.safetensors", "needs 20 bytes"])
    }

    func testMissingTensor() throws {
        let entries = try fixtureEntries().filter { $0.0 != "base_lm.model.layers.1.self_attn.k_layernorm.weight" }
        let dir = try checkpoint("missing", weights: SafetensorsBuilder.raw(entries))
        try assertConversionFails(dir, mentions: ["missing tensor base_lm.model.layers.1.self_attn.k_layernorm.weight"])
    }

    func testWrongShape() throws {
        var entries = try fixtureEntries()
        let i = entries.firstIndex { $0.0 == "base_lm.model.layers.2.feed_forward.w2.weight" }!
        entries[i].2 = [128, 64]  // transposed: same bytes, wrong layout
        let dir = try checkpoint("shape", weights: SafetensorsBuilder.raw(entries))
        try assertConversionFails(dir, mentions: ["base_lm.model.layers.2.feed_forward.w2.weight", "[128, 64]", "expected [64, 128]"])
    }

    func testUnknownModelTypeAndUnexpectedTensor() throws {
        let whole = try Data(contentsOf: URL(fileURLWithPath: Fixtures.tiny + "/model.safetensors"))
        let dir = try checkpoint("gpt2", weights: whole) { $0["model_type"] = "gpt2" }
        try assertConversionFails(dir, mentions: ["config.json", "unknown model_type 'gpt2'"])
        var entries = try fixtureEntries()
        entries.append(("model.mystery.weight", "F32", [2], Data(count: 8)))
        let extra = try checkpoint("extra", weights: SafetensorsBuilder.raw(entries))
        try assertConversionFails(extra, mentions: ["unexpected tensor model.mystery.weight"])
    }

    func testMissingInputAndTokenizer() throws {
        try assertConversionFails(folder.file("does-not-exist"), mentions: ["does-not-exist", "no such file"])
        let whole = try Data(contentsOf: URL(fileURLWithPath: Fixtures.tiny + "/model.safetensors"))
        let dir = try checkpoint("notok", weights: whole)
        try FileManager.default.removeItem(atPath: dir + "/tokenizer.json")
        try assertConversionFails(dir, mentions: ["tokenizer.json", "not found"])
    }

    // MARK: .fbm corruptions, reported by the runtime's own reader (fbconvert inspect and fbrun info use it)

    func validModel() throws -> Data {
        let path = folder.file("good.fbm")
        if !FileManager.default.fileExists(atPath: path) {
            var options = ConversionOptions()
            options.bits = 8
            _ = try FBMConverter.convert(input: Fixtures.tiny, output: path, options: options)
        }
        return try Data(contentsOf: URL(fileURLWithPath: path))
    }

    func assertInspectFails(_ bytes: Data, mentions expected: [String], file: StaticString = #filePath, line: UInt = #line) throws {
        let path = folder.file("corrupt.fbm")
        try bytes.write(to: URL(fileURLWithPath: path))
        for tool in [("fbconvert", ["inspect", path]), ("fbrun", ["info", "--model", path])] {
            let result = try Tools.run(tool.0, tool.1)
            XCTAssertEqual(result.status, 1, "\(tool.0) status for a corrupt model: \(result.stderr)", file: file, line: line)
            for word in expected + ["corrupt.fbm"] {
                XCTAssertTrue(result.stderr.contains(word), "\(tool.0): '\(result.stderr)' does not mention '\(word)'", file: file, line: line)
            }
        }
        XCTAssertThrowsError(try FBMFile(path: path).verifyChecksums(), file: file, line: line)
    }

    func testGoodModelInspects() throws {
        let path = folder.file("good-copy.fbm")
        try validModel().write(to: URL(fileURLWithPath: path))
        let result = try Tools.run("fbconvert", ["inspect", path])
        XCTAssertEqual(result.status, 0, result.stderr)
        XCTAssertTrue(result.stdout.contains("checksums: all 114 tensors verified"), result.stdout)
        XCTAssertTrue(result.stdout.contains("model.embed_tokens.weight"))
    }

    func testBadMagic() throws {
        var bytes = try validModel()
        bytes[1] = UInt8(ascii: "X")
        try assertInspectFails(bytes, mentions: ["bad magic"])
        try assertInspectFails(Data("hello".utf8), mentions: ["too short"])
    }

    func testUnknownVersion() throws {
        var bytes = try validModel()
        bytes[8] = 99
        try assertInspectFails(bytes, mentions: ["unsupported .fbm format version 99"])
    }

    func testTruncated() throws {
        let bytes = try validModel()
        try assertInspectFails(bytes.prefix(bytes.count - 100), mentions: ["truncated"])
        try assertInspectFails(bytes.prefix(200), mentions: ["truncated"])
    }

    func testChecksumMismatch() throws {
        var bytes = try validModel()
        bytes[bytes.count - 70] ^= 0x40  // inside the last tensor's data
        try assertInspectFails(bytes, mentions: ["checksum mismatch"])
        var header = try validModel()
        header[100] ^= 0x01  // inside the JSON header
        try assertInspectFails(header, mentions: ["header checksum mismatch"])
    }

    /// Rewrites the header (keeping its checksum valid) so that only the table's own checks can catch the lie.
    func withEditedHeader(_ edit: (inout FBMHeader) -> Void) throws -> Data {
        try withEditedHeaderText { text in
            var header = try JSONDecoder().decode(FBMHeader.self, from: Data(text.utf8))
            edit(&header)
            return String(decoding: try header.encoded(), as: UTF8.self)
        }
    }

    /// A header with a valid checksum but numbers the runtime cannot run (negative CMM heads, image sizes of 0 or
    /// 30000, a tokenizer id of 2^31 - 2 that would size a table) crashed or aborted fbrun: the runtime validates
    /// the header's numbers before it allocates or indexes anything.
    func testForgedHeaderNumbersAreRefused() throws {
        let cases: [((inout FBMHeader) -> Void, [String])] = [
            ({ $0.config.cmm!.numHeads = -4 }, ["cmm"]),
            ({ $0.config.cmm!.headDim = -32 }, ["cmm"]),
            ({ $0.preprocessor!.width = 0 }, ["preprocessor"]),
            ({ $0.preprocessor!.height = 30000; $0.preprocessor!.width = 30000 }, ["preprocessor", "30000"]),
            ({ $0.tokenizer = $0.tokenizer.replacingOccurrences(of: "\"vocab\": {", with: "\"vocab\": {\"zz\": 2147483646, ")
                .replacingOccurrences(of: "\"vocab\":{", with: "\"vocab\":{\"zz\":2147483646,") }, ["token id 2147483646"]),
        ]
        for (edit, words) in cases {
            let bytes = try withEditedHeader(edit)
            let path = folder.file("forged.fbm")
            try bytes.write(to: URL(fileURLWithPath: path))
            let result = try Tools.run("fbrun", ["--model", path, "-p", "hi", "-n", "2"])
            XCTAssertEqual(result.status, 1, "fbrun on a forged header: \(result.stderr)")
            for word in words + ["forged.fbm"] {
                XCTAssertTrue(result.stderr.contains(word), "'\(result.stderr)' does not mention '\(word)'")
            }
            XCTAssertEqual(result.stderr.split(separator: "\n").count, 1, result.stderr)
        }
    }

    /// The header's JSON text edited, prefix and checksum rewritten to match (so the checksum cannot catch it):
    /// what `withEditedHeader` does through the decoded header, and what numbers of the wrong sign or kind need.
    func withEditedHeaderText(_ edit: (String) throws -> String) throws -> Data {
        var bytes = try validModel()
        let prefix = try bytes.withUnsafeBytes { try FBMPrefix(bytes: $0, fileSize: UInt64($0.count)) }
        let text = String(decoding: bytes[64 ..< 64 + Int(prefix.headerSize)], as: UTF8.self)
        let json = Data(try edit(text).utf8)
        XCTAssertNotEqual(String(decoding: json, as: UTF8.self), text, "the edit changed nothing")
        XCTAssertLessThanOrEqual(UInt64(64 + json.count), prefix.dataOffset)
        let sum = json.withUnsafeBytes { fb_xxh64($0.baseAddress, $0.count, 0) }
        let newPrefix = FBMPrefix(headerSize: UInt64(json.count), headerXXH64: sum, dataOffset: prefix.dataOffset, dataSize: prefix.dataSize)
        bytes.replaceSubrange(0..<64, with: newPrefix.encoded())
        bytes.replaceSubrange(64 ..< 64 + json.count, with: json)
        return bytes
    }

    /// "invalid JSON at ''" used to be all a negative or fractional header number got.
    func testNegativeAndFractionalHeaderNumbers() throws {
        func replacing(_ pattern: String, _ replacement: String) -> (String) -> String {
            { $0.replacingOccurrences(of: pattern, with: replacement, options: .regularExpression) }
        }
        try assertInspectFails(try withEditedHeaderText(replacing(#""num_hidden_layers" ?: ?\d+"#, #""num_hidden_layers":-4"#)),
                               mentions: ["num_hidden_layers is -4"])
        try assertInspectFails(try withEditedHeaderText(replacing(#""offset" ?: ?(\d+)"#, #""offset":-64"#)),
                               mentions: ["offset is -64, not a whole number"])
        try assertInspectFails(try withEditedHeaderText(replacing(#""hidden_size" ?: ?(\d+)"#, #""hidden_size":$1.5"#)),
                               mentions: ["hidden_size is", ".5, not a whole number"])
        // An offset near 2^64 used to give a wrong "file is truncated" figure (the sum overflowed).
        try assertInspectFails(try withEditedHeaderText(replacing(#""offset" ?: ?(\d+)"#, #""offset":18446744073709551552"#)),
                               mentions: ["outside the data section"])
    }

    func testOffsetOutOfRange() throws {
        let bytes = try withEditedHeader { $0.tensors[3].offset = 1 << 40 }
        try assertInspectFails(bytes, mentions: ["outside the data section"])
        let unaligned = try withEditedHeader { $0.tensors[2].offset += 8 }
        try assertInspectFails(unaligned, mentions: ["not a multiple of 64"])
        let overlap = try withEditedHeader { $0.tensors[2].offset = $0.tensors[1].offset }
        try assertInspectFails(overlap, mentions: ["overlap"])
        let size = try withEditedHeader { $0.tensors[0].rawBytes += 1 }
        try assertInspectFails(size, mentions: ["needs"])
    }
}
