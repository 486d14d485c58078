import Foundation

/// One line of a question file: an image (resolved against the file's folder), a question, the expected answer and
/// the question's family (the `family` field, else the question's first two words).
public struct EvalQuestion: Equatable {
    public let image: String
    public let question: String
    public let answer: String
    public let family: String

    public init(image: String, question: String, answer: String, family: String) {
        self.image = image
        self.question = question
        self.answer = answer
        self.family = family
    }
}

/// Question files: JSON Lines, one object per line with string fields `image` (a path relative to the file),
/// `question`, `answer` and optionally `family`. Blank lines are skipped.
public enum EvalSet {
    public static func load(path: String) throws -> [EvalQuestion] {
        let data: Data
        do { data = try InputFile.read(path) } catch {
            throw FireboltError("cannot read the question file: \(error)", file: path)
        }
        guard let text = String(data: data, encoding: .utf8) else { throw FireboltError("not UTF-8 text", file: path) }
        let folder = URL(fileURLWithPath: path).deletingLastPathComponent()
        var questions: [EvalQuestion] = []
        for (index, line) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            let trimmed = line.trimmingCharacters(in: .whitespaces)
            if trimmed.isEmpty { continue }
            let lineName = "line \(index + 1)"
            guard let object = try? JSONSerialization.jsonObject(with: Data(trimmed.utf8)) as? [String: Any] else {
                throw FireboltError("\(lineName): not a JSON object", file: path)
            }
            func field(_ name: String) throws -> String {
                guard let value = object[name] as? String, !value.isEmpty else {
                    throw FireboltError("\(lineName): '\(name)' must be a non-empty string", file: path)
                }
                return value
            }
            let question = try field("question")
            let image = try field("image")
            let family = (object["family"] as? String)
                ?? question.split(separator: " ").prefix(2).joined(separator: " ")
            questions.append(EvalQuestion(image: image.hasPrefix("/") ? image : folder.appendingPathComponent(image).path,
                                          question: question, answer: try field("answer"), family: family))
        }
        guard !questions.isEmpty else { throw FireboltError("no questions", file: path) }
        return questions
    }
}

/// Answers questions greedily (temperature 0, no penalties), encoding each image once for all its questions.
public final class Evaluator {
    public let model: LoadedModel
    private let generator: TextGenerator
    private var cachedImage: (path: String, image: EncodedImage)?
    public let maxAnswerTokens: Int

    public init(model: LoadedModel, threads: Int, maxAnswerTokens: Int = 48) {
        self.model = model
        self.maxAnswerTokens = maxAnswerTokens
        generator = TextGenerator(model: model, contextLength: 2048, threads: threads, kvCache: .default)  // mapped lazily
    }

    /// The model's answer, whitespace trimmed.
    public func answer(_ q: EvalQuestion) throws -> String {
        if cachedImage?.path != q.image {
            cachedImage = (q.image, try model.encodeImage(path: q.image))
        }
        try generator.setImage(cachedImage!.image)
        let ids = try model.promptIds(question: q.question, image: cachedImage!.image)
        var generated: [Int32] = []
        _ = try generator.generate(prompt: ids, maxTokens: maxAnswerTokens, sampling: .greedy) { generated.append($0); return true }
        return try model.tokenizer.decode(generated, skipSpecialTokens: true).trimmingCharacters(in: .whitespacesAndNewlines)
    }
}

/// Exact-match accuracy overall and per family, and (with a second model's answers) how often the two agree.
public struct EvalScore: Codable, Equatable {
    public struct Family: Codable, Equatable {
        public var questions = 0
        public var correct = 0
        public var agreed = 0
        public var accuracy: Double { questions > 0 ? Double(correct) / Double(questions) : 0 }
        public var agreement: Double { questions > 0 ? Double(agreed) / Double(questions) : 0 }
    }

    public var overall = Family()
    public var families: [String: Family] = [:]

    public init() {}

    /// Adds one answer; `other` is the second model's answer to the same question, if any.
    public mutating func add(_ q: EvalQuestion, answer: String, other: String? = nil) {
        let right = answer == q.answer ? 1 : 0
        let agree = other.map { $0 == answer ? 1 : 0 } ?? 0
        overall.questions += 1; overall.correct += right; overall.agreed += agree
        families[q.family, default: Family()].questions += 1
        families[q.family]!.correct += right
        families[q.family]!.agreed += agree
    }
}
