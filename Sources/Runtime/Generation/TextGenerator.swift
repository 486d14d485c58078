import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// What generation needs of a sequence: token ids in, logits out, caches kept between calls.
public protocol SequenceSession: AnyObject {
    var contextLength: Int { get }
    /// Positions the caches hold.
    var position: Int { get }
    func reset()
    func forward(tokens: [Int32], lastLogits: UnsafeMutablePointer<Float>?, allLogits: UnsafeMutablePointer<Float>?) throws
    /// One token for each of `sessions` (of the same kind and model) in one pass through the layers, on this session's
    /// scratch: the weights are read once for all. Session r's logits go to `logits + r × vocab`.
    func decodeTogether(_ sessions: [SequenceSession], tokens: [Int32], logits: UnsafeMutablePointer<Float>) throws
}

extension LFM2Session: SequenceSession {
    public func decodeTogether(_ sessions: [SequenceSession], tokens: [Int32], logits: UnsafeMutablePointer<Float>) throws {
        let sequences = try sessions.map { s -> LFM2Session in
            guard let s = s as? LFM2Session else { throw FireboltError("sessions of different kinds cannot decode together") }
            return s
        }
        guard tokens.count == sequences.count else { throw FireboltError("\(sequences.count) sessions but \(tokens.count) tokens") }
        try model.checkTokens(tokens)
        let h = model.config.hiddenSize
        try decodeTogether(sequences, logits: logits) { rows in
            for r in 0..<tokens.count { model.embed(tokens[r], into: rows + r * h) }
        }
    }
}

extension FireboltVLSession: SequenceSession {
    public func decodeTogether(_ sessions: [SequenceSession], tokens: [Int32], logits: UnsafeMutablePointer<Float>) throws {
        let sequences = try sessions.map { s -> FireboltVLSession in
            guard let s = s as? FireboltVLSession else { throw FireboltError("sessions of different kinds cannot decode together") }
            return s
        }
        try decodeTogether(sequences, tokens: tokens, logits: logits)
    }
}

/// Prompt (and image) in, tokens out, one at a time: prefill as a batch, then decode with the caches.
public final class TextGenerator {
    public let model: LoadedModel
    public let session: SequenceSession
    public let kvCache: KVCacheType
    private let vlSession: FireboltVLSession?
    private let lfm2vlSession: LFM2VLSession?
    private let logits: UnsafeMutablePointer<Float>

    public init(model: LoadedModel, contextLength: Int, threads: Int, kvCache: KVCacheType = .default) {
        self.model = model
        self.kvCache = kvCache
        session = model.makeSession(contextLength: contextLength, threads: threads, kvCache: kvCache)
        vlSession = session as? FireboltVLSession
        lfm2vlSession = session as? LFM2VLSession
        logits = .allocate(capacity: model.config.text.vocabSize)
    }

    /// The image (from `LoadedModel.encodeImage`) the following sequences are about; nil for text only. Its
    /// timings go into the stats of every generation about it.
    public private(set) var image: EncodedImage?

    public func setImage(_ image: EncodedImage?) throws {
        if let vlSession {
            try vlSession.setImage(grid: image?.grid)
        } else if let lfm2vlSession {
            try lfm2vlSession.setImage(features: image?.features)
        } else if image != nil {
            throw FireboltError("this model is text-only (\(model.config.architecture)): it cannot take an image")
        }
        self.image = image
    }

    deinit { logits.deallocate() }

    /// Generates after `prompt`; `onToken(id)` is called for each generated token and may return false to stop.
    /// End-of-sequence tokens stop generation and are not passed on.
    /// `ignoreEOS` keeps generating past end-of-sequence tokens (benchmarks want a fixed token count).
    public func generate(prompt: [Int32], maxTokens: Int, sampling: SamplingOptions, ignoreEOS: Bool = false,
                         onToken: (Int32) throws -> Bool) throws -> GenerationStats {
        try model.checkTokenIds(prompt)
        guard !prompt.isEmpty else { throw FireboltError("the prompt is empty") }
        guard prompt.count + maxTokens <= session.contextLength + 1 else {
            throw FireboltError("prompt (\(prompt.count) tokens) + --max-tokens \(maxTokens) exceed the context of \(session.contextLength) tokens (use --ctx)")
        }
        var stats = GenerationStats()
        stats.loadMs = model.loadSeconds * 1000
        stats.promptTokens = prompt.count
        if let image {
            stats.imageDecodeMs = image.decodeMs
            stats.preprocessMs = image.preprocessMs
            stats.visionMs = image.visionMs
        }
        session.reset()
        let sampler = Sampler(options: sampling, vocabularySize: model.config.text.vocabSize)
        sampler.observe(prompt)
        let eos = ignoreEOS ? [] : Set(model.config.specialTokens.eos)

        var clock = Date()
        try session.forward(tokens: prompt, lastLogits: logits, allLogits: nil)
        stats.prefillMs = Date().timeIntervalSince(clock) * 1000
        stats.cmmMs = (vlSession?.modulatorSeconds ?? 0) * 1000
        clock = Date()
        stats.stopReason = "max_tokens"
        var single: [Int32] = [0]
        while stats.generatedTokens < maxTokens {
            let next = sampler.sample(logits)
            if eos.contains(next) { stats.stopReason = "eos"; break }
            stats.generatedTokens += 1
            sampler.observe(next)
            if try !onToken(next) { stats.stopReason = "stopped"; break }
            if stats.generatedTokens == maxTokens { break }
            single[0] = next
            try session.forward(tokens: single, lastLogits: logits, allLogits: nil)
        }
        stats.decodeMs = Date().timeIntervalSince(clock) * 1000
        stats.peakRSSBytes = ProcessMemory.peakResidentBytes
        return stats
    }

    /// Logits for every position of `ids` (count × vocab), through one batched forward.
    public func allLogits(_ ids: [Int32]) throws -> [Float] {
        try model.checkTokenIds(ids)
        session.reset()
        var out = [Float](repeating: 0, count: ids.count * model.config.text.vocabSize)
        try out.withUnsafeMutableBufferPointer { try session.forward(tokens: ids, lastLogits: nil, allLogits: $0.baseAddress!) }
        return out
    }

    /// Logits for every position, one token at a time through the caches (the decode path).
    public func incrementalLogits(_ ids: [Int32]) throws -> [Float] {
        try model.checkTokenIds(ids)
        session.reset()
        let vocab = model.config.text.vocabSize
        var out = [Float](repeating: 0, count: ids.count * vocab)
        for (i, id) in ids.enumerated() {
            try session.forward(tokens: [id], lastLogits: logits, allLogits: nil)
            out.withUnsafeMutableBufferPointer { _ = memcpy($0.baseAddress! + i * vocab, logits, vocab * 4) }
        }
        return out
    }
}
