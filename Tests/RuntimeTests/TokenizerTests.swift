import Foundation
import Runtime
import XCTest
import TestSupport

/// The byte-level BPE tokenizer against the tiny fixture's goldens (golden/tokenizer_cases.json, made with
/// Hugging Face `tokenizers`), plus streaming decoding and error handling. Public API only.
final class TokenizerTests: XCTestCase {
    private static let fixture = URL(fileURLWithPath: Fixtures.tiny)

    private static var cachedTokenizer: Tokenizer?

    private func tokenizerData() throws -> Data {
        let path = Self.fixture.appendingPathComponent("tokenizer.json").path
        _ = try Fixtures.require(path)
        return try Data(contentsOf: URL(fileURLWithPath: path))
    }

    private func tokenizer() throws -> Tokenizer {
        if let t = Self.cachedTokenizer { return t }
        let t = try Tokenizer(json: try tokenizerData())
        Self.cachedTokenizer = t
        return t
    }

    private func golden() throws -> [String: Any] {
        let path = Self.fixture.appendingPathComponent("golden/tokenizer_cases.json").path
        _ = try Fixtures.require(path)
        let object = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: path)))
        return try XCTUnwrap(object as? [String: Any])
    }

    private struct Case {
        let text: String
        let ids: [Int32]
        let idsWithBOS: [Int32]
        let tokens: [String]
        let decoded: String
        let decodedSkipSpecial: String
    }

    private func cases() throws -> [Case] {
        let list = try XCTUnwrap(try golden()["cases"] as? [[String: Any]])
        XCTAssertEqual(list.count, 32)
        return try list.map { c in
            Case(text: try XCTUnwrap(c["text"] as? String),
                 ids: try XCTUnwrap(c["ids"] as? [Int]).map(Int32.init),
                 idsWithBOS: try XCTUnwrap(c["ids_with_bos"] as? [Int]).map(Int32.init),
                 tokens: try XCTUnwrap(c["tokens"] as? [String]),
                 decoded: try XCTUnwrap(c["decoded"] as? String),
                 decodedSkipSpecial: try XCTUnwrap(c["decoded_skip_special"] as? String))
        }
    }

    // MARK: Goldens

    func testVocabularyAndSpecialIds() throws {
        let t = try tokenizer()
        let g = try golden()
        XCTAssertEqual(t.vocabularySize, g["vocab_size"] as? Int)
        XCTAssertEqual(t.bosId.map(Int.init), g["bos_token_id"] as? Int)
        let specials = try XCTUnwrap(g["special_ids"] as? [String: Int])
        for (token, id) in specials {
            XCTAssertEqual(t.id(forToken: token), Int32(id), token)
            XCTAssertEqual(t.token(forId: Int32(id)), token)
            XCTAssertTrue(t.isSpecialToken(Int32(id)), token)
        }
        XCTAssertEqual(t.id(forToken: "Ġthe"), 270)
        XCTAssertNil(t.id(forToken: "no such token"))
        XCTAssertNil(t.token(forId: 512))
        XCTAssertNil(t.token(forId: -1))
        XCTAssertFalse(t.isSpecialToken(270))
    }

    func testGoldenEncode() throws {
        let t = try tokenizer()
        for c in try cases() {
            XCTAssertEqual(t.encode(c.text), c.ids, "ids of \(c.text.debugDescription)")
            XCTAssertEqual(t.encode(c.text, addBOS: false), c.ids, "ids of \(c.text.debugDescription)")
            XCTAssertEqual(t.encode(c.text, addBOS: true), c.idsWithBOS, "ids with BOS of \(c.text.debugDescription)")
            XCTAssertEqual(c.ids.map { t.token(forId: $0) ?? "?" }, c.tokens, "tokens of \(c.text.debugDescription)")
        }
    }

    func testGoldenDecode() throws {
        let t = try tokenizer()
        for c in try cases() {
            XCTAssertEqual(try t.decode(c.ids), c.decoded, "decode of \(c.text.debugDescription)")
            XCTAssertEqual(try t.decode(c.ids, skipSpecialTokens: false), c.decoded)
            XCTAssertEqual(try t.decode(c.ids, skipSpecialTokens: true), c.decodedSkipSpecial,
                           "decode (skip special) of \(c.text.debugDescription)")
            XCTAssertEqual(try t.decode(c.idsWithBOS, skipSpecialTokens: true), c.decodedSkipSpecial)
        }
    }

    func testChatTemplateExamples() throws {
        let t = try tokenizer()
        let examples = try XCTUnwrap(try golden()["chat_template_examples"] as? [[String: Any]])
        XCTAssertEqual(examples.count, 3)
        for (k, ex) in examples.enumerated() {
            let text = try XCTUnwrap(ex["text"] as? String)
            let ids = try XCTUnwrap(ex["ids"] as? [Int]).map(Int32.init)
            // The text already starts with <|startoftext|> as a special token: no BOS is added again.
            XCTAssertEqual(t.encode(text, addBOS: false), ids, "chat example \(k)")
            let messages = try XCTUnwrap(ex["messages"] as? [[String: Any]])
            if messages.count == 1 {
                let user = try XCTUnwrap(messages[0]["content"] as? String)
                let prompt = Tokenizer.chatPrompt(user: user)
                XCTAssertEqual(prompt, text, "chat example \(k)")
                XCTAssertEqual(t.encode(prompt), ids, "chat example \(k)")
            }
        }
        XCTAssertEqual(Tokenizer.chatPrompt(user: "Hi", bos: ""), "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n")
    }

    /// More edge cases of the split regex (whitespace runs, CR LF, case-insensitive contractions incl. U+017F,
    /// other scripts' digits, combining marks, partial special tokens); expected ids from `tokenizers` 0.23.3.
    func testPreTokenizerEdgeCases() throws {
        let t = try tokenizer()
        let expected: [(String, [Int32])] = [
            ("a  \n\n  b", [70, 336, 204, 204, 226, 272]),
            ("x'\u{17F}'LL 'Re", [93, 12, 135, 129, 12, 49, 49, 226, 12, 55, 74]),
            ("\u{A0}word\u{3000}next", [132, 260, 92, 268, 73, 165, 228, 228, 83, 74, 93, 89]),
            ("   x", [336, 481]),
            ("a\r\nb\r\n", [70, 207, 204, 71, 207, 204]),
            ("12345678", [313, 24, 25, 26, 27, 28, 29]),
            ("\u{663}\u{664}\u{665}\u{666}", [155, 102, 155, 103, 155, 104, 155, 105]),
            ("(x) [y]!!\n\n", [369, 14, 226, 64, 94, 66, 6, 6, 204, 204]),
            ("tab\t\t\tend", [467, 71, 203, 203, 203, 74, 271]),
            ("  \n", [336, 204]),
            ("<|im_end|><|im_end|>x<image><image", [4, 4, 93, 5, 33, 78, 379, 74]),
            ("", []),
            (".\n\n\nnext", [274, 204, 204, 83, 74, 93, 89]),
            ("\u{216B}\u{216B}\u{BD}\u{B2}", [164, 233, 110, 164, 233, 110, 132, 127, 132, 116]),
            ("e\u{301}\u{301}x", [74, 142, 229, 142, 229, 93]),
        ]
        for (text, ids) in expected {
            XCTAssertEqual(t.encode(text), ids, text.debugDescription)
            XCTAssertEqual(try t.decode(ids), text, text.debugDescription)
        }
        XCTAssertEqual(t.encode("", addBOS: true), [1])
        XCTAssertEqual(try t.decode([]), "")
    }

    func testRoundTripAndCacheConsistency() throws {
        let t = try tokenizer()
        var text = ""
        for k in 0..<300 {
            text += "Line \(k): naïve café 東京 🙂 it's   spaced\t\ttabs <|im_start|>x\r\n"
        }
        let once = t.encode(text)
        XCTAssertEqual(try t.decode(once), text)
        XCTAssertEqual(t.encode(text), once, "second encode (warm cache) differs")
        t.clearCache()
        XCTAssertEqual(t.encode(text), once, "encode after clearCache differs")
        // Long pre-tokens (merged with the heap algorithm) and long whitespace runs.
        let long = String(repeating: "ab", count: 500) + String(repeating: " ", count: 3000) + "x" + String(repeating: "\n", count: 50)
        XCTAssertEqual(try t.decode(t.encode(long)), long)
    }

    /// Merges given as "a b" strings (older tokenizer.json files) load to the same tokenizer as ["a", "b"] pairs.
    func testMergesAsStrings() throws {
        var object = try XCTUnwrap(try JSONSerialization.jsonObject(with: try tokenizerData()) as? [String: Any])
        var model = try XCTUnwrap(object["model"] as? [String: Any])
        let merges = try XCTUnwrap(model["merges"] as? [[String]])
        model["merges"] = merges.map { $0.joined(separator: " ") }
        object["model"] = model
        let t2 = try Tokenizer(json: try JSONSerialization.data(withJSONObject: object))
        let t = try tokenizer()
        for c in try cases() { XCTAssertEqual(t2.encode(c.text), t.encode(c.text), c.text.debugDescription) }
    }

    // MARK: Streaming

    private func stream(_ t: Tokenizer, _ ids: [Int32], skip: Bool) throws -> (chunks: [String], held: [Int]) {
        var d = t.makeStreamingDecoder(skipSpecialTokens: skip)
        var chunks: [String] = []
        var held: [Int] = []
        for id in ids {
            chunks.append(try d.append(id))
            held.append(d.pendingByteCount)
        }
        chunks.append(d.finish())
        XCTAssertEqual(d.pendingByteCount, 0)
        return (chunks, held)
    }

    func testStreamingDecoderMatchesDecode() throws {
        let t = try tokenizer()
        for c in try cases() {
            for skip in [false, true] {
                let (chunks, _) = try stream(t, c.ids, skip: skip)
                XCTAssertEqual(chunks.joined(), skip ? c.decodedSkipSpecial : c.decoded, c.text.debugDescription)
                for chunk in chunks {
                    XCTAssertFalse(chunk.unicodeScalars.contains("\u{FFFD}"), "partial character emitted for \(c.text.debugDescription)")
                }
            }
        }
    }

    func testStreamingHoldsBackSplitCharacters() throws {
        let t = try tokenizer()
        for text in ["emoji 🙂🚲🐈", "family 👨‍👩‍👧 flag 🇯🇵", "東京 and 北京", "Москва"] {
            let ids = t.encode(text)
            let (chunks, held) = try stream(t, ids, skip: false)
            XCTAssertEqual(chunks.joined(), text)
            XCTAssertTrue(held.contains { $0 > 0 }, "no multi-byte character was split across tokens in \(text.debugDescription)")
            // Each chunk is whole scalars of the text, in order, with no U+FFFD.
            var rest = Array(text.unicodeScalars)
            for (k, chunk) in chunks.enumerated() {
                let scalars = Array(chunk.unicodeScalars)
                XCTAssertFalse(scalars.contains("\u{FFFD}"), "chunk \(k) of \(text.debugDescription)")
                XCTAssertEqual(Array(rest.prefix(scalars.count)), scalars, "chunk \(k) of \(text.debugDescription)")
                rest.removeFirst(min(scalars.count, rest.count))
            }
            XCTAssertTrue(rest.isEmpty)
        }
        // "🙂" is ĠðŁ + Ļ + Ĥ: nothing of it appears before its last byte arrives.
        let emoji = t.encode(" 🙂")
        XCTAssertEqual(emoji.map { t.token(forId: $0) ?? "?" }, ["ĠðŁ", "Ļ", "Ĥ"])
        var d = t.makeStreamingDecoder()
        XCTAssertEqual(try d.append(emoji[0]), " ")
        XCTAssertEqual(try d.append(emoji[1]), "")
        XCTAssertEqual(d.pendingByteCount, 3)
        XCTAssertEqual(try d.append(emoji[2]), "🙂")
        XCTAssertEqual(d.finish(), "")
    }

    func testStreamingInvalidBytesMatchDecode() throws {
        let t = try tokenizer()
        let lead = try XCTUnwrap(t.id(forToken: "ðŁ"))       // F0 9F: start of a 4-byte character
        let cont = try XCTUnwrap(t.id(forToken: "¨"))        // A8: a lone continuation byte
        let exclam = try XCTUnwrap(t.id(forToken: "!"))
        let sequences: [[Int32]] = [[cont], [lead], [lead, exclam], [exclam, lead], [lead, 4, exclam], [cont, lead, cont, cont, exclam]]
        for ids in sequences {
            for skip in [false, true] {
                let (chunks, _) = try stream(t, ids, skip: skip)
                XCTAssertEqual(chunks.joined(), try t.decode(ids, skipSpecialTokens: skip), "\(ids)")
            }
        }
        XCTAssertEqual(try t.decode([exclam, lead]), "!\u{FFFD}")
        var d = t.makeStreamingDecoder()
        XCTAssertEqual(try d.append(exclam), "!")
        XCTAssertEqual(try d.append(lead), "")
        XCTAssertEqual(d.finish(), "\u{FFFD}")
    }

    // MARK: Errors

    func testOutOfRangeIdThrows() throws {
        let t = try tokenizer()
        for bad: Int32 in [512, 100_000, -1] {
            XCTAssertThrowsError(try t.decode([45, bad])) { error in
                let e = error as? TokenizerError
                XCTAssertNotNil(e)
                XCTAssertTrue(e?.description.contains("\(bad)") ?? false, "\(error)")
                XCTAssertTrue(e?.description.contains("out of range") ?? false, "\(error)")
            }
            var d = t.makeStreamingDecoder()
            XCTAssertThrowsError(try d.append(bad)) { XCTAssertTrue($0 is TokenizerError) }
        }
    }

    private func assertLoadFails(_ json: Data, mentions words: [String], file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertThrowsError(try Tokenizer(json: json), file: file, line: line) { error in
            guard let e = error as? TokenizerError else { return XCTFail("not a TokenizerError: \(error)", file: file, line: line) }
            XCTAssertFalse(e.message.isEmpty, file: file, line: line)
            for w in words {
                XCTAssertTrue(e.description.contains(w), "\(e.description) should mention \(w)", file: file, line: line)
            }
        }
    }

    func testMalformedJSONThrows() throws {
        assertLoadFails(Data(), mentions: ["malformed"])
        assertLoadFails(Data("{ not json".utf8), mentions: ["malformed"])
        assertLoadFails(Data("[1, 2, 3]".utf8), mentions: ["malformed"])
        let full = try tokenizerData()
        assertLoadFails(full.prefix(full.count / 2), mentions: ["malformed"])
        assertLoadFails(Data("{\"version\": \"1.0\"}".utf8), mentions: ["model"])
        assertLoadFails(Data("{\"model\": {\"type\": \"WordPiece\", \"vocab\": {}}}".utf8), mentions: ["WordPiece"])
    }

    /// Well-formed JSON describing a tokenizer this implementation does not support (or an inconsistent one).
    func testUnsupportedOrInconsistentTokenizerThrows() throws {
        let base = try XCTUnwrap(try JSONSerialization.jsonObject(with: try tokenizerData()) as? [String: Any])
        func variant(_ edit: (inout [String: Any]) -> Void) throws -> Data {
            var o = base
            edit(&o)
            return try JSONSerialization.data(withJSONObject: o)
        }
        assertLoadFails(try variant { o in
            var pt = o["pre_tokenizer"] as! [String: Any]
            var list = pt["pretokenizers"] as! [[String: Any]]
            list[0]["pattern"] = ["Regex": "\\w+|\\s+"]
            pt["pretokenizers"] = list
            o["pre_tokenizer"] = pt
        }, mentions: ["unsupported", "Split"])
        assertLoadFails(try variant { o in o["normalizer"] = ["type": "NFC"] }, mentions: ["normalizer", "NFC"])
        assertLoadFails(try variant { o in o["decoder"] = ["type": "WordPiece"] }, mentions: ["decoder"])
        assertLoadFails(try variant { o in
            var m = o["model"] as! [String: Any]
            var merges = m["merges"] as! [[String]]
            merges.append(["no-such-token", "x"])
            m["merges"] = merges
            o["model"] = m
        }, mentions: ["merges", "no-such-token"])
        assertLoadFails(try variant { o in
            var m = o["model"] as! [String: Any]
            m["dropout"] = 0.1
            o["model"] = m
        }, mentions: ["dropout"])
    }
}
