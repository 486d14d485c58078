import CZstd
import Foundation
import Kernels
import Runtime
#if canImport(Glibc)
import Glibc
#endif

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
