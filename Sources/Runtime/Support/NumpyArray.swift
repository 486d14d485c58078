import Foundation

/// A NumPy `.npy` array (format v1.0/v2.0, little-endian, C order): what the goldens are stored in and what
/// `fbrun logits` writes. Reading accepts f4, f8, i4, i8; `floats` / `int64s` convert.
public struct NumpyArray {
    public enum DType: String { case float32 = "<f4", float64 = "<f8", int32 = "<i4", int64 = "<i8" }

    public let shape: [Int]
    public let dtype: DType
    /// Raw little-endian element bytes, count = product(shape) × element size.
    public let payload: Data

    public var count: Int { shape.reduce(1, *) }

    public init(contentsOf path: String) throws {
        let data: Data
        do { data = try InputFile.read(path) } catch { throw FireboltError("\(error)", file: path) }
        do { try self.init(npy: data) } catch let error as FireboltError { throw error.inFile(path) }
    }

    public init(npy data: Data) throws {
        let magic: [UInt8] = [0x93, 0x4E, 0x55, 0x4D, 0x50, 0x59]
        guard data.count >= 10, Array(data.prefix(6)) == magic else { throw FireboltError("not a .npy file (bad magic)") }
        let major = data[data.startIndex + 6]
        let headerLength: Int
        let headerStart: Int
        if major == 1 {
            headerLength = Int(data[data.startIndex + 8]) | Int(data[data.startIndex + 9]) << 8
            headerStart = 10
        } else if major == 2 || major == 3 {
            guard data.count >= 12 else { throw FireboltError("truncated .npy header") }
            headerLength = (0..<4).reduce(0) { $0 | Int(data[data.startIndex + 8 + $1]) << (8 * $1) }
            headerStart = 12
        } else {
            throw FireboltError("unsupported .npy version \(major)")
        }
        guard headerStart + headerLength <= data.count,
              let header = String(data: data.subdata(in: data.startIndex + headerStart ..< data.startIndex + headerStart + headerLength), encoding: .utf8)
        else { throw FireboltError("truncated .npy header") }

        func value(of key: String) -> Substring? {
            guard let range = header.range(of: "'\(key)':") else { return nil }
            return header[range.upperBound...].drop(while: { $0 == " " })
        }
        guard let descr = value(of: "descr"), descr.first == "'",
              let end = descr.dropFirst().firstIndex(of: "'") else { throw FireboltError("npy header has no descr") }
        let descrString = String(descr[descr.index(after: descr.startIndex)..<end])
        guard let dtype = DType(rawValue: descrString.replacingOccurrences(of: "|", with: "<")) else {
            throw FireboltError("unsupported npy dtype \(descrString)")
        }
        if let order = value(of: "fortran_order"), order.hasPrefix("True") {
            throw FireboltError("Fortran-order .npy arrays are not supported")
        }
        guard let shapeText = value(of: "shape"), shapeText.first == "(",
              let close = shapeText.firstIndex(of: ")") else { throw FireboltError("npy header has no shape") }
        let dims = shapeText[shapeText.index(after: shapeText.startIndex)..<close]
            .split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
        var shape: [Int] = []
        for d in dims {
            guard let n = Int(d), n >= 0 else { throw FireboltError("bad npy shape \(shapeText[..<close]))") }
            shape.append(n)
        }
        let elementSize = dtype == .int32 || dtype == .float32 ? 4 : 8
        // The element count is checked against the payload before anything is multiplied by it: a forged shape
        // such as (2^62,) or (2^32, 2^32) is an error, not an overflow.
        var count = 1
        for n in shape {
            let (product, overflow) = count.multipliedReportingOverflow(by: n)
            guard !overflow else { throw FireboltError("npy shape \(shape) has more elements than can exist") }
            count = product
        }
        let start = data.startIndex + headerStart + headerLength
        let payload = data.count - headerStart - headerLength
        guard count <= payload / elementSize, payload == count * elementSize else {
            throw FireboltError("npy payload has \(payload) bytes, shape \(shape) needs \(count) elements of \(elementSize) bytes")
        }
        self.shape = shape
        self.dtype = dtype
        self.payload = data.subdata(in: start..<data.endIndex)
    }

    public init(float32 values: [Float], shape: [Int]) {
        precondition(shape.reduce(1, *) == values.count, "shape does not match the element count")
        self.shape = shape
        self.dtype = .float32
        self.payload = values.withUnsafeBytes { Data($0) }
    }

    public init(int64 values: [Int64], shape: [Int]) {
        precondition(shape.reduce(1, *) == values.count, "shape does not match the element count")
        self.shape = shape
        self.dtype = .int64
        self.payload = values.withUnsafeBytes { Data($0) }
    }

    public var floats: [Float] {
        payload.withUnsafeBytes { raw -> [Float] in
            switch dtype {
            case .float32: return Array(raw.bindMemory(to: Float.self))
            case .float64: return raw.bindMemory(to: Double.self).map { Float($0) }
            case .int32: return raw.bindMemory(to: Int32.self).map { Float($0) }
            case .int64: return raw.bindMemory(to: Int64.self).map { Float($0) }
            }
        }
    }

    public var int64s: [Int64] {
        payload.withUnsafeBytes { raw -> [Int64] in
            switch dtype {
            case .float32: return raw.bindMemory(to: Float.self).map { Int64($0) }
            case .float64: return raw.bindMemory(to: Double.self).map { Int64($0) }
            case .int32: return raw.bindMemory(to: Int32.self).map { Int64($0) }
            case .int64: return Array(raw.bindMemory(to: Int64.self))
            }
        }
    }

    /// The file bytes: a v1.0 header padded to a multiple of 64 bytes, then the payload.
    public func npyData() -> Data {
        let dims = shape.count == 1 ? "\(shape[0])," : shape.map(String.init).joined(separator: ", ")
        var header = "{'descr': '\(dtype.rawValue)', 'fortran_order': False, 'shape': (\(dims)), }"
        let unpadded = 10 + header.utf8.count + 1
        header += String(repeating: " ", count: (64 - unpadded % 64) % 64) + "\n"
        var out = Data([0x93, 0x4E, 0x55, 0x4D, 0x50, 0x59, 1, 0])
        let length = UInt16(header.utf8.count)
        out.append(contentsOf: [UInt8(length & 0xFF), UInt8(length >> 8)])
        out.append(contentsOf: Array(header.utf8))
        out.append(payload)
        return out
    }

    public func write(to path: String) throws {
        try AtomicFile.write(npyData(), to: path)
    }
}
