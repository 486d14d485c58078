// A small, fast JSON reader used only by the tokenizer loader.
//
// tokenizer.json files of real models are several MB (65k vocabulary entries and as many merges);
// this reader parses them into a plain value tree without going through NSNumber/NSDictionary bridging.
// Object members keep their order (needed for nothing in the tokenizer, but cheap and deterministic).

import Foundation

/// A parsed JSON value (internal to the tokenizer).
enum TokenizerJSON: Sendable {
    case null
    case bool(Bool)
    case int(Int)
    case double(Double)
    case string(String)
    case array([TokenizerJSON])
    case object([(key: String, value: TokenizerJSON)])

    /// Member lookup for objects (linear: only used on small objects); nil for other kinds or a missing key.
    subscript(key: String) -> TokenizerJSON? {
        guard case .object(let members) = self else { return nil }
        for m in members where m.key == key { return m.value }
        return nil
    }

    var isNull: Bool { if case .null = self { return true } else { return false } }
    var stringValue: String? { if case .string(let s) = self { return s } else { return nil } }
    var boolValue: Bool? { if case .bool(let b) = self { return b } else { return nil } }
    var intValue: Int? {
        switch self {
        case .int(let v): return v
        case .double(let d) where d.rounded() == d && abs(d) < 9.0e15: return Int(d)
        default: return nil
        }
    }
    var doubleValue: Double? {
        switch self {
        case .int(let v): return Double(v)
        case .double(let d): return d
        default: return nil
        }
    }
    var arrayValue: [TokenizerJSON]? { if case .array(let a) = self { return a } else { return nil } }
    var objectValue: [(key: String, value: TokenizerJSON)]? { if case .object(let o) = self { return o } else { return nil } }

    /// A number as it was written (2147483648, -1, 3.5), else the kind of value: for error messages.
    var valueDescription: String {
        switch self {
        case .int(let v): return String(v)
        case .double(let d): return d.rounded() == d && abs(d) < 1e18 ? String(Int64(d)) : String(d)
        case .string(let s): return "\"\(s)\""
        default: return kindName
        }
    }

    /// A short description of the kind of value, for error messages.
    var kindName: String {
        switch self {
        case .null: return "null"
        case .bool: return "a boolean"
        case .int, .double: return "a number"
        case .string: return "a string"
        case .array: return "an array"
        case .object: return "an object"
        }
    }

    static func parse(_ data: Data) throws -> TokenizerJSON {
        try data.withUnsafeBytes { (raw: UnsafeRawBufferPointer) -> TokenizerJSON in
            let buf = raw.bindMemory(to: UInt8.self)
            var p = TokenizerJSONParser(buf)
            return try p.parseDocument()
        }
    }
}

struct TokenizerJSONParser {
    let b: UnsafeBufferPointer<UInt8>
    var i = 0
    var depth = 0
    var scratch: [UInt8] = []

    init(_ b: UnsafeBufferPointer<UInt8>) { self.b = b }

    func fail(_ what: String) -> TokenizerError {
        TokenizerError("malformed tokenizer JSON: \(what) at byte offset \(i)")
    }

    mutating func skipWS() {
        while i < b.count {
            let c = b[i]
            if c == 0x20 || c == 0x0A || c == 0x0D || c == 0x09 { i += 1 } else { break }
        }
    }

    mutating func parseDocument() throws -> TokenizerJSON {
        // Skip a UTF-8 byte order mark if present.
        if b.count >= 3 && b[0] == 0xEF && b[1] == 0xBB && b[2] == 0xBF { i = 3 }
        skipWS()
        if i >= b.count { throw fail("empty document") }
        let v = try parseValue()
        skipWS()
        if i != b.count { throw fail("unexpected trailing characters") }
        return v
    }

    mutating func parseValue() throws -> TokenizerJSON {
        guard i < b.count else { throw fail("unexpected end of input") }
        switch b[i] {
        case UInt8(ascii: "{"): return try parseObject()
        case UInt8(ascii: "["): return try parseArray()
        case UInt8(ascii: "\""): return .string(try parseString())
        case UInt8(ascii: "t"): try literal("true"); return .bool(true)
        case UInt8(ascii: "f"): try literal("false"); return .bool(false)
        case UInt8(ascii: "n"): try literal("null"); return .null
        case UInt8(ascii: "-"), UInt8(ascii: "0")...UInt8(ascii: "9"): return try parseNumber()
        default: throw fail("unexpected character '\(String(UnicodeScalar(b[i])))'")
        }
    }

    mutating func literal(_ word: String) throws {
        for c in word.utf8 {
            guard i < b.count else { throw fail("unexpected end of input") }
            if b[i] != c { throw fail("invalid literal") }
            i += 1
        }
    }

    mutating func parseObject() throws -> TokenizerJSON {
        depth += 1
        if depth > 512 { throw fail("nesting too deep") }
        defer { depth -= 1 }
        i += 1  // {
        var members: [(key: String, value: TokenizerJSON)] = []
        skipWS()
        if i < b.count && b[i] == UInt8(ascii: "}") { i += 1; return .object(members) }
        while true {
            skipWS()
            guard i < b.count, b[i] == UInt8(ascii: "\"") else { throw fail("expected a string key") }
            let key = try parseString()
            skipWS()
            guard i < b.count, b[i] == UInt8(ascii: ":") else { throw fail("expected ':'") }
            i += 1
            skipWS()
            let v = try parseValue()
            members.append((key, v))
            skipWS()
            guard i < b.count else { throw fail("unexpected end of input in an object") }
            if b[i] == UInt8(ascii: ",") { i += 1; continue }
            if b[i] == UInt8(ascii: "}") { i += 1; return .object(members) }
            throw fail("expected ',' or '}'")
        }
    }

    mutating func parseArray() throws -> TokenizerJSON {
        depth += 1
        if depth > 512 { throw fail("nesting too deep") }
        defer { depth -= 1 }
        i += 1  // [
        var items: [TokenizerJSON] = []
        skipWS()
        if i < b.count && b[i] == UInt8(ascii: "]") { i += 1; return .array(items) }
        while true {
            skipWS()
            items.append(try parseValue())
            skipWS()
            guard i < b.count else { throw fail("unexpected end of input in an array") }
            if b[i] == UInt8(ascii: ",") { i += 1; continue }
            if b[i] == UInt8(ascii: "]") { i += 1; return .array(items) }
            throw fail("expected ',' or ']'")
        }
    }

    mutating func parseNumber() throws -> TokenizerJSON {
        let start = i
        var isInt = true
        if b[i] == UInt8(ascii: "-") { i += 1 }
        while i < b.count {
            let c = b[i]
            if c >= UInt8(ascii: "0") && c <= UInt8(ascii: "9") { i += 1; continue }
            if c == UInt8(ascii: ".") || c == UInt8(ascii: "e") || c == UInt8(ascii: "E")
                || c == UInt8(ascii: "+") || c == UInt8(ascii: "-") {
                isInt = false; i += 1; continue
            }
            break
        }
        let text = String(decoding: UnsafeBufferPointer(rebasing: b[start..<i]), as: UTF8.self)
        if isInt, let v = Int(text) { return .int(v) }
        guard let d = Double(text) else { throw fail("invalid number '\(text)'") }
        return .double(d)
    }

    static func hexValue(_ c: UInt8) -> UInt32? {
        switch c {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): return UInt32(c - UInt8(ascii: "0"))
        case UInt8(ascii: "a")...UInt8(ascii: "f"): return UInt32(c - UInt8(ascii: "a") + 10)
        case UInt8(ascii: "A")...UInt8(ascii: "F"): return UInt32(c - UInt8(ascii: "A") + 10)
        default: return nil
        }
    }

    mutating func hex4() throws -> UInt32 {
        guard i + 4 <= b.count else { throw fail("truncated \\u escape") }
        var v: UInt32 = 0
        for k in 0..<4 {
            guard let h = TokenizerJSONParser.hexValue(b[i + k]) else { throw fail("invalid \\u escape") }
            v = v << 4 | h
        }
        i += 4
        return v
    }

    mutating func parseString() throws -> String {
        i += 1  // opening quote
        let start = i
        // Fast path: no escapes.
        while i < b.count {
            let c = b[i]
            if c == UInt8(ascii: "\"") {
                let s = String(decoding: UnsafeBufferPointer(rebasing: b[start..<i]), as: UTF8.self)
                i += 1
                return s
            }
            if c == UInt8(ascii: "\\") { break }
            if c < 0x20 { throw fail("control character in a string") }
            i += 1
        }
        guard i < b.count else { throw fail("unterminated string") }
        // Slow path with escapes.
        scratch.removeAll(keepingCapacity: true)
        scratch.append(contentsOf: UnsafeBufferPointer(rebasing: b[start..<i]))
        while i < b.count {
            let c = b[i]
            if c == UInt8(ascii: "\"") {
                i += 1
                return String(decoding: scratch, as: UTF8.self)
            }
            if c < 0x20 { throw fail("control character in a string") }
            if c != UInt8(ascii: "\\") { scratch.append(c); i += 1; continue }
            i += 1
            guard i < b.count else { throw fail("unterminated escape") }
            let e = b[i]
            i += 1
            switch e {
            case UInt8(ascii: "\""): scratch.append(0x22)
            case UInt8(ascii: "\\"): scratch.append(0x5C)
            case UInt8(ascii: "/"): scratch.append(0x2F)
            case UInt8(ascii: "b"): scratch.append(0x08)
            case UInt8(ascii: "f"): scratch.append(0x0C)
            case UInt8(ascii: "n"): scratch.append(0x0A)
            case UInt8(ascii: "r"): scratch.append(0x0D)
            case UInt8(ascii: "t"): scratch.append(0x09)
            case UInt8(ascii: "u"):
                var cp = try hex4()
                if cp >= 0xD800 && cp < 0xDC00 {
                    // High surrogate: expect a low surrogate escape next.
                    if i + 6 <= b.count && b[i] == UInt8(ascii: "\\") && b[i + 1] == UInt8(ascii: "u") {
                        let save = i
                        i += 2
                        let lo = try hex4()
                        if lo >= 0xDC00 && lo < 0xE000 {
                            cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00)
                        } else {
                            i = save
                            cp = 0xFFFD
                        }
                    } else {
                        cp = 0xFFFD
                    }
                } else if cp >= 0xDC00 && cp < 0xE000 {
                    cp = 0xFFFD
                }
                let scalar = Unicode.Scalar(cp) ?? "\u{FFFD}"
                scratch.append(contentsOf: String(scalar).utf8)
            default:
                throw fail("invalid escape '\\\(String(UnicodeScalar(e)))'")
            }
        }
        throw fail("unterminated string")
    }
}
