import Foundation
import Kernels
import Runtime

/// fbserve's settings (the command line's options).
public struct ServerOptions {
    public var host = "127.0.0.1"
    public var port = 8080
    public var threads = ProcessInfo.processInfo.activeProcessorCount
    public var contextLength = 4096
    public var parallel = 1
    public var maxQueue = 16
    public var apiKey: String?
    public var maxBodyBytes = 20 << 20
    public var maxImagePixels = ImageDecoder.defaultMaxPixels
    /// On SIGTERM, how long running requests may take to finish before they are cancelled.
    public var shutdownGraceSeconds = 10.0
    public init() {}
}

/// The OpenAI-compatible HTTP API over one model: routes, authentication, request → engine → response.
public final class APIServer {
    public let options: ServerOptions
    public let modelName: String
    private let model: LoadedModel
    private let engine: Engine
    private let parser: RequestParser
    private var listener: HTTPListener?
    private let created = Int(Date().timeIntervalSince1970)
    private let stats = NSLock()
    private var requestCounts: [String: Int] = [:]  // "endpoint status" → count
    private var nextId = 0
    private var shuttingDown = false

    public var port: Int { listener?.port ?? options.port }

    public init(model: LoadedModel, modelName: String, options: ServerOptions) throws {
        self.model = model
        self.modelName = modelName
        self.options = options
        parser = RequestParser(tokenizer: model.tokenizer, architecture: model.config.architecture, takesImages: model.config.takesImages,
                               contextLength: options.contextLength, maxImagePixels: options.maxImagePixels,
                               lfm2vl: model.lfm2vl.map { ($0.processor, $0.imageTokenId) })
        engine = Engine(model: model, parallel: options.parallel, contextLength: options.contextLength,
                        threads: options.threads, maxQueue: options.maxQueue)
        do {
            listener = try HTTPListener(host: options.host, port: options.port, maxBodyBytes: options.maxBodyBytes,
                                        maxConnections: max(64, 4 * (options.parallel + options.maxQueue))) { [unowned self] request in
                self.handle(request)
            }
        } catch {
            engine.shutdown(grace: 0)
            throw error
        }
    }

    /// SIGTERM: stop accepting, let running requests finish (up to the grace period), cancel the rest, close.
    public func shutdown() {
        stats.lock(); shuttingDown = true; stats.unlock()
        listener?.stopAccepting()
        engine.shutdown(grace: options.shutdownGraceSeconds)
        // Every answer is complete or cancelled now; let the connections send what they hold before closing them.
        let deadline = Date(timeIntervalSinceNow: 2)
        while responsesInFlight > 0 && Date() < deadline { usleep(10_000) }
        listener?.close()
        listener = nil
    }

    // MARK: Routing

    private func handle(_ request: HTTPRequest) {
        let path = request.path, method = request.method
        var status = 200
        defer { count(path, status) }
        do {
            if path != "/health", let key = options.apiKey, request.header("Authorization") != "Bearer \(key)" {
                throw APIError(401, "missing or wrong API key (send 'Authorization: Bearer KEY')")
            }
            switch (method, path) {
            case ("GET", "/health"):
                let down = isShuttingDown
                status = down ? 503 : 200
                request.respond(status: status, contentType: "application/json",
                                body: JSONBody.encode(["status": down ? "shutting down" : "ok"]))
            case ("GET", "/v1/models"):
                request.respond(status: 200, contentType: "application/json", body: JSONBody.encode([
                    "object": "list",
                    "data": [["id": modelName, "object": "model", "created": created, "owned_by": "firebolt-edge"]],
                ] as [String: Any]))
            case ("GET", "/metrics"):
                request.respond(status: 200, contentType: "text/plain; version=0.0.4", body: Data(metricsText().utf8))
            case ("POST", "/v1/chat/completions"):
                try generate(request, chat: true)
            case ("POST", "/v1/completions"):
                try generate(request, chat: false)
            case (_, "/health"), (_, "/v1/models"), (_, "/metrics"), (_, "/v1/chat/completions"), (_, "/v1/completions"):
                throw APIError(405, "\(method) is not allowed on \(path)")
            default:
                throw APIError(404, "no such endpoint: \(method) \(path)")
            }
        } catch let error as APIError {
            status = error.status
            request.respond(status: error.status, contentType: "application/json", body: error.json)
        } catch {
            status = 500
            request.respond(status: 500, contentType: "application/json", body: APIError(500, "\(error)").json)
        }
    }

    /// Generation responses not yet fully handed to their connections.
    private var inFlight = 0
    private var responsesInFlight: Int {
        stats.lock(); defer { stats.unlock() }
        return inFlight
    }
    private func changeInFlight(_ delta: Int) {
        stats.lock(); inFlight += delta; stats.unlock()
    }

    private var isShuttingDown: Bool {
        stats.lock(); defer { stats.unlock() }
        return shuttingDown
    }

    private func count(_ path: String, _ status: Int) {
        let known = ["/health", "/v1/models", "/metrics", "/v1/chat/completions", "/v1/completions"]
        stats.lock()
        requestCounts["\(known.contains(path) ? path : "other") \(status)", default: 0] += 1
        stats.unlock()
    }

    private func newId(_ prefix: String) -> String {
        stats.lock(); nextId += 1; let n = nextId; stats.unlock()
        return "\(prefix)-\(String(n, radix: 16))\(String(UInt32.random(in: 0...UInt32.max), radix: 16))"
    }

    // MARK: Generation endpoints

    private func generate(_ request: HTTPRequest, chat: Bool) throws {
        if request.bodyTooLarge {
            throw APIError(413, "the body is larger than the limit of \(options.maxBodyBytes) bytes (--max-body-mb)")
        }
        let (spec, fields) = try parser.parse(request.body, chat: chat)
        let job = try engine.submit(spec)
        let id = newId(chat ? "chatcmpl" : "cmpl")
        changeInFlight(1)
        if fields.stream == true {
            request.respondStream(status: 200, contentType: "text/event-stream",
                                  source: EventStream(job: job, id: id, model: modelName, created: Int(Date().timeIntervalSince1970),
                                                      chat: chat, includeUsage: fields.streamOptions?.includeUsage == true) { [weak self] in
                                      self?.changeInFlight(-1)
                                  })
            return
        }
        defer { changeInFlight(-1) }
        // A whole answer: wait for it on this connection's thread, watching for the client hanging up.
        var text = ""
        var lastCheck = Date()
        while true {
            if Date().timeIntervalSince(lastCheck) >= 0.1 {  // tokens may arrive faster than that: check by the clock
                lastCheck = Date()
                if request.clientClosed { job.cancel() }
            }
            guard let event = job.nextEvent(timeout: 0.1) else { continue }
            switch event {
            case .text(let piece): text += piece
            case .failed(let error): throw error
            case .finished(let summary):
                let created = Int(Date().timeIntervalSince1970)
                let choice: [String: Any] = chat
                    ? ["index": 0, "message": ["role": "assistant", "content": text], "finish_reason": summary.finishReason, "logprobs": NSNull()]
                    : ["index": 0, "text": text, "finish_reason": summary.finishReason, "logprobs": NSNull()]
                request.respond(status: 200, contentType: "application/json", body: JSONBody.encode([
                    "id": id, "object": chat ? "chat.completion" : "text_completion", "created": created, "model": modelName,
                    "choices": [choice], "usage": usageObject(summary),
                ] as [String: Any]))
                return
            }
        }
    }

    // MARK: Metrics

    private func metricsText() -> String {
        let counters = engine.snapshot, load = engine.load
        stats.lock(); let counts = requestCounts; stats.unlock()
        var lines: [String] = []
        func metric(_ name: String, _ type: String, _ help: String, _ samples: [(String, Double)]) {
            lines.append("# HELP \(name) \(help)")
            lines.append("# TYPE \(name) \(type)")
            for (labels, value) in samples {
                let shown = value == value.rounded() && abs(value) < 1e15 ? String(Int64(value)) : String(value)
                lines.append("\(name)\(labels) \(shown)")
            }
        }
        metric("fbserve_requests_total", "counter", "HTTP requests answered, by endpoint and status.",
               counts.sorted { $0.key < $1.key }.map { key, value in
                   let parts = key.split(separator: " ")
                   return ("{endpoint=\"\(parts[0])\",status=\"\(parts[1])\"}", Double(value))
               })
        metric("fbserve_prompt_tokens_total", "counter", "Prompt tokens of admitted requests.", [("", Double(counters.promptTokens))])
        metric("fbserve_prompt_tokens_reused_total", "counter", "Prompt tokens served from a slot's caches instead of prefilled.",
               [("", Double(counters.reusedPromptTokens))])
        metric("fbserve_completion_tokens_total", "counter", "Tokens generated.", [("", Double(counters.completionTokens))])
        metric("fbserve_requests_cancelled_total", "counter", "Generations stopped because the client went away.",
               [("", Double(counters.cancelled))])
        metric("fbserve_decode_seconds_total", "counter", "Time spent in decode steps (all running sequences together).",
               [("", counters.decodeSeconds)])
        metric("fbserve_decode_tokens_total", "counter", "Tokens run through decode steps (one per running sequence per step).",
               [("", Double(counters.decodedTokens))])
        metric("fbserve_decode_tokens_per_second", "gauge", "Decode throughput so far: decode tokens over decode seconds.",
               [("", counters.decodeSeconds > 0 ? Double(counters.decodedTokens) / counters.decodeSeconds : 0)])
        metric("fbserve_requests_running", "gauge", "Requests generating now.", [("", Double(load.running))])
        metric("fbserve_queue_depth", "gauge", "Requests waiting for a free slot.", [("", Double(load.waiting))])
        metric("fbserve_peak_rss_bytes", "gauge", "Peak resident memory of the process.", [("", Double(ProcessMemory.peakResidentBytes))])
        return lines.joined(separator: "\n") + "\n"
    }

    private func usageObject(_ s: GenerationSummary) -> [String: Any] {
        ["prompt_tokens": s.promptTokens, "completion_tokens": s.completionTokens, "total_tokens": s.promptTokens + s.completionTokens,
         "prompt_tokens_details": ["cached_tokens": s.reusedPromptTokens]]
    }

    /// Server-sent events in OpenAI's chunk shape, ending with `data: [DONE]`. The client going away cancels the job.
    private final class EventStream: StreamSource {
        let job: GenerationJob
        let id: String, model: String, created: Int, chat: Bool, includeUsage: Bool
        let onRelease: () -> Void
        private var sentRole = false, done = false

        init(job: GenerationJob, id: String, model: String, created: Int, chat: Bool, includeUsage: Bool,
             onRelease: @escaping () -> Void) {
            self.job = job; self.id = id; self.model = model; self.created = created; self.chat = chat
            self.includeUsage = includeUsage
            self.onRelease = onRelease
        }

        private func chunk(_ choices: [[String: Any]], usage: [String: Any]? = nil) -> [UInt8] {
            var object: [String: Any] = ["id": id, "object": chat ? "chat.completion.chunk" : "text_completion",
                                         "created": created, "model": model, "choices": choices]
            if let usage { object["usage"] = usage }
            return Array("data: ".utf8) + Array(JSONBody.encode(object)) + Array("\n\n".utf8)
        }

        private func choice(text: String?, finish: String?) -> [String: Any] {
            var c: [String: Any] = ["index": 0, "finish_reason": finish ?? NSNull(), "logprobs": NSNull()]
            if chat {
                var delta: [String: Any] = [:]
                if let text { delta["content"] = text }
                c["delta"] = delta
            } else {
                c["text"] = text ?? ""
            }
            return c
        }

        override func next() -> [UInt8]? {
            if done { return nil }
            while true {
                guard let event = job.nextEvent(timeout: 1) else { continue }
                // The role chunk goes out with the first event, so a client's first byte marks the first token.
                var out: [UInt8] = []
                if chat && !sentRole {
                    sentRole = true
                    out = chunk([["index": 0, "delta": ["role": "assistant", "content": ""], "finish_reason": NSNull(), "logprobs": NSNull()]])
                }
                switch event {
                case .text(let piece):
                    return out + chunk([choice(text: piece, finish: nil)])
                case .finished(let s):
                    done = true
                    out += chunk([choice(text: nil, finish: s.finishReason)])
                    if includeUsage {
                        out += chunk([], usage: ["prompt_tokens": s.promptTokens, "completion_tokens": s.completionTokens,
                                                 "total_tokens": s.promptTokens + s.completionTokens])
                    }
                    return out + Array("data: [DONE]\n\n".utf8)
                case .failed(let error):
                    done = true
                    return out + Array("data: ".utf8) + Array(error.json) + Array("\n\ndata: [DONE]\n\n".utf8)
                }
            }
        }

        override func released() {
            job.cancel()
            onRelease()
        }
    }
}
