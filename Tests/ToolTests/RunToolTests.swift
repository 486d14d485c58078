import Converter
import Foundation
import Kernels
import Runtime
import TestSupport
import XCTest

/// fbrun as a user runs it: generation, logits, tokenize, and one clear line for every kind of bad input.
final class RunToolTests: XCTestCase {
    static let folder = TemporaryFolder("fbrun")

    // Statics are never deinitialised: remove the folder when the class's tests are done.
    override class func tearDown() {
        folder.cleanup()
        super.tearDown()
    }
    static let model: String = {
        let path = folder.file("tiny-32.fbm")
        var options = ConversionOptions()
        options.bits = 32
        _ = try? FBMConverter.convert(input: Fixtures.tiny, output: path, options: options)
        return path
    }()
    var question: String { (try? String(contentsOfFile: Fixtures.golden + "/prompt.txt", encoding: .utf8)) ?? "" }

    func json(_ args: [String]) throws -> [String: Any] {
        let r = try Tools.run("fbrun", args)
        XCTAssertEqual(r.status, 0, r.stderr)
        return try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as! [String: Any]
    }

    func golden(_ name: String) throws -> [Int] { try Fixtures.npy(name).int64s.map { Int($0) } }

    func testGreedyAnswerWithImageMatchesReference() throws {
        let out = try json(["--model", Self.model, "--image", Fixtures.tiny + "/image.png", "--prompt", question,
                            "--temperature", "0", "--max-tokens", "12", "--json"])
        XCTAssertEqual(out["prompt_ids"] as? [Int], try golden("input_ids.npy"))
        XCTAssertEqual(out["generated_ids"] as? [Int], try golden("greedy_ids.npy"))
        let stats = out["stats"] as! [String: Any]
        XCTAssertGreaterThan(stats["vision_ms"] as! Double, 0)
        XCTAssertGreaterThan(stats["peak_rss_bytes"] as! Double, 0)
    }

    /// --temperature 0 is the argmax, as in transformers and llama.cpp: the sampling defaults (repeat penalty 1.05,
    /// min-p) do not apply, while an explicit --repeat-penalty still does (1.5 changes the reference's repeats).
    func testGreedyIsTheArgmaxUnlessPenaltiesAreGiven() throws {
        let args = ["--model", Self.model, "--image", Fixtures.tiny + "/image.png", "--prompt", question,
                    "--temperature", "0", "--max-tokens", "12", "--json"]
        XCTAssertEqual(try json(args)["generated_ids"] as? [Int], try golden("greedy_ids.npy"))
        let penalised = try json(args + ["--repeat-penalty", "1.5"])["generated_ids"] as? [Int]
        XCTAssertNotEqual(penalised, try golden("greedy_ids.npy"), "an explicit penalty applies at temperature 0")
    }

    func testGreedyAnswerTextOnlyMatchesReference() throws {
        let out = try json(["--model", Self.model, "--prompt", question, "--temperature", "0", "--max-tokens", "12", "--json"])
        XCTAssertEqual(out["prompt_ids"] as? [Int], try golden("text_only_input_ids.npy"))
        XCTAssertEqual(out["generated_ids"] as? [Int], try golden("greedy_text_only_ids.npy"))
    }

    func testStreamingPrintsTextAndStats() throws {
        let r = try Tools.run("fbrun", ["--model", Self.model, "--prompt", question, "--temperature", "0", "--max-tokens", "12"])
        XCTAssertEqual(r.status, 0, r.stderr)
        let ids = try golden("greedy_text_only_ids.npy").map { Int32($0) }
        let tokenizer = try Tokenizer(jsonString: String(contentsOfFile: Fixtures.tiny + "/tokenizer.json", encoding: .utf8))
        XCTAssertEqual(r.stdout, try tokenizer.decode(ids, skipSpecialTokens: true) + "\n")
        for word in ["load", "prefill", "tok/s", "decode", "peak RSS"] { XCTAssertTrue(r.stderr.contains(word), r.stderr) }
    }

    func testLogitsWithImageMatchReference() throws {
        let out = Self.folder.file("logits.npy")
        let g = try Fixtures.npy("logits.npy").floats
        // float32 end to end (--kv-cache f32) against a float32 reference (observed ~1e-5 of the largest logit); the
        // default f16 cache within its rounding bound (2e-3, RuntimeTests' testHalfPrecisionCacheStaysWithinItsRoundingBound).
        for (cache, bound) in [(["--kv-cache", "f32"], Float(1e-4)), ([], 2e-3)] {
            let r = try Tools.run("fbrun", ["logits", "--model", Self.model, "--image", Fixtures.tiny + "/image.png",
                                            "--prompt-ids", Fixtures.golden + "/input_ids.npy", "-o", out] + cache)
            XCTAssertEqual(r.status, 0, r.stderr)
            let got = try NumpyArray(contentsOf: out)
            XCTAssertEqual(got.shape, [26, 512])
            let maxDiff = zip(got.floats, g).map { abs($0 - $1) }.max()!
            XCTAssertLessThan(maxDiff, bound * g.map(abs).max()!, "\(cache)")
        }
        let bad = try Tools.run("fbrun", ["logits", "--model", Self.model, "--prompt-ids", "1,2", "-o", out, "--kv-cache", "f8"])
        XCTAssertEqual(bad.status, 64, bad.stderr)
        XCTAssertTrue(bad.stderr.contains("--kv-cache must be one of f16, f32, not 'f8'"), bad.stderr)
    }

    /// Output that cannot be written (a full disk, a closed stdout or stderr, a reader that went away) ends with
    /// a one-line error and status 1; it used to trap in Foundation's FileHandle or die of SIGPIPE.
    func testWriteFailuresAreErrorsNotCrashes() throws {
        let fbrun = Tools.path("fbrun")
        func shell(_ command: String) throws -> (status: Int32, stderr: String) {
            let process = Process()
            process.executableURL = URL(fileURLWithPath: "/bin/bash")
            process.arguments = ["-c", "set -o pipefail; " + command]
            let err = Pipe()
            process.standardError = err
            try process.run()
            let data = err.fileHandleForReading.readDataToEndOfFile()
            process.waitUntilExit()
            return (process.terminationStatus, String(decoding: data, as: UTF8.self))
        }
        let info = "'\(fbrun)' info --model '\(Self.model)'"
        let generate = "'\(fbrun)' --model '\(Self.model)' --prompt hi --max-tokens 4 --temperature 0"
        for (command, reason) in [("\(info) > /dev/full", "No space left on device"),
                                  ("\(generate) > /dev/full", "No space left on device"),
                                  ("\(info) >&-", "Bad file descriptor"),
                                  ("\(info) | true", "Broken pipe")] {
            let r = try shell(command)
            XCTAssertEqual(r.status, 1, "\(command): \(r.stderr)")
            XCTAssertTrue(r.stderr.contains("fbrun: error: cannot write to standard output: \(reason)"), "\(command): \(r.stderr)")
        }
        let closedStderr = try shell("'\(fbrun)' info --model /nonexistent.fbm 2>&-")
        XCTAssertEqual(closedStderr.status, 1, "an error with stderr closed still exits 1")
    }

    /// An uncompressed .fbm is used in place through its memory mapping; cutting the file while fbrun runs makes the
    /// lost pages raise SIGBUS, which killed fbrun without a word. Now it names the file and exits with status 1.
    func testModelFileTruncatedWhileInUseIsAnError() throws {
        let raw = Self.folder.file("shapes-raw.fbm")
        var options = ConversionOptions()
        options.bits = 8
        options.compression = .none
        _ = try FBMConverter.convert(input: Fixtures.shapesModel, output: raw, options: options)
        // The held-out questions four times over (absolute image paths): far longer than the wait below.
        let eval = Fixtures.shapesModel + "/eval"
        let lines = try String(contentsOfFile: eval + "/questions.jsonl", encoding: .utf8).split(separator: "\n").map { line in
            line.replacingOccurrences(of: #""image": ""#, with: #""image": ""# + eval + "/")
        }
        let questions = Self.folder.file("long-eval.jsonl")
        try (Array(repeating: lines, count: 4).joined().joined(separator: "\n") + "\n").write(toFile: questions, atomically: true, encoding: .utf8)

        let process = Process()
        process.executableURL = URL(fileURLWithPath: Tools.path("fbrun"))
        process.arguments = ["eval", "--model", raw, "--data", questions]
        let err = Pipe()
        process.standardOutput = FileHandle.nullDevice
        process.standardError = err
        try process.run()
        Thread.sleep(forTimeInterval: 1.0)
        XCTAssertTrue(process.isRunning, "the evaluation ended before the file was cut: the test needs a longer run")
        XCTAssertEqual(truncate(raw, 8192), 0)
        let stderr = String(decoding: err.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        process.waitUntilExit()
        XCTAssertEqual(process.terminationReason, .exit, "fbrun died of a signal: \(stderr)")
        XCTAssertEqual(process.terminationStatus, 1)
        let errorLines = stderr.split(separator: "\n").filter { $0.contains("error") }
        XCTAssertEqual(errorLines.count, 1, stderr)
        XCTAssertTrue(errorLines.first?.contains("fbrun: error: \(raw): the file was truncated or changed while in use") ?? false, stderr)
    }

    func testTokenize() throws {
        let ids = try Tools.run("fbrun", ["tokenize", "--model", Self.model, "--text", "What color is the big circle?"])
        XCTAssertEqual(ids.status, 0, ids.stderr)
        XCTAssertEqual(ids.stdout.trimmingCharacters(in: .whitespacesAndNewlines), "[325,280,367,281,270,410,427,36]")
        let bos = try Tools.run("fbrun", ["tokenize", "--model", Self.model, "--text", "What", "--bos"])
        XCTAssertTrue(bos.stdout.hasPrefix("[1,"), bos.stdout)
        let text = try Tools.run("fbrun", ["tokenize", "--model", Self.model, "--decode", "325,280,367"])
        XCTAssertEqual(text.stdout, "What color\n")  // 325 "What", 280 " col", 367 "or"
    }

    func assertFails(_ args: [String], status: Int32 = 1, mentions: [String], file: StaticString = #filePath, line: UInt = #line) throws {
        let r = try Tools.run("fbrun", args)
        XCTAssertEqual(r.status, status, "\(args): \(r.stderr)", file: file, line: line)
        XCTAssertEqual(r.stderr.split(separator: "\n").count, status == 64 ? 2 : 1, "not one line: \(r.stderr)", file: file, line: line)
        for word in mentions { XCTAssertTrue(r.stderr.contains(word), "'\(r.stderr)' lacks '\(word)'", file: file, line: line) }
    }

    func testErrorsAreOneClearLine() throws {
        try assertFails(["--model", Self.folder.file("nope.fbm"), "--prompt", "hi"], mentions: ["nope.fbm", "cannot open"])
        let textFile = Self.folder.file("notes.txt")
        try "not a model".write(toFile: textFile, atomically: true, encoding: .utf8)
        try assertFails(["--model", textFile, "--prompt", "hi"], mentions: ["notes.txt", "too short"])
        try assertFails(["--model", Self.model, "--image", textFile, "--prompt", "hi"], mentions: ["notes.txt"])
        try assertFails(["--model", Self.model, "--image", Self.folder.file("missing.png"), "--prompt", "hi"], mentions: ["missing.png"])
        try assertFails(["logits", "--model", Self.model, "--prompt-ids", "1,2,99999", "-o", Self.folder.file("x.npy")],
                        mentions: ["token id 99999 is out of range"])
        try assertFails(["logits", "--model", Self.model, "--prompt-ids", "1,zz", "-o", Self.folder.file("x.npy")], status: 64,
                        mentions: ["'zz' is not a token id"])
        try assertFails(["tokenize", "--model", Self.model, "--decode", "600"], mentions: ["out of range"])
        try assertFails(["--model", Self.model], status: 64, mentions: ["--prompt is required"])
        try assertFails(["--model", Self.model, "--prompt", "hi", "--temperature", "hot"], status: 64, mentions: ["--temperature"])
        try assertFails(["--prompt", "hi", "--model", Self.model, "--ctx", "16", "--max-tokens", "4"], mentions: ["context"])
        XCTAssertFalse(FileManager.default.fileExists(atPath: Self.folder.file("x.npy")))
    }

    /// A bad FB_KERNELS or FB_BATCHED is a usage error naming the variable and the choices, for both tools (without
    /// the check, an unknown or unrunnable kernel set fell back silently to the scalar path, many times slower).
    func testBadKernelEnvironmentIsAUsageError() throws {
        let tokenize = ["tokenize", "--model", Self.model, "--text", "What"]
        func assertRefused(_ tool: String, _ args: [String], _ environment: [String: String], mentions: [String],
                           line: UInt = #line) throws {
            let r = try Tools.run(tool, args, environment: environment)
            XCTAssertEqual(r.status, 64, "\(environment): \(r.stderr)", line: line)
            for word in mentions { XCTAssertTrue(r.stderr.contains(word), "'\(r.stderr)' lacks '\(word)'", line: line) }
        }
        try assertRefused("fbrun", tokenize, ["FB_KERNELS": "avx9000"],
                          mentions: ["FB_KERNELS=avx9000: no such kernel set", "scalar"])
        try assertRefused("fbconvert", ["inspect", Self.model], ["FB_KERNELS": "avx9000"], mentions: ["FB_KERNELS=avx9000"])
        try assertRefused("fbrun", tokenize, ["FB_BATCHED": "fast"], mentions: ["FB_BATCHED=fast", "auto, gemm, int8, off"])
        // A kernel set of this build that this CPU lacks (on this machine kind: the AVX-512 ones), if there is one.
        let all = String(cString: fb_kernels_list(0)).split(separator: ","), runs = String(cString: fb_kernels_list(1))
        if let missing = all.first(where: { fb_kernels_check(String($0)) == 0 }) {
            try assertRefused("fbrun", tokenize, ["FB_KERNELS": String(missing)],
                              mentions: ["FB_KERNELS=\(missing): this CPU cannot run", runs.replacingOccurrences(of: ",", with: ", ")])
        }
        // Every set the CPU runs is accepted, and so is no FB_KERNELS at all (the CPU's choice).
        for name in runs.split(separator: ",").map(String.init) + [""] {
            let r = try Tools.run("fbrun", tokenize, environment: ["FB_KERNELS": name, "FB_BATCHED": "int8"])
            XCTAssertEqual(r.status, 0, "FB_KERNELS=\(name): \(r.stderr)")
        }
    }

    func testBenchJSONHasTheDocumentedKeys() throws {
        let out = try json(["bench", "--model", Self.model, "--prompt-tokens", "8", "--gen-tokens", "4", "--image", "--repeat", "1",
                            "--threads", "1", "--json"])
        for key in ["load_ms", "vision_ms", "cmm_ms", "prefill_tokens_per_s", "decode_tokens_per_s", "ttft_ms", "peak_rss_bytes",
                    "model_bytes", "bandwidth_bytes_per_s", "decode_efficiency", "threads", "kernels"] {
            XCTAssertNotNil(out[key], "bench JSON lacks \(key)")
        }
        XCTAssertGreaterThan((out["vision_ms"] as! [String: Any])["median"] as! Double, 0)
        XCTAssertGreaterThan(out["bandwidth_bytes_per_s"] as! Double, 1e8)
    }

    /// The demo's path at toy size: synth → convert → ask about the shipped image.
    func testSynthPresetConvertsAndAnswers() throws {
        let dir = Self.folder.file("synth-tiny"), model = Self.folder.file("synth-tiny-q4.fbm")
        let synth = try Tools.run("fbconvert", ["synth", "--preset", "tiny", "--seed", "3", "-o", dir])
        XCTAssertEqual(synth.status, 0, synth.stderr)
        let convert = try Tools.run("fbconvert", ["--bits", "4", "-q", "-o", model, dir])
        XCTAssertEqual(convert.status, 0, convert.stderr)
        let image = Fixtures.repositoryRoot.appendingPathComponent("assets/example.png").path
        let out = try json(["--model", model, "--image", image, "--prompt", "What is in the picture?", "--max-tokens", "6",
                            "--temperature", "0", "--json"])
        let prompt = out["prompt_ids"] as! [Int]
        XCTAssertEqual(prompt.first, 1, "starts with <|startoftext|>")
        let imageToken = try XCTUnwrap(try FBMFile(path: model).config.specialTokens.image)
        XCTAssertTrue(prompt.contains(Int(imageToken)), "the <image> token (\(imageToken)) is in the prompt: \(prompt)")
        XCTAssertLessThanOrEqual((out["generated_ids"] as! [Int]).count, 6)
        let again = try Tools.run("fbconvert", ["synth", "--preset", "nope", "-o", dir])
        XCTAssertEqual(again.status, 64)
        XCTAssertTrue(again.stderr.contains("unknown preset 'nope'"), again.stderr)
        let onFile = try Tools.run("fbconvert", ["synth", "--preset", "tiny", "-o", model])
        XCTAssertEqual(onFile.status, 1)
        XCTAssertEqual(onFile.stderr, "fbconvert: error: \(model): exists and is not a folder\n")
    }
}
