import Converter
import Foundation
import Runtime
import TestSupport
import XCTest

/// Decoding allocates nothing per token: after the first tokens, resident memory does not grow.
final class MemoryTests: XCTestCase {
    func testDecodingAThousandTokensDoesNotGrowMemory() throws {
        let folder = TemporaryFolder("memory")
        var options = ConversionOptions()
        options.bits = 4
        let path = folder.file("tiny.fbm")
        _ = try FBMConverter.convert(input: Fixtures.tiny, output: path, options: options)
        let model = try LoadedModel(path: path)
        // The KV cache is mapped lazily, so its pages become resident as positions fill: 2 attention layers ×
        // (K and V) × 2 kv heads × 16 dims × 4 bytes = 512 bytes per token, 0.5 MB for 1,000 tokens. Anything
        // allocated per token would add far more than that over 1,000 steps (a logits copy alone is 2 KB).
        let session = LFM2Session(model: model.decoder, contextLength: 1100, threads: 1)
        let logits = UnsafeMutablePointer<Float>.allocate(capacity: 512)
        defer { logits.deallocate() }
        try session.forward(tokens: [1, 3, 90, 88], lastLogits: logits)
        var samples: [UInt64] = []
        samples.reserveCapacity(1000)
        var token: [Int32] = [0]
        for step in 0..<1000 {
            token[0] = Int32((step * 37 + 11) % 512)  // any valid ids; eos does not stop this loop
            try session.forward(tokens: token, lastLogits: logits)
            samples.append(ProcessMemory.residentBytes)
        }
        let growth = Int64(samples.last!) - Int64(samples[10])
        print("[memory] RSS after token 10: \(samples[10]) bytes, after token \(samples.count): \(samples.last!) bytes (growth \(growth))")
        let kvBytesPerToken = 2 * 2 * model.config.text.numKeyValueHeads * model.config.text.headDim * 4
        let expected = Int64(kvBytesPerToken * (samples.count - 10))
        XCTAssertLessThan(growth, expected + 128 << 10, "resident memory grew by \(growth) bytes while decoding; the KV cache accounts for \(expected)")
    }

    /// The weight arena asks for transparent huge pages (decode streams every weight each token; 2 MiB pages spare
    /// it a TLB miss every 4 KiB), unless FB_HUGEPAGES=0. Read from the kernel's own record of the advice: the
    /// mapping's `hg` flag in /proc/self/smaps (set by madvise(MADV_HUGEPAGE) whether or not huge pages are free).
    func testWeightArenaAsksForHugePagesUnlessTurnedOff() throws {
        // A kernel built without transparent huge pages refuses the advice (EINVAL), so there is nothing to check.
        guard FileManager.default.fileExists(atPath: "/sys/kernel/mm/transparent_hugepage") else {
            throw XCTSkip("this kernel has no transparent huge pages")
        }
        let folder = TemporaryFolder("hugepages")
        var options = ConversionOptions()
        options.bits = 4
        options.compression = .zstd
        let path = folder.file("tiny.fbm")
        _ = try FBMConverter.convert(input: Fixtures.tiny, output: path, options: options)
        func advisedMappings() throws -> Set<String> {
            var advised = Set<String>(), current = ""
            // Read through a file handle: /proc files report size 0, so reading "the whole file" by its size reads nothing.
            let smaps = try XCTUnwrap(FileHandle(forReadingAtPath: "/proc/self/smaps")).readDataToEndOfFile()
            XCTAssertFalse(smaps.isEmpty, "read nothing from /proc/self/smaps")
            for line in String(decoding: smaps, as: UTF8.self).split(separator: "\n") {
                if let first = line.split(separator: " ").first, first.contains("-"), !line.hasSuffix(":") && !line.contains(": ") {
                    current = String(first)
                } else if line.hasPrefix("VmFlags:"), line.split(separator: " ").contains("hg") {
                    advised.insert(current)
                }
            }
            return advised
        }
        let before = try advisedMappings()
        let model = try LoadedModel(path: path)
        let withHint = try advisedMappings().subtracting(before)
        XCTAssertFalse(withHint.isEmpty, "no mapping with the huge-page advice after loading \(path)")
        setenv("FB_HUGEPAGES", "0", 1)
        defer { unsetenv("FB_HUGEPAGES") }
        let again = try advisedMappings()
        let unadvised = try LoadedModel(path: path)
        XCTAssertEqual(try advisedMappings().subtracting(again), [], "FB_HUGEPAGES=0 still advised huge pages")
        withExtendedLifetime((model, unadvised)) {}
    }
}
