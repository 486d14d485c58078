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
        let body = request.body
        let fields: GenerationFields
        var spec: GenerationSpec
        do {
            if chat {
                let parsed = try JSONDecoder().decode(ChatCompletionRequest.self, from: body)
                fields = parsed.fields
                spec = try chatSpec(parsed)
            } else {
                let parsed = try JSONDecoder().decode(CompletionRequest.self, from: body)
                fields = parsed.fields
                spec = GenerationSpec(promptIds: model.tokenizer.encode(parsed.prompt, addBOS: true), image: nil,
                                      sampling: .greedy, maxTokens: 0, stop: [])
                if spec.promptIds.isEmpty { throw APIError(400, "'prompt' is empty", param: "prompt") }
            }
        } catch let error as APIError {
            throw error
        } catch {
            throw APIError.from(decoding: error)
        }
        try applyFields(fields, to: &spec, param: chat ? "messages" : "prompt")
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
        while true {
            guard let event = job.nextEvent(timeout: 0.1) else {
                if request.clientClosed { job.cancel() }
                continue
            }
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

    /// The conversation in the chat template, its image decoded (one image per conversation, in a user message).
    private func chatSpec(_ request: ChatCompletionRequest) throws -> GenerationSpec {
        guard !request.messages.isEmpty else { throw APIError(400, "'messages' is empty", param: "messages") }
        var rendered: [(role: String, content: String)] = []
        var image: (key: UInt64, pixels: RGBImage)?
        for (i, message) in request.messages.enumerated() {
            var role = message.role
            if role == "developer" { role = "system" }
            guard ["system", "user", "assistant"].contains(role) else {
                throw APIError(400, "messages[\(i)].role '\(message.role)' is not one of system, user, assistant", param: "messages[\(i)].role")
            }
            var text = "", hasImage = false
            switch message.content {
            case .none:
                throw APIError(400, "messages[\(i)].content is required", param: "messages[\(i)].content")
            case .text(let t):
                text = t
            case .parts(let parts):
                for (j, part) in parts.enumerated() {
                    let param = "messages[\(i)].content[\(j)]"
                    switch part.type {
                    case "text":
                        guard let t = part.text else { throw APIError(400, "\(param).text is required", param: param + ".text") }
                        text += text.isEmpty ? t : "\n" + t
                    case "image_url":
                        guard let url = part.imageURL else { throw APIError(400, "\(param).image_url is required", param: param + ".image_url") }
                        guard role == "user" else { throw APIError(400, "images go in user messages (\(param))", param: param) }
                        guard model.vision != nil else {
                            throw APIError(400, "this model (\(model.config.architecture)) is text-only: it cannot take an image", param: param)
                        }
                        guard image == nil else { throw APIError(400, "one image per conversation is supported (\(param) is a second)", param: param) }
                        image = try decodeImage(url, param: param + ".image_url")
                        hasImage = true
                    default:
                        throw APIError(400, "\(param).type '\(part.type)' is not supported (text, image_url)", param: param + ".type")
                    }
                }
            }
            if text.isEmpty && !hasImage && role != "assistant" {
                throw APIError(400, "messages[\(i)].content is empty", param: "messages[\(i)].content")
            }
            // Firebolt-VL's prompt: the image marker, a newline, then the text.
            rendered.append((role, hasImage ? "<image>\n" + text : text))
        }
        let ids = model.tokenizer.encode(Tokenizer.chatPrompt(messages: rendered), addBOS: false)
        return GenerationSpec(promptIds: ids, image: image, sampling: .greedy, maxTokens: 0, stop: [])
    }

    /// A `data:` URL of a PNG or JPEG; anything fetched from the network is refused (the device may have none).
    private func decodeImage(_ url: String, param: String) throws -> (key: UInt64, pixels: RGBImage) {
        let lower = url.prefix(16).lowercased()
        if lower.hasPrefix("http://") || lower.hasPrefix("https://") {
            throw APIError(400, "\(param): images must be sent as data: URLs (base64 PNG or JPEG); the server fetches nothing from the network", param: param)
        }
        guard lower.hasPrefix("data:"), let comma = url.firstIndex(of: ",") else {
            throw APIError(400, "\(param): not a data: URL (expected data:image/png;base64,…)", param: param)
        }
        let header = url[url.index(url.startIndex, offsetBy: 5)..<comma].lowercased()
        guard header.hasSuffix(";base64") else { throw APIError(400, "\(param): the data: URL must be base64 (;base64,)", param: param) }
        guard let data = Data(base64Encoded: String(url[url.index(after: comma)...]), options: .ignoreUnknownCharacters),
              !data.isEmpty else {
            throw APIError(400, "\(param): the base64 data is invalid", param: param)
        }
        do {
            let pixels = try ImageDecoder.decode(data: data, name: param, maxPixels: options.maxImagePixels)
            let key = data.withUnsafeBytes { fb_xxh64($0.baseAddress, $0.count, 0) }
            return (key, pixels)
        } catch let error as FireboltError {
            throw APIError(400, "\(param): \(error.message)", param: param)
        }
    }

    /// Sampling, length and stop fields onto the spec, checked.
    private func applyFields(_ f: GenerationFields, to spec: inout GenerationSpec, param: String) throws {
        if let n = f.n, n != 1 { throw APIError(400, "'n' must be 1 (one choice per request)", param: "n") }
        let temperature = f.temperature ?? 1
        guard (0...2).contains(temperature) else { throw APIError(400, "'temperature' must be between 0 and 2", param: "temperature") }
        let topP = f.topP ?? 1
        guard topP > 0 && topP <= 1 else { throw APIError(400, "'top_p' must be in (0, 1]", param: "top_p") }
        // OpenAI's sampling: temperature and nucleus only (no min-p, no repetition penalty), greedy at 0.
        var sampling = SamplingOptions(temperature: temperature)
        sampling.topP = topP
        sampling.minP = 0
        sampling.repeatPenalty = 1
        sampling.seed = f.seed.map { UInt64(bitPattern: $0) } ?? UInt64.random(in: 0...UInt64.max)
        spec.sampling = sampling
        let stops = f.stop?.values ?? []
        guard stops.count <= 4, stops.allSatisfy({ !$0.isEmpty }) else {
            throw APIError(400, "'stop' takes up to 4 non-empty strings", param: "stop")
        }
        spec.stop = stops
        let prompt = spec.promptIds.count, context = options.contextLength
        guard prompt < context else {
            throw APIError(400, "the prompt has \(prompt) tokens; the context holds \(context) (fbserve --ctx)", param: param)
        }
        let requested = f.maxCompletionTokens ?? f.maxTokens
        if let requested, requested < 1 {
            throw APIError(400, "'\(f.maxCompletionTokens != nil ? "max_completion_tokens" : "max_tokens")' must be at least 1",
                           param: f.maxCompletionTokens != nil ? "max_completion_tokens" : "max_tokens")
        }
        spec.maxTokens = min(requested ?? Int.max, context - prompt)
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
