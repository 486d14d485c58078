import CZstd
import Foundation
import Kernels
import Runtime
#if canImport(Glibc)
import Glibc
#endif

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
        case .q8, .q4, .q4nl:
            let rows = shape[0], cols = shape[1]
            let quantBytes = fb_quant_bytes(type.kernelType, rows, cols)
            let total = quantBytes + fb_scale_bytes(type.kernelType, rows, cols)
            let out = ByteBuffer(count: total)
            let quants = out.pointer
            let scales = (out.pointer + quantBytes).assumingMemoryBound(to: UInt16.self)
            let sums = pool.map(count: rows) { begin, end -> (Double, Double) in
                switch type {
                case .q8: fb_quantize_q8(values.pointer, cols, begin, end, quants.assumingMemoryBound(to: Int8.self), scales)
                case .q4nl: fb_quantize_q4nl(values.pointer, cols, begin, end, quants.assumingMemoryBound(to: UInt8.self), scales)
                default: fb_quantize_q4(values.pointer, cols, begin, end, quants.assumingMemoryBound(to: UInt8.self), scales)
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
