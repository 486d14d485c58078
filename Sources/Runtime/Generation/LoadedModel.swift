import Foundation

/// A loaded .fbm model: config, tokenizer, the decoder, and for Firebolt-VL the vision tower and the CMM, for LFM2-VL
/// the NaFlex tower and the projector.
public final class LoadedModel {
    public let file: FBMFile
    public let config: ModelConfig
    public let tokenizer: Tokenizer
    public let decoder: LFM2Model
    /// Present for `fireboltlm` models.
    public let vision: FireboltVLModel?
    /// Present for `lfm2_vl` models.
    public let lfm2vl: LFM2VLModel?
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
                lfm2vl = nil
                decoder = vl.decoder
            } else if config.isLFM2VL {
                let vl = try LFM2VLModel(weights: weights, config: config, threads: threads)
                vision = nil
                lfm2vl = vl
                decoder = vl.decoder
            } else {
                vision = nil
                lfm2vl = nil
                decoder = try LFM2Model(weights: weights, config: config.text)
            }
        } catch let e as FireboltError {
            throw e.inFile(path)
        }
        loadSeconds = Date().timeIntervalSince(start)
    }

    /// docs/model.md §4: one user turn with the generation prompt; `<image>\n` first when an image is given
    /// (Firebolt-VL; LFM2-VL prompts need the image's layout: `promptIds(question:image:)`).
    public func chatPromptIds(question: String, withImage: Bool) -> [Int32] {
        let content = withImage ? "<image>\n" + question : question
        return tokenizer.encode(Tokenizer.chatPrompt(user: content), addBOS: false)
    }

    /// The prompt for a question about `image` (nil: text only) in the model's chat format. LFM2-VL: the image
    /// item first, then the text (its template puts nothing between them), and `<image>` expanded to the image's
    /// placeholder (markers and one image token per feature row).
    public func promptIds(question: String, image: EncodedImage?) throws -> [Int32] {
        guard let lfm2vl else { return chatPromptIds(question: question, withImage: image != nil) }
        guard let image else { return tokenizer.encode(Tokenizer.chatPrompt(user: question), addBOS: false) }
        guard let layout = image.layout else { throw FireboltError("the image was not encoded for an LFM2-VL model") }
        let ids = tokenizer.encode(Tokenizer.chatPrompt(user: "<image>" + question), addBOS: false)
        let placeholder = try lfm2vl.placeholderIds(layout, tokenizer: tokenizer)
        return ids.flatMap { $0 == lfm2vl.imageTokenId ? placeholder : [$0] }
    }

    /// Decodes the image file and takes it through the model's image path (`FireboltVLModel.encode(image:)`,
    /// `LFM2VLModel.encode(image:)`).
    public func encodeImage(path: String, maxPixels: Int = ImageDecoder.defaultMaxPixels) throws -> EncodedImage {
        guard vision != nil || lfm2vl != nil else {
            throw FireboltError("this model is text-only (\(config.architecture)): it cannot take an image", file: path)
        }
        let clock = Date()
        let image = try ImageDecoder.decode(path: path, maxPixels: maxPixels)
        let decodeMs = Date().timeIntervalSince(clock) * 1000
        var encoded: EncodedImage
        if let vision {
            encoded = vision.encode(image: image)
        } else {
            do { encoded = try lfm2vl!.encode(image: image) } catch let e as FireboltError { throw e.inFile(path) }
        }
        encoded.decodeMs = decodeMs
        return encoded
    }

    /// A new sequence of this model (with the modulator for Firebolt-VL): its own caches, the shared weights.
    public func makeSession(contextLength: Int, threads: Int, kvCache: KVCacheType = .default) -> SequenceSession {
        if let vision {
            return FireboltVLSession(model: vision, contextLength: contextLength, threads: threads, kvCache: kvCache)
        }
        if let lfm2vl {
            return LFM2VLSession(model: lfm2vl, contextLength: contextLength, threads: threads, kvCache: kvCache)
        }
        return LFM2Session(model: decoder, contextLength: contextLength, threads: threads, kvCache: kvCache)
    }

    public func checkTokenIds(_ ids: [Int32]) throws { try decoder.checkTokens(ids) }
}
