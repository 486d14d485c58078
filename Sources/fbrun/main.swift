import CommandLineKit
import Foundation
import Runtime
#if canImport(Glibc)
import Glibc
#endif

// fbrun: question (and image) in, streamed answer out. Subcommands: logits, tokenize, info.

let commonModelOptions: [OptionSpec] = [
    .value("model", short: "m", "M.fbm", "the model file (from fbconvert)"),
    .value("threads", short: "t", "N", "threads (default: all cores)"),
    .value("ctx", "N", "context length in tokens (default 4096)"),
    .value("kv-cache", "TYPE", "f16 (default: half the memory) or f32 (the reference's arithmetic)"),
    .flag("no-verify", "skip the per-tensor checksums at load"),
]

let generateSpec = CommandSpec(
    name: "fbrun",
    usage: "fbrun --model M.fbm --prompt \"…\" [--image I] [--max-tokens N] [--temperature T] [--seed S] [--threads N]\n" +
        "       fbrun logits|tokenize|info|bench|eval --help",
    summary: "Answers the prompt, streaming the text to stdout; timing and memory go to stderr at the end.",
    options: commonModelOptions + [
        .value("prompt", short: "p", "TEXT", "the question (put in the chat template unless --raw)"),
        .value("image", short: "i", "FILE", "an image (PNG or JPEG) to ask about"),
        .value("max-image-pixels", "N", "refuse larger images (default \(ImageDecoder.defaultMaxPixels), 4096 × 4096)"),
        .flag("raw", "feed the prompt text as is, without the chat template"),
        .value("max-tokens", short: "n", "N", "stop after N generated tokens (default 256)"),
        .value("temperature", "T", "0 = greedy (pure argmax: no penalty or filter unless given); default 0.3"),
        .value("top-k", "K", "keep the K most likely tokens (0 = off, default)"),
        .value("top-p", "P", "nucleus sampling threshold (1 = off, default)"),
        .value("min-p", "P", "drop tokens below P × the top probability (default 0.15; 0 at --temperature 0)"),
        .value("repeat-penalty", "R", "penalty for tokens already present (1 = off; default 1.05; 1 at --temperature 0)"),
        .value("seed", "S", "random seed for sampling (default: from the clock)"),
        .flag("json", "print one JSON object at the end instead of streaming"),
    ],
    notes: "Subcommands: fbrun logits, fbrun tokenize, fbrun info, fbrun bench, fbrun eval (each with --help).\n" +
        "Environment: FB_KERNELS=NAME forces a kernel set (this CPU runs: \(KernelEnvironment.runnableKernelSets)),\n" +
        "FB_BATCHED=auto|gemm|int8|off a route for the batched products, FB_HUGEPAGES=0 no huge pages for the weights.")

let logitsSpec = CommandSpec(
    name: "fbrun logits",
    usage: "fbrun logits --model M.fbm (--prompt \"…\" | --prompt-ids IDS) [--image I] [--incremental] -o out.npy",
    summary: "Writes float32 logits for every position, shape [T, vocab], as a NumPy .npy file.",
    options: commonModelOptions + [
        .value("prompt", short: "p", "TEXT", "text, put in the chat template unless --raw"),
        .flag("raw", "use the prompt text as is"),
        .value("prompt-ids", "IDS", "token ids: a .npy of int64/int32, or a comma-separated list, used exactly"),
        .value("image", short: "i", "FILE", "an image the prompt refers to"),
        .value("max-image-pixels", "N", "refuse larger images (default \(ImageDecoder.defaultMaxPixels), 4096 × 4096)"),
        .flag("incremental", "run the tokens one at a time through the caches (the decode path) instead of one batch"),
        .value("output", short: "o", "OUT.npy", "where to write the logits"),
    ])

let tokenizeSpec = CommandSpec(
    name: "fbrun tokenize",
    usage: "fbrun tokenize --model M.fbm (--text \"…\" [--bos] | --decode 1,2,3)",
    summary: "Prints the token ids of a text as a JSON array (no BOS unless --bos), or the text of ids.",
    options: [
        .value("model", short: "m", "M.fbm", "the model file"),
        .value("text", "TEXT", "text to encode"),
        .flag("bos", "add the beginning-of-sequence token"),
        .value("decode", "IDS", "comma-separated ids to decode"),
        .flag("skip-special", "leave special tokens out of decoded text"),
    ])

let infoSpec = CommandSpec(
    name: "fbrun info",
    usage: "fbrun info --model M.fbm",
    summary: "Prints the model's configuration and sizes (after checking the file).",
    options: [.value("model", short: "m", "M.fbm", "the model file")])

func requiredModel(_ a: ParsedArguments) throws -> String {
    guard let path = a.string("model") else { throw UsageError("--model is required", command: a.command) }
    return path
}

func threads(_ a: ParsedArguments) throws -> Int {
    try a.int("threads", default: ProcessInfo.processInfo.activeProcessorCount, range: 1...256)!
}

func kvCacheType(_ a: ParsedArguments) throws -> KVCacheType {
    guard let name = a.string("kv-cache") else { return .default }
    guard let type = KVCacheType(rawValue: name) else {
        throw UsageError("--kv-cache must be one of \(KVCacheType.allCases.map(\.rawValue).joined(separator: ", ")), not '\(name)'",
                         command: a.command)
    }
    return type
}

/// The --image, decoded and through the vision tower, or nil; `--max-image-pixels` bounds what is decoded.
func encodedImage(_ a: ParsedArguments, _ model: LoadedModel) throws -> EncodedImage? {
    guard let path = a.string("image") else { return nil }
    let limit = try a.int("max-image-pixels", default: ImageDecoder.defaultMaxPixels, range: 1...Int(Int32.max))!
    return try model.encodeImage(path: path, maxPixels: limit)
}

func parseIds(_ text: String, command: String) throws -> [Int32] {
    if text.hasSuffix(".npy") {
        let array = try NumpyArray(contentsOf: text)
        guard array.dtype == .int64 || array.dtype == .int32 else {
            throw FireboltError("token ids must be int64 or int32, found \(array.dtype.rawValue)", file: text)
        }
        return try array.int64s.map { v in
            guard let id = Int32(exactly: v) else { throw FireboltError("token id \(v) is out of range", file: text) }
            return id
        }
    }
    return try text.split(separator: ",").map { part in
        guard let id = Int32(part.trimmingCharacters(in: .whitespaces)) else {
            throw UsageError("'\(part)' is not a token id (expected comma-separated integers or a .npy file)", command: command)
        }
        return id
    }
}

func runGenerate(_ args: [String]) throws {
    let a = try ArgumentParser.parse(args, spec: generateSpec)
    let path = try requiredModel(a)
    guard let prompt = a.string("prompt") else { throw UsageError("--prompt is required", command: a.command) }
    let temperature = Float(try a.double("temperature", default: Double(SamplingOptions().temperature), range: 0...100)!)
    var sampling = SamplingOptions(temperature: temperature)  // at 0 the argmax: no penalty unless given below
    sampling.topK = try a.int("top-k", default: sampling.topK, range: 0...1_000_000)!
    sampling.topP = Float(try a.double("top-p", default: Double(sampling.topP), range: 0...1)!)
    sampling.minP = Float(try a.double("min-p", default: Double(sampling.minP), range: 0...1)!)
    sampling.repeatPenalty = Float(try a.double("repeat-penalty", default: Double(sampling.repeatPenalty), range: 0.01...100)!)
    sampling.seed = UInt64(try a.int("seed", default: Int(Date().timeIntervalSince1970 * 1000), range: 0...Int.max)!)
    let maxTokens = try a.int("max-tokens", default: 256, range: 1...1_000_000)!
    let context = try a.int("ctx", default: 4096, range: 16...1_048_576)!
    let kvCache = try kvCacheType(a)

    let threadCount = try threads(a)
    let model = try LoadedModel(path: path, verify: !a.flag("no-verify"), threads: threadCount)
    let image = try encodedImage(a, model)
    let ids = a.flag("raw") ? model.tokenizer.encode(prompt, addBOS: false) : try model.promptIds(question: prompt, image: image)
    let generator = TextGenerator(model: model, contextLength: context, threads: threadCount, kvCache: kvCache)
    try generator.setImage(image)
    var decoder = model.tokenizer.makeStreamingDecoder(skipSpecialTokens: true)
    var generated: [Int32] = []
    let json = a.flag("json")
    let stats = try generator.generate(prompt: ids, maxTokens: maxTokens, sampling: sampling) { id in
        generated.append(id)
        let text = try decoder.append(id)
        if !json && !text.isEmpty { try Output.write(text) }
        return true
    }
    let tail = decoder.finish()
    if json {
        let text = try model.tokenizer.decode(generated, skipSpecialTokens: true)
        let object: [String: Any] = ["prompt_ids": ids.map(Int.init), "generated_ids": generated.map(Int.init), "text": text,
                                     "stats": try JSONSerialization.jsonObject(with: JSONEncoder().encode(stats))]
        try Output.line(String(decoding: try JSONSerialization.data(withJSONObject: object, options: [.sortedKeys]), as: UTF8.self))
    } else {
        try Output.line(tail)
        printError(String(format: "load %.0f ms | prompt %d tokens, prefill %.1f tok/s | generated %d tokens, decode %.1f tok/s | peak RSS %.1f MiB",
                          stats.loadMs, stats.promptTokens, stats.prefillTokensPerSecond, stats.generatedTokens,
                          stats.decodeTokensPerSecond, Double(stats.peakRSSBytes) / 1_048_576))
        if let image, model.vision != nil {
            printError(String(format: "time to first token %.0f ms: image %d×%d decode %.0f ms, preprocess %.0f ms, vision tower %.0f ms, CMM %.0f ms, prefill (LFM2) %.0f ms",
                              stats.ttftMs, image.width, image.height, stats.imageDecodeMs, stats.preprocessMs, stats.visionMs,
                              stats.cmmMs, stats.prefillMs - stats.cmmMs))
        } else if let image, let layout = image.layout {
            printError(String(format: "time to first token %.0f ms: image %d×%d decode %.0f ms, preprocess %.0f ms, vision tower + projector %.0f ms (%d image tokens%@), prefill (LFM2) %.0f ms",
                              stats.ttftMs, image.width, image.height, stats.imageDecodeMs, stats.preprocessMs, stats.visionMs,
                              layout.imageTokens, layout.split ? ", \(layout.gridRows)×\(layout.gridCols) tiles" + (layout.thumbnail ? " + thumbnail" : "") : "",
                              stats.prefillMs))
        }
    }
}

func runLogits(_ args: [String]) throws {
    let a = try ArgumentParser.parse(args, spec: logitsSpec)
    let path = try requiredModel(a)
    guard let output = a.string("output") else { throw UsageError("-o OUT.npy is required", command: a.command) }
    guard a.has("prompt") != a.has("prompt-ids") else {
        throw UsageError("give exactly one of --prompt and --prompt-ids", command: a.command)
    }
    let kvCache = try kvCacheType(a)
    let threadCount = try threads(a)
    let model = try LoadedModel(path: path, verify: !a.flag("no-verify"), threads: threadCount)
    let image = try encodedImage(a, model)
    let ids: [Int32]
    if let text = a.string("prompt-ids") {
        ids = try parseIds(text, command: a.command)
    } else {
        let prompt = a.string("prompt")!
        ids = a.flag("raw") ? model.tokenizer.encode(prompt, addBOS: false) : try model.promptIds(question: prompt, image: image)
    }
    guard !ids.isEmpty else { throw UsageError("no tokens to run", command: a.command) }
    let context = try a.int("ctx", default: max(4096, ids.count), range: 16...1_048_576)!
    let generator = TextGenerator(model: model, contextLength: context, threads: threadCount, kvCache: kvCache)
    try generator.setImage(image)
    let logits = a.flag("incremental") ? try generator.incrementalLogits(ids) : try generator.allLogits(ids)
    try NumpyArray(float32: logits, shape: [ids.count, model.config.text.vocabSize]).write(to: output)
}

func runTokenize(_ args: [String]) throws {
    let a = try ArgumentParser.parse(args, spec: tokenizeSpec)
    let file = try FBMFile(path: try requiredModel(a))
    let tokenizer = try Tokenizer(jsonString: file.header.tokenizer)
    if let text = a.string("text") {
        try Output.line("[" + tokenizer.encode(text, addBOS: a.flag("bos")).map(String.init).joined(separator: ",") + "]")
    } else if let ids = a.string("decode") {
        try Output.line(try tokenizer.decode(try parseIds(ids, command: a.command), skipSpecialTokens: a.flag("skip-special")))
    } else {
        throw UsageError("give --text or --decode", command: a.command)
    }
}

func runInfo(_ args: [String]) throws {
    let a = try ArgumentParser.parse(args, spec: infoSpec)
    let file = try FBMFile(path: try requiredModel(a))
    try file.verifyChecksums()
    let encoder = JSONEncoder()
    encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
    try Output.line(String(decoding: try encoder.encode(file.config), as: UTF8.self))
    let bytes = file.tensors.reduce(UInt64(0)) { $0 + $1.rawBytes }
    let params = file.tensors.reduce(0) { $0 + $1.elementCount }
    try Output.line("parameters: \(params), weights in memory: \(bytes) bytes, file: \(file.fileSize) bytes")
}

ToolMain.run(tool: "fbrun") {
    if !CommandLine.arguments.contains("--help"), let problem = KernelEnvironment.problem() {
        throw UsageError(problem, command: "fbrun")
    }
    var args = Array(CommandLine.arguments.dropFirst())
    let commands: [String: ([String]) throws -> Void] = ["logits": runLogits, "tokenize": runTokenize, "info": runInfo, "bench": runBench, "eval": runEval]
    if let first = args.first, let command = commands[first] {
        args.removeFirst()
        try command(args)
    } else {
        try runGenerate(args)
    }
}
