import Foundation

/// A loaded .fbm model: config, tokenizer, the decoder, and for Firebolt-VL the vision tower and the CMM.
public final class LoadedModel {
    public let file: FBMFile
    public let config: ModelConfig
    public let tokenizer: Tokenizer
    public let decoder: LFM2Model
    /// Present for `fireboltlm` models.
    public let vision: FireboltVLModel?
    public let loadSeconds: Double
    public let threads: Int

    public init(path: String, verify: Bool = true, threads: Int = ProcessInfo.processInfo.activeProcessorCount) throws {
        self.threads = threads
        let start = Date()
        file = try FBMFile(path: path)
        config = file.config
        let weights = try file.loadWeights(verify: verify, parallel: Parallel(threads: threads))
        do {
            tokenizer = try Tokenizer(jsonString: file.header.tokenizer)
        } catch {
            throw FireboltError("the embedded tokenizer is unusable: \(error)", file: path)
        }
        do {
            if config.hasVision {
                let vl = try FireboltVLModel(weights: weights, config: config, preprocessor: file.header.preprocessor,
                                             threads: threads)
                vision = vl
                decoder = vl.decoder
            } else {
                vision = nil
                decoder = try LFM2Model(weights: weights, config: config.text)
            }
        } catch let e as FireboltError {
            throw e.inFile(path)
        }
        loadSeconds = Date().timeIntervalSince(start)
    }

    /// docs/model.md §4: one user turn with the generation prompt; `<image>\n` first when an image is given.
    public func chatPromptIds(question: String, withImage: Bool) -> [Int32] {
        let content = withImage ? "<image>\n" + question : question
        return tokenizer.encode(Tokenizer.chatPrompt(user: content), addBOS: false)
    }

    /// Decodes the image file and takes it through the model's image path (`FireboltVLModel.encode(image:)`).
    public func encodeImage(path: String, maxPixels: Int = ImageDecoder.defaultMaxPixels) throws -> EncodedImage {
        guard let vision else {
            throw FireboltError("this model is text-only (\(config.architecture)): it cannot take an image", file: path)
        }
        let clock = Date()
        let image = try ImageDecoder.decode(path: path, maxPixels: maxPixels)
        let decodeMs = Date().timeIntervalSince(clock) * 1000
        var encoded = vision.encode(image: image)
        encoded.decodeMs = decodeMs
        return encoded
    }

    /// A new sequence of this model (with the modulator for Firebolt-VL): its own caches, the shared weights.
    public func makeSession(contextLength: Int, threads: Int, kvCache: KVCacheType = .default) -> SequenceSession {
        if let vision {
            return FireboltVLSession(model: vision, contextLength: contextLength, threads: threads, kvCache: kvCache)
        }
        return LFM2Session(model: decoder, contextLength: contextLength, threads: threads, kvCache: kvCache)
    }

    public func checkTokenIds(_ ids: [Int32]) throws { try decoder.checkTokens(ids) }
}
