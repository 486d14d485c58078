import Foundation

// The OpenAI chat / completions request and response shapes fbserve speaks, and its errors. Parsing is strict about
// types (a wrong type names the field) and lenient about fields it does not use, as OpenAI-compatible servers are.

/// An error answered as OpenAI does: `{"error": {"message", "type", "param", "code"}}` with an HTTP status.
struct APIError: Error {
    let status: Int
    let message: String
    let type: String
    let param: String?

    init(_ status: Int, _ message: String, param: String? = nil, type: String? = nil) {
        self.status = status
        self.message = message
        self.param = param
        self.type = type ?? (status == 401 ? "authentication_error" : status == 429 ? "rate_limit_error"
            : status >= 500 ? "server_error" : "invalid_request_error")
    }

    var json: Data {
        JSONBody.encode(["error": ["message": message, "type": type, "param": param ?? NSNull(), "code": NSNull()] as [String: Any]])
    }
}

enum JSONBody {
    static func encode(_ object: Any) -> Data {
        (try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys, .withoutEscapingSlashes])) ?? Data("{}".utf8)
    }
}

/// `stop`: one string or a list of up to 4.
struct StopSequences: Decodable {
    let values: [String]
    init(from decoder: Decoder) throws {
        let c = try decoder.singleValueContainer()
        if let one = try? c.decode(String.self) { values = [one] } else { values = try c.decode([String].self) }
    }
}

/// The sampling and length fields shared by both endpoints.
struct GenerationFields: Decodable {
    var model: String?
    var stream: Bool?
    var temperature: Float?
    var topP: Float?
    var maxTokens: Int?
    var maxCompletionTokens: Int?
    var seed: Int64?
    var stop: StopSequences?
    var n: Int?
    var streamOptions: StreamOptions?

    struct StreamOptions: Decodable { var includeUsage: Bool?
        enum CodingKeys: String, CodingKey { case includeUsage = "include_usage" } }

    enum CodingKeys: String, CodingKey {
        case model, stream, temperature, topP = "top_p", maxTokens = "max_tokens",
             maxCompletionTokens = "max_completion_tokens", seed, stop, n, streamOptions = "stream_options"
    }
}

/// `POST /v1/chat/completions`.
struct ChatCompletionRequest: Decodable {
    var messages: [ChatMessage]
    var fields: GenerationFields

    enum CodingKeys: String, CodingKey { case messages }
    init(from decoder: Decoder) throws {
        messages = try decoder.container(keyedBy: CodingKeys.self).decode([ChatMessage].self, forKey: .messages)
        fields = try GenerationFields(from: decoder)
    }
}

struct ChatMessage: Decodable {
    var role: String
    var content: Content?

    enum Content: Decodable {
        case text(String)
        case parts([ContentPart])
        init(from decoder: Decoder) throws {
            let c = try decoder.singleValueContainer()
            if let text = try? c.decode(String.self) { self = .text(text) } else { self = .parts(try c.decode([ContentPart].self)) }
        }
    }
}

/// `{"type": "text", "text": …}` or `{"type": "image_url", "image_url": {"url": …}}` (a bare URL string is taken too).
struct ContentPart: Decodable {
    var type: String
    var text: String?
    var imageURL: String?

    enum CodingKeys: String, CodingKey { case type, text, imageURL = "image_url" }
    enum URLKeys: String, CodingKey { case url }
    init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        type = try c.decode(String.self, forKey: .type)
        text = try c.decodeIfPresent(String.self, forKey: .text)
        if c.contains(.imageURL) {
            if let url = try? c.decode(String.self, forKey: .imageURL) {
                imageURL = url
            } else {
                imageURL = try c.nestedContainer(keyedBy: URLKeys.self, forKey: .imageURL).decode(String.self, forKey: .url)
            }
        }
    }
}

/// `POST /v1/completions`: a raw prompt, no chat template.
struct CompletionRequest: Decodable {
    var prompt: String
    var fields: GenerationFields

    enum CodingKeys: String, CodingKey { case prompt }
    init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        if let one = try? c.decode(String.self, forKey: .prompt) {
            prompt = one
        } else {
            let list = try c.decode([String].self, forKey: .prompt)
            guard list.count == 1 else {
                throw DecodingError.dataCorruptedError(forKey: .prompt, in: c, debugDescription: "only one prompt per request is supported")
            }
            prompt = list[0]
        }
        fields = try GenerationFields(from: decoder)
    }
}

extension APIError {
    /// A JSON or type error, naming the field by its path (`messages[0].content`).
    static func from(decoding error: Error) -> APIError {
        func path(_ keys: [CodingKey]) -> String {
            var out = ""
            for k in keys {
                if let i = k.intValue { out += "[\(i)]" } else { out += out.isEmpty ? k.stringValue : "." + k.stringValue }
            }
            return out
        }
        switch error {
        case DecodingError.typeMismatch(let type, let context):
            let field = path(context.codingPath)
            return APIError(400, "'\(field)' has the wrong type (expected \(typeName(type)))", param: field)
        case DecodingError.valueNotFound(_, let context):
            let field = path(context.codingPath)
            return APIError(400, "'\(field)' must not be null", param: field)
        case DecodingError.keyNotFound(let key, let context):
            let field = path(context.codingPath + [key])
            return APIError(400, "'\(field)' is required", param: field)
        case DecodingError.dataCorrupted(let context):
            if context.codingPath.isEmpty {
                return APIError(400, "the body is not valid JSON")
            }
            let field = path(context.codingPath)
            return APIError(400, "'\(field)': \(context.debugDescription)", param: field)
        default:
            return APIError(400, "the body could not be read: \(error)")
        }
    }

    private static func typeName(_ type: Any.Type) -> String {
        switch type {
        case is String.Type: return "a string"
        case is Bool.Type: return "a boolean"
        case is Int.Type, is Int64.Type: return "an integer"
        case is Float.Type, is Double.Type: return "a number"
        default:
            let name = "\(type)"
            return name.hasPrefix("Array") ? "an array" : name.hasPrefix("Dictionary") ? "an object" : name
        }
    }
}
