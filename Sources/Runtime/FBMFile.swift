import CZstd
import Foundation
import Kernels
#if canImport(Glibc)
import Glibc
#endif

/// An opened .fbm model: prefix and header parsed and validated, no tensor data read yet.
/// `loadWeights` brings the tensors into memory — zero-copy from an mmap for uncompressed tensors,
/// decompressed into final 64-byte-aligned buffers otherwise (on several threads when given a `Parallel`).
public final class FBMFile {
    public let path: String
    public let prefix: FBMPrefix
    public let header: FBMHeader
    public let fileSize: UInt64
    private let fd: Int32

    public var config: ModelConfig { header.config }
    public var tensors: [TensorInfo] { header.tensors }

    public init(path: String) throws {
        self.path = path
        let (fd, size): (Int32, Int)
        do { (fd, size) = try InputFile.openRegular(path) } catch {
            throw FireboltError("cannot open model: \(error)", file: path)
        }
        self.fd = fd
        let fileSize = UInt64(size)
        self.fileSize = fileSize
        do {
            var prefixBytes = [UInt8](repeating: 0, count: FBM.fixedHeaderSize)
            let got = try Self.readFully(fd: fd, into: &prefixBytes, count: min(FBM.fixedHeaderSize, Int(fileSize)), at: 0)
            let prefix = try prefixBytes.withUnsafeBytes { try FBMPrefix(bytes: UnsafeRawBufferPointer(rebasing: $0[0..<got]), fileSize: fileSize) }
            self.prefix = prefix
            var headerBytes = [UInt8](repeating: 0, count: Int(prefix.headerSize))
            _ = try Self.readFully(fd: fd, into: &headerBytes, count: headerBytes.count, at: UInt64(FBM.fixedHeaderSize))
            let checksum = headerBytes.withUnsafeBytes { fb_xxh64($0.baseAddress, $0.count, 0) }
            guard checksum == prefix.headerXXH64 else {
                throw FireboltError("header checksum mismatch (stored \(hex16(prefix.headerXXH64)), computed \(hex16(checksum))): the file is corrupt")
            }
            do {
                header = try JSONDecoder().decode(FBMHeader.self, from: Data(headerBytes))
            } catch {
                throw FireboltError("header is not a valid .fbm header: \(Self.describe(decodingError: error))")
            }
            guard header.format == "fbm", header.version == Int(FBM.version) else {
                throw FireboltError("header declares format '\(header.format)' version \(header.version); expected fbm version \(FBM.version)")
            }
            try header.config.validate()
            if let vision = header.config.vision { try header.preprocessor?.validate(imageSize: vision.imageSize) }
            try header.validateTable(dataSize: prefix.dataSize)
        } catch let error as FireboltError {
            close(fd)
            throw error.inFile(path)
        } catch {
            close(fd)
            throw FireboltError("\(error)", file: path)
        }
    }

    deinit { close(fd) }

    public func tensor(named name: String) -> TensorInfo? { header.tensors.first { $0.name == name } }

    /// Reads every tensor's stored bytes and compares them with the table's XXH64.
    public func verifyChecksums() throws {
        var buffer = AlignedBuffer(byteCount: 0)
        for t in header.tensors {
            buffer.reserve(Int(t.storedBytes))
            try readStored(t, into: buffer.pointer)
            try checkChecksum(t, UnsafeRawPointer(buffer.pointer))
        }
    }

    /// Loads all tensors. `verify` checks each tensor's checksum as it is brought in. With `parallel`, compressed and
    /// copied tensors are read, checked and decompressed on its threads (each in its own contiguous run of tensors,
    /// of about equal bytes), which also spreads the first touch of the weight memory across them.
    public func loadWeights(verify: Bool = true, parallel: Parallel? = nil) throws -> WeightStore {
        if header.tensors.allSatisfy({ $0.compression == .none }) && !header.tensors.isEmpty {
            let mapping = try MemoryMapping(fd: fd, length: Int(fileSize), path: path)
            let store = WeightStore(owner: mapping)
            for t in header.tensors {
                let pointer = UnsafeRawPointer(mapping.base + Int(prefix.dataOffset + t.offset))
                if verify { try checkChecksum(t, pointer) }
                store.add(t, pointer: pointer)
            }
            return store
        }
        // Tensors read or decompressed from the file all live in one arena (see WeightArena).
        let tensors = header.tensors
        var offsets: [Int] = []
        offsets.reserveCapacity(tensors.count)
        var arenaBytes = 0
        for t in tensors {
            offsets.append(arenaBytes)
            arenaBytes += WeightArena.slot(Int(t.rawBytes))
        }
        let arena = try WeightArena(byteCount: arenaBytes, path: path)
        // Runs of tensors of about equal stored bytes, one per thread.
        let runs = parallel.map { max(1, min($0.threads, tensors.count)) } ?? 1
        let totalStored = max(1, tensors.reduce(0) { $0 + Int($1.storedBytes) })
        var bounds = [0]
        var stored = 0
        for (i, t) in tensors.enumerated() {
            stored += Int(t.storedBytes)
            if bounds.count < runs && stored * runs >= totalStored * bounds.count { bounds.append(i + 1) }
        }
        while bounds.count <= runs { bounds.append(tensors.count) }
        // Each run records its first failure (in its own slot); the earliest run's is the first failing tensor in
        // file order.
        let failures = UnsafeMutableBufferPointer<FireboltError?>.allocate(capacity: runs)
        failures.initialize(repeating: nil)
        defer {
            _ = failures.deinitialize()
            failures.deallocate()
        }
        func load(run: Int) {
            var scratch = AlignedBuffer(byteCount: 0)
            do {
                for i in bounds[run]..<bounds[run + 1] {
                    try bring(tensors[i], into: arena.base + offsets[i], scratch: &scratch, verify: verify)
                }
            } catch let error as FireboltError {
                failures[run] = error
            } catch {
                failures[run] = FireboltError("\(error)", file: path)
            }
        }
        if let parallel, runs > 1 {
            parallel.forEachIndexedChunk(runs, work: Int.max) { _, begin, end in
                for run in begin..<end { load(run: run) }
            }
        } else {
            load(run: 0)
        }
        if let failure = failures.lazy.compactMap({ $0 }).first { throw failure }
        let store = WeightStore(owner: arena)
        for (i, t) in tensors.enumerated() { store.add(t, pointer: UnsafeRawPointer(arena.base + offsets[i])) }
        return store
    }

    /// Reads one tensor into `destination` (rawBytes long): as stored, or through `scratch` and zstd.
    private func bring(_ t: TensorInfo, into destination: UnsafeMutableRawPointer, scratch: inout AlignedBuffer,
                       verify: Bool) throws {
        switch t.compression {
        case .none:
            try readStored(t, into: destination)
            if verify { try checkChecksum(t, UnsafeRawPointer(destination)) }
        case .zstd:
            scratch.reserve(Int(t.storedBytes))
            try readStored(t, into: scratch.pointer)
            if verify { try checkChecksum(t, UnsafeRawPointer(scratch.pointer)) }
            let produced = ZSTD_decompress(destination, Int(t.rawBytes), scratch.pointer, Int(t.storedBytes))
            if ZSTD_isError(produced) != 0 {
                throw FireboltError("tensor \(t.name): zstd data is corrupt (\(String(cString: ZSTD_getErrorName(produced))))", file: path)
            }
            guard produced == Int(t.rawBytes) else {
                throw FireboltError("tensor \(t.name): decompressed to \(produced) bytes, expected \(t.rawBytes)", file: path)
            }
        }
    }

    private func readStored(_ t: TensorInfo, into pointer: UnsafeMutableRawPointer) throws {
        let position = prefix.dataOffset + t.offset
        var done = 0
        let count = Int(t.storedBytes)
        while done < count {
            let n = pread(fd, pointer + done, count - done, off_t(position) + off_t(done))
            if n < 0 && errno == EINTR { continue }
            guard n > 0 else { throw FireboltError("tensor \(t.name): read failed (file truncated?)", file: path) }
            done += n
        }
    }

    private func checkChecksum(_ t: TensorInfo, _ pointer: UnsafeRawPointer) throws {
        let sum = hex16(fb_xxh64(pointer, Int(t.storedBytes), 0))
        guard sum == t.xxh64 else {
            throw FireboltError("tensor \(t.name): checksum mismatch (stored \(t.xxh64), computed \(sum)): the file is corrupt", file: path)
        }
    }

    private static func readFully(fd: Int32, into bytes: inout [UInt8], count: Int, at offset: UInt64) throws -> Int {
        try bytes.withUnsafeMutableBytes { raw in
            var done = 0
            while done < count {
                let n = pread(fd, raw.baseAddress! + done, count - done, off_t(offset) + off_t(done))
                if n < 0 && errno == EINTR { continue }
                if n < 0 { throw FireboltError("read failed: \(String(cString: strerror(errno)))") }
                if n == 0 { break }
                done += n
            }
            return done
        }
    }

    static func describe(decodingError error: Error) -> String {
        guard let e = error as? DecodingError else { return "\(error)" }
        func path(_ context: DecodingError.Context) -> String {
            context.codingPath.map { $0.intValue.map { "[\($0)]" } ?? $0.stringValue }.joined(separator: ".")
        }
        switch e {
        case .keyNotFound(let key, let c): return "missing key '\(key.stringValue)' at '\(path(c))'"
        case .typeMismatch(_, let c), .valueNotFound(_, let c): return "wrong value at '\(path(c))': \(c.debugDescription)"
        case .dataCorrupted(let c): return "invalid JSON at '\(path(c))': \(c.debugDescription)"
        @unknown default: return "\(error)"
        }
    }
}

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
/// heap buffer per tensor). With FB_HUGEPAGES=1 it asks for transparent huge pages (madvise(MADV_HUGEPAGE)): decode
/// streams every weight once per token and 2 MiB pages spare it a TLB miss every 4 KiB, but the kernel's compaction
/// to find them makes loading slower. Measured here on the 4-bit LFM2-350M: decode +3-6%, load +0.13-0.47 s, so it
/// is off unless asked for (it pays in long sessions, not in one-shot answers).
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
        if ProcessInfo.processInfo.environment["FB_HUGEPAGES"] == "1" {
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

    fileprivate func add(_ info: TensorInfo, pointer: UnsafeRawPointer) {
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
        case .q8, .q4:
            var m = try matrix(name, rows: shape[0], cols: shape[1])
            var out = [Float](repeating: 0, count: count)
            out.withUnsafeMutableBufferPointer { buf in
                for r in 0..<shape[0] { fb_matrix_row(&m, r, buf.baseAddress! + r * shape[1]) }
            }
            return out
        }
    }
}
