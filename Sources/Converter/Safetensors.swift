import Foundation
import Kernels
import Runtime
#if canImport(Glibc)
import Glibc
#endif

/// A safetensors file, memory-mapped and validated in full before any tensor is used:
/// header length within the file and a sane bound, valid JSON, known dtypes, offsets inside the data section,
/// no overlaps, shape × dtype size = byte length. Pages of a tensor can be released after use (`release`)
/// so converting a large checkpoint does not keep it resident.
public final class SafetensorsFile {
    public enum DType: String {
        case f32 = "F32", f16 = "F16", bf16 = "BF16", f64 = "F64", i64 = "I64", i32 = "I32", i16 = "I16", i8 = "I8"
        case u8 = "U8", bool = "BOOL"

        public var size: Int {
            switch self {
            case .f64, .i64: return 8
            case .f32, .i32: return 4
            case .f16, .bf16, .i16: return 2
            case .i8, .u8, .bool: return 1
            }
        }
    }

    public struct Tensor {
        public let name: String
        public let dtype: DType
        public let shape: [Int]
        /// Offsets within the data section.
        public let begin: Int
        public let end: Int
        public var elementCount: Int { shape.reduce(1, *) }
    }

    /// Headers above this are refused before parsing (real ones are well under 10 MB).
    public static let maxHeaderSize = 100 << 20

    public let path: String
    public let metadata: [String: String]
    private let tensorsByName: [String: Tensor]
    private let base: UnsafeMutableRawPointer?
    private let mappedLength: Int
    private let dataStart: Int

    public init(path: String) throws {
        self.path = path
        let (fd, size): (Int32, Int)
        do { (fd, size) = try InputFile.openRegular(path) } catch { throw FireboltError("cannot open: \(error)", file: path) }
        defer { close(fd) }
        guard size >= 8 else { throw FireboltError("not a safetensors file: only \(size) bytes, too short for the header length", file: path) }
        guard let p = mmap(nil, size, PROT_READ, MAP_PRIVATE, fd, 0), p != MAP_FAILED else {
            throw FireboltError("mmap failed: \(String(cString: strerror(errno)))", file: path)
        }
        base = p
        mappedLength = size
        MappedFiles.register(base: p, length: size, path: path)
        do {
            var headerLength: UInt64 = 0
            withUnsafeMutableBytes(of: &headerLength) { $0.copyMemory(from: UnsafeRawBufferPointer(start: p, count: 8)) }
            headerLength = UInt64(littleEndian: headerLength)
            guard headerLength <= UInt64(Self.maxHeaderSize) else {
                throw FireboltError("header length \(headerLength) is implausibly large (limit \(Self.maxHeaderSize) bytes): not a safetensors file or corrupt")
            }
            guard headerLength <= UInt64(size - 8) else {
                throw FireboltError("header length \(headerLength) runs past the end of the file (\(size) bytes): truncated or corrupt")
            }
            dataStart = 8 + Int(headerLength)
            let headerData = Data(bytes: p + 8, count: Int(headerLength))
            let json: Any
            do { json = try JSONSerialization.jsonObject(with: headerData) } catch {
                throw FireboltError("header is not valid JSON")
            }
            guard let object = json as? [String: Any] else { throw FireboltError("header is not a JSON object") }
            var meta: [String: String] = [:]
            var tensors: [String: Tensor] = [:]
            let dataSize = size - dataStart
            for (name, value) in object {
                if name == "__metadata__" {
                    if let m = value as? [String: Any] { for (k, v) in m { meta[k] = "\(v)" } }
                    continue
                }
                guard let entry = value as? [String: Any] else { throw FireboltError("tensor \(name): entry is not an object") }
                guard let dtypeName = entry["dtype"] as? String else { throw FireboltError("tensor \(name): missing dtype") }
                guard let dtype = DType(rawValue: dtypeName) else { throw FireboltError("tensor \(name): unknown dtype \(dtypeName)") }
                guard let shapeValues = entry["shape"] as? [Any] else { throw FireboltError("tensor \(name): missing shape") }
                var shape: [Int] = []
                for v in shapeValues {
                    guard let n = (v as? NSNumber)?.intValue, n >= 0, "\(v)" == "\(n)" else {
                        throw FireboltError("tensor \(name): shape \(shapeValues) is not a list of non-negative integers")
                    }
                    shape.append(n)
                }
                guard let offsets = entry["data_offsets"] as? [Any], offsets.count == 2,
                      let b = (offsets[0] as? NSNumber)?.intValue, let e = (offsets[1] as? NSNumber)?.intValue else {
                    throw FireboltError("tensor \(name): data_offsets must be two integers")
                }
                guard b >= 0, b <= e, e <= dataSize else {
                    throw FireboltError("tensor \(name): data_offsets [\(b), \(e)] lie outside the data section (\(dataSize) bytes)")
                }
                var count = 1
                for d in shape {
                    let (product, overflow) = count.multipliedReportingOverflow(by: d)
                    guard !overflow, product <= dataSize else { throw FireboltError("tensor \(name): shape \(shape) is larger than the file") }
                    count = product
                }
                guard count * dtype.size == e - b else {
                    throw FireboltError("tensor \(name): shape \(shape) of \(dtypeName) needs \(count * dtype.size) bytes, data_offsets give \(e - b)")
                }
                tensors[name] = Tensor(name: name, dtype: dtype, shape: shape, begin: b, end: e)
            }
            let sorted = tensors.values.filter { $0.end > $0.begin }.sorted { $0.begin < $1.begin }
            for (a, b) in zip(sorted, sorted.dropFirst()) where a.end > b.begin {
                throw FireboltError("tensors \(a.name) and \(b.name) overlap in the data section")
            }
            metadata = meta
            tensorsByName = tensors
        } catch let error as FireboltError {
            MappedFiles.unregister(base: p)
            munmap(p, size)
            throw error.inFile(path)
        }
        madvise(p, size, MADV_SEQUENTIAL)
        // Start reading the whole file into the page cache now: the pages enter our resident set only when a tensor
        // is used (and leave it again with `release`), but the disk works ahead of the quantizer.
        madvise(p, size, MADV_WILLNEED)
    }

    deinit {
        guard let base else { return }
        MappedFiles.unregister(base: base)
        munmap(base, mappedLength)
    }

    public func tensorNames() -> [String] { tensorsByName.keys.sorted() }
    public var tensors: [Tensor] { Array(tensorsByName.values) }
    public func has(_ name: String) -> Bool { tensorsByName[name] != nil }

    public func tensor(_ name: String) throws -> Tensor {
        guard let t = tensorsByName[name] else { throw FireboltError("missing tensor \(name)", file: path) }
        return t
    }

    public func shape(_ name: String) throws -> [Int] { try tensor(name).shape }

    /// The raw bytes of a tensor, pointing into the mapping.
    public func bytes(_ t: Tensor) -> UnsafeRawBufferPointer {
        UnsafeRawBufferPointer(start: base! + dataStart + t.begin, count: t.end - t.begin)
    }

    /// Converts a floating-point tensor into `out` (count = elementCount).
    public func readFloats(_ t: Tensor, into out: UnsafeMutablePointer<Float>) throws {
        let raw = bytes(t)
        let n = t.elementCount
        switch t.dtype {
        case .f32:
            // Data offsets need not be 4-byte aligned: copy bytes, not typed values.
            UnsafeMutableRawPointer(out).copyMemory(from: raw.baseAddress!, byteCount: n * 4)
        case .f16:
            fb_f16_to_f32_array(raw.baseAddress!.assumingMemoryBound(to: UInt16.self), out, n)
        case .bf16:
            fb_bf16_to_f32_array(raw.baseAddress!.assumingMemoryBound(to: UInt16.self), out, n)
        case .f64:
            for i in 0..<n { out[i] = Float(raw.loadUnaligned(fromByteOffset: i * 8, as: Double.self)) }
        default:
            throw FireboltError("tensor \(t.name): dtype \(t.dtype.rawValue) is not a floating-point type", file: path)
        }
    }

    public func floatArray(_ name: String) throws -> [Float] {
        let t = try tensor(name)
        var out = [Float](repeating: 0, count: t.elementCount)
        try out.withUnsafeMutableBufferPointer { try readFloats(t, into: $0.baseAddress!) }
        return out
    }

    public func doubleArray(_ name: String) throws -> [Double] {
        let t = try tensor(name)
        if t.dtype == .f64 {
            let raw = bytes(t)
            return (0..<t.elementCount).map { raw.loadUnaligned(fromByteOffset: $0 * 8, as: Double.self) }
        }
        return try floatArray(name).map(Double.init)
    }

    public func int64Array(_ name: String) throws -> [Int64] {
        let t = try tensor(name)
        let raw = bytes(t)
        switch t.dtype {
        case .i64: return (0..<t.elementCount).map { raw.loadUnaligned(fromByteOffset: $0 * 8, as: Int64.self) }
        case .i32: return (0..<t.elementCount).map { Int64(raw.loadUnaligned(fromByteOffset: $0 * 4, as: Int32.self)) }
        default: throw FireboltError("tensor \(name): dtype \(t.dtype.rawValue) is not an integer type", file: path)
        }
    }

    /// Asks the kernel to start reading this tensor's pages now (overlaps disk reads with work on another tensor).
    public func prefetch(_ t: Tensor) {
        guard let base, t.end > t.begin else { return }
        let pageSize = Int(sysconf(Int32(_SC_PAGESIZE)))
        let start = (dataStart + t.begin) / pageSize * pageSize
        madvise(base + start, min(mappedLength, dataStart + t.end) - start, MADV_WILLNEED)
    }

    /// Lets the kernel drop this tensor's pages from our resident set (they are file-backed and clean).
    public func release(_ t: Tensor) {
        guard let base, t.end > t.begin else { return }
        let pageSize = Int(sysconf(Int32(_SC_PAGESIZE)))
        let start = (dataStart + t.begin) / pageSize * pageSize
        let end = min(mappedLength, dataStart + t.end)
        madvise(base + start, end - start, MADV_DONTNEED)
    }
}
