import CZstd
import Foundation
import Kernels
import Runtime
#if canImport(Glibc)
import Glibc
#endif

public struct ConversionOptions {
    /// 4, 8, 16 or 32: the storage of weight matrices (q4nl or q4, q8, f16, f32).
    public var bits = 4
    /// The 4-bit grid: non-uniform (q4nl, the default: less error for the same bytes) or uniform (q4).
    public var uniformGrid = false
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
        return b == 8 ? .q8 : uniformGrid ? .q4 : .q4nl
    }
}

/// Per-part totals for the closing summary.
