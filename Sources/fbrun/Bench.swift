import CommandLineKit
import Foundation
import Benchmarks
import Runtime

let benchSpec = CommandSpec(
    name: "fbrun bench",
    usage: "fbrun bench --model M.fbm [--prompt-tokens 512] [--gen-tokens 128] [--image] [--threads N] [--repeat R] [--kv-cache T] [--json]\n" +
        "                   [--label NAME (--compare FILE | --update FILE)]",
    summary: "Measures load time, vision tower and CMM time, prefill and decode speed, time to first token and peak memory\n" +
        "(medians over the repeats, after a warm-up), with this machine's memory bandwidth and compute speed probed in the\n" +
        "same run. Decode efficiency = weight bytes per token × decode tokens/s ÷ bandwidth.",
    options: [
        .value("model", short: "m", "M.fbm", "the model file"),
        .value("prompt-tokens", "N", "prompt length (default 512)"),
        .value("gen-tokens", "N", "tokens to decode (default 128; end-of-sequence does not stop a benchmark)"),
        .flag("image", "also run the image path on a synthetic image (Firebolt-VL: tower and CMM; LFM2-VL: a 512 × 512 image through tower and projector, its tokens before the prompt)"),
        .value("threads", short: "t", "N", "threads (default: all cores)"),
        .value("repeat", "R", "measured repeats (default 3)"),
        .value("ctx", "N", "context length (default 4096)"),
        .value("kv-cache", "TYPE", "f16 (default) or f32"),
        .flag("json", "print the result as one JSON object"),
        .value("label", "NAME", "the entry of the baseline file to compare with or update"),
        .value("compare", "FILE", "compare with the baseline's entry; exit 1 with a table if a figure regressed"),
        .value("update", "FILE", "store this result as the baseline's entry (and append it to history.jsonl beside it)"),
    ])

/// bench/baseline.json: one result per label, and how to regenerate them.
struct BaselineFile: Codable {
    var regenerate: String
    var entries: [String: BenchResult]
}

func runBench(_ args: [String]) throws {
    let a = try ArgumentParser.parse(args, spec: benchSpec)
    let path = try requiredModel(a)
    var options = BenchOptions()
    options.promptTokens = try a.int("prompt-tokens", default: 512, range: 1...1_000_000)!
    options.generatedTokens = try a.int("gen-tokens", default: 128, range: 1...1_000_000)!
    options.image = a.flag("image")
    options.threads = try threads(a)
    options.repeats = try a.int("repeat", default: 3, range: 1...1000)!
    options.kvCache = try kvCacheType(a)
    options.contextLength = try a.int("ctx", default: max(4096, options.promptTokens + options.generatedTokens), range: 16...1_048_576)!
    if (a.has("compare") || a.has("update")) && a.string("label") == nil {
        throw UsageError("--compare and --update need --label", command: a.command)
    }
    let json = a.flag("json")
    let result = try Benchmark.run(modelPath: path, options: options) { if !json { printError("bench: \($0)") } }
    let encoder = JSONEncoder()
    encoder.outputFormatting = [.sortedKeys]
    if json {
        try Output.line(String(decoding: try encoder.encode(result), as: UTF8.self))
    } else {
        try Output.line(BenchReport.table(result))
    }
    if let file = a.string("update"), let label = a.string("label") {
        var baseline = (try? JSONDecoder().decode(BaselineFile.self, from: Data(contentsOf: URL(fileURLWithPath: file))))
            ?? BaselineFile(regenerate: "scripts/bench-gate.sh --update", entries: [:])
        baseline.entries[label] = result
        encoder.outputFormatting = [.sortedKeys, .prettyPrinted]
        try AtomicFile.write(try encoder.encode(baseline), to: file)
        let history = URL(fileURLWithPath: file).deletingLastPathComponent().appendingPathComponent("history.jsonl").path
        encoder.outputFormatting = [.sortedKeys]
        var line = try JSONSerialization.jsonObject(with: encoder.encode(result)) as! [String: Any]
        line["label"] = label
        line["date"] = ISO8601DateFormatter().string(from: Date())
        let text = String(decoding: try JSONSerialization.data(withJSONObject: line, options: [.sortedKeys]), as: UTF8.self) + "\n"
        if let handle = FileHandle(forWritingAtPath: history) {
            handle.seekToEndOfFile()
            handle.write(Data(text.utf8))
            handle.closeFile()
        } else {
            try AtomicFile.write(Data(text.utf8), to: history)
        }
        printError("bench: stored as '\(label)' in \(file)")
    }
    if let file = a.string("compare"), let label = a.string("label") {
        guard let data = FileManager.default.contents(atPath: file) else { throw FireboltError("cannot read the baseline", file: file) }
        let baseline: BaselineFile
        do { baseline = try JSONDecoder().decode(BaselineFile.self, from: data) } catch {
            throw FireboltError("not a baseline file: \(error)", file: file)
        }
        guard let old = baseline.entries[label] else {
            throw FireboltError("no entry '\(label)' (has: \(baseline.entries.keys.sorted().joined(separator: ", ")))", file: file)
        }
        let checks = BenchGate.compare(result, baseline: old)
        printError(BenchGate.table(checks))
        if checks.contains(where: { !$0.passed }) {
            throw FireboltError("benchmark regression against '\(label)' (regenerate with: \(baseline.regenerate))", file: file)
        }
    }
}

enum BenchReport {
    static func table(_ r: BenchResult) -> String {
        func spread(_ s: Spread, _ unit: String, _ digits: Int = 1) -> String {
            String(format: "%.\(digits)f %@ (min %.\(digits)f, max %.\(digits)f)", s.median, unit, s.min, s.max)
        }
        var rows: [(String, String)] = [
            ("model", "\(r.model) (\(r.architecture)), \(String(format: "%.1f", Double(r.modelBytes) / 1_048_576)) MiB file"),
            ("threads / kernels", "\(r.threads) / \(r.kernels)"),
            ("KV cache", r.kvCache ?? "f32"),
            ("load", String(format: "%.0f ms", r.loadMs)),
        ]
        if r.image {
            if r.architecture == "lfm2_vl" {
                rows.append(("vision tower + projector", spread(r.visionMs, "ms", 0)))
            } else {
                rows.append(("vision tower (5 views)", spread(r.visionMs, "ms", 0)))
                rows.append(("CMM (prompt)", spread(r.cmmMs, "ms", 1)))
            }
        }
        rows += [
            ("prefill, \(r.promptTokens) tokens", spread(r.prefillTokensPerSecond, "tok/s")),
            ("decode, \(r.generatedTokens) tokens", spread(r.decodeTokensPerSecond, "tok/s")),
            ("time to first token", spread(r.ttftMs, "ms", 0)),
            ("peak RSS", String(format: "%.1f MiB", Double(r.peakRSSBytes) / 1_048_576)),
            ("weights read per token", String(format: "%.1f MiB", Double(r.weightBytesPerToken) / 1_048_576)),
            ("memory bandwidth (triad)", String(format: "%.1f GB/s", r.bandwidthBytesPerSecond / 1e9)),
            ("compute probe", String(format: "%.2f GFLOP/s", r.computeGflops)),
            ("decode efficiency", String(format: "%.1f%% of bandwidth", r.decodeEfficiency * 100)),
        ]
        let width = rows.map(\.0.count).max()!
        return rows.map { $0.0.padding(toLength: width, withPad: " ", startingAt: 0) + "  " + $0.1 }.joined(separator: "\n")
    }
}
