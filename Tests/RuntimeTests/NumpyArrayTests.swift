import Foundation
import Runtime
import XCTest

/// .npy files read by `fbrun logits --prompt-ids`: forged shapes are errors, never a trap.
final class NumpyArrayTests: XCTestCase {
    /// A version-1 .npy with this header text and payload.
    func npy(shape: String, descr: String = "<i8", payload: Int) -> Data {
        var header = "{'descr': '\(descr)', 'fortran_order': False, 'shape': \(shape), }"
        header += String(repeating: " ", count: (64 - (10 + header.utf8.count + 1) % 64) % 64) + "\n"
        var data = Data([0x93, 0x4E, 0x55, 0x4D, 0x50, 0x59, 1, 0])
        data.append(contentsOf: [UInt8(header.utf8.count & 0xFF), UInt8(header.utf8.count >> 8)])
        data.append(contentsOf: Array(header.utf8))
        data.append(Data(count: payload))
        return data
    }

    func testRoundTrip() throws {
        let a = NumpyArray(int64: [1, 2, 3], shape: [3])
        let path = NSTemporaryDirectory() + "/npy-\(getpid()).npy"
        defer { try? FileManager.default.removeItem(atPath: path) }
        try a.write(to: path)
        XCTAssertEqual(try NumpyArray(contentsOf: path).int64s, [1, 2, 3])
        XCTAssertNoThrow(try NumpyArray(npy: npy(shape: "(2, 3)", payload: 48)))
    }

    func testForgedShapesAreErrors() {
        let cases: [(Data, String)] = [
            (npy(shape: "(4611686018427387904,)", payload: 8), "npy payload has 8 bytes, shape [4611686018427387904] needs 4611686018427387904 elements of 8 bytes"),
            (npy(shape: "(4294967296, 4294967296)", payload: 0), "npy shape [4294967296, 4294967296] has more elements than can exist"),
            (npy(shape: "(3,)", payload: 16), "npy payload has 16 bytes, shape [3] needs 3 elements of 8 bytes"),
        ]
        for (data, message) in cases {
            XCTAssertThrowsError(try NumpyArray(npy: data)) { XCTAssertEqual("\($0)", message) }
        }
    }
}
