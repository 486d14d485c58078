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
                throw FireboltError("header is not a valid .fbm header: \(Self.describe(decodingError: error, json: Data(headerBytes)))")
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

    /// Fields that hold fractions; every other number in a header is a whole number ≥ 0 (a size, an id, an offset).
    static let fractionalFields: Set<String> = ["norm_eps", "rope_theta", "layer_norm_eps", "rescale_factor", "image_mean",
                                                "image_std"]

    static func describe(decodingError error: Error, json: Data) -> String {
        // Foundation reports a number its field's type cannot hold (a negative offset, a fractional size) as
        // "not valid JSON" at the top: find the number and say which field it is.
        if case .dataCorrupted(let c)? = error as? DecodingError, c.codingPath.isEmpty,
           let root = try? JSONSerialization.jsonObject(with: json), let (path, value) = firstBadNumber(root, path: "") {
            return "\(path) is \(value), not a whole number ≥ 0"
        }
        return describe(decodingError: error)
    }

    private static func firstBadNumber(_ value: Any, path: String, key: String = "") -> (String, String)? {
        if let object = value as? [String: Any] {
            for k in object.keys.sorted() {
                if let found = firstBadNumber(object[k]!, path: path.isEmpty ? k : path + "." + k, key: k) { return found }
            }
        } else if let list = value as? [Any] {
            for (i, item) in list.enumerated() {
                if let found = firstBadNumber(item, path: path + "[\(i)]", key: key) { return found }
            }
        } else if let n = value as? NSNumber, String(cString: n.objCType) != "c", !fractionalFields.contains(key) {
            let d = n.doubleValue
            if d < 0 || d.rounded() != d || d >= 0x1p64 { return (path, n.stringValue) }
        }
        return nil
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
