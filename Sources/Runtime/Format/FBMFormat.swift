import Foundation
import Kernels

// The .fbm container: constants, the header, the tensor table, and their validation. formats/fbm.md is the
// normative description; keep the two in step. The reader (FBMFile) and the converter's writer both use this.

public enum FBM {
    /// 8 bytes, PNG-style: a non-ASCII first byte, the name, and CR LF / ^Z / LF to catch text-mode mangling.
    public static let magic: [UInt8] = [0x89, 0x46, 0x42, 0x4D, 0x0D, 0x0A, 0x1A, 0x0A]  // \x89 F B M \r \n ^Z \n
    public static let version: UInt32 = 1
    public static let fixedHeaderSize = 64
    public static let alignment: UInt64 = 64
    /// A header larger than this is rejected before it is read (real ones are a few MB, mostly the tokenizer).
    public static let maxHeaderSize: UInt64 = 256 << 20
}

public enum TensorType: String, Codable, CaseIterable {
    /// q4nl: q4's bytes with the nibble indexing a non-uniform grid (fb_q4nl_levels); formats/fbm.md.
    case f32, f16, q8, q4, q4nl

    public var kernelType: fb_dtype {
        switch self {
        case .f32: return FB_F32
        case .f16: return FB_F16
        case .q8: return FB_Q8
        case .q4: return FB_Q4
        case .q4nl: return FB_Q4NL
        }
    }

    public var isQuantized: Bool { self == .q8 || self == .q4 || self == .q4nl }

    /// Bits per weight including scales (group of 32, f16 scale).
    public var bitsPerWeight: Double {
        switch self {
        case .f32: return 32
        case .f16: return 16
        case .q8: return 8.5
        case .q4, .q4nl: return 4.5
        }
    }

    /// Bytes of the raw (uncompressed) payload for a tensor of this type and shape, or nil if the shape does not
    /// fit the type (quantized types need a 2-D shape whose last dimension is a multiple of the group size).
    public func rawBytes(shape: [Int]) -> UInt64? {
        guard shape.allSatisfy({ $0 > 0 }) else { return nil }
        var count: UInt64 = 1
        for d in shape {
            let (product, overflow) = count.multipliedReportingOverflow(by: UInt64(d))
            if overflow || product > (1 << 40) { return nil }
            count = product
        }
        switch self {
        case .f32: return count * 4
        case .f16: return count * 2
        case .q8, .q4, .q4nl:
            guard shape.count == 2, shape[1] % Int(FB_GROUP) == 0 else { return nil }
            return UInt64(fb_quant_bytes(kernelType, shape[0], shape[1]) + fb_scale_bytes(kernelType, shape[0], shape[1]))
        }
    }
}

public enum Compression: String, Codable {
    case none, zstd
}

/// One row of the tensor table.
public struct TensorInfo: Codable, Equatable {
    public var name: String
    public var type: TensorType
    public var shape: [Int]
    /// Weights per scale for q8 / q4 (32); absent for f32 / f16.
    public var groupSize: Int?
    /// From the start of the data section; a multiple of 64.
    public var offset: UInt64
    public var storedBytes: UInt64
    public var rawBytes: UInt64
    public var compression: Compression
    /// XXH64 (seed 0) of the stored bytes, 16 lowercase hex digits.
    public var xxh64: String

    enum CodingKeys: String, CodingKey {
        case name, type, shape, groupSize = "group_size", offset, storedBytes = "stored_bytes", rawBytes = "raw_bytes"
        case compression, xxh64
    }

    public init(name: String, type: TensorType, shape: [Int], groupSize: Int?, offset: UInt64, storedBytes: UInt64,
                rawBytes: UInt64, compression: Compression, xxh64: String) {
        self.name = name; self.type = type; self.shape = shape; self.groupSize = groupSize; self.offset = offset
        self.storedBytes = storedBytes; self.rawBytes = rawBytes; self.compression = compression; self.xxh64 = xxh64
    }

    public var elementCount: Int { shape.reduce(1, *) }
}

/// How the converter quantized the model (informational; each tensor's own type is authoritative).
public struct QuantizationInfo: Codable, Equatable {
    public var bits: Int
    public var visionBits: Int
    public var groupSize: Int
    public var compression: Compression
    public var kept: [String]

    enum CodingKeys: String, CodingKey {
        case bits, visionBits = "vision_bits", groupSize = "group_size", compression, kept
    }

    public init(bits: Int, visionBits: Int, groupSize: Int, compression: Compression, kept: [String]) {
        self.bits = bits; self.visionBits = visionBits; self.groupSize = groupSize; self.compression = compression
        self.kept = kept
    }
}

/// The JSON header that follows the fixed 64-byte prefix.
public struct FBMHeader: Codable, Equatable {
    public var format: String
    public var version: Int
    public var generator: String
    public var config: ModelConfig
    /// The checkpoint's tokenizer.json, verbatim.
    public var tokenizer: String
    /// The checkpoint's Jinja chat template, verbatim (informational: the runtime builds docs/model.md §4's prompt).
    public var chatTemplate: String?
    public var preprocessor: PreprocessorConfig?
    public var quantization: QuantizationInfo
    public var tensors: [TensorInfo]

    enum CodingKeys: String, CodingKey {
        case format, version, generator, config, tokenizer, chatTemplate = "chat_template", preprocessor
        case quantization, tensors
    }

    public init(generator: String, config: ModelConfig, tokenizer: String, chatTemplate: String?,
                preprocessor: PreprocessorConfig?, quantization: QuantizationInfo, tensors: [TensorInfo]) {
        self.format = "fbm"; self.version = Int(FBM.version); self.generator = generator; self.config = config
        self.tokenizer = tokenizer; self.chatTemplate = chatTemplate; self.preprocessor = preprocessor
        self.quantization = quantization; self.tensors = tensors
    }

    public func encoded() throws -> Data {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        return try encoder.encode(self)
    }

    /// Checks every tensor row against the data section: alignment, bounds, overlaps, sizes, names.
    public func validateTable(dataSize: UInt64) throws {
        var seen = Set<String>()
        for t in tensors {
            func bad(_ what: String) -> FireboltError { FireboltError("tensor \(t.name): \(what)") }
            guard seen.insert(t.name).inserted else { throw bad("appears twice in the tensor table") }
            guard let expected = t.type.rawBytes(shape: t.shape) else { throw bad("shape \(t.shape) is not valid for type \(t.type.rawValue)") }
            guard t.rawBytes == expected else { throw bad("raw size \(t.rawBytes) bytes, but \(t.type.rawValue) \(t.shape) needs \(expected)") }
            if t.type.isQuantized, t.groupSize != Int(FB_GROUP) {
                throw bad("group size \(t.groupSize.map(String.init) ?? "missing") is not supported (this reader knows \(FB_GROUP))")
            }
            guard t.offset % FBM.alignment == 0 else { throw bad("offset \(t.offset) is not a multiple of \(FBM.alignment)") }
            let (end, overflow) = t.offset.addingReportingOverflow(t.storedBytes)
            guard !overflow, end <= dataSize else {
                throw bad("data \(t.offset)..<\(t.offset &+ t.storedBytes) lies outside the data section (\(dataSize) bytes): file truncated or corrupt")
            }
            if t.compression == .none, t.storedBytes != t.rawBytes {
                throw bad("stored uncompressed but stored size \(t.storedBytes) differs from raw size \(t.rawBytes)")
            }
            guard t.xxh64.count == 16, UInt64(t.xxh64, radix: 16) != nil else { throw bad("checksum '\(t.xxh64)' is not 16 hex digits") }
        }
        let sorted = tensors.sorted { $0.offset < $1.offset }
        for (a, b) in zip(sorted, sorted.dropFirst()) where a.offset + a.storedBytes > b.offset {
            throw FireboltError("tensors \(a.name) and \(b.name) overlap in the data section")
        }
    }
}

/// The fixed 64-byte prefix, little-endian.
public struct FBMPrefix: Equatable {
    public var version: UInt32
    public var flags: UInt32
    public var headerSize: UInt64
    public var headerXXH64: UInt64
    public var dataOffset: UInt64
    public var dataSize: UInt64

    public init(version: UInt32 = FBM.version, flags: UInt32 = 0, headerSize: UInt64, headerXXH64: UInt64,
                dataOffset: UInt64, dataSize: UInt64) {
        self.version = version; self.flags = flags; self.headerSize = headerSize; self.headerXXH64 = headerXXH64
        self.dataOffset = dataOffset; self.dataSize = dataSize
    }

    public func encoded() -> Data {
        var d = Data(FBM.magic)
        func put<T: FixedWidthInteger>(_ v: T) { withUnsafeBytes(of: v.littleEndian) { d.append(contentsOf: $0) } }
        put(version); put(flags); put(headerSize); put(headerXXH64); put(dataOffset); put(dataSize)
        d.append(Data(count: FBM.fixedHeaderSize - d.count))
        return d
    }

    /// Parses and checks the prefix against the real file size.
    public init(bytes: UnsafeRawBufferPointer, fileSize: UInt64) throws {
        guard fileSize >= UInt64(FBM.fixedHeaderSize), bytes.count >= FBM.fixedHeaderSize else {
            throw FireboltError("file is too short to be an .fbm model (\(fileSize) bytes)")
        }
        guard Array(bytes[0..<8]) == FBM.magic else { throw FireboltError("not an .fbm model file (bad magic)") }
        func get<T: FixedWidthInteger>(_ offset: Int, _: T.Type) -> T {
            var v: T = 0
            withUnsafeMutableBytes(of: &v) { $0.copyMemory(from: UnsafeRawBufferPointer(rebasing: bytes[offset..<offset + MemoryLayout<T>.size])) }
            return T(littleEndian: v)
        }
        version = get(8, UInt32.self)
        flags = get(12, UInt32.self)
        headerSize = get(16, UInt64.self)
        headerXXH64 = get(24, UInt64.self)
        dataOffset = get(32, UInt64.self)
        dataSize = get(40, UInt64.self)
        guard version == FBM.version else {
            throw FireboltError("unsupported .fbm format version \(version) (this reader knows version \(FBM.version))")
        }
        guard headerSize <= FBM.maxHeaderSize else { throw FireboltError("header size \(headerSize) bytes is implausible (corrupt file)") }
        guard dataOffset % FBM.alignment == 0, dataOffset >= UInt64(FBM.fixedHeaderSize) + headerSize else {
            throw FireboltError("data offset \(dataOffset) is inconsistent with the header size \(headerSize) (corrupt file)")
        }
        let (end, overflow) = dataOffset.addingReportingOverflow(dataSize)
        guard !overflow, end <= fileSize else {
            throw FireboltError("file is truncated: it has \(fileSize) bytes, the header promises \(end)")
        }
        guard end == fileSize else {
            throw FireboltError("file has \(fileSize - end) unexpected bytes after the data section (corrupt file)")
        }
    }
}

public func hex16(_ v: UInt64) -> String {
    let s = String(v, radix: 16)
    return String(repeating: "0", count: 16 - s.count) + s
}
