import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// Anonymous memory that becomes resident only when touched: caches sized for the whole context cost RSS only
/// for the positions actually used.
public final class LazyBuffer: @unchecked Sendable {
    public let raw: UnsafeMutableRawPointer
    public let bytes: Int

    public init(bytes: Int) {
        self.bytes = max(bytes, 4096)
        guard let p = mmap(nil, self.bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0), p != MAP_FAILED else {
            fatalError("out of memory mapping \(self.bytes) bytes")
        }
        raw = p
    }

    deinit { munmap(raw, bytes) }
}

/// A `LazyBuffer` of floats.
public final class LazyFloatBuffer: @unchecked Sendable {
    public let pointer: UnsafeMutablePointer<Float>
    public let count: Int
    private let storage: LazyBuffer

    public init(count: Int) {
        self.count = count
        storage = LazyBuffer(bytes: count * 4)
        pointer = storage.raw.assumingMemoryBound(to: Float.self)
    }
}
