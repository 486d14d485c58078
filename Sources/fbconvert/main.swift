import CommandLineKit
import Converter
import Foundation
import Runtime
#if canImport(Glibc)
import Glibc
#endif

// fbconvert: Hugging Face checkpoint → .fbm; `inspect` reads one back; `synth` makes real-size random checkpoints.

let convertSpec = CommandSpec(
    name: "fbconvert",
    usage: "fbconvert [--bits 4|8|16|32] [--vision-bits B] [--grid nl|uniform] [--group-size 32] [--compress zstd|none] [--keep PATTERN]... [-o OUT.fbm] INPUT\n" +
        "       fbconvert inspect FILE.fbm\n       fbconvert synth --preset NAME -o DIR",
    summary: "Converts a checkpoint (a .safetensors file, a sharded model.safetensors.index.json, or a folder holding them with\n" +
        "config.json and tokenizer.json) into one self-contained .fbm model file.",
    options: [
        .value("bits", "B", "weight-matrix precision: 4 (q4nl), 8 (q8), 16 (f16) or 32 (f32); default 4"),
        .value("grid", "GRID", "4-bit grid: nl (default: q4nl, non-uniform levels, less error) or uniform (q4)"),
        .value("vision-bits", "B", "precision of the vision tower's matrices; default: same as --bits"),
        .value("group-size", "N", "weights per scale for 4/8 bits; default 32 (the only size the kernels read)"),
        .value("compress", "METHOD", "zstd (default: each tensor compressed) or none (the runtime can mmap the file)"),
        .value("zstd-level", "N", "zstd level 1-22; default 3"),
        .value("keep", "PATTERN", "glob on tensor names; matching matrices stay f16 (f32 at --bits 32); repeatable", repeatable: true),
        .value("output", short: "o", "OUT.fbm", "output file; default: INPUT's folder and name with -q4.fbm (etc.)"),
        .value("threads", "N", "worker threads; default: all cores"),
        .flag("quiet", short: "q", "no progress bar and no summary"),
    ],
    positionals: 1...1,
    notes: "Subcommands: 'fbconvert inspect --help', 'fbconvert synth --help'.")

let inspectSpec = CommandSpec(
    name: "fbconvert inspect",
    usage: "fbconvert inspect [--no-verify] [--json] FILE.fbm",
    summary: "Prints an .fbm file's header and tensor table, after checking the file with the runtime's own reader.",
    options: [
        .flag("no-verify", "skip the per-tensor checksums (header and table are still checked)"),
        .flag("json", "print the header as JSON (tokenizer omitted)"),
    ],
    positionals: 1...1)

func runConvert(_ args: [String]) throws {
    let a = try ArgumentParser.parse(args, spec: convertSpec)
    var options = ConversionOptions()
    options.bits = try a.int("bits", default: 4)!
    guard ConversionOptions.supportedBits.contains(options.bits) else {
        throw UsageError("--bits must be 4, 8, 16 or 32, got \(options.bits)", command: "fbconvert")
    }
    if let vb = try a.int("vision-bits") {
        guard ConversionOptions.supportedBits.contains(vb) else {
            throw UsageError("--vision-bits must be 4, 8, 16 or 32, got \(vb)", command: "fbconvert")
        }
        options.visionBits = vb
    }
    options.uniformGrid = try a.choice("grid", ["nl", "uniform"], default: "nl") == "uniform"
    options.groupSize = try a.int("group-size", default: 32)!
    guard options.groupSize == 32 else {
        throw UsageError("--group-size \(options.groupSize) is not supported: the kernels read groups of 32 weights", command: "fbconvert")
    }
    options.compression = try a.choice("compress", ["zstd", "none"], default: "zstd") == "zstd" ? .zstd : .none
    options.zstdLevel = try a.int("zstd-level", default: 3, range: 1...22)!
    options.keep = a.strings("keep")
    options.threads = try a.int("threads", default: options.threads, range: 1...256)!
    let input = a.positionals[0]
    let output = a.string("output") ?? FBMConverter.defaultOutputPath(input: input, bits: options.bits)
    let quiet = a.flag("quiet")
    let bar = ProgressBar(enabled: !quiet)
    let summary = try FBMConverter.convert(input: input, output: output, options: options, progress: bar.update)
    bar.clear()
    if !quiet { printError(ConversionReport.text(summary)) }
}

func runInspect(_ args: [String]) throws {
    let a = try ArgumentParser.parse(args, spec: inspectSpec)
    let file = try FBMFile(path: a.positionals[0])
    if !a.flag("no-verify") { try file.verifyChecksums() }
    if a.flag("json") {
        var header = file.header
        header.tokenizer = "(\(header.tokenizer.utf8.count) bytes omitted)"
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        try Output.line(String(decoding: try encoder.encode(header), as: UTF8.self))
    } else {
        try Output.line(Inspector.text(file, verified: !a.flag("no-verify")))
    }
}

ToolMain.run(tool: "fbconvert") {
    if !CommandLine.arguments.contains("--help"), let problem = KernelEnvironment.problem() {
        throw UsageError(problem, command: "fbconvert")
    }
    var args = Array(CommandLine.arguments.dropFirst())
    switch args.first {
    case "inspect":
        args.removeFirst()
        try runInspect(args)
    case "synth":
        args.removeFirst()
        try runSynth(args)
    default:
        try runConvert(args)
    }
}
