import CZstd
import Foundation
import Kernels
import Runtime
#if canImport(Glibc)
import Glibc
#endif

public struct ConversionOptions {
    /// 4, 8, 16 or 32: the storage of weight matrices (q4, q8, f16, f32).
    public var bits = 4
    /// The vision tower's matrices; nil = same as `bits`.
    public var visionBits: Int? = nil
    public var groupSize = Int(FB_GROUP)
    public var compression: Compression = .zstd
    public var zstdLevel = 3
    /// Glob patterns (fnmatch) on output or source names; matching matrices are kept at f16 (f32 at 32 bits).
    public var keep: [String] = []
    public var threads = max(1, ProcessInfo.processInfo.activeProcessorCount)

    public init() {}

    public static let supportedBits = [4, 8, 16, 32]

    public func validate() throws {
        for b in [bits, visionBits ?? bits] where !Self.supportedBits.contains(b) {
            throw FireboltError("--bits must be one of 4, 8, 16, 32 (got \(b))")
        }
        guard groupSize == Int(FB_GROUP) else {
            throw FireboltError("--group-size \(groupSize) is not supported: the kernels read groups of \(FB_GROUP) weights")
        }
        guard (1...22).contains(zstdLevel) else { throw FireboltError("zstd level must be 1...22") }
    }

    /// The storage type of a planned tensor under these options (the policy recorded in the file, per tensor).
    public func storageType(for t: PlannedTensor, sourceName: String?) -> TensorType {
        guard t.role == .matrix, t.shape.count == 2 else { return .f32 }
        let b = t.part == .vision ? (visionBits ?? bits) : bits
        let kept = keep.contains { pattern in
            fnmatch(pattern, t.name, 0) == 0 || (sourceName.map { fnmatch(pattern, $0, 0) == 0 } ?? false)
        }
        if kept || b >= 16 { return b >= 32 ? .f32 : .f16 }
        guard t.shape[1] % Int(FB_GROUP) == 0 else { return .f16 }  // not divisible into groups: the safe fallback
        return b == 8 ? .q8 : .q4
    }
}

/// Per-part totals for the closing summary.
public struct PartSummary {
    public var tensors = 0
    public var parameters = 0
    public var rawBytes: UInt64 = 0
    public var storedBytes: UInt64 = 0
    /// Σ(w − ŵ)² and Σw² over the part's stored values, for the relative RMS error.
    public var sumSquaredError = 0.0
    public var sumSquares = 0.0
    /// The largest per-tensor relative RMS error in the part.
    public var maxRelativeRMS = 0.0

    public var relativeRMS: Double { sumSquares > 0 ? (sumSquaredError / sumSquares).squareRoot() : 0 }
}

public struct ConversionSummary {
    public var output: String
    public var inputBytes: Int
    public var outputBytes: UInt64
    public var seconds: Double
    public var parts: [ModelPart: PartSummary]
    public var tensorTypes: [String: TensorType]
}

public struct ConversionProgress {
    public var tensorsDone: Int
    public var tensorsTotal: Int
    public var bytesDone: Int
    public var bytesTotal: Int
    public var elapsed: Double
    public var currentTensor: String
}

public enum FBMConverter {
    public static let generator = "fbconvert 0.1"

    /// INPUT's folder and name with `-q4.fbm` (or -q8, -f16, -f32).
    public static func defaultOutputPath(input: String, bits: Int) -> String {
        let suffix = bits == 4 ? "q4" : bits == 8 ? "q8" : bits == 16 ? "f16" : "f32"
        let url = URL(fileURLWithPath: input)
        var isDirectory: ObjCBool = false
        _ = FileManager.default.fileExists(atPath: input, isDirectory: &isDirectory)
        if isDirectory.boolValue {
            let folder = url.standardizedFileURL
            return folder.deletingLastPathComponent().appendingPathComponent("\(folder.lastPathComponent)-\(suffix).fbm").path
        }
        var stem = url.lastPathComponent
        for ext in [".safetensors.index.json", ".index.json", ".safetensors"] where stem.hasSuffix(ext) {
            stem = String(stem.dropLast(ext.count))
            break
        }
        return url.deletingLastPathComponent().appendingPathComponent("\(stem)-\(suffix).fbm").path
    }

    public static func convert(input: String, output: String, options: ConversionOptions,
                               progress: ((ConversionProgress) -> Void)? = nil) throws -> ConversionSummary {
        try options.validate()
        let start = Date()
        let checkpoint = try Checkpoint(input: input)
        let plan: ModelPlan
        do { plan = try ModelPlan(checkpoint: checkpoint) } catch let e as FireboltError { throw e.inFile(input) }

        func sourceName(_ t: PlannedTensor) -> String? {
            switch t.source {
            case .copy(let n), .rows(let n, _, _): return n
            case .s4Taps: return nil
            }
        }
        let types = plan.tensors.map { options.storageType(for: $0, sourceName: sourceName($0)) }
        let sourceBytes = try plan.tensors.map { t -> Int in
            guard let n = sourceName(t) else { return 0 }
            let s = try checkpoint.tensor(n)
            if case .rows(_, let b, let e) = t.source { return (s.end - s.begin) * (e - b) / max(1, s.shape.first ?? 1) }
            return s.end - s.begin
        }
        let totalBytes = sourceBytes.reduce(0, +)

        let quantization = QuantizationInfo(bits: options.bits, visionBits: options.visionBits ?? options.bits,
                                            groupSize: options.groupSize, compression: options.compression, kept: options.keep)
        let writer = try FBMWriter(destination: output, generator: generator, config: plan.config,
                                   tokenizer: checkpoint.tokenizerJSON, chatTemplate: plan.chatTemplate,
                                   preprocessor: plan.preprocessor, quantization: quantization,
                                   tensors: zip(plan.tensors, types).map { ($0.name, $1, $0.shape) },
                                   compression: options.compression, zstdLevel: options.zstdLevel, threads: options.threads,
                                   protecting: checkpoint.sourcePaths)
        var parts: [ModelPart: PartSummary] = [:]
        var bytesDone = 0
        let pool = WorkSplitter(threads: options.threads)
        // Compression, checksums and writes of tensor i overlap the reading and quantizing of tensor i + 1.
        let background = BackgroundWriter(writer)
        do {
            for (index, (t, type)) in zip(plan.tensors, types).enumerated() {
                progress?(ConversionProgress(tensorsDone: index, tensorsTotal: plan.tensors.count, bytesDone: bytesDone,
                                             bytesTotal: totalBytes, elapsed: Date().timeIntervalSince(start), currentTensor: t.name))
                if index + 1 < plan.tensors.count, let next = sourceName(plan.tensors[index + 1]),
                   let file = try? checkpoint.file(for: next), let tensor = try? file.tensor(next) {
                    file.prefetch(tensor)
                }
                let values = try sourceValues(t, checkpoint: checkpoint)
                try checkFinite(values, count: t.shape.reduce(1, *), tensor: sourceName(t) ?? t.name)
                let encoded = encode(values, shape: t.shape, as: type, pool: pool)
                if let n = sourceName(t) { checkpoint.files.forEach { f in if let s = try? f.tensor(n) { f.release(s) } } }
                try background.submit(index: index, encoded)

                var part = parts[t.part] ?? PartSummary()
                part.tensors += 1
                part.parameters += t.shape.reduce(1, *)
                part.rawBytes += UInt64(encoded.bytes.count)
                part.sumSquaredError += encoded.sumSquaredError
                part.sumSquares += encoded.sumSquares
                if encoded.sumSquares > 0 {
                    part.maxRelativeRMS = max(part.maxRelativeRMS, (encoded.sumSquaredError / encoded.sumSquares).squareRoot())
                }
                parts[t.part] = part
                bytesDone += sourceBytes[index]
            }
            let (size, stored) = try background.finish()
            for (index, t) in plan.tensors.enumerated() { parts[t.part]!.storedBytes += stored[index] ?? 0 }
            progress?(ConversionProgress(tensorsDone: plan.tensors.count, tensorsTotal: plan.tensors.count, bytesDone: totalBytes,
                                         bytesTotal: totalBytes, elapsed: Date().timeIntervalSince(start), currentTensor: ""))
            return ConversionSummary(output: output, inputBytes: totalBytes, outputBytes: size,
                                     seconds: Date().timeIntervalSince(start), parts: parts,
                                     tensorTypes: Dictionary(uniqueKeysWithValues: zip(plan.tensors.map(\.name), types)))
        } catch {
            background.abort()
            throw error
        }
    }

    /// A NaN or infinite weight makes every answer meaningless (a NaN embedding row emitted token 0 forever), so
    /// the checkpoint is refused, naming the tensor and the first bad position.
    static func checkFinite(_ values: FloatBuffer, count: Int, tensor: String) throws {
        let p = values.pointer
        for i in 0..<count where !p[i].isFinite {
            throw FireboltError("tensor \(tensor): value \(p[i]) at flat index \(i) is not finite: the checkpoint is damaged")
        }
    }

    /// The planned tensor's values as f32, in its planned shape.
    static func sourceValues(_ t: PlannedTensor, checkpoint: Checkpoint) throws -> FloatBuffer {
        let count = t.shape.reduce(1, *)
        switch t.source {
        case .copy(let name):
            let file = try checkpoint.file(for: name)
            let source = try file.tensor(name)
            guard source.elementCount == count else { throw FireboltError("tensor \(name): cannot reshape \(source.shape) to \(t.shape)") }
            let buffer = FloatBuffer(count: count, zeroed: false)
            try file.readFloats(source, into: buffer.pointer)
            return buffer
        case .rows(let name, let begin, let end):
            let file = try checkpoint.file(for: name)
            let source = try file.tensor(name)
            let all = try file.floatArray(name)
            let rowLength = source.shape.count == 2 ? source.shape[1] : 1
            let buffer = FloatBuffer(count: count)
            all.withUnsafeBufferPointer { buffer.pointer.update(from: $0.baseAddress! + begin * rowLength, count: (end - begin) * rowLength) }
            return buffer
        case .s4Taps(let prefix, let length):
            let taps = try S4Kernel.taps(try S4Parameters(checkpoint: checkpoint, prefix: prefix), length: length)
            guard taps.count == count else { throw FireboltError("S4 taps: computed \(taps.count) values, expected \(count)") }
            let buffer = FloatBuffer(count: count)
            for i in 0..<count { buffer.pointer[i] = Float(taps[i]) }
            return buffer
        }
    }

    struct Encoded {
        var bytes: UnsafeRawBufferPointer { UnsafeRawBufferPointer(start: storage.pointer, count: byteCount) }
        let storage: ByteBuffer
        let byteCount: Int
        var sumSquaredError = 0.0
        var sumSquares = 0.0
    }

    /// f32 values → the stored layout, with the reconstruction error measured on the way.
    static func encode(_ values: FloatBuffer, shape: [Int], as type: TensorType, pool: WorkSplitter) -> Encoded {
        let count = values.count
        switch type {
        case .f32:
            let out = ByteBuffer(count: count * 4)
            out.pointer.copyMemory(from: values.pointer, byteCount: count * 4)
            return Encoded(storage: out, byteCount: count * 4)
        case .f16:
            let out = ByteBuffer(count: count * 2)
            let halves = out.pointer.assumingMemoryBound(to: UInt16.self)
            fb_f32_to_f16_array(values.pointer, halves, count)
            var e = Encoded(storage: out, byteCount: count * 2)
            let back = FloatBuffer(count: count)
            fb_f16_to_f32_array(halves, back.pointer, count)
            (e.sumSquaredError, e.sumSquares) = errorSums(values.pointer, back.pointer, count)
            return e
        case .q8, .q4:
            let rows = shape[0], cols = shape[1]
            let quantBytes = fb_quant_bytes(type.kernelType, rows, cols)
            let total = quantBytes + fb_scale_bytes(type.kernelType, rows, cols)
            let out = ByteBuffer(count: total)
            let quants = out.pointer
            let scales = (out.pointer + quantBytes).assumingMemoryBound(to: UInt16.self)
            let sums = pool.map(count: rows) { begin, end -> (Double, Double) in
                if type == .q8 {
                    fb_quantize_q8(values.pointer, cols, begin, end, quants.assumingMemoryBound(to: Int8.self), scales)
                } else {
                    fb_quantize_q4(values.pointer, cols, begin, end, quants.assumingMemoryBound(to: UInt8.self), scales)
                }
                var m = fb_matrix(type: type.kernelType, rows: rows, cols: cols, data: UnsafeRawPointer(quants), scales: scales)
                let row = UnsafeMutablePointer<Float>.allocate(capacity: cols)
                defer { row.deallocate() }
                var err = 0.0, sq = 0.0
                for r in begin..<end {
                    fb_matrix_row(&m, r, row)
                    let (a, b) = errorSums(values.pointer + r * cols, row, cols)
                    err += a
                    sq += b
                }
                return (err, sq)
            }
            var e = Encoded(storage: out, byteCount: total)
            e.sumSquaredError = sums.reduce(0) { $0 + $1.0 }
            e.sumSquares = sums.reduce(0) { $0 + $1.1 }
            return e
        }
    }

    static func errorSums(_ a: UnsafePointer<Float>, _ b: UnsafePointer<Float>, _ n: Int) -> (Double, Double) {
        var err: Float = 0, sq: Float = 0
        var errTotal = 0.0, sqTotal = 0.0
        // Float partial sums over short runs keep this fast; doubles across runs keep it accurate.
        var i = 0
        while i < n {
            let end = min(n, i + 256)
            err = 0; sq = 0
            while i < end {
                let d = a[i] - b[i]
                err += d * d
                sq += a[i] * a[i]
                i += 1
            }
            errTotal += Double(err)
            sqTotal += Double(sq)
        }
        return (errTotal, sqTotal)
    }
}

/// Runs an FBMWriter on its own serial queue, at most two encoded tensors ahead of the caller.
final class BackgroundWriter: @unchecked Sendable {
    private let writer: FBMWriter
    private let queue = DispatchQueue(label: "fbm-writer")
    private let slots = DispatchSemaphore(value: 2)
    private let lock = NSLock()
    private var failure: Error?
    private var stored: [Int: UInt64] = [:]

    init(_ writer: FBMWriter) { self.writer = writer }

    private func checkFailure() throws {
        lock.lock(); defer { lock.unlock() }
        if let failure { throw failure }
    }

    func submit(index: Int, _ encoded: FBMConverter.Encoded) throws {
        try checkFailure()
        slots.wait()
        queue.async { [self] in
            defer { slots.signal() }
            lock.lock(); let failed = failure != nil; lock.unlock()
            if failed { return }
            do {
                let size = try writer.writeTensor(index: index, raw: encoded.bytes)
                lock.lock(); stored[index] = size; lock.unlock()
            } catch {
                lock.lock(); failure = error; lock.unlock()
            }
        }
    }

    /// Waits for the queued tensors, then writes the header. Returns the file size and each tensor's stored size.
    func finish() throws -> (UInt64, [Int: UInt64]) {
        queue.sync {}
        try checkFailure()
        return (try writer.finish(), stored)
    }

    func abort() {
        queue.sync {}
        writer.abort()
    }
}

/// Writes an .fbm file in one pass: the data section first, at an offset reserved for the largest header the
/// tensor table can need, then the real header (shorter or equal) and the prefix. Atomic (temp file + rename).
final class FBMWriter {
    private let file: AtomicFileWriter
    private var header: FBMHeader
    private let compression: Compression
    private let dataOffset: UInt64
    private var nextOffset: UInt64 = 0
    private let context: OpaquePointer
    private var compressed = ByteBuffer(count: 0)
    private let zstdLevel: Int

    init(destination: String, generator: String, config: ModelConfig, tokenizer: String, chatTemplate: String?,
         preprocessor: PreprocessorConfig?, quantization: QuantizationInfo, tensors: [(String, TensorType, [Int])],
         compression: Compression, zstdLevel: Int, threads: Int, protecting inputs: [String]) throws {
        let widest: UInt64 = 999_999_999_999_999  // a data section under 1 PB: no real number is wider
        let rows = tensors.map { name, type, shape in
            TensorInfo(name: name, type: type, shape: shape, groupSize: type.isQuantized ? Int(FB_GROUP) : nil, offset: widest,
                       storedBytes: widest, rawBytes: type.rawBytes(shape: shape) ?? 0, compression: compression,
                       xxh64: String(repeating: "0", count: 16))
        }
        header = FBMHeader(generator: generator, config: config, tokenizer: tokenizer, chatTemplate: chatTemplate,
                           preprocessor: preprocessor, quantization: quantization, tensors: rows)
        let reserved = UInt64(try header.encoded().count)
        dataOffset = (UInt64(FBM.fixedHeaderSize) + reserved + FBM.alignment - 1) / FBM.alignment * FBM.alignment
        self.compression = compression
        self.zstdLevel = zstdLevel
        guard let cctx = ZSTD_createCCtx() else { throw FireboltError("zstd: cannot create a compression context") }
        context = cctx
        // One frame per tensor, compressed by zstd's own worker threads (a no-op where libzstd lacks them).
        ZSTD_CCtx_setParameter(cctx, ZSTD_c_compressionLevel, Int32(zstdLevel))
        if threads > 1 { ZSTD_CCtx_setParameter(cctx, ZSTD_c_nbWorkers, Int32(threads)) }
        file = try AtomicFileWriter(destination: destination, protecting: inputs)
    }

    deinit { ZSTD_freeCCtx(context) }

    /// Compresses (when asked and when it pays), checksums and writes one tensor; returns the stored size.
    func writeTensor(index: Int, raw: UnsafeRawBufferPointer) throws -> UInt64 {
        var stored = raw
        var method = Compression.none
        if compression == .zstd {
            let bound = ZSTD_compressBound(raw.count)
            if compressed.count < bound { compressed = ByteBuffer(count: bound) }
            let n = ZSTD_compress2(context, compressed.pointer, bound, raw.baseAddress, raw.count)
            if ZSTD_isError(n) != 0 {
                throw FireboltError("zstd compression failed for \(header.tensors[index].name): \(String(cString: ZSTD_getErrorName(n)))")
            }
            if n < raw.count {  // incompressible tensors stay raw: same bytes, no decompression cost at load
                stored = UnsafeRawBufferPointer(start: compressed.pointer, count: n)
                method = .zstd
            }
        }
        let checksum = fb_xxh64(stored.baseAddress, stored.count, 0)
        try file.write(stored, at: dataOffset + nextOffset)
        header.tensors[index].offset = nextOffset
        header.tensors[index].storedBytes = UInt64(stored.count)
        header.tensors[index].compression = method
        header.tensors[index].xxh64 = hex16(checksum)
        nextOffset = (nextOffset + UInt64(stored.count) + FBM.alignment - 1) / FBM.alignment * FBM.alignment
        return UInt64(stored.count)
    }

    /// Writes the header and prefix, syncs and renames. Returns the file size.
    func finish() throws -> UInt64 {
        let json = try header.encoded()
        guard UInt64(FBM.fixedHeaderSize + json.count) <= dataOffset else {
            throw FireboltError("internal error: the header outgrew its reserved space")
        }
        // The last tensor's padding belongs to the data section, so every tensor ends inside the file.
        let dataSize = nextOffset
        try file.setLength(dataOffset + dataSize)
        let checksum = json.withUnsafeBytes { fb_xxh64($0.baseAddress, $0.count, 0) }
        let prefix = FBMPrefix(headerSize: UInt64(json.count), headerXXH64: checksum, dataOffset: dataOffset, dataSize: dataSize)
        try prefix.encoded().withUnsafeBytes { try file.write($0, at: 0) }
        try json.withUnsafeBytes { try file.write($0, at: UInt64(FBM.fixedHeaderSize)) }
        try file.finish()
        return dataOffset + dataSize
    }

    func abort() { file.abort() }
}
