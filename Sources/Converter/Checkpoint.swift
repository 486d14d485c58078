import Foundation
import Runtime

/// A Hugging Face style checkpoint on disk: one or more safetensors files plus the JSON files beside them.
/// INPUT may be a `.safetensors` file, a sharded `model.safetensors.index.json`, or a folder holding either.
public final class Checkpoint {
    public let folder: String
    public let files: [SafetensorsFile]
    private let owner: [String: SafetensorsFile]

    public let config: [String: Any]
    public let tokenizerJSON: String
    public let tokenizerConfig: [String: Any]
    public let preprocessorConfig: [String: Any]?
    /// processor_config.json (transformers 5 saves the image processor's settings there, under "image_processor").
    public let processorConfig: [String: Any]?
    /// chat_template.jinja, where transformers 5 saves the template (older saves keep it in tokenizer_config.json).
    public let chatTemplateFile: String?

    /// Every file the conversion reads (weights and the JSON files beside them): an output must never be one.
    public var sourcePaths: [String] {
        files.map(\.path) + ["config.json", "tokenizer.json", "tokenizer_config.json", "preprocessor_config.json",
                              "processor_config.json", "chat_template.jinja", "special_tokens_map.json",
                              "model.safetensors.index.json"].map { folder + "/" + $0 }
    }

    public init(input: String) throws {
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: input, isDirectory: &isDirectory) else {
            throw FireboltError("no such file or folder", file: input)
        }
        var weightPaths: [String]
        if isDirectory.boolValue {
            folder = input
            let index = input + "/model.safetensors.index.json"
            if FileManager.default.fileExists(atPath: index) {
                weightPaths = try Self.shards(fromIndex: index)
            } else {
                let names = (try? FileManager.default.contentsOfDirectory(atPath: input)) ?? []
                weightPaths = names.filter { $0.hasSuffix(".safetensors") }.sorted().map { input + "/" + $0 }
                guard !weightPaths.isEmpty else {
                    throw FireboltError("folder holds no .safetensors file and no model.safetensors.index.json", file: input)
                }
            }
        } else if input.hasSuffix(".index.json") {
            folder = URL(fileURLWithPath: input).deletingLastPathComponent().path
            weightPaths = try Self.shards(fromIndex: input)
        } else {
            folder = URL(fileURLWithPath: input).deletingLastPathComponent().path
            weightPaths = [input]
        }
        files = try weightPaths.map { try SafetensorsFile(path: $0) }
        var owner: [String: SafetensorsFile] = [:]
        for file in files {
            for name in file.tensorNames() {
                if let other = owner[name] {
                    throw FireboltError("tensor \(name) appears in both \(other.path) and \(file.path)")
                }
                owner[name] = file
            }
        }
        self.owner = owner

        config = try Self.readJSONObject(folder + "/config.json", required: true)!
        let tokenizerPath = folder + "/tokenizer.json"
        let tokenizerData: Data
        do { tokenizerData = try InputFile.read(tokenizerPath) } catch InputFile.Problem.notFound {
            throw FireboltError("tokenizer.json not found beside the weights (the .fbm file embeds it)", file: tokenizerPath)
        } catch { throw FireboltError("\(error)", file: tokenizerPath) }
        guard let text = String(data: tokenizerData, encoding: .utf8),
              (try? JSONSerialization.jsonObject(with: tokenizerData)) is [String: Any] else {
            throw FireboltError("not a valid JSON object", file: tokenizerPath)
        }
        tokenizerJSON = text
        tokenizerConfig = try Self.readJSONObject(folder + "/tokenizer_config.json", required: false) ?? [:]
        preprocessorConfig = try Self.readJSONObject(folder + "/preprocessor_config.json", required: false)
        processorConfig = try Self.readJSONObject(folder + "/processor_config.json", required: false)
        let templatePath = folder + "/chat_template.jinja"
        if FileManager.default.fileExists(atPath: templatePath) {
            let data: Data
            do { data = try InputFile.read(templatePath) } catch { throw FireboltError("\(error)", file: templatePath) }
            guard let text = String(data: data, encoding: .utf8) else { throw FireboltError("not UTF-8 text", file: templatePath) }
            chatTemplateFile = text
        } else {
            chatTemplateFile = nil
        }
    }

    public var tensorNames: [String] { owner.keys.sorted() }
    public func has(_ name: String) -> Bool { owner[name] != nil }

    public func file(for name: String) throws -> SafetensorsFile {
        guard let f = owner[name] else { throw FireboltError("missing tensor \(name)", file: files.first?.path) }
        return f
    }

    public func tensor(_ name: String) throws -> SafetensorsFile.Tensor { try file(for: name).tensor(name) }
    public func shape(_ name: String) throws -> [Int] { try tensor(name).shape }
    public var totalInputBytes: Int { files.reduce(0) { $0 + $1.tensors.reduce(0) { $0 + $1.end - $1.begin } } }

    private static func shards(fromIndex path: String) throws -> [String] {
        guard let object = try readJSONObject(path, required: true) else { return [] }
        guard let map = object["weight_map"] as? [String: String], !map.isEmpty else {
            throw FireboltError("index has no weight_map object", file: path)
        }
        let folder = URL(fileURLWithPath: path).deletingLastPathComponent().path
        return Set(map.values).sorted().map { name in
            name.hasPrefix("/") ? name : folder + "/" + name
        }
    }

    static func readJSONObject(_ path: String, required: Bool) throws -> [String: Any]? {
        let data: Data
        do { data = try InputFile.read(path) } catch InputFile.Problem.notFound {
            if required { throw FireboltError("file not found (a checkpoint needs it beside the weights)", file: path) }
            return nil
        } catch { throw FireboltError("\(error)", file: path) }
        guard let object = try? JSONSerialization.jsonObject(with: data), let dict = object as? [String: Any] else {
            throw FireboltError("not a valid JSON object", file: path)
        }
        return dict
    }
}

/// Typed look-ups in a decoded JSON object, tolerant of the spellings different exporters use. A value of the
/// wrong kind is an error naming the file and the key, never a silent default or a truncated number.
struct JSONObject {
    let values: [String: Any]
    let file: String?
    let path: String   // "text_config." for a nested object: how error messages name its keys

    init(_ values: [String: Any], file: String? = nil, path: String = "") {
        self.values = values
        self.file = file
        self.path = path
    }

    func object(_ key: String) -> JSONObject? {
        (values[key] as? [String: Any]).map { JSONObject($0, file: file, path: path + key + ".") }
    }
    func string(_ key: String) -> String? { values[key] as? String }

    private func wrong(_ key: String, _ value: Any, _ wanted: String) -> FireboltError {
        FireboltError("\(path)\(key) is \(value), not \(wanted)", file: file)
    }
    private func number(_ key: String, _ value: Any) throws -> NSNumber {
        // JSON true/false also arrive as NSNumber (and `is Bool` holds for 0 and 1 as well): objCType "c" marks them.
        guard let n = value as? NSNumber, String(cString: n.objCType) != "c" else { throw wrong(key, value, "a number") }
        return n
    }
    private func whole(_ key: String, _ value: Any) throws -> Int {
        // Int(exactly:) refuses fractions and anything past Int's range (NSNumber.intValue turns 2^70 into 0).
        guard let n = Int(exactly: try number(key, value).doubleValue) else { throw wrong(key, value, "a whole number in range") }
        return n
    }

    /// The first of `keys` present, as a whole number.
    func int(_ keys: String...) throws -> Int? {
        for k in keys { if let v = values[k] { return try whole(k, v) } }
        return nil
    }
    func double(_ keys: String...) throws -> Double? {
        for k in keys { if let v = values[k] { return try number(k, v).doubleValue } }
        return nil
    }
    /// A list of whole numbers, or one.
    func ints(_ key: String) throws -> [Int]? {
        guard let v = values[key] else { return nil }
        if let list = v as? [Any] { return try list.map { try whole(key, $0) } }
        return [try whole(key, v)]
    }
    func strings(_ key: String) -> [String]? { values[key] as? [String] }
}
