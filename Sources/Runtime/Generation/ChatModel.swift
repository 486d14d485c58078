import Foundation

/// The runtime for an app, in one type: load a `.fbm`, ask a question (about an image, for Firebolt-VL), get the
/// answer streamed as text. `fbrun` is built from the same parts (`LoadedModel`, `TextGenerator`) with more knobs.
///
///     let model = try ChatModel(path: "firebolt-shapes-q4.fbm")
///     let stats = try model.ask("What is in the picture?", image: "photo.png") { text in
///         print(text, terminator: "")
///         return true  // false stops the answer here
///     }
///
/// One `ChatModel` answers one question at a time; the caches are sized for `contextLength` tokens but only the
/// positions used become resident.
public final class ChatModel {
    public let model: LoadedModel
    private let generator: TextGenerator

    public init(path: String, threads: Int = ProcessInfo.processInfo.activeProcessorCount, contextLength: Int = 4096) throws {
        model = try LoadedModel(path: path, threads: threads)
        generator = TextGenerator(model: model, contextLength: contextLength, threads: threads)
    }

    /// Answers `question` in the model's chat format; `image` is a PNG or JPEG path (Firebolt-VL models only).
    /// `onText` receives the answer piece by piece (whole UTF-8 characters) and may return false to stop. Greedy
    /// unless `sampling` says otherwise.
    @discardableResult
    public func ask(_ question: String, image: String? = nil, maxTokens: Int = 256,
                    sampling: SamplingOptions = SamplingOptions(temperature: 0),
                    onText: (String) throws -> Bool) throws -> GenerationStats {
        let encoded = try image.map { try model.encodeImage(path: $0) }
        try generator.setImage(encoded)
        let prompt = try model.promptIds(question: question, image: encoded)
        var decoder = model.tokenizer.makeStreamingDecoder(skipSpecialTokens: true)
        var stopped = false
        let stats = try generator.generate(prompt: prompt, maxTokens: maxTokens, sampling: sampling) { id in
            let text = try decoder.append(id)
            if !text.isEmpty, try !onText(text) { stopped = true }
            return !stopped
        }
        let tail = decoder.finish()
        if !stopped && !tail.isEmpty { _ = try onText(tail) }
        return stats
    }

    /// The whole answer as one string.
    public func answer(_ question: String, image: String? = nil, maxTokens: Int = 256) throws -> String {
        var text = ""
        try ask(question, image: image, maxTokens: maxTokens) { text += $0; return true }
        return text
    }
}
