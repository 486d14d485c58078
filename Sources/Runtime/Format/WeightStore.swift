import CZstd
import Foundation
import Kernels
#if canImport(Glibc)
import Glibc
#endif

/// A read-only private mapping of a whole file.
final class MemoryMapping {
    let base: UnsafeMutableRawPointer
    let length: Int

    init(fd: Int32, length: Int, path: String) throws {
        guard let p = mmap(nil, length, PROT_READ, MAP_PRIVATE, fd, 0), p != MAP_FAILED else {
            throw FireboltError("mmap failed: \(String(cString: strerror(errno)))", file: path)
        }
        base = p
        self.length = length
        MappedFiles.register(base: p, length: length, path: path)
    }

    deinit {
        MappedFiles.unregister(base: base)
        munmap(base, length)
    }
}

/// One anonymous mapping that holds every loaded tensor, each at a 64-byte aligned offset (one region rather than a
/// heap buffer per tensor), on a 2 MiB boundary and asking for transparent huge pages (madvise(MADV_HUGEPAGE); a hint,
/// ignored where the kernel has them off). Decode streams every weight once per token, and with 4 KiB pages it
/// takes a TLB miss, and the hardware prefetchers a restart, every 4 KiB: on the AVX-512 VNNI EPYC, LFM2-350M q4
/// decoded 14–21% faster at 1 thread and 12–32% at 2 (docs/performance.md). The first touch of a huge page can
/// be slower on a virtual machine whose host has not yet backed that memory (loading took 0.2–0.35 s longer in some
/// runs there, none in others). FB_HUGEPAGES=0 turns the hint off.
final class WeightArena {
    static let hugePage = 2 << 20
    let base: UnsafeMutableRawPointer
    private let mapped: UnsafeMutableRawPointer
    private let mappedBytes: Int

    /// Bytes a tensor of `bytes` takes in the arena (64-byte aligned slots).
    static func slot(_ bytes: Int) -> Int { (bytes + 63) & ~63 }

    init(byteCount requested: Int, path: String) throws {
        let byteCount = max(requested, 64)  // mmap refuses 0 bytes (a file of empty tensors)
        // Over-allocate by one huge page so that the region can start on a 2 MiB boundary.
        let bytes = (byteCount + WeightArena.hugePage - 1) / WeightArena.hugePage * WeightArena.hugePage + WeightArena.hugePage
        guard let p = mmap(nil, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0), p != MAP_FAILED else {
            throw FireboltError("cannot allocate \(byteCount) bytes for the weights: \(String(cString: strerror(errno)))", file: path)
        }
        mapped = p
        mappedBytes = bytes
        let aligned = (Int(bitPattern: p) + WeightArena.hugePage - 1) / WeightArena.hugePage * WeightArena.hugePage
        base = UnsafeMutableRawPointer(bitPattern: aligned)!
        if ProcessInfo.processInfo.environment["FB_HUGEPAGES"] != "0" {
            _ = madvise(base, byteCount, MADV_HUGEPAGE)  // a hint: fine if the kernel has huge pages off
        }
    }

    deinit { munmap(mapped, mappedBytes) }
}

/// Page-aligned scratch memory in its own mapping, so that freeing it gives it back to the system at once. The
/// loader's per-thread buffers (as large as the largest stored tensor of a thread's run) came from malloc before:
/// loading on 2 threads then raised the peak RSS of LFM2-350M q4 (512-token bench) from 256 to 270.5 MiB.
final class AlignedBufferStorage {
    let pointer: UnsafeMutableRawPointer
    let capacity: Int

    init(byteCount: Int) {
        capacity = max(byteCount, 64)
        guard let p = mmap(nil, capacity, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0), p != MAP_FAILED else {
            fatalError("out of memory allocating \(capacity) bytes")
        }
        pointer = p
    }

    deinit { munmap(pointer, capacity) }
}

struct AlignedBuffer {
    private var storage: AlignedBufferStorage
    init(byteCount: Int) { storage = AlignedBufferStorage(byteCount: byteCount) }
    var pointer: UnsafeMutableRawPointer { storage.pointer }

    mutating func reserve(_ byteCount: Int) {
        if byteCount > storage.capacity { storage = AlignedBufferStorage(byteCount: byteCount) }
    }
}

/// The loaded tensors, found by name and shape-checked by the model code that asks for them.
public final class WeightStore {
    public struct Entry {
        public let info: TensorInfo
        public let pointer: UnsafeRawPointer
    }

    private var entries: [String: Entry] = [:]
    private let owner: AnyObject  // the file's MemoryMapping (zero-copy) or the WeightArena the tensors were read into

    init(owner: AnyObject) { self.owner = owner }

    func add(_ info: TensorInfo, pointer: UnsafeRawPointer) {
        entries[info.name] = Entry(info: info, pointer: pointer)
    }

    public var names: [String] { entries.keys.sorted() }
    public var isMemoryMapped: Bool { owner is MemoryMapping }
    public var totalBytes: UInt64 { entries.values.reduce(0) { $0 + $1.info.rawBytes } }

    public func entry(_ name: String) throws -> Entry {
        guard let e = entries[name] else { throw FireboltError("model file has no tensor \(name)") }
        return e
    }

    /// A weight matrix [rows, cols] in whatever type it is stored, for the kernels.
    public func matrix(_ name: String, rows: Int, cols: Int) throws -> fb_matrix {
        let e = try entry(name)
        guard e.info.shape == [rows, cols] else {
            throw FireboltError("tensor \(name) has shape \(e.info.shape), expected [\(rows), \(cols)]")
        }
        var m = fb_matrix()
        m.type = e.info.type.kernelType
        m.rows = rows
        m.cols = cols
        m.data = e.pointer
        if e.info.type.isQuantized {
            m.scales = (e.pointer + fb_quant_bytes(m.type, rows, cols)).assumingMemoryBound(to: UInt16.self)
        }
        return m
    }

    /// A small tensor (norm weights, biases, conv taps...) as f32 values, checked against `shape`.
    public func floats(_ name: String, shape: [Int]) throws -> [Float] {
        let e = try entry(name)
        guard e.info.shape == shape else { throw FireboltError("tensor \(name) has shape \(e.info.shape), expected \(shape)") }
        let count = e.info.elementCount
        switch e.info.type {
        case .f32:
            return Array(UnsafeBufferPointer(start: e.pointer.assumingMemoryBound(to: Float.self), count: count))
        case .f16:
            var out = [Float](repeating: 0, count: count)
            fb_f16_to_f32_array(e.pointer.assumingMemoryBound(to: UInt16.self), &out, count)
            return out
        case .q8, .q4, .q4nl:
            var m = try matrix(name, rows: shape[0], cols: shape[1])
            var out = [Float](repeating: 0, count: count)
            out.withUnsafeMutableBufferPointer { buf in
                for r in 0..<shape[0] { fb_matrix_row(&m, r, buf.baseAddress! + r * shape[1]) }
            }
            return out
        }
    }
}

extension fb_matrix {
    /// Bytes a product reads from this matrix: its stored values and, when quantized, its scales.
    var storedBytes: Int { fb_quant_bytes(type, rows, cols) + fb_scale_bytes(type, rows, cols) }
}
