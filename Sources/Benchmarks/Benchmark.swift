import Foundation
import Kernels
import Runtime
#if canImport(Glibc)
import Glibc
#endif

// `fbrun bench`: the same measurements every time, plus machine probes taken in the same process so results can
// be compared across runs on shared, noisy machines as ratios (decode efficiency, prefill per unit of compute).

public struct BenchOptions {
    public var promptTokens = 512
    public var generatedTokens = 128
    public var image = false
    public var threads = ProcessInfo.processInfo.activeProcessorCount
    public var repeats = 3
    public var contextLength = 4096
    public var kvCache = KVCacheType.default
    public init() {}
}

/// Median, min and max of one figure over the repeats.
public struct Spread: Codable, Equatable {
    public var median: Double
    public var min: Double
    public var max: Double

    public init(median: Double, min: Double, max: Double) {
        self.median = median; self.min = min; self.max = max
    }

    public init(_ values: [Double]) {
        let sorted = values.sorted()
        median = sorted.isEmpty ? 0 : sorted.count % 2 == 1 ? sorted[sorted.count / 2]
            : (sorted[sorted.count / 2 - 1] + sorted[sorted.count / 2]) / 2
        min = sorted.first ?? 0
        max = sorted.last ?? 0
    }
}

public struct BenchResult: Codable, Equatable {
    public var model: String
    public var architecture: String
    public var threads: Int
    public var kernels: String
    public var promptTokens: Int
    public var generatedTokens: Int
    public var image: Bool
    public var loadMs: Double
    public var visionMs: Spread
    public var cmmMs: Spread
    public var prefillTokensPerSecond: Spread
    public var decodeTokensPerSecond: Spread
    public var ttftMs: Spread
    public var peakRSSBytes: UInt64
    /// The .fbm file's size.
    public var modelBytes: UInt64
    /// Weight bytes one decoded token reads (every decoder matrix and the output head once).
    public var weightBytesPerToken: UInt64
    public var bandwidthBytesPerSecond: Double
    /// Independent-chain floating-point probe, GFLOP/s on one thread.
    public var computeGflops: Double
    /// weightBytesPerToken × decode tokens/s ÷ bandwidth: 1.0 means decode runs at the memory's speed.
    public var decodeEfficiency: Double
    /// Prefill tokens/s per GFLOP/s of the compute probe: comparable across machines of one kind.
    public var prefillPerComputeGflop: Double
    /// The KV cache's type ("f16", "f32"; absent in results from before it could be chosen, which used f32).
    public var kvCache: String?

    public init(model: String, architecture: String, threads: Int, kernels: String, promptTokens: Int, generatedTokens: Int, image: Bool, loadMs: Double, visionMs: Spread, cmmMs: Spread, prefillTokensPerSecond: Spread, decodeTokensPerSecond: Spread, ttftMs: Spread, peakRSSBytes: UInt64, modelBytes: UInt64, weightBytesPerToken: UInt64, bandwidthBytesPerSecond: Double, computeGflops: Double, decodeEfficiency: Double, prefillPerComputeGflop: Double, kvCache: String? = nil) {
        self.model = model
        self.architecture = architecture
        self.threads = threads
        self.kernels = kernels
        self.promptTokens = promptTokens
        self.generatedTokens = generatedTokens
        self.image = image
        self.loadMs = loadMs
        self.visionMs = visionMs
        self.cmmMs = cmmMs
        self.prefillTokensPerSecond = prefillTokensPerSecond
        self.decodeTokensPerSecond = decodeTokensPerSecond
        self.ttftMs = ttftMs
        self.peakRSSBytes = peakRSSBytes
        self.modelBytes = modelBytes
        self.weightBytesPerToken = weightBytesPerToken
        self.bandwidthBytesPerSecond = bandwidthBytesPerSecond
        self.computeGflops = computeGflops
        self.decodeEfficiency = decodeEfficiency
        self.prefillPerComputeGflop = prefillPerComputeGflop
        self.kvCache = kvCache
    }

    enum CodingKeys: String, CodingKey {
        case model, architecture, threads, kernels, image
        case promptTokens = "prompt_tokens", generatedTokens = "gen_tokens", loadMs = "load_ms", visionMs = "vision_ms"
        case cmmMs = "cmm_ms", prefillTokensPerSecond = "prefill_tokens_per_s", decodeTokensPerSecond = "decode_tokens_per_s"
        case ttftMs = "ttft_ms", peakRSSBytes = "peak_rss_bytes", modelBytes = "model_bytes"
        case weightBytesPerToken = "weight_bytes_per_token", bandwidthBytesPerSecond = "bandwidth_bytes_per_s"
        case computeGflops = "compute_gflops", decodeEfficiency = "decode_efficiency"
        case prefillPerComputeGflop = "prefill_per_compute_gflop", kvCache = "kv_cache"
    }
}

public enum Benchmark {
    /// STREAM-style triad over arrays far larger than the caches, split over `threads`; best of a few passes.
    public static func memoryBandwidth(threads: Int, megabytesPerArray: Int = 128) -> Double {
        let count = megabytesPerArray << 17  // doubles
        let a = UnsafeMutablePointer<Double>.allocate(capacity: count)
        let b = UnsafeMutablePointer<Double>.allocate(capacity: count)
        let c = UnsafeMutablePointer<Double>.allocate(capacity: count)
        defer { a.deallocate(); b.deallocate(); c.deallocate() }
        let parallel = Parallel(threads: threads)
        let pa = UnsafeSendable(a), pb = UnsafeSendable(b), pc = UnsafeSendable(c)
        // First touch from the same split, so each thread's pages are its own.
        parallel.forEachChunk(count, work: Int.max) { begin, end in
            for i in begin..<end { pa.value[i] = 0; pb.value[i] = 1; pc.value[i] = 2 }
        }
        var best = 0.0
        for _ in 0..<5 {
            let start = DispatchTime.now().uptimeNanoseconds
            parallel.forEachChunk(count, work: Int.max) { begin, end in fb_probe_triad(pa.value, pb.value, pc.value, 3.0, begin, end) }
            let seconds = Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
            best = max(best, Double(3 * 8 * count) / seconds)
        }
        return best
    }

    /// GFLOP/s of the compute probe on the calling thread (best of a few runs).
    public static func computeGflops() -> Double {
        let iterations = 20_000_000
        var best = 0.0
        for _ in 0..<3 {
            let start = DispatchTime.now().uptimeNanoseconds
            let value = fb_probe_compute(iterations)
            let seconds = Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
            if value.isNaN { return 0 }
            best = max(best, Double(16 * iterations) / seconds / 1e9)
        }
        return best
    }

    /// A deterministic test image (gradients and stripes) in the model's preprocessing size.
    static func syntheticImage(size: Int) -> RGBImage {
        var pixels = [UInt8](repeating: 0, count: size * size * 3)
        for y in 0..<size {
            for x in 0..<size {
                let i = (y * size + x) * 3
                pixels[i] = UInt8((x * 255) / max(1, size - 1))
                pixels[i + 1] = UInt8((y * 255) / max(1, size - 1))
                pixels[i + 2] = ((x / 8 + y / 8) % 2 == 0) ? 200 : 40
            }
        }
        return RGBImage(width: size, height: size, pixels: pixels)
    }

    public static func run(modelPath: String, options: BenchOptions, log: (String) -> Void = { _ in }) throws -> BenchResult {
        let model = try LoadedModel(path: modelPath, verify: true, threads: options.threads)
        let config = model.config
        if options.image && !config.takesImages {
            throw FireboltError("--image needs a vision model (Firebolt-VL, LFM2-VL); this one is \(config.architecture)", file: modelPath)
        }
        let vocab = config.text.vocabSize
        guard options.promptTokens >= 1, options.promptTokens + options.generatedTokens <= options.contextLength else {
            throw FireboltError("prompt (\(options.promptTokens)) + generated (\(options.generatedTokens)) tokens must fit the context (\(options.contextLength))")
        }
        // Prompt ids: a fixed pseudo-random sequence of ordinary tokens (speed does not depend on which).
        var rng = SplitMix64(seed: 12345)
        let firstOrdinary = min(512, vocab / 2)
        let prompt = (0..<options.promptTokens).map { _ in Int32(firstOrdinary + Int(rng.next() % UInt64(vocab - firstOrdinary))) }
        let generator = TextGenerator(model: model, contextLength: options.contextLength, threads: options.threads,
                                      kvCache: options.kvCache)
        // The image path runs in every repeat (the vision tower is most of the time to first token). Firebolt-VL
        // takes the image at its processor's size; LFM2-VL a 512 × 512 image (one 512-pixel tile's worth at the
        // released settings), whose placeholder tokens go before the prompt.
        let image = options.image ? syntheticImage(size: model.vision?.preprocessor.width ?? 512) : nil

        func once(promptCount: Int, generate: Int) throws -> (vision: Double, cmm: Double, prefill: Double, decode: Double, ttft: Double) {
            var ids = Array(prompt.prefix(promptCount))
            if let image, let vision = model.vision { try generator.setImage(vision.encode(image: image)) }
            if let image, let vl = model.lfm2vl {
                let encoded = try vl.encode(image: image)
                try generator.setImage(encoded)
                ids = try vl.placeholderIds(encoded.layout!, tokenizer: model.tokenizer) + ids
            }
            let stats = try generator.generate(prompt: ids, maxTokens: generate, sampling: .greedy,
                                               ignoreEOS: true) { _ in true }
            return (stats.visionMs, stats.cmmMs, stats.prefillTokensPerSecond, stats.decodeTokensPerSecond, stats.ttftMs)
        }

        log("warming up")
        _ = try once(promptCount: min(16, options.promptTokens), generate: min(4, options.generatedTokens))
        var runs: [(vision: Double, cmm: Double, prefill: Double, decode: Double, ttft: Double)] = []
        // Each repeat is paired with its own probes, taken right after it: a neighbour's load that slows the model
        // slows the probe too, so the per-repeat ratios are steadier than ratios of separate medians.
        var bandwidths: [Double] = [], computes: [Double] = [], efficiencies: [Double] = [], prefillRatios: [Double] = []
        // With an image, Firebolt-VL's tokens also run through the modulator's products.
        let modulatorBytes = options.image ? model.vision?.modulator.bytesPerToken ?? 0 : 0
        let bytesPerToken = UInt64(model.decoder.bytesPerToken + modulatorBytes)
        var peakRSS: UInt64 = 0
        for r in 0..<max(1, options.repeats) {
            log("repeat \(r + 1)/\(options.repeats)")
            let run = try once(promptCount: options.promptTokens, generate: options.generatedTokens)
            runs.append(run)
            // Peak memory of the model's work, read before the probes allocate their arrays.
            if r == 0 { peakRSS = ProcessMemory.peakResidentBytes }
            let bandwidth = memoryBandwidth(threads: options.threads, megabytesPerArray: 64)
            let compute = computeGflops()
            bandwidths.append(bandwidth)
            computes.append(compute)
            efficiencies.append(Double(bytesPerToken) * run.decode / bandwidth)
            prefillRatios.append(run.prefill / max(compute, 1e-9))
        }
        let decode = Spread(runs.map(\.decode)), prefill = Spread(runs.map(\.prefill))
        return BenchResult(
            model: URL(fileURLWithPath: modelPath).lastPathComponent, architecture: config.architecture, threads: options.threads,
            kernels: String(cString: fb_kernels_name()), promptTokens: options.promptTokens,
            generatedTokens: options.generatedTokens, image: options.image, loadMs: model.loadSeconds * 1000,
            visionMs: Spread(runs.map(\.vision)), cmmMs: Spread(runs.map(\.cmm)), prefillTokensPerSecond: prefill,
            decodeTokensPerSecond: decode, ttftMs: Spread(runs.map(\.ttft)), peakRSSBytes: peakRSS,
            modelBytes: model.file.fileSize, weightBytesPerToken: bytesPerToken, bandwidthBytesPerSecond: Spread(bandwidths).median,
            computeGflops: Spread(computes).median, decodeEfficiency: Spread(efficiencies).median,
            prefillPerComputeGflop: Spread(prefillRatios).median, kvCache: options.kvCache.rawValue)
    }
}
