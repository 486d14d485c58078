import CommandLineKit
import Converter
import Foundation
import Runtime

extension ProgressBar {
    /// The converter's progress: tensors and bytes done, and the time left.
    func update(_ p: ConversionProgress) {
        let fraction = p.bytesTotal > 0 ? Double(p.bytesDone) / Double(p.bytesTotal) : Double(p.tensorsDone) / Double(max(1, p.tensorsTotal))
        let eta = fraction > 0.02 ? p.elapsed / fraction - p.elapsed : .nan
        update(fraction: fraction, text: String(format: "%d/%d tensors  %@/%@  %@", p.tensorsDone, p.tensorsTotal,
                                                Format.bytes(UInt64(p.bytesDone)), Format.bytes(UInt64(p.bytesTotal)),
                                                eta.isFinite ? String(format: "ETA %.0fs", eta) : "ETA --"))
    }
}

enum Format {
    static func bytes(_ n: UInt64) -> String {
        let v = Double(n)
        let kib = 1024.0, mib = kib * 1024, gib = mib * 1024
        if v >= gib { return String(format: "%.2f GiB", v / gib) }
        if v >= mib { return String(format: "%.1f MiB", v / mib) }
        if v >= kib { return String(format: "%.1f KiB", v / kib) }
        return "\(n) B"
    }
}

enum ConversionReport {
    static func text(_ s: ConversionSummary) -> String {
        var lines = ["wrote \(s.output): \(Format.bytes(s.outputBytes)) from \(Format.bytes(UInt64(s.inputBytes))) of input in " +
                     String(format: "%.2f s (%.0f MB/s)", s.seconds, Double(s.inputBytes) / 1e6 / max(s.seconds, 1e-9))]
        lines.append("part         tensors   parameters       raw      stored   ratio   rel. RMS err   max rel. RMS")
        for part in ModelPart.allCases {
            guard let p = s.parts[part] else { continue }
            lines.append(part.rawValue.padding(toLength: 10, withPad: " ", startingAt: 0) + String(format: " %9d %12d %9@ %11@ %6.2fx %14.5f %14.5f", p.tensors, p.parameters,
                                Format.bytes(p.rawBytes) as NSString, Format.bytes(p.storedBytes) as NSString,
                                Double(p.rawBytes) / Double(max(p.storedBytes, 1)), p.relativeRMS, p.maxRelativeRMS))
        }
        let raw = s.parts.values.reduce(UInt64(0)) { $0 + $1.rawBytes }
        let stored = s.parts.values.reduce(UInt64(0)) { $0 + $1.storedBytes }
        lines.append(String(format: "compression: %.3fx (raw %@ → stored %@)", Double(raw) / Double(max(stored, 1)),
                            Format.bytes(raw) as NSString, Format.bytes(stored) as NSString))
        lines.append("peak RSS: \(Format.bytes(ProcessMemory.peakResidentBytes))")
        return lines.joined(separator: "\n")
    }
}

enum Inspector {
    static func text(_ f: FBMFile, verified: Bool) -> String {
        let h = f.header, c = h.config
        var lines: [String] = []
        lines.append("file: \(f.path) (\(Format.bytes(f.fileSize)))")
        lines.append("format: fbm version \(f.prefix.version), header \(f.prefix.headerSize) bytes, data at \(f.prefix.dataOffset), \(h.generator)")
        lines.append("checksums: " + (verified ? "all \(h.tensors.count) tensors verified" : "not verified"))
        lines.append("architecture: \(c.architecture)")
        let t = c.text
        lines.append("text: vocab \(t.vocabSize), hidden \(t.hiddenSize), \(t.numHiddenLayers) layers " +
                     "(attention at \(t.layerTypes.indices.filter { t.isAttention(layer: $0) }.map(String.init).joined(separator: ","))), " +
                     "heads \(t.numAttentionHeads)/\(t.numKeyValueHeads) × \(t.headDim), MLP \(t.intermediateSize), conv \(t.convKernelSize), " +
                     "eps \(t.normEps), rope θ \(t.ropeTheta)")
        if let v = c.vision {
            lines.append("vision: hidden \(v.hiddenSize), \(v.numHiddenLayers) layers, \(v.numAttentionHeads) heads, MLP \(v.intermediateSize), " +
                         "image \(v.imageSize), patch \(v.patchSize), eps \(v.layerNormEps), \(v.hiddenAct)")
        }
        if let m = c.cmm {
            lines.append("cmm: text \(m.textDim), vision \(m.visionDim), \(m.numHeads) heads × \(m.headDim), top-\(m.topK) of \(m.numGrids), " +
                         "FFN \(m.ffnDim), S4 taps \(m.s4Taps)")
        }
        if let p = h.preprocessor {
            lines.append("image preprocessing: \(p.width)×\(p.height), resample \(p.resample), rescale \(p.rescaleFactor), mean \(p.imageMean), std \(p.imageStd)")
        }
        let s = c.specialTokens
        lines.append("special tokens: bos \(s.bos.map(String.init) ?? "-"), eos \(s.eos), pad \(s.pad.map(String.init) ?? "-"), image \(s.image.map(String.init) ?? "-")")
        lines.append("tokenizer: \(h.tokenizer.utf8.count) bytes of tokenizer.json; chat template: \(h.chatTemplate == nil ? "none" : "\(h.chatTemplate!.count) chars")")
        let q = h.quantization
        lines.append("quantization: bits \(q.bits), vision bits \(q.visionBits), group \(q.groupSize), compression \(q.compression.rawValue)" +
                     (q.kept.isEmpty ? "" : ", kept \(q.kept)"))
        lines.append("")
        let nameWidth = min(64, h.tensors.map(\.name.count).max() ?? 10)
        lines.append("name".padding(toLength: nameWidth, withPad: " ", startingAt: 0) +
                     "  type  shape              offset        stored         raw  comp  xxh64")
        for t in h.tensors {
            let shape = "[" + t.shape.map(String.init).joined(separator: ", ") + "]"
            lines.append(t.name.padding(toLength: nameWidth, withPad: " ", startingAt: 0) + "  " +
                         t.type.rawValue.padding(toLength: 4, withPad: " ", startingAt: 0) + "  " +
                         shape.padding(toLength: 16, withPad: " ", startingAt: 0) +
                         String(format: " %10llu  %10llu  %10llu  ", t.offset, t.storedBytes, t.rawBytes) +
                         t.compression.rawValue.padding(toLength: 4, withPad: " ", startingAt: 0) + "  " + t.xxh64)
        }
        let byType = Dictionary(grouping: h.tensors, by: \.type)
        lines.append("")
        lines.append("totals: " + TensorType.allCases.compactMap { type in
            guard let ts = byType[type] else { return nil }
            return "\(type.rawValue) \(ts.count) tensors \(Format.bytes(ts.reduce(0) { $0 + $1.rawBytes }))"
        }.joined(separator: ", "))
        return lines.joined(separator: "\n")
    }
}
