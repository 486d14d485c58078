// fbfuzz: every parser of untrusted bytes, one target each, for libFuzzer (scripts/fuzz.sh builds this with
// `--sanitize=fuzzer --sanitize=address` and -DFUZZING) or, in a plain build, to replay files through a target
// (the fuzz corpus test does that). A target may throw for any input; it must never crash, hang or take
// memory the input does not justify.
import Converter
import Foundation
import Runtime
import Server

/// Files a target reads by path get the input through one temporary file, rewritten for every input.
let scratch = FileManager.default.temporaryDirectory.appendingPathComponent("fbfuzz-\(getpid())").path

func asFile(_ data: Data, name: String) throws -> String {
    let path = scratch + "/" + name
    try data.write(to: URL(fileURLWithPath: path))
    return path
}

/// The tiny checkpoint the `config` target puts each input into as config.json (set up once by `prepare`).
var checkpointFolder = ""

let targets: [String: (Data) throws -> Void] = [
    // The .fbm header, tensor table, checksums and decompression, then the model built from the header.
    "fbm": { data in _ = try LoadedModel(path: try asFile(data, name: "model.fbm"), verify: true, threads: 1) },
    // The safetensors header and tensor table.
    "safetensors": { data in
        let file = try SafetensorsFile(path: try asFile(data, name: "model.safetensors"))
        for name in file.tensorNames() { _ = try file.tensor(name) }
    },
    // config.json of a checkpoint, read and planned by the converter.
    "config": { data in
        try data.write(to: URL(fileURLWithPath: checkpointFolder + "/config.json"))
        _ = try ModelPlan(checkpoint: try Checkpoint(input: checkpointFolder))
    },
    // tokenizer.json, then a text through it and back.
    "tokenizer": { data in
        let tokenizer = try Tokenizer(json: data)
        let ids = tokenizer.encode("<|im_start|>user\n<image>\nHow many shapes? 1234 ünï ✓<|im_end|>", addBOS: true)
        _ = try tokenizer.decode(ids)
    },
    "npy": { data in _ = try NumpyArray(npy: data) },
    // An fbserve request body (chat and completions), with the tiny checkpoint's tokenizer and a 4-megapixel limit.
    "request": { data in try requestParser!.check(body: data) },
    // PNG and JPEG (recognised by their first bytes), within a 4-megapixel limit.
    "image": { data in _ = try ImageDecoder.decode(data: data, name: "input", maxPixels: 1 << 22) },
]

/// The `request` target's parser (set up once by `prepare`, with the checkpoint's tokenizer).
var requestParser: RequestParser?

/// The `config` target needs a checkpoint beside its input: `checkpoint` (a small one) is copied once; the `request`
/// target its tokenizer.
func prepare(target: String, checkpoint: String?) throws {
    try FileManager.default.createDirectory(atPath: scratch, withIntermediateDirectories: true)
    if target == "request" {
        guard let checkpoint else { throw FireboltError("the request target needs --checkpoint DIR (its tokenizer.json)") }
        let tokenizer = try Tokenizer(json: try Data(contentsOf: URL(fileURLWithPath: checkpoint + "/tokenizer.json")))
        requestParser = RequestParser(tokenizer: tokenizer, architecture: "fireboltlm", takesImages: true,
                                      contextLength: 4096, maxImagePixels: 1 << 22)
    }
    if target == "config" {
        guard let checkpoint else { throw FireboltError("the config target needs --checkpoint DIR (a small checkpoint)") }
        checkpointFolder = scratch + "/checkpoint"
        try? FileManager.default.removeItem(atPath: checkpointFolder)
        try FileManager.default.copyItem(atPath: checkpoint, toPath: checkpointFolder)
    }
}

nonisolated(unsafe) var selected: (Data) throws -> Void = { _ in }

func runOne(_ bytes: UnsafePointer<UInt8>?, _ count: Int) -> Int32 {
    let data = bytes.map { Data(bytes: $0, count: count) } ?? Data()
    do { try selected(data) } catch {}
    return 0
}

func fail(_ message: String, status: Int32 = 1) -> Never {
    FileHandle.standardError.write(Data((message + "\n").utf8))
    exit(status)
}

func select(_ name: String, checkpoint: String?) {
    guard let target = targets[name] else {
        fail("fbfuzz: unknown target '\(name)' (targets: \(targets.keys.sorted().joined(separator: ", ")))", status: 64)
    }
    selected = target
    do { try prepare(target: name, checkpoint: checkpoint) } catch { fail("fbfuzz: error: \(error)") }
}

#if FUZZING
// libFuzzer owns main and the command line (its options and corpus folders): the target comes from the
// environment, FBFUZZ_TARGET and, for `config` and `request`, FBFUZZ_CHECKPOINT.
@_cdecl("LLVMFuzzerInitialize")
public func fuzzerInitialize(_ argc: UnsafeMutablePointer<Int32>?, _ argv: UnsafeMutableRawPointer?) -> Int32 {
    let environment = ProcessInfo.processInfo.environment
    select(environment["FBFUZZ_TARGET"] ?? "", checkpoint: environment["FBFUZZ_CHECKPOINT"])
    return 0
}

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzerTestOneInput(_ bytes: UnsafePointer<UInt8>?, _ count: Int) -> Int32 { runOne(bytes, count) }
#else
/// Replay: every file (or every file in a folder) once through the target; a crash is what this mode catches.
func replay() throws {
    var arguments = Array(CommandLine.arguments.dropFirst())
    guard !arguments.isEmpty, !arguments[0].hasPrefix("-") else {
        fail("usage: fbfuzz TARGET [--checkpoint DIR] FILE|FOLDER...\ntargets: \(targets.keys.sorted().joined(separator: ", "))",
             status: 64)
    }
    let name = arguments.removeFirst()
    var checkpoint: String? = nil
    if let i = arguments.firstIndex(of: "--checkpoint"), i + 1 < arguments.count {
        checkpoint = arguments[i + 1]
        arguments.removeSubrange(i...(i + 1))
    }
    select(name, checkpoint: checkpoint)
    defer { try? FileManager.default.removeItem(atPath: scratch) }
    var count = 0
    for path in arguments {
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) else {
            fail("fbfuzz: error: \(path): no such file or folder")
        }
        let files = isDirectory.boolValue
            ? try FileManager.default.contentsOfDirectory(atPath: path).sorted().map { path + "/" + $0 } : [path]
        for file in files {
            let data = try Data(contentsOf: URL(fileURLWithPath: file))
            _ = data.withUnsafeBytes { runOne($0.bindMemory(to: UInt8.self).baseAddress, $0.count) }
            count += 1
        }
    }
    print("fbfuzz \(name): \(count) inputs replayed without a crash")
}

@main
struct ReplayMain {
    static func main() {
        do { try replay() } catch { fail("fbfuzz: error: \(error)") }
    }
}
#endif
