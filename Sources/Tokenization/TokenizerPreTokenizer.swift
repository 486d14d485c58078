// A hand-written scanner for the pre-tokenizer split regex (no regex engine in the hot path).
//
// It reproduces the matches of the Oniguruma engine that Hugging Face `tokenizers` uses (`find_iter`,
// leftmost-first alternation, greedy quantifiers with backtracking) for the one pattern LFM2 uses:
//
//   (?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+
//
// Character classes: \p{L} = general category L (Lu Ll Lt Lm Lo), \p{N} = N (Nd Nl No),
// \s = Unicode White_Space (what Oniguruma uses for UTF-8), as of Unicode 16.0 (see regexUnicodeVersion). Case-insensitive 's also matches 'S and 'ſ (U+017F,
// whose simple case folding is "s"); no other character folds to t, r, e, v, m, l or d.
// Every position of the input is matched by some alternative, so the pieces tile the input with no gaps.

import Foundation

/// Character classes used by the scanners.
enum TokenizerCharClass {
    static let other: UInt8 = 0
    static let letter: UInt8 = 1
    static let number: UInt8 = 2
    static let space: UInt8 = 3    // White_Space other than \r and \n
    static let newline: UInt8 = 4  // \r or \n

    /// The Unicode version of Oniguruma's property tables in `tokenizers` (0.23: Oniguruma 6.9.10, Unicode 16.0).
    /// Characters assigned later (Swift's tables may be newer) are unassigned there, so they count as `other`.
    static let regexUnicodeVersion = (major: 16, minor: 0)

    static func classify(scalar v: UInt32) -> UInt8 {
        if v == 0x0A || v == 0x0D { return newline }
        guard let s = Unicode.Scalar(v) else { return other }
        let props = s.properties
        if props.isWhitespace { return space }
        let cls: UInt8
        switch props.generalCategory {
        case .uppercaseLetter, .lowercaseLetter, .titlecaseLetter, .modifierLetter, .otherLetter:
            cls = letter
        case .decimalNumber, .letterNumber, .otherNumber:
            cls = number
        default:
            return other
        }
        guard let age = props.age else { return other }
        if age.major > regexUnicodeVersion.major
            || (age.major == regexUnicodeVersion.major && age.minor > regexUnicodeVersion.minor) {
            return other
        }
        return cls
    }
}

/// Class of every BMP scalar (computed once per process, 64 KiB); surrogates get `other`.
let tokenizerBMPClasses: [UInt8] = {
    var t = [UInt8](repeating: TokenizerCharClass.other, count: 0x10000)
    for v in 0..<UInt32(0x10000) where !(0xD800...0xDFFF).contains(v) {
        t[Int(v)] = TokenizerCharClass.classify(scalar: v)
    }
    return t
}()

/// A view of UTF-8 bytes with class lookups. The bytes are expected to be valid UTF-8 (they come from a String);
/// a stray invalid byte is treated as a one-byte `other` character.
struct TokenizerScanner {
    let p: UnsafePointer<UInt8>
    let bmp: UnsafePointer<UInt8>

    /// Decodes the scalar starting at byte i (< end). Returns its class and byte length.
    @inline(__always)
    func classAt(_ i: Int, _ end: Int) -> (cls: UInt8, len: Int) {
        let b0 = p[i]
        if b0 < 0x80 { return (bmp[Int(b0)], 1) }
        return classSlow(i, end)
    }

    @inline(never)
    func classSlow(_ i: Int, _ end: Int) -> (cls: UInt8, len: Int) {
        let b0 = UInt32(p[i])
        var len = 0
        var v: UInt32 = 0
        if b0 & 0xE0 == 0xC0 { len = 2; v = b0 & 0x1F }
        else if b0 & 0xF0 == 0xE0 { len = 3; v = b0 & 0x0F }
        else if b0 & 0xF8 == 0xF0 { len = 4; v = b0 & 0x07 }
        else { return (TokenizerCharClass.other, 1) }
        if i + len > end { return (TokenizerCharClass.other, 1) }
        for k in 1..<len {
            let c = UInt32(p[i + k])
            if c & 0xC0 != 0x80 { return (TokenizerCharClass.other, 1) }
            v = v << 6 | (c & 0x3F)
        }
        if v < 0x10000 { return (bmp[Int(v)], len) }
        return (TokenizerCharClass.classify(scalar: v), len)
    }

    /// End of the run of letters starting at i.
    @inline(__always)
    func letters(from i: Int, _ end: Int) -> Int {
        var j = i
        while j < end {
            let (c, l) = classAt(j, end)
            if c != TokenizerCharClass.letter { break }
            j += l
        }
        return j
    }

    /// End of the run of "other" characters ([^\s\p{L}\p{N}]) starting at i.
    @inline(__always)
    func others(from i: Int, _ end: Int) -> Int {
        var j = i
        while j < end {
            let (c, l) = classAt(j, end)
            if c != TokenizerCharClass.other { break }
            j += l
        }
        return j
    }

    @inline(__always)
    static func lower(_ c: UInt8) -> UInt8 { (c >= 0x41 && c <= 0x5A) ? c | 0x20 : c }

    /// (?i:'s|'t|'re|'ve|'m|'ll|'d) at i (p[i] == '\''); returns the end or -1.
    func contractionCaseInsensitive(_ i: Int, _ end: Int) -> Int {
        guard i + 1 < end else { return -1 }
        let c1 = p[i + 1]
        let l1 = TokenizerScanner.lower(c1)
        switch l1 {
        case UInt8(ascii: "s"), UInt8(ascii: "t"), UInt8(ascii: "m"), UInt8(ascii: "d"):
            return i + 2
        case UInt8(ascii: "r"), UInt8(ascii: "v"):
            if i + 2 < end && TokenizerScanner.lower(p[i + 2]) == UInt8(ascii: "e") { return i + 3 }
            return -1
        case UInt8(ascii: "l"):
            if i + 2 < end && TokenizerScanner.lower(p[i + 2]) == UInt8(ascii: "l") { return i + 3 }
            return -1
        case 0xC5:
            // U+017F LATIN SMALL LETTER LONG S (C5 BF) folds to 's'.
            if i + 2 < end && p[i + 2] == 0xBF { return i + 3 }
            return -1
        default:
            return -1
        }
    }

    /// The whitespace alternatives starting at i (a white-space character).
    /// withNewlineRule: `\s*[\r\n]+` is tried first (LFM2); then `\s+(?!\S)`, then `\s+`.
    @inline(__always)
    func whitespace(_ i: Int, _ end: Int, withNewlineRule: Bool) -> Int {
        var k = i
        var lastNewlineEnd = -1
        var lastStart = i
        var count = 0
        while k < end {
            let (c, l) = classAt(k, end)
            if c == TokenizerCharClass.space {
            } else if c == TokenizerCharClass.newline {
                lastNewlineEnd = k + l
            } else {
                break
            }
            lastStart = k
            k += l
            count += 1
        }
        if withNewlineRule && lastNewlineEnd >= 0 { return lastNewlineEnd }  // \s*[\r\n]+
        if k == end { return k }                                             // \s+(?!\S) at the end
        if count > 1 { return lastStart }                                    // \s+(?!\S), backed off by one
        return k                                                             // \s+
    }

    /// End of the LFM2-pattern match starting at i (i < end). Always > i.
    func nextLFM2(_ i: Int, _ end: Int) -> Int {
        let b0 = p[i]
        if b0 == 0x27 {
            let j = contractionCaseInsensitive(i, end)
            if j > 0 { return j }
        }
        let (c0, l0) = classAt(i, end)
        switch c0 {
        case TokenizerCharClass.letter:
            return letters(from: i + l0, end)
        case TokenizerCharClass.number:
            // \p{N}{1,3}
            var j = i + l0
            var n = 1
            while n < 3 && j < end {
                let (c, l) = classAt(j, end)
                if c != TokenizerCharClass.number { break }
                j += l
                n += 1
            }
            return j
        case TokenizerCharClass.newline:
            return whitespace(i, end, withNewlineRule: true)
        default:
            // other or space: [^\r\n\p{L}\p{N}]?\p{L}+
            let i1 = i + l0
            if i1 < end {
                let (c1, l1) = classAt(i1, end)
                if c1 == TokenizerCharClass.letter { return letters(from: i1 + l1, end) }
                // ' ?[^\s\p{L}\p{N}]+[\r\n]*'
                if c0 == TokenizerCharClass.other {
                    return newlines(from: others(from: i1, end), end)
                }
                if b0 == 0x20 && c1 == TokenizerCharClass.other {
                    return newlines(from: others(from: i1 + l1, end), end)
                }
            } else if c0 == TokenizerCharClass.other {
                return i1
            }
            return whitespace(i, end, withNewlineRule: true)
        }
    }

    /// [\r\n]* from i.
    @inline(__always)
    func newlines(from i: Int, _ end: Int) -> Int {
        var j = i
        while j < end && (p[j] == 0x0A || p[j] == 0x0D) { j += 1 }
        return j
    }
}
