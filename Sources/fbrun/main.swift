import CommandLineKit
import Foundation
import Runtime

// fbrun: the runtime's command line. Subcommands grow with the runtime (see README).

let infoSpec = CommandSpec(
    name: "fbrun info",
    usage: "fbrun info --model M.fbm",
    summary: "Prints the model's configuration and sizes.",
    options: [.value("model", short: "m", "M.fbm", "the model file")])

func runInfo(_ args: [String]) throws {
    let a = try ArgumentParser.parse(args, spec: infoSpec)
    guard let path = a.string("model") else { throw UsageError("--model is required", command: infoSpec.name) }
    let file = try FBMFile(path: path)
    try file.verifyChecksums()
    let encoder = JSONEncoder()
    encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
    print(String(decoding: try encoder.encode(file.config), as: UTF8.self))
    let bytes = file.tensors.reduce(UInt64(0)) { $0 + $1.rawBytes }
    let params = file.tensors.reduce(0) { $0 + $1.elementCount }
    print("parameters: \(params), weights in memory: \(bytes) bytes, file: \(file.fileSize) bytes")
}

ToolMain.run(tool: "fbrun") {
    var args = Array(CommandLine.arguments.dropFirst())
    switch args.first {
    case "info":
        args.removeFirst()
        try runInfo(args)
    default:
        throw UsageError("unknown or missing subcommand (available: info)", command: "fbrun")
    }
}
