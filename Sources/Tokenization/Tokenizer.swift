// Byte-level BPE tokenizer compatible with Hugging Face `tokenizers` (tokenizer.json), as used by LFM2 / Firebolt-VL.
//
// Pipeline (what `tokenizers` does for this kind of file):
//   added tokens (leftmost-longest, non-normalized ones first, then normalized ones)
//   -> [normalizer: only `null` is supported]
//   -> pre-tokenizer (the LFM2 split regex, a hand-written scanner) -> ByteLevel byte->char mapping
//   -> BPE (lowest-rank merge first, word cache) -> post-processor template (BOS) when asked.
// Decoding: ids -> token strings -> ByteLevel chars -> bytes -> UTF-8 (invalid sequences become U+FFFD),
// i.e. `decode(ids, skip_special_tokens=...)` with clean_up_tokenization_spaces = false.
//
// Supported tokenizer.json features (anything else throws a TokenizerError naming it):
//   model: BPE with vocab + merges (["a","b"] pairs or "a b" strings), ignore_merges, unk_token / fuse_unk;
//          byte_fallback only when every byte-level character is in the vocabulary (then it never applies);
//          dropout must be null/0; continuing_subword_prefix / end_of_word_suffix must be null.
//   added_tokens: special or not, normalized or not, lstrip / rstrip / single_word (same rules as tokenizers).
//   normalizer: null only.
//   pre_tokenizer: Sequence[Split(the LFM2 regex, Isolated, invert false), ByteLevel(use_regex false)] or
//                  ByteLevel(use_regex false); add_prefix_space honoured. (GPT-2's regex is not implemented.)
//   post_processor: null, TemplateProcessing (special tokens around one sequence $A), ByteLevel (no-op),
//                   or a Sequence of these.
//   decoder: ByteLevel (other decoder types throw).
// Not supported: pair encodings, truncation/padding (ignored), offsets, encode_special_tokens = true.
// Differences from tokenizers: decoding an id outside the vocabulary (or a gap in the ids) throws instead of
// being dropped silently.
// Thread safety: all methods may be called concurrently; the word cache is handed to one encode call at a time
// (a concurrent call works with a fresh cache).

import Foundation

/// An error from loading a tokenizer or decoding ids; `description` says what went wrong.
public struct TokenizerError: Error, CustomStringConvertible, Equatable {
    public let message: String
    public init(_ message: String) { self.message = message }
    public var description: String { "TokenizerError: \(message)" }
}

/// One entry of tokenizer.json's `added_tokens`.
struct TokenizerAddedToken {
    let id: Int32
    let content: String
    let bytes: [UInt8]
    let special: Bool
    let lstrip: Bool
    let rstrip: Bool
    let singleWord: Bool
    let normalized: Bool
}

/// Leftmost-longest matcher of added-token contents (a byte trie; what daachorse LeftmostLongest returns).
struct TokenizerAddedMatcher {
    private var firstByte = [Bool](repeating: false, count: 256)
    private var children: [[UInt8: Int32]] = [[:]]
    private var terminal: [Int32] = [-1]  // index into the token list, or -1

    init(tokens: [(index: Int, bytes: [UInt8])]) {
        for t in tokens where !t.bytes.isEmpty {
            firstByte[Int(t.bytes[0])] = true
            var node = 0
            for b in t.bytes {
                if let c = children[node][b] {
                    node = Int(c)
                } else {
                    children.append([:])
                    terminal.append(-1)
                    let c = Int32(children.count - 1)
                    children[node][b] = c
                    node = Int(c)
                }
            }
            if terminal[node] < 0 { terminal[node] = Int32(t.index) }
        }
    }

    /// First match at or after `from`, before `end`: leftmost start, longest at that start.
    func find(_ p: UnsafePointer<UInt8>, from: Int, end: Int) -> (start: Int, end: Int, token: Int)? {
        var i = from
        while i < end {
            if firstByte[Int(p[i])] {
                var node = 0
                var best = -1
                var bestEnd = 0
                var k = i
                while k < end, let c = children[node][p[k]] {
                    node = Int(c)
                    k += 1
                    if terminal[node] >= 0 {
                        best = Int(terminal[node])
                        bestEnd = k
                    }
                }
                if best >= 0 { return (i, bestEnd, best) }
            }
            i += 1
        }
        return nil
    }
}

/// Per-encode mutable state (the word cache and scratch buffers). One instance is parked in the tokenizer
/// between calls; a concurrent caller that finds none builds its own.
struct TokenizerEncodeState {
    var cache = TokenizerWordCache()
    var scratch = TokenizerBPEScratch()
    var segments: [(start: Int, end: Int, id: Int32)] = []
    var inner: [(start: Int, end: Int, id: Int32)] = []
    var prefixed: [UInt8] = []
}

public final class Tokenizer: @unchecked Sendable {
    enum SplitKind { case lfm2, none }
    enum PrefixSpace { case no, perSegment, perPiece }

    let model: TokenizerBPEModel
    let idToToken: [String?]
    let vocab: TokenizerStringTable
    let addedTokens: [TokenizerAddedToken]
    let addedByContent: [String: Int32]
    let isSpecial: [Bool]
    let nonNormalizedMatcher: TokenizerAddedMatcher?
    let normalizedMatcher: TokenizerAddedMatcher?
    let split: SplitKind
    let prefixSpace: PrefixSpace
    let templatePrefix: [Int32]
    let templateSuffix: [Int32]
    /// Decoded bytes of every id: decodeBytes[decodeOffsets[id] ..< decodeOffsets[id + 1]]; hasToken[id] false for gaps.
    let decodeBytes: [UInt8]
    let decodeOffsets: [Int32]
    let hasToken: [Bool]

    private let stateLock = NSLock()
    private var parkedState: TokenizerEncodeState?

    /// Number of ids (highest id in the vocabulary or added tokens, plus one).
    public var vocabularySize: Int { idToToken.count }

    /// The id the post-processor puts in front of a sequence (`<|startoftext|>` for LFM2), if it puts exactly one.
    public var bosId: Int32? { templatePrefix.count == 1 ? templatePrefix[0] : nil }

    /// Ids the post-processor adds before / after a sequence when `addBOS` is true.
    public var specialPrefixIds: [Int32] { templatePrefix }
    public var specialSuffixIds: [Int32] { templateSuffix }

    // MARK: Loading

    public convenience init(jsonString: String) throws {
        try self.init(json: Data(jsonString.utf8))
    }

    public init(json: Data) throws {
        let root = try TokenizerJSON.parse(json)
        guard case .object = root else { throw TokenizerError("malformed tokenizer JSON: the top level is \(root.kindName), not an object") }

        // --- model
        guard let modelJ = root["model"], case .object = modelJ else {
            throw TokenizerError("tokenizer.json has no \"model\" object")
        }
        if let t = modelJ["type"], !t.isNull {
            guard let ts = t.stringValue else { throw TokenizerError("model.type is \(t.kindName), expected a string") }
            guard ts == "BPE" else { throw TokenizerError("unsupported model type \"\(ts)\" (only BPE is supported)") }
        }
        if let d = modelJ["dropout"], !d.isNull, (d.doubleValue ?? 1) != 0 {
            throw TokenizerError("unsupported BPE option: dropout = \(d.doubleValue.map { String($0) } ?? d.kindName) (must be null)")
        }
        for key in ["continuing_subword_prefix", "end_of_word_suffix"] {
            if let v = modelJ[key], !v.isNull, v.stringValue != "" {
                throw TokenizerError("unsupported BPE option: \(key) = \(v.stringValue.map { "\"\($0)\"" } ?? v.kindName) (must be null)")
            }
        }
        let ignoreMerges = modelJ["ignore_merges"]?.boolValue ?? false
        let byteFallback = modelJ["byte_fallback"]?.boolValue ?? false
        let fuseUnk = modelJ["fuse_unk"]?.boolValue ?? false

        guard let vocabJ = modelJ["vocab"]?.objectValue else {
            throw TokenizerError("model.vocab is missing or is not an object")
        }
        var vocab = TokenizerStringTable(capacityFor: vocabJ.count)
        var maxId = -1
        for (tok, v) in vocabJ {
            guard let id = v.intValue, id >= 0, id <= Int(Int32.max) - 1 else {
                throw TokenizerError("model.vocab entry \"\(tok)\" has id \(v.valueDescription), not a valid token id")
            }
            // JSON readers disagree on which copy of a repeated key wins, so a repeat is an error, not a choice.
            if vocab.get(tok) != nil { throw TokenizerError("model.vocab lists \"\(tok)\" more than once") }
            vocab.insert(tok, id: Int32(id))
            maxId = max(maxId, id)
        }

        // --- added tokens
        var added: [TokenizerAddedToken] = []
        if let at = root["added_tokens"], !at.isNull {
            guard let list = at.arrayValue else { throw TokenizerError("added_tokens is \(at.kindName), expected an array") }
            for (k, item) in list.enumerated() {
                guard case .object = item, let content = item["content"]?.stringValue else {
                    throw TokenizerError("added_tokens[\(k)] has no string \"content\"")
                }
                guard let jid = item["id"]?.intValue, jid >= 0, jid <= Int(Int32.max) - 1 else {
                    throw TokenizerError("added_tokens[\(k)] (\"\(content)\") has no valid \"id\"")
                }
                let special = item["special"]?.boolValue ?? false
                // tokenizers gives an added token the model's id when the content is in the vocabulary.
                let id = vocab.get(content).map { Int($0) } ?? jid
                maxId = max(maxId, id)
                added.append(TokenizerAddedToken(
                    id: Int32(id), content: content, bytes: Array(content.utf8), special: special,
                    lstrip: item["lstrip"]?.boolValue ?? false, rstrip: item["rstrip"]?.boolValue ?? false,
                    singleWord: item["single_word"]?.boolValue ?? false,
                    normalized: item["normalized"]?.boolValue ?? !special))
            }
        }

        // The id table is as long as the largest id: bound it by what the file lists, so that one forged id
        // cannot make it gigabytes (real tokenizers number their tokens densely; some leave a few holes).
        let listed = vocabJ.count + added.count
        guard maxId < 2 * listed + 1024 else {
            throw TokenizerError("token id \(maxId) is far beyond the \(listed) tokens the file lists (ids must number the tokens)")
        }
        let size = maxId + 1
        var idToToken = [String?](repeating: nil, count: size)
        for (tok, _) in vocabJ {
            if let id = vocab.get(tok), idToToken[Int(id)] == nil { idToToken[Int(id)] = tok }
        }
        var addedByContent = [String: Int32]()
        var isSpecial = [Bool](repeating: false, count: size)
        for t in added {
            idToToken[Int(t.id)] = t.content  // tokenizers looks added tokens up first
            if addedByContent[t.content] == nil { addedByContent[t.content] = t.id }
        }
        // skip_special_tokens removes every id whose token string is a special added token's content.
        for t in added where t.special {
            isSpecial[Int(t.id)] = true
            if let v = vocab.get(t.content) { isSpecial[Int(v)] = true }
        }

        // --- byte-level alphabet
        let byteChars = Tokenizer.bytesToUnicode
        var byteToId = [Int32](repeating: -1, count: 256)
        var allBytesPresent = true
        for b in 0..<256 {
            if let id = vocab.get(String(Character(Unicode.Scalar(byteChars[b])!))) { byteToId[b] = id } else { allBytesPresent = false }
        }
        var unkId: Int32? = nil
        if let u = modelJ["unk_token"], !u.isNull {
            guard let us = u.stringValue else { throw TokenizerError("model.unk_token is \(u.kindName), expected a string") }
            // tokenizers only fails when the unk token is actually needed; we need it only for missing bytes.
            if let id = vocab.get(us) { unkId = id } else if !allBytesPresent {
                throw TokenizerError("model.unk_token \"\(us)\" is not in the vocabulary")
            }
        }
        if byteFallback && !allBytesPresent {
            throw TokenizerError("unsupported BPE option: byte_fallback = true with byte-level characters missing from the vocabulary")
        }

        // --- merges
        guard let mergesJ = modelJ["merges"]?.arrayValue else {
            throw TokenizerError("model.merges is missing or is not an array")
        }
        var table = TokenizerPairTable(capacityFor: mergesJ.count)
        var joined: [UInt8] = []
        for (rank, m) in mergesJ.enumerated() {
            // The two halves as UTF-8 in `joined`, split at `cut`.
            joined.removeAll(keepingCapacity: true)
            var cut = 0
            switch m {
            case .array(let pair):
                guard pair.count == 2, let x = pair[0].stringValue, let y = pair[1].stringValue else {
                    throw TokenizerError("model.merges[\(rank)] is not a pair of strings")
                }
                joined.append(contentsOf: x.utf8)
                cut = joined.count
                joined.append(contentsOf: y.utf8)
            case .string(let s):
                // "a b": exactly one space (tokenizers splits on ' ' and wants two parts).
                joined.append(contentsOf: s.utf8)
                guard let sp = joined.firstIndex(of: 0x20), !joined[(sp + 1)...].contains(0x20) else {
                    throw TokenizerError("model.merges[\(rank)] \"\(s)\" is not of the form \"a b\"")
                }
                joined.remove(at: sp)
                cut = sp
            default:
                throw TokenizerError("model.merges[\(rank)] is \(m.kindName), expected a pair or a string")
            }
            let ids: (Int32?, Int32?, Int32?) = joined.withUnsafeBufferPointer { j in
                // A one-byte dummy keeps the pointer valid for empty halves.
                let base = j.baseAddress ?? UnsafePointer(bitPattern: 1)!
                return (vocab.get(base, cut), vocab.get(base + cut, j.count - cut), vocab.get(base, j.count))
            }
            guard let ia = ids.0 else {
                throw TokenizerError("model.merges[\(rank)]: token \"\(String(decoding: joined[..<cut], as: UTF8.self))\" is not in the vocabulary")
            }
            guard let ib = ids.1 else {
                throw TokenizerError("model.merges[\(rank)]: token \"\(String(decoding: joined[cut...], as: UTF8.self))\" is not in the vocabulary")
            }
            guard let im = ids.2 else {
                throw TokenizerError("model.merges[\(rank)]: merged token \"\(String(decoding: joined, as: UTF8.self))\" is not in the vocabulary")
            }
            table.set(ia, ib, rank: Int32(rank), merged: im)
        }

        // --- decoding tables (ByteLevel decoder: map chars back to bytes, or raw UTF-8 if any char is not byte-level)
        var charToByte = [Int16](repeating: -1, count: 512)
        for b in 0..<256 { charToByte[Int(byteChars[b])] = Int16(b) }
        var decodeBytes: [UInt8] = []
        decodeBytes.reserveCapacity(size * 6)
        var decodeOffsets = [Int32](repeating: 0, count: size + 1)
        var hasToken = [Bool](repeating: false, count: size)
        var wholeWords: TokenizerStringTable? = ignoreMerges ? TokenizerStringTable(capacityFor: vocabJ.count) : nil
        var tmp: [UInt8] = []
        for i in 0..<size {
            decodeOffsets[i] = Int32(decodeBytes.count)
            guard let tok = idToToken[i] else { continue }
            hasToken[i] = true
            tmp.removeAll(keepingCapacity: true)
            var allMapped = true
            for s in tok.unicodeScalars {
                let v = Int(s.value)
                if v < 512, charToByte[v] >= 0 { tmp.append(UInt8(charToByte[v])) } else { allMapped = false; break }
            }
            if allMapped {
                decodeBytes.append(contentsOf: tmp)
            } else {
                decodeBytes.append(contentsOf: tok.utf8)
            }
        }
        decodeOffsets[size] = Int32(decodeBytes.count)
        if ignoreMerges {
            for (tok, _) in vocabJ {
                guard let id = vocab.get(tok) else { continue }
                var bytes: [UInt8] = []
                var ok = true
                for s in tok.unicodeScalars {
                    let v = Int(s.value)
                    if v < 512, charToByte[v] >= 0 { bytes.append(UInt8(charToByte[v])) } else { ok = false; break }
                }
                if ok { wholeWords!.insert(bytes, id: id) }
            }
        }

        // --- normalizer
        if let n = root["normalizer"], !n.isNull {
            throw TokenizerError("unsupported normalizer \(Tokenizer.describeType(n)) (only a null normalizer is supported)")
        }

        // --- pre-tokenizer
        guard let pt = root["pre_tokenizer"], !pt.isNull else {
            throw TokenizerError("unsupported pre_tokenizer: null (a ByteLevel pre-tokenizer is required)")
        }
        let (splitKind, prefix) = try Tokenizer.parsePreTokenizer(pt)

        // --- post-processor
        var pre: [Int32] = [], post: [Int32] = []
        if let pp = root["post_processor"], !pp.isNull {
            try Tokenizer.parsePostProcessor(pp, vocab: vocab, added: addedByContent, prefix: &pre, suffix: &post)
        }

        // --- decoder
        guard let dec = root["decoder"], !dec.isNull else {
            throw TokenizerError("unsupported decoder: null (a ByteLevel decoder is required)")
        }
        guard dec["type"]?.stringValue == "ByteLevel" else {
            throw TokenizerError("unsupported decoder \(Tokenizer.describeType(dec)) (only ByteLevel is supported)")
        }

        // --- matchers: non-normalized tokens first (pass 1), then normalized ones (pass 2)
        let nonNorm = added.enumerated().filter { !$0.element.normalized }.map { (index: $0.offset, bytes: $0.element.bytes) }
        let norm = added.enumerated().filter { $0.element.normalized }.map { (index: $0.offset, bytes: $0.element.bytes) }

        self.model = TokenizerBPEModel(byteToId: byteToId, merges: table, unkId: unkId, fuseUnk: fuseUnk, wholeWords: wholeWords)
        self.idToToken = idToToken
        self.vocab = vocab
        self.addedTokens = added
        self.addedByContent = addedByContent
        self.isSpecial = isSpecial
        self.nonNormalizedMatcher = nonNorm.isEmpty ? nil : TokenizerAddedMatcher(tokens: nonNorm)
        self.normalizedMatcher = norm.isEmpty ? nil : TokenizerAddedMatcher(tokens: norm)
        self.split = splitKind
        self.prefixSpace = prefix
        self.templatePrefix = pre
        self.templateSuffix = post
        self.decodeBytes = decodeBytes
        self.decodeOffsets = decodeOffsets
        self.hasToken = hasToken
    }

    static let lfm2Pattern = #"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"#

    static func describeType(_ j: TokenizerJSON) -> String {
        if let t = j["type"]?.stringValue { return "\"\(t)\"" }
        return "(\(j.kindName) without a type)"
    }

    static func parsePreTokenizer(_ pt: TokenizerJSON) throws -> (SplitKind, PrefixSpace) {
        guard let type = pt["type"]?.stringValue else {
            throw TokenizerError("unsupported pre_tokenizer: \(pt.kindName) without a \"type\"")
        }
        /// ByteLevel without its own split (use_regex true is GPT-2's regex, which is not implemented): its
        /// add_prefix_space.
        func byteLevel(_ j: TokenizerJSON, path: String) throws -> Bool {
            guard j["type"]?.stringValue == "ByteLevel" else {
                throw TokenizerError("unsupported pre_tokenizer: \(path) is \(describeType(j)), expected ByteLevel")
            }
            if j["use_regex"]?.boolValue ?? true {
                throw TokenizerError("unsupported pre_tokenizer: \(path) is ByteLevel with use_regex = true (GPT-2's split, not implemented)")
            }
            return j["add_prefix_space"]?.boolValue ?? true
        }
        switch type {
        case "ByteLevel":
            let prefix = try byteLevel(pt, path: "pre_tokenizer")
            return (.none, prefix ? .perSegment : .no)
        case "Sequence":
            guard let list = pt["pretokenizers"]?.arrayValue else {
                throw TokenizerError("unsupported pre_tokenizer: Sequence without a \"pretokenizers\" array")
            }
            if list.count == 1 {
                let prefix = try byteLevel(list[0], path: "pre_tokenizer.pretokenizers[0]")
                return (.none, prefix ? .perSegment : .no)
            }
            guard list.count == 2 else {
                throw TokenizerError("unsupported pre_tokenizer: Sequence of \(list.count) pre-tokenizers (expected [Split, ByteLevel])")
            }
            let s = list[0]
            guard s["type"]?.stringValue == "Split" else {
                throw TokenizerError("unsupported pre_tokenizer: pre_tokenizer.pretokenizers[0] is \(describeType(s)), expected Split")
            }
            guard let pattern = s["pattern"]?["Regex"]?.stringValue else {
                throw TokenizerError("unsupported pre_tokenizer: Split pattern is not a {\"Regex\": ...} pattern")
            }
            guard pattern == lfm2Pattern else {
                throw TokenizerError("unsupported pre_tokenizer: Split regex \(pattern) (only LFM2's pattern is implemented)")
            }
            let behavior = s["behavior"]?.stringValue ?? ""
            guard behavior == "Isolated" else {
                throw TokenizerError("unsupported pre_tokenizer: Split behavior \"\(behavior)\" (only Isolated is supported)")
            }
            if s["invert"]?.boolValue == true {
                throw TokenizerError("unsupported pre_tokenizer: Split with invert = true")
            }
            let prefix = try byteLevel(list[1], path: "pre_tokenizer.pretokenizers[1]")
            return (.lfm2, prefix ? .perPiece : .no)
        default:
            throw TokenizerError("unsupported pre_tokenizer \"\(type)\" (supported: Sequence[Split, ByteLevel] and ByteLevel)")
        }
    }

    static func parsePostProcessor(_ pp: TokenizerJSON, vocab: TokenizerStringTable, added: [String: Int32],
                                   prefix: inout [Int32], suffix: inout [Int32]) throws {
        let type = pp["type"]?.stringValue ?? ""
        func lookup(_ s: String) throws -> Int32 {
            if let id = added[s] ?? vocab.get(s) { return id }
            throw TokenizerError("post_processor special token \"\(s)\" is not in the vocabulary")
        }
        switch type {
        case "ByteLevel":
            return  // only adjusts offsets
        case "Sequence":
            guard let list = pp["processors"]?.arrayValue else {
                throw TokenizerError("unsupported post_processor: Sequence without a \"processors\" array")
            }
            for p in list { try parsePostProcessor(p, vocab: vocab, added: added, prefix: &prefix, suffix: &suffix) }
        case "TemplateProcessing":
            guard let single = pp["single"]?.arrayValue else {
                throw TokenizerError("unsupported post_processor: TemplateProcessing without a \"single\" template")
            }
            var specials: [String: [Int32]] = [:]
            if let st = pp["special_tokens"]?.objectValue {
                for (name, v) in st {
                    guard let ids = v["ids"]?.arrayValue else { continue }
                    specials[name] = try ids.map {
                        guard let i = $0.intValue else { throw TokenizerError("post_processor special_tokens[\"\(name)\"] has a non-integer id") }
                        return Int32(i)
                    }
                }
            }
            var seenSequence = false
            for piece in single {
                if let sp = piece["SpecialToken"] {
                    guard let name = sp["id"]?.stringValue else {
                        throw TokenizerError("post_processor template piece SpecialToken has no id")
                    }
                    let ids = try specials[name] ?? [lookup(name)]
                    if seenSequence { suffix += ids } else { prefix += ids }
                } else if let sq = piece["Sequence"] {
                    if seenSequence || (sq["id"]?.stringValue ?? "A") != "A" {
                        throw TokenizerError("unsupported post_processor: the single template must contain sequence $A exactly once")
                    }
                    seenSequence = true
                } else {
                    throw TokenizerError("unsupported post_processor: unknown template piece (\(piece.kindName))")
                }
            }
            if !seenSequence { throw TokenizerError("unsupported post_processor: the single template has no $A") }
        default:
            throw TokenizerError("unsupported post_processor \(describeType(pp))")
        }
    }

    /// GPT-2's bytes_to_unicode: byte -> Unicode scalar value of its byte-level character.
    static let bytesToUnicode: [UInt32] = {
        var table = [UInt32](repeating: 0, count: 256)
        var n: UInt32 = 0
        for b in 0..<256 {
            let printable = (0x21...0x7E).contains(b) || (0xA1...0xAC).contains(b) || (0xAE...0xFF).contains(b)
            if printable { table[b] = UInt32(b) } else { table[b] = 256 + n; n += 1 }
        }
        return table
    }()

    // MARK: Lookups

    /// The token string of an id (the byte-level form, e.g. "Ġthe"), or nil if the id has no token.
    public func token(forId id: Int32) -> String? {
        guard id >= 0, Int(id) < idToToken.count else { return nil }
        return idToToken[Int(id)]
    }

    /// The id of a token string (added tokens first, then the BPE vocabulary).
    public func id(forToken token: String) -> Int32? {
        addedByContent[token] ?? vocab.get(token)
    }

    /// Whether the id is a special added token (removed by `skipSpecialTokens`).
    public func isSpecialToken(_ id: Int32) -> Bool {
        id >= 0 && Int(id) < isSpecial.count && isSpecial[Int(id)]
    }

    // MARK: Encoding

    /// Token ids of `text`. With `addBOS` the post-processor's template is applied (LFM2: `<|startoftext|>` in front),
    /// like `add_special_tokens=True`. Special tokens written in the text are recognised as such.
    public func encode(_ text: String, addBOS: Bool = false) -> [Int32] {
        var out: [Int32] = []
        out.reserveCapacity(text.utf8.count / 3 + 4)
        if addBOS { out.append(contentsOf: templatePrefix) }
        var state = takeState()
        var t = text
        t.withUTF8 { buf in
            guard let base = buf.baseAddress, buf.count > 0 else { return }
            tokenizerBMPClasses.withUnsafeBufferPointer { bmp in
                encodeBytes(base, buf.count, bmp: bmp.baseAddress!, into: &out, state: &state)
            }
        }
        putState(state)
        if addBOS { out.append(contentsOf: templateSuffix) }
        return out
    }

    /// Drops the word cache (it is rebuilt as text is encoded; at most 65,536 words are kept).
    public func clearCache() {
        stateLock.lock()
        parkedState = nil
        stateLock.unlock()
    }

    private func takeState() -> TokenizerEncodeState {
        stateLock.lock()
        let s = parkedState
        parkedState = nil
        stateLock.unlock()
        return s ?? TokenizerEncodeState()
    }

    private func putState(_ s: TokenizerEncodeState) {
        stateLock.lock()
        parkedState = s
        stateLock.unlock()
    }

    /// tokenizers' AddedVocabulary::find_matches over p[s..<e], appended to `out` as (start, end, id or -1).
    func findAddedMatches(_ matcher: TokenizerAddedMatcher, _ p: UnsafePointer<UInt8>, _ s: Int, _ e: Int,
                          into out: inout [(start: Int, end: Int, id: Int32)]) {
        var pos = s
        var startOffset = s
        while let m = matcher.find(p, from: pos, end: e) {
            pos = m.end
            let tok = addedTokens[m.token]
            var start = m.start
            var stop = m.end
            if tok.singleWord {
                let startSpace = start == s || !Tokenizer.endsWithWordChar(p, s, start)
                let stopSpace = stop == e || !Tokenizer.startsWithWordChar(p, stop, e)
                if !startSpace || !stopSpace { continue }
            }
            if tok.lstrip {
                start = max(Tokenizer.leftmostSpaceAtEnd(p, s, start), startOffset)
            }
            if tok.rstrip {
                stop = Tokenizer.rightmostSpaceAtStart(p, stop, e)
            }
            if startOffset < start { out.append((startOffset, start, -1)) }
            out.append((start, stop, tok.id))
            startOffset = stop
        }
        if startOffset != e { out.append((startOffset, e, -1)) }
    }

    func encodeBytes(_ p: UnsafePointer<UInt8>, _ n: Int, bmp: UnsafePointer<UInt8>,
                     into out: inout [Int32], state st: inout TokenizerEncodeState) {
        st.segments.removeAll(keepingCapacity: true)
        if let m1 = nonNormalizedMatcher {
            findAddedMatches(m1, p, 0, n, into: &st.segments)
        } else {
            st.segments.append((0, n, -1))
        }
        if let m2 = normalizedMatcher {
            st.inner.removeAll(keepingCapacity: true)
            let first = st.segments
            for seg in first {
                if seg.id >= 0 { st.inner.append(seg) } else { findAddedMatches(m2, p, seg.start, seg.end, into: &st.inner) }
            }
            swap(&st.segments, &st.inner)
        }
        let scanner = TokenizerScanner(p: p, bmp: bmp)
        var k = 0
        while k < st.segments.count {
            let seg = st.segments[k]
            k += 1
            if seg.id >= 0 { out.append(seg.id); continue }
            if seg.start >= seg.end { continue }
            encodeSegment(scanner, seg.start, seg.end, bmp: bmp, into: &out, state: &st)
        }
    }

    /// Pre-tokenizes and BPE-encodes one stretch of plain text (no added tokens in it).
    func encodeSegment(_ sc: TokenizerScanner, _ s: Int, _ e: Int, bmp: UnsafePointer<UInt8>,
                       into out: inout [Int32], state st: inout TokenizerEncodeState) {
        if prefixSpace == .perSegment && sc.p[s] != 0x20 {
            // ByteLevel(add_prefix_space) prepends a space to the whole segment before its regex split.
            var buf = [UInt8]()
            buf.reserveCapacity(e - s + 1)
            buf.append(0x20)
            buf.append(contentsOf: UnsafeBufferPointer(start: sc.p + s, count: e - s))
            buf.withUnsafeBufferPointer { b in
                let inner = TokenizerScanner(p: b.baseAddress!, bmp: bmp)
                splitAndEncode(inner, 0, b.count, into: &out, state: &st)
            }
            return
        }
        splitAndEncode(sc, s, e, into: &out, state: &st)
    }

    @inline(__always)
    func splitAndEncode(_ sc: TokenizerScanner, _ s: Int, _ e: Int, into out: inout [Int32], state st: inout TokenizerEncodeState) {
        var i = s
        switch split {
        case .lfm2:
            while i < e {
                let j = sc.nextLFM2(i, e)
                encodePiece(sc.p + i, j - i, into: &out, state: &st)
                i = j
            }
        case .none:
            encodePiece(sc.p + s, e - s, into: &out, state: &st)
        }
    }

    @inline(__always)
    func encodePiece(_ p: UnsafePointer<UInt8>, _ n: Int, into out: inout [Int32], state st: inout TokenizerEncodeState) {
        if prefixSpace == .perPiece && p[0] != 0x20 {
            st.prefixed.removeAll(keepingCapacity: true)
            st.prefixed.append(0x20)
            st.prefixed.append(contentsOf: UnsafeBufferPointer(start: p, count: n))
            let buf = st.prefixed
            st.prefixed = []
            buf.withUnsafeBufferPointer { b in encodeWordCached(b.baseAddress!, b.count, into: &out, state: &st) }
            st.prefixed = buf
            return
        }
        encodeWordCached(p, n, into: &out, state: &st)
    }

    @inline(__always)
    func encodeWordCached(_ p: UnsafePointer<UInt8>, _ n: Int, into out: inout [Int32], state st: inout TokenizerEncodeState) {
        if n == 1 {
            let id = model.byteToId[Int(p[0])]
            if id >= 0 { out.append(id); return }
        }
        if n > TokenizerWordCache.maxKeyLength {
            model.encodeWord(p, n, into: &out, scratch: &st.scratch)
            return
        }
        let h = TokenizerWordCache.hash(p, n)
        if let hit = st.cache.lookup(p, n, hash: h) {
            st.cache.idArena.withUnsafeBufferPointer { a in
                out.append(contentsOf: UnsafeBufferPointer(rebasing: a[hit.start..<(hit.start + hit.count)]))
            }
            return
        }
        let before = out.count
        model.encodeWord(p, n, into: &out, scratch: &st.scratch)
        out.withUnsafeBufferPointer { o in
            st.cache.insert(p, n, hash: h, ids: UnsafeBufferPointer(rebasing: o[before...]))
        }
    }

    // Helpers for added-token flags (Rust regex crate: \w = Alphabetic, M, Nd, Pc, Join_Control; \s = White_Space).

    static func decodeScalar(_ p: UnsafePointer<UInt8>, _ i: Int, _ e: Int) -> (Unicode.Scalar, Int) {
        let b0 = p[i]
        var len = 1
        var v = UInt32(b0)
        if b0 >= 0xF0 { len = 4; v = UInt32(b0 & 0x07) } else if b0 >= 0xE0 { len = 3; v = UInt32(b0 & 0x0F) } else if b0 >= 0xC0 { len = 2; v = UInt32(b0 & 0x1F) }
        if len > 1 {
            if i + len > e { return ("\u{FFFD}", 1) }
            for k in 1..<len { v = v << 6 | UInt32(p[i + k] & 0x3F) }
        }
        return (Unicode.Scalar(v) ?? "\u{FFFD}", len)
    }

    static func scalarStart(_ p: UnsafePointer<UInt8>, _ s: Int, before i: Int) -> Int {
        var j = i - 1
        while j > s && p[j] & 0xC0 == 0x80 { j -= 1 }
        return j
    }

    static func isWordChar(_ c: Unicode.Scalar) -> Bool {
        let pr = c.properties
        if pr.isAlphabetic || pr.isJoinControl { return true }
        switch pr.generalCategory {
        case .nonspacingMark, .spacingMark, .enclosingMark, .decimalNumber, .connectorPunctuation: return true
        default: return false
        }
    }

    static func endsWithWordChar(_ p: UnsafePointer<UInt8>, _ s: Int, _ i: Int) -> Bool {
        guard i > s else { return false }
        let j = scalarStart(p, s, before: i)
        return isWordChar(decodeScalar(p, j, i).0)
    }

    static func startsWithWordChar(_ p: UnsafePointer<UInt8>, _ i: Int, _ e: Int) -> Bool {
        guard i < e else { return false }
        return isWordChar(decodeScalar(p, i, e).0)
    }

    /// Start of the trailing white space of p[s..<i].
    static func leftmostSpaceAtEnd(_ p: UnsafePointer<UInt8>, _ s: Int, _ i: Int) -> Int {
        var k = i
        while k > s {
            let j = scalarStart(p, s, before: k)
            if !decodeScalar(p, j, k).0.properties.isWhitespace { break }
            k = j
        }
        return k
    }

    /// End of the leading white space of p[i..<e].
    static func rightmostSpaceAtStart(_ p: UnsafePointer<UInt8>, _ i: Int, _ e: Int) -> Int {
        var k = i
        while k < e {
            let (c, l) = decodeScalar(p, k, e)
            if !c.properties.isWhitespace { break }
            k += l
        }
        return k
    }

    // MARK: Decoding

    func appendBytes(of id: Int32, skipSpecialTokens: Bool, to bytes: inout [UInt8]) throws {
        guard id >= 0, Int(id) < hasToken.count else {
            throw TokenizerError("token id \(id) is out of range (vocabulary has \(hasToken.count) entries)")
        }
        let i = Int(id)
        guard hasToken[i] else { throw TokenizerError("token id \(id) has no token in the vocabulary") }
        if skipSpecialTokens && isSpecial[i] { return }
        let a = Int(decodeOffsets[i]), b = Int(decodeOffsets[i + 1])
        decodeBytes.withUnsafeBufferPointer { d in bytes.append(contentsOf: UnsafeBufferPointer(rebasing: d[a..<b])) }
    }

    /// The raw bytes that the ids stand for (before UTF-8 decoding).
    public func decodeToBytes(_ ids: [Int32], skipSpecialTokens: Bool = false) throws -> [UInt8] {
        var bytes: [UInt8] = []
        bytes.reserveCapacity(ids.count * 4)
        for id in ids { try appendBytes(of: id, skipSpecialTokens: skipSpecialTokens, to: &bytes) }
        return bytes
    }

    /// Text of the ids, like tokenizers' `decode(ids, skip_special_tokens)` with clean_up_tokenization_spaces = false.
    /// Invalid UTF-8 (e.g. a multi-byte character cut between tokens) becomes U+FFFD.
    /// Throws for an id outside the vocabulary.
    public func decode(_ ids: [Int32], skipSpecialTokens: Bool = false) throws -> String {
        String(decoding: try decodeToBytes(ids, skipSpecialTokens: skipSpecialTokens), as: UTF8.self)
    }

    public func makeStreamingDecoder(skipSpecialTokens: Bool = false) -> StreamingDecoder {
        StreamingDecoder(tokenizer: self, skipSpecialTokens: skipSpecialTokens)
    }

    // MARK: Chat template

    /// The LFM2 chat prompt for one user message with the generation prompt, i.e. what the chat template gives:
    /// `<|startoftext|><|im_start|>user\n{user}<|im_end|>\n<|im_start|>assistant\n`.
    /// Encode it with `addBOS: false` (it already starts with the BOS token as text).
    public static func chatPrompt(user: String, bos: String = "<|startoftext|>") -> String {
        "\(bos)<|im_start|>user\n\(user)<|im_end|>\n<|im_start|>assistant\n"
    }

    /// A whole conversation ((role, content) pairs: system, user, assistant) as the chat template renders it, ending
    /// with the generation prompt: `<|startoftext|>` then `<|im_start|>{role}\n{content}<|im_end|>\n` per message,
    /// then `<|im_start|>assistant\n`. For one user message it equals `chatPrompt(user:)`.
    public static func chatPrompt(messages: [(role: String, content: String)], bos: String = "<|startoftext|>") -> String {
        var text = bos
        for m in messages { text += "<|im_start|>\(m.role)\n\(m.content)<|im_end|>\n" }
        return text + "<|im_start|>assistant\n"
    }
}

/// Incremental decoder: feed ids one at a time, get back the text they complete.
/// Bytes of a UTF-8 character split across tokens are held back until the character is complete, so no chunk
/// ends with a partial character; the concatenation of all chunks plus `finish()` equals `decode(allIds)`.
public struct StreamingDecoder: Sendable {
    public let tokenizer: Tokenizer
    public let skipSpecialTokens: Bool
    private var pending: [UInt8] = []

    public init(tokenizer: Tokenizer, skipSpecialTokens: Bool = false) {
        self.tokenizer = tokenizer
        self.skipSpecialTokens = skipSpecialTokens
    }

    /// Number of bytes held back (an incomplete UTF-8 sequence at the end of the ids seen so far).
    public var pendingByteCount: Int { pending.count }

    /// Adds one id; returns the newly completed text (possibly empty). Throws for an id outside the vocabulary
    /// (the decoder is unchanged then).
    public mutating func append(_ id: Int32) throws -> String {
        try tokenizer.appendBytes(of: id, skipSpecialTokens: skipSpecialTokens, to: &pending)
        let cut = StreamingDecoder.completePrefixLength(pending)
        if cut == 0 { return "" }
        let text = String(decoding: pending[0..<cut], as: UTF8.self)
        pending.removeFirst(cut)
        return text
    }

    /// Adds several ids; returns the newly completed text.
    public mutating func append(contentsOf ids: [Int32]) throws -> String {
        var s = ""
        for id in ids { s += try append(id) }
        return s
    }

    /// Flushes whatever is held back (an incomplete sequence becomes U+FFFD) and resets the decoder.
    public mutating func finish() -> String {
        defer { pending.removeAll() }
        return pending.isEmpty ? "" : String(decoding: pending, as: UTF8.self)
    }

    /// Length of the prefix of `b` that can be decoded now: everything except a trailing sequence that is a valid
    /// but incomplete UTF-8 character (which more bytes could still complete).
    static func completePrefixLength(_ b: [UInt8]) -> Int {
        let n = b.count
        var k = n - 1
        let lowest = max(0, n - 4)
        while k >= lowest {
            let c = b[k]
            if c & 0xC0 != 0x80 {
                // Lead byte (or ASCII / invalid) at k.
                let need: Int
                var lo: UInt8 = 0x80, hi: UInt8 = 0xBF
                switch c {
                case 0xC2...0xDF: need = 2
                case 0xE0: need = 3; lo = 0xA0
                case 0xED: need = 3; hi = 0x9F
                case 0xE1...0xEC, 0xEE...0xEF: need = 3
                case 0xF0: need = 4; lo = 0x90
                case 0xF1...0xF3: need = 4
                case 0xF4: need = 4; hi = 0x8F
                default: return n  // ASCII or a byte that can never start a character
                }
                let have = n - k
                if have >= need { return n }  // complete (or invalid) sequence: decode everything
                // Incomplete: hold it back only if it is a valid prefix so far.
                if have >= 2 {
                    if b[k + 1] < lo || b[k + 1] > hi { return n }
                    if have >= 3 && (b[k + 2] & 0xC0 != 0x80) { return n }
                }
                return k
            }
            k -= 1
        }
        return n  // only continuation bytes at the end: nothing can complete them
    }
}
