import Foundation
import Runtime

/// Where the fixtures are: `Tests/Fixtures` in the repository (see its README for where each came from).
public enum Fixtures {
    public static let repositoryRoot: URL = {
        var url = URL(fileURLWithPath: #filePath)  // Tests/Support/TestSupport.swift
        for _ in 0..<3 { url.deleteLastPathComponent() }
        return url
    }()

    public static let root = repositoryRoot.appendingPathComponent("Tests/Fixtures").path
    public static let tiny = root + "/firebolt-tiny"
    public static let golden = tiny + "/golden"
    public static let realWeights = root + "/real-weights/minilm-l6-matrices.safetensors"

    /// The trained shapes model a user would hold (released checkpoint layout), and its held-out questions.
    public static let shapesModel = repositoryRoot.appendingPathComponent("models/firebolt-shapes").path

    /// `path`, or an error naming it: a missing fixture fails its test rather than skipping it.
    public static func require(_ path: String) throws -> String {
        guard FileManager.default.fileExists(atPath: path) else { throw FixtureMissing(path: path) }
        return path
    }

    public static func npy(_ name: String) throws -> NumpyArray { try NumpyArray(contentsOf: golden + "/" + name) }
}

public struct FixtureMissing: Error, CustomStringConvertible {
    public let path: String
    public var description: String { "fixture missing: \(path) (fixtures live in the repository)" }
}

/// A fresh temporary folder, removed by `cleanup()`.
public final class TemporaryFolder {
    public let path: String

    public init(_ label: String = "fbtest") {
        path = NSTemporaryDirectory() + "/\(label)-\(getpid())-\(UUID().uuidString.prefix(8))"
        try? FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    }

    public func file(_ name: String) -> String { path + "/" + name }
    public var contents: [String] { ((try? FileManager.default.contentsOfDirectory(atPath: path)) ?? []).sorted() }
    public func cleanup() { try? FileManager.default.removeItem(atPath: path) }
    deinit { cleanup() }
}

public struct ToolResult {
    public let status: Int32
    public let stdout: String
    public let stderr: String
}

/// Runs one of the package's executables from the build folder the tests were built into.
public enum Tools {
    public static func path(_ name: String) -> String {
        let candidates = [Bundle.main.bundleURL, Bundle.main.bundleURL.deletingLastPathComponent(),
                          URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent()]
        for folder in candidates {
            let p = folder.appendingPathComponent(name).path
            if FileManager.default.isExecutableFile(atPath: p) { return p }
        }
        return candidates[0].appendingPathComponent(name).path
    }

    /// `environment` adds to (or, with "", clears from) this process's environment.
    public static func run(_ name: String, _ arguments: [String], stdin: String? = nil,
                           environment: [String: String] = [:]) throws -> ToolResult {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: path(name))
        process.arguments = arguments
        if !environment.isEmpty {
            var merged = ProcessInfo.processInfo.environment
            for (key, value) in environment { merged[key] = value.isEmpty ? nil : value }
            process.environment = merged
        }
        let out = Pipe(), err = Pipe()
        process.standardOutput = out
        process.standardError = err
        process.standardInput = FileHandle.nullDevice
        try process.run()
        // Read both pipes while the tool runs so a chatty tool cannot block on a full pipe.
        final class Box: @unchecked Sendable { var data = Data() }
        let outBox = Box()
        let group = DispatchGroup()
        group.enter()
        DispatchQueue.global().async { outBox.data = out.fileHandleForReading.readDataToEndOfFile(); group.leave() }
        let errData = err.fileHandleForReading.readDataToEndOfFile()
        group.wait()
        let outData = outBox.data
        process.waitUntilExit()
        return ToolResult(status: process.terminationStatus, stdout: String(decoding: outData, as: UTF8.self),
                          stderr: String(decoding: errData, as: UTF8.self))
    }
}

/// Builds safetensors files by hand, for the broken-input corpus.
public enum SafetensorsBuilder {
    /// `header` is written as given (so it may lie about the data); `data` follows it.
    public static func bytes(headerJSON: String, data: Data, declaredLength: UInt64? = nil) -> Data {
        let header = Data(headerJSON.utf8)
        var length = (declaredLength ?? UInt64(header.count)).littleEndian
        var out = Data(bytes: &length, count: 8)
        out.append(header)
        out.append(data)
        return out
    }

    /// A valid file from raw entries (name, dtype, shape, little-endian bytes), in the given order.
    public static func raw(_ tensors: [(String, String, [Int], Data)]) -> Data {
        var entries: [String] = []
        var data = Data()
        for (name, dtype, shape, bytes) in tensors {
            let begin = data.count
            data.append(bytes)
            entries.append("\"\(name)\":{\"dtype\":\"\(dtype)\",\"shape\":\(shape),\"data_offsets\":[\(begin),\(data.count)]}")
        }
        return bytes(headerJSON: "{" + entries.joined(separator: ",") + "}", data: data)
    }

    /// A valid file of f32 tensors, in the given order.
    public static func f32(_ tensors: [(String, [Int], [Float])]) -> Data {
        var entries: [String] = []
        var data = Data()
        for (name, shape, values) in tensors {
            let begin = data.count
            values.withUnsafeBytes { data.append(contentsOf: $0) }
            entries.append("\"\(name)\":{\"dtype\":\"F32\",\"shape\":\(shape),\"data_offsets\":[\(begin),\(data.count)]}")
        }
        return bytes(headerJSON: "{" + entries.joined(separator: ",") + "}", data: data)
    }
}

/// How far logits are from golden ones: RMS and worst error relative to the golden's RMS and largest value, and
/// how often the top-1 token agrees, over `positions` rows of `vocab` logits.
public struct LogitComparison: CustomStringConvertible {
    public let rmsRelative: Double
    public let maxRelative: Double
    public let agreement: Double
    public let agreeing: Int
    public let positions: Int

    public init(_ logits: [Float], golden: [Float], vocab: Int) {
        precondition(logits.count == golden.count && golden.count % vocab == 0, "logit shapes differ")
        var err = 0.0, norm = 0.0, worst: Float = 0, largest: Float = 0
        for (a, g) in zip(logits, golden) {
            err += Double((a - g) * (a - g))
            norm += Double(g * g)
            worst = max(worst, abs(a - g))
            largest = max(largest, abs(g))
        }
        rmsRelative = (err / norm).squareRoot()
        maxRelative = Double(worst / largest)
        positions = golden.count / vocab
        var agree = 0
        for p in 0..<positions {
            let a = logits[p * vocab ..< (p + 1) * vocab], g = golden[p * vocab ..< (p + 1) * vocab]
            if a.indices.max(by: { a[$0] < a[$1] }) == g.indices.max(by: { g[$0] < g[$1] }) { agree += 1 }
        }
        agreeing = agree
        agreement = Double(agree) / Double(positions)
    }

    public var description: String {
        String(format: "logit error RMS %.5f, max %.5f (relative to the golden's RMS / max); top-1 agreement %.3f (%d/%d)",
               rmsRelative, maxRelative, agreement, agreeing, positions)
    }
}
