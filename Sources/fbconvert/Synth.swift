import CommandLineKit
import Converter
import Foundation

let synthSpec = CommandSpec(
    name: "fbconvert synth",
    usage: "fbconvert synth --preset NAME [--seed S] -o DIR",
    summary: "Writes a random-weight checkpoint at real size in the released Hugging Face layout (model.safetensors,\n" +
        "config.json, tokenizer.json, ...), for exercising and benchmarking convert → run without downloads.\n" +
        "Speed and memory do not depend on weight values; the answers of such a model are meaningless.",
    options: [
        .value("preset", "NAME", "one of: " + Synth.presetNames.joined(separator: ", ")),
        .value("seed", "S", "random seed (default 0): the same seed gives the same files"),
        .value("output", short: "o", "DIR", "output folder (created if missing)"),
    ])

func runSynth(_ args: [String]) throws {
    let a = try ArgumentParser.parse(args, spec: synthSpec)
    guard let preset = a.string("preset") else { throw UsageError("--preset is required", command: synthSpec.name) }
    guard Synth.presets[preset] != nil else {
        throw UsageError("unknown preset '\(preset)' (known: \(Synth.presetNames.joined(separator: ", ")))", command: synthSpec.name)
    }
    guard let output = a.string("output") else { throw UsageError("-o DIR is required", command: synthSpec.name) }
    let seed = UInt64(try a.int("seed", default: 0, range: 0...Int.max)!)
    let start = Date()
    try Synth.write(preset: preset, seed: seed, to: output)
    printError(String(format: "wrote preset %@ to %@ in %.1f s", preset, output, Date().timeIntervalSince(start)))
}
