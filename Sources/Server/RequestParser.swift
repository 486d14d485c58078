import Foundation
import Kernels
import Runtime

/// A request body → what the engine generates: JSON decoded with type checks naming the field, the conversation put
/// in the chat template and tokenized, the image decoded (a data: URL only), sampling and limits checked. Needs no
/// model weights, only the tokenizer and the model's limits, so it can be fuzzed on its own (fbfuzz `request`).
public struct RequestParser {
    public let tokenizer: Tokenizer
    public let architecture: String
    public let takesImages: Bool
    public let contextLength: Int
    public let maxImagePixels: Int
    /// LFM2-VL: its image processor settings and image token, to expand `<image>` by the image's layout (which
    /// depends only on the image's size).
    public let lfm2vl: (processor: LFM2VLProcessorConfig, imageToken: Int32)?

    public init(tokenizer: Tokenizer, architecture: String, takesImages: Bool, contextLength: Int, maxImagePixels: Int,
                lfm2vl: (processor: LFM2VLProcessorConfig, imageToken: Int32)? = nil) {
        self.tokenizer = tokenizer
        self.architecture = architecture
        self.takesImages = takesImages
        self.contextLength = contextLength
        self.maxImagePixels = maxImagePixels
        self.lfm2vl = lfm2vl
    }

    /// A `/v1/chat/completions` (`chat`) or `/v1/completions` body. Throws `APIError` (400) naming what is wrong.
    func parse(_ body: Data, chat: Bool) throws -> (GenerationSpec, GenerationFields) {
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
                spec = GenerationSpec(promptIds: tokenizer.encode(parsed.prompt, addBOS: true), image: nil,
                                      sampling: .greedy, maxTokens: 0, stop: [])
                if spec.promptIds.isEmpty { throw APIError(400, "'prompt' is empty", param: "prompt") }
            }
        } catch let error as APIError {
            throw error
        } catch {
            throw APIError.from(decoding: error)
        }
        try applyFields(fields, to: &spec, param: chat ? "messages" : "prompt")
        return (spec, fields)
    }

    /// For fuzzing: parses a body as both endpoints would; throws what a client would be told.
    public func check(body: Data) throws {
        let chat = Result { try parse(body, chat: true) }
        _ = try parse(body, chat: false)
        _ = try chat.get()
    }

    /// The conversation in the chat template, its image decoded (one image per conversation, in a user message).
    func chatSpec(_ request: ChatCompletionRequest) throws -> GenerationSpec {
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
                        guard takesImages else {
                            throw APIError(400, "this model (\(architecture)) is text-only: it cannot take an image", param: param)
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
            // Firebolt-VL's prompt: the image marker, a newline, then the text; LFM2-VL's template puts nothing between.
            rendered.append((role, hasImage ? (lfm2vl == nil ? "<image>\n" : "<image>") + text : text))
        }
        var ids = tokenizer.encode(Tokenizer.chatPrompt(messages: rendered), addBOS: false)
        if let vl = lfm2vl, let image {
            let placeholder: [Int32]
            do {
                let layout = try LFM2VLImageLayout(width: image.pixels.width, height: image.pixels.height, config: vl.processor)
                placeholder = try layout.placeholderIds(tokenizer: tokenizer, imageToken: vl.imageToken)
            } catch {
                throw APIError(400, "the image cannot be laid out for this model: \(error)", param: "messages")
            }
            ids = ids.flatMap { $0 == vl.imageToken ? placeholder : [$0] }
        }
        return GenerationSpec(promptIds: ids, image: image, sampling: .greedy, maxTokens: 0, stop: [])
    }

    /// A `data:` URL of a PNG or JPEG; anything fetched from the network is refused (the device may have none).
    func decodeImage(_ url: String, param: String) throws -> (key: UInt64, pixels: RGBImage) {
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
            let pixels = try ImageDecoder.decode(data: data, name: param, maxPixels: maxImagePixels)
            let key = data.withUnsafeBytes { fb_xxh64($0.baseAddress, $0.count, 0) }
            return (key, pixels)
        } catch let error as FireboltError {
            throw APIError(400, "\(param): \(error.message)", param: param)
        }
    }

    /// Sampling, length and stop fields onto the spec, checked.
    func applyFields(_ f: GenerationFields, to spec: inout GenerationSpec, param: String) throws {
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
        let prompt = spec.promptIds.count, context = contextLength
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
}
