import CommandLineKit
import Dispatch
import Foundation
import Runtime
import Server
#if canImport(Glibc)
import Glibc
#endif

// fbserve: the runtime behind an OpenAI-compatible HTTP API (docs/server.md).

let serveSpec = CommandSpec(
    name: "fbserve",
    usage: "fbserve --model M.fbm [--host 127.0.0.1] [--port 8080] [--threads N] [--ctx N] [--parallel N]\n" +
        "               [--api-key K] [--max-queue Q]",
    summary: "Serves the model over HTTP: POST /v1/chat/completions (text and data: URL images, streaming),\n" +
        "POST /v1/completions, GET /v1/models, GET /health, GET /metrics (Prometheus).",
    options: [
        .value("model", short: "m", "M.fbm", "the model file (from fbconvert)"),
        .value("host", "ADDR", "IPv4 address to listen on (default 127.0.0.1: this machine only; 0.0.0.0: every interface)"),
        .value("port", "PORT", "TCP port (default 8080; 0 picks a free one, printed at start)"),
        .value("threads", short: "t", "N", "threads for the model (default: all cores)"),
        .value("ctx", "N", "context length of each sequence in tokens (default 4096)"),
        .value("parallel", "N", "sequences decoded together, each with its own caches (default 1)"),
        .value("max-queue", "Q", "requests that may wait for a free sequence; more get 429 (default 16)"),
        .value("api-key", "KEY", "require 'Authorization: Bearer KEY' on every endpoint but /health"),
        .value("max-body-mb", "MB", "largest request body (default 20)"),
        .value("max-image-pixels", "N", "refuse larger images (default \(ImageDecoder.defaultMaxPixels), 4096 × 4096)"),
        .value("shutdown-grace", "S", "on SIGTERM, seconds running requests may take to finish before they are cancelled (default 10)"),
        .flag("no-verify", "skip the per-tensor checksums at load"),
    ],
    notes: "Environment: FB_KERNELS=NAME forces a kernel set (this CPU runs: \(KernelEnvironment.runnableKernelSets)).")

ToolMain.run(tool: "fbserve") {
    let a = try ArgumentParser.parse(Array(CommandLine.arguments.dropFirst()), spec: serveSpec)
    if let problem = KernelEnvironment.problem() { throw UsageError(problem, command: a.command) }
    guard let path = a.string("model") else { throw UsageError("--model is required", command: a.command) }
    var options = ServerOptions()
    options.host = a.string("host") ?? options.host
    options.port = try a.int("port", default: 8080, range: 0...65535)!
    options.threads = try a.int("threads", default: ProcessInfo.processInfo.activeProcessorCount, range: 1...256)!
    options.contextLength = try a.int("ctx", default: 4096, range: 16...1_048_576)!
    options.parallel = try a.int("parallel", default: 1, range: 1...64)!
    options.maxQueue = try a.int("max-queue", default: 16, range: 0...100_000)!
    options.apiKey = a.string("api-key")
    if options.apiKey?.isEmpty == true { throw UsageError("--api-key is empty", command: a.command) }
    options.maxBodyBytes = try a.int("max-body-mb", default: 20, range: 1...4096)! << 20
    options.maxImagePixels = try a.int("max-image-pixels", default: ImageDecoder.defaultMaxPixels, range: 1...(1 << 28))!
    options.shutdownGraceSeconds = try a.double("shutdown-grace", default: 10, range: 0...3600)!

    let model = try LoadedModel(path: path, verify: !a.flag("no-verify"), threads: options.threads)
    let name = URL(fileURLWithPath: path).deletingPathExtension().lastPathComponent
    let server = try APIServer(model: model, modelName: name, options: options)
    try Output.line("fbserve: listening on http://\(options.host):\(server.port) (model \(name), \(options.parallel) " +
                    "sequence\(options.parallel == 1 ? "" : "s"), context \(options.contextLength))")
    fflush(stdout)

    // SIGTERM / SIGINT: finish or cancel running requests, then exit 0.
    let done = DispatchSemaphore(value: 0)
    var sources: [DispatchSourceSignal] = []
    for sig in [SIGTERM, SIGINT] {
        signal(sig, SIG_IGN)
        let source = DispatchSource.makeSignalSource(signal: sig, queue: .global())
        source.setEventHandler { done.signal() }
        source.resume()
        sources.append(source)
    }
    done.wait()
    printError("fbserve: shutting down")
    server.shutdown()
    printError("fbserve: stopped")
}
