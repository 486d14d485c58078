// Byte-level BPE model: merge table, the merge algorithm, and a word cache.
//
// Merge semantics are those of Hugging Face `tokenizers` (Word::merge_all): repeatedly merge the adjacent pair
// with the lowest rank, the leftmost one on ties, until no adjacent pair has a merge. Short words use a linear
// scan over a small array, long ones a binary heap over a linked list; both give the same result.

import Foundation

/// Open-addressing hash map from a (left id, right id) pair to (rank, merged id).
/// Keys and values are interleaved so that a probe touches one cache line.
struct TokenizerPairTable {
    private var table: [UInt64]  // [key0, value0, key1, value1, ...]
    private let mask: Int
    private(set) var count = 0

    private static let empty = UInt64.max

    init(capacityFor n: Int) {
        var cap = 16
        while cap < n * 2 { cap <<= 1 }
        table = [UInt64](repeating: TokenizerPairTable.empty, count: cap * 2)
        mask = cap - 1
    }

    @inline(__always)
    static func key(_ a: Int32, _ b: Int32) -> UInt64 { UInt64(UInt32(bitPattern: a)) << 32 | UInt64(UInt32(bitPattern: b)) }

    @inline(__always)
    private func slot(_ key: UInt64) -> Int {
        Int(truncatingIfNeeded: (key &* 0x9E37_79B9_7F4A_7C15) >> 29) & mask
    }

    /// Inserts or overwrites (a later duplicate merge replaces an earlier one, like a Rust HashMap collect).
    mutating func set(_ a: Int32, _ b: Int32, rank: Int32, merged: Int32) {
        let k = TokenizerPairTable.key(a, b)
        var s = slot(k)
        while true {
            if table[2 * s] == TokenizerPairTable.empty {
                table[2 * s] = k
                count += 1
                break
            }
            if table[2 * s] == k { break }
            s = (s + 1) & mask
        }
        table[2 * s + 1] = UInt64(UInt32(bitPattern: rank)) << 32 | UInt64(UInt32(bitPattern: merged))
    }

    /// (rank, merged id) or nil.
    @inline(__always)
    func get(_ a: Int32, _ b: Int32) -> (rank: Int32, merged: Int32)? {
        let k = TokenizerPairTable.key(a, b)
        var s = slot(k)
        return table.withUnsafeBufferPointer { t in
            while true {
                let kk = t[2 * s]
                if kk == k {
                    let v = t[2 * s + 1]
                    return (Int32(truncatingIfNeeded: v >> 32), Int32(truncatingIfNeeded: v))
                }
                if kk == TokenizerPairTable.empty { return nil }
                s = (s + 1) & mask
            }
        }
    }
}

/// Map from byte strings (UTF-8 of token strings, or raw bytes) to ids, compared byte for byte
/// (Swift String keys would hash through Unicode normalisation, which is slow and merges canonically
/// equivalent strings that tokenizers keeps apart).
struct TokenizerStringTable {
    /// 0 = empty, else (high 32 bits of the hash) << 32 | (entry index + 1).
    private var slots: [UInt64]
    /// (arena start) << 32 | length, per entry.
    private var spans: [UInt64] = []
    private(set) var ids: [Int32] = []
    private var arena: [UInt8] = []
    private var mask: Int

    init(capacityFor n: Int) {
        var cap = 16
        while cap < n * 2 { cap <<= 1 }
        slots = [UInt64](repeating: 0, count: cap)
        mask = cap - 1
        spans.reserveCapacity(n)
        ids.reserveCapacity(n)
        arena.reserveCapacity(n * 8)
    }

    var count: Int { ids.count }

    private func find(_ p: UnsafePointer<UInt8>, _ n: Int, _ h: UInt64) -> (slot: Int, entry: Int) {
        var s = Int(truncatingIfNeeded: h) & mask
        let tag = h & 0xFFFF_FFFF_0000_0000
        return slots.withUnsafeBufferPointer { sl in
            spans.withUnsafeBufferPointer { sp in
                arena.withUnsafeBufferPointer { a in
                    while true {
                        let v = sl[s]
                        if v == 0 { return (s, -1) }
                        if v & 0xFFFF_FFFF_0000_0000 == tag {
                            let e = Int(v & 0xFFFF_FFFF) - 1
                            let span = sp[e]
                            if Int(span & 0xFFFF_FFFF) == n {
                                if n == 0 || memcmp(a.baseAddress! + Int(span >> 32), p, n) == 0 { return (s, e) }
                            }
                        }
                        s = (s + 1) & mask
                    }
                }
            }
        }
    }

    /// Inserts unless present; returns false if the key was already there (its id is kept).
    @discardableResult
    mutating func insert(_ p: UnsafePointer<UInt8>, _ n: Int, id: Int32) -> Bool {
        if (ids.count + 1) * 2 > slots.count { grow() }
        let h = TokenizerWordCache.hash(p, n)
        let (s, e) = find(p, n, h)
        if e >= 0 { return false }
        slots[s] = (h & 0xFFFF_FFFF_0000_0000) | UInt64(ids.count + 1)
        spans.append(UInt64(arena.count) << 32 | UInt64(n))
        ids.append(id)
        arena.append(contentsOf: UnsafeBufferPointer(start: p, count: n))
        return true
    }

    @discardableResult
    mutating func insert(_ bytes: [UInt8], id: Int32) -> Bool {
        var bytes = bytes
        if bytes.isEmpty { bytes = [0]; return bytes.withUnsafeBufferPointer { b in insert(b.baseAddress!, 0, id: id) } }
        return bytes.withUnsafeBufferPointer { b in insert(b.baseAddress!, b.count, id: id) }
    }

    @discardableResult
    mutating func insert(_ s: String, id: Int32) -> Bool {
        var s = s
        if s.isEmpty { return insert([UInt8](), id: id) }
        return s.withUTF8 { b in insert(b.baseAddress!, b.count, id: id) }
    }

    func get(_ p: UnsafePointer<UInt8>, _ n: Int) -> Int32? {
        let e = find(p, n, TokenizerWordCache.hash(p, n)).entry
        return e >= 0 ? ids[e] : nil
    }

    func get(_ bytes: [UInt8]) -> Int32? {
        if bytes.isEmpty { return [UInt8(0)].withUnsafeBufferPointer { b in get(b.baseAddress!, 0) } }
        return bytes.withUnsafeBufferPointer { b in get(b.baseAddress!, b.count) }
    }

    func get(_ s: String) -> Int32? {
        var s = s
        if s.isEmpty { return get([UInt8]()) }
        return s.withUTF8 { b in get(b.baseAddress!, b.count) }
    }

    private mutating func grow() {
        let cap = slots.count * 2
        slots = [UInt64](repeating: 0, count: cap)
        mask = cap - 1
        for e in 0..<ids.count {
            let span = spans[e]
            let st = Int(span >> 32), n = Int(span & 0xFFFF_FFFF)
            let h = n == 0 ? [UInt8(0)].withUnsafeBufferPointer { TokenizerWordCache.hash($0.baseAddress!, 0) }
                : arena.withUnsafeBufferPointer { a in TokenizerWordCache.hash(a.baseAddress! + st, n) }
            var s = Int(truncatingIfNeeded: h) & mask
            while slots[s] != 0 { s = (s + 1) & mask }
            slots[s] = (h & 0xFFFF_FFFF_0000_0000) | UInt64(e + 1)
        }
    }
}

/// Cache from a pre-token's bytes to its ids. Cleared wholesale when full.
struct TokenizerWordCache {
    /// 0 = empty, else (high 32 bits of the hash) << 32 | (entry index + 1).
    private var slots: [UInt64]
    /// Per entry: key (arena start << 32 | length) and ids (idArena start << 32 | count).
    private var keySpans: [UInt64] = []
    private var idSpans: [UInt64] = []
    private var keyArena: [UInt8] = []
    private(set) var idArena: [Int32] = []
    private let mask: Int
    let maxEntries: Int
    static let maxKeyLength = 128

    init(maxEntries: Int = 1 << 16) {
        self.maxEntries = maxEntries
        var cap = 16
        while cap < maxEntries * 2 { cap <<= 1 }
        slots = [UInt64](repeating: 0, count: cap)
        mask = cap - 1
    }

    @inline(__always)
    static func hash(_ p: UnsafePointer<UInt8>, _ n: Int) -> UInt64 {
        var h: UInt64 = 0xCBF2_9CE4_8422_2325 ^ UInt64(n)
        var i = 0
        while i + 8 <= n {
            let w = UnsafeRawPointer(p + i).loadUnaligned(as: UInt64.self)
            h = (h ^ w) &* 0x100_0000_01B3
            h ^= h >> 29
            i += 8
        }
        while i < n {
            h = (h ^ UInt64(p[i])) &* 0x100_0000_01B3
            i += 1
        }
        h ^= h >> 32
        h = h &* 0x9E37_79B9_7F4A_7C15
        return h ^ (h >> 31)
    }

    /// Returns (start, count) into idArena.
    @inline(__always)
    func lookup(_ p: UnsafePointer<UInt8>, _ n: Int, hash h: UInt64) -> (start: Int, count: Int)? {
        var s = Int(truncatingIfNeeded: h) & mask
        let tag = h & 0xFFFF_FFFF_0000_0000
        return slots.withUnsafeBufferPointer { sl in
            while true {
                let v = sl[s]
                if v == 0 { return nil }
                if v & 0xFFFF_FFFF_0000_0000 == tag {
                    let e = Int(v & 0xFFFF_FFFF) - 1
                    let ks = keySpans[e]
                    if Int(ks & 0xFFFF_FFFF) == n {
                        let st = Int(ks >> 32)
                        let equal = keyArena.withUnsafeBufferPointer { kb in memcmp(kb.baseAddress! + st, p, n) == 0 }
                        if equal {
                            let ids = idSpans[e]
                            return (Int(ids >> 32), Int(ids & 0xFFFF_FFFF))
                        }
                    }
                }
                s = (s + 1) & mask
            }
        }
    }

    mutating func insert(_ p: UnsafePointer<UInt8>, _ n: Int, hash h: UInt64, ids: UnsafeBufferPointer<Int32>) {
        if keySpans.count >= maxEntries { clear() }
        keySpans.append(UInt64(keyArena.count) << 32 | UInt64(n))
        idSpans.append(UInt64(idArena.count) << 32 | UInt64(ids.count))
        keyArena.append(contentsOf: UnsafeBufferPointer(start: p, count: n))
        idArena.append(contentsOf: ids)
        var s = Int(truncatingIfNeeded: h) & mask
        while slots[s] != 0 { s = (s + 1) & mask }
        slots[s] = (h & 0xFFFF_FFFF_0000_0000) | UInt64(keySpans.count)
    }

    mutating func clear() {
        for k in slots.indices { slots[k] = 0 }
        keySpans.removeAll(keepingCapacity: true)
        idSpans.removeAll(keepingCapacity: true)
        keyArena.removeAll(keepingCapacity: true)
        idArena.removeAll(keepingCapacity: true)
    }
}

/// The BPE model proper (immutable after init).
struct TokenizerBPEModel {
    /// Vocabulary id of the byte-level character of each byte, or -1 if the vocabulary lacks it.
    let byteToId: [Int32]
    let merges: TokenizerPairTable
    let unkId: Int32?
    let fuseUnk: Bool
    /// Only with ignore_merges: whole byte-level words found in the vocabulary (keyed by their raw bytes).
    let wholeWords: TokenizerStringTable?

    /// Threshold between the quadratic small-word algorithm and the heap algorithm.
    static let smallWordLimit = 48

    /// Initial symbols of a word: one per byte; missing bytes become unk (fused if fuse_unk) or are dropped.
    @inline(__always)
    func initialSymbols(_ p: UnsafePointer<UInt8>, _ n: Int, into syms: inout [Int32]) {
        syms.removeAll(keepingCapacity: true)
        var lastWasUnk = false
        for k in 0..<n {
            let id = byteToId[Int(p[k])]
            if id >= 0 {
                syms.append(id)
                lastWasUnk = false
            } else if let u = unkId {
                if !(fuseUnk && lastWasUnk) { syms.append(u) }
                lastWasUnk = true
            }
        }
    }

    /// Appends the ids of one pre-token (its raw bytes) to `out`.
    func encodeWord(_ p: UnsafePointer<UInt8>, _ n: Int, into out: inout [Int32], scratch sc: inout TokenizerBPEScratch) {
        if let ww = wholeWords, let id = ww.get(p, n) {
            out.append(id)
            return
        }
        initialSymbols(p, n, into: &sc.syms)
        if sc.syms.count <= TokenizerBPEModel.smallWordLimit {
            mergeSmall(&sc)
        } else {
            mergeHeap(&sc)
        }
        out.append(contentsOf: sc.syms)
    }

    /// Lowest-rank-first, leftmost-on-ties merging over a compact array (O(n^2) comparisons, O(n) lookups).
    func mergeSmall(_ sc: inout TokenizerBPEScratch) {
        var n = sc.syms.count
        if n < 2 { return }
        let none = Int32.max
        sc.ranks.removeAll(keepingCapacity: true)
        sc.newIds.removeAll(keepingCapacity: true)
        for k in 0..<(n - 1) {
            if let m = merges.get(sc.syms[k], sc.syms[k + 1]) {
                sc.ranks.append(m.rank)
                sc.newIds.append(m.merged)
            } else {
                sc.ranks.append(none)
                sc.newIds.append(-1)
            }
        }
        while n > 1 {
            var best = none
            var bi = -1
            for k in 0..<(n - 1) where sc.ranks[k] < best {
                best = sc.ranks[k]
                bi = k
            }
            if bi < 0 { break }
            sc.syms[bi] = sc.newIds[bi]
            sc.syms.remove(at: bi + 1)
            sc.ranks.remove(at: bi)
            sc.newIds.remove(at: bi)
            n -= 1
            if bi > 0 {
                if let m = merges.get(sc.syms[bi - 1], sc.syms[bi]) {
                    sc.ranks[bi - 1] = m.rank
                    sc.newIds[bi - 1] = m.merged
                } else {
                    sc.ranks[bi - 1] = none
                }
            }
            if bi < n - 1 {
                if let m = merges.get(sc.syms[bi], sc.syms[bi + 1]) {
                    sc.ranks[bi] = m.rank
                    sc.newIds[bi] = m.merged
                } else {
                    sc.ranks[bi] = none
                }
            }
        }
    }

    /// tokenizers' Word::merge_all: binary heap of (rank, position) over a doubly linked list of symbols.
    func mergeHeap(_ sc: inout TokenizerBPEScratch) {
        let n = sc.syms.count
        if n < 2 { return }
        sc.prev.removeAll(keepingCapacity: true)
        sc.next.removeAll(keepingCapacity: true)
        sc.alive.removeAll(keepingCapacity: true)
        for k in 0..<n {
            sc.prev.append(Int32(k - 1))
            sc.next.append(k + 1 < n ? Int32(k + 1) : -1)
            sc.alive.append(true)
        }
        sc.heap.clear()
        for k in 0..<(n - 1) {
            if let m = merges.get(sc.syms[k], sc.syms[k + 1]) {
                sc.heap.push(rank: m.rank, pos: Int32(k), merged: m.merged)
            }
        }
        while let top = sc.heap.pop() {
            let pos = Int(top.pos)
            if !sc.alive[pos] { continue }
            let nx = Int(sc.next[pos])
            if nx < 0 { continue }
            // The pair at pos must still be the one this entry was made for.
            guard let m = merges.get(sc.syms[pos], sc.syms[nx]), m.merged == top.merged else { continue }
            sc.syms[pos] = top.merged
            sc.alive[nx] = false
            let nn = Int(sc.next[nx])
            sc.next[pos] = Int32(nn)
            if nn >= 0 { sc.prev[nn] = Int32(pos) }
            let pv = Int(sc.prev[pos])
            if pv >= 0, let m2 = merges.get(sc.syms[pv], sc.syms[pos]) {
                sc.heap.push(rank: m2.rank, pos: Int32(pv), merged: m2.merged)
            }
            if nn >= 0, let m3 = merges.get(sc.syms[pos], sc.syms[nn]) {
                sc.heap.push(rank: m3.rank, pos: Int32(pos), merged: m3.merged)
            }
        }
        sc.newIds.removeAll(keepingCapacity: true)
        var k = 0
        while k >= 0 && k < n {
            sc.newIds.append(sc.syms[k])
            k = Int(sc.next[k])
        }
        swap(&sc.syms, &sc.newIds)
    }
}

/// Reusable scratch buffers for BPE.
struct TokenizerBPEScratch {
    var syms: [Int32] = []
    var ranks: [Int32] = []
    var newIds: [Int32] = []
    var prev: [Int32] = []
    var next: [Int32] = []
    var alive: [Bool] = []
    var heap = TokenizerMergeHeap()
}

/// Min-heap keyed by (rank, pos), i.e. lowest rank first and leftmost on ties; merged ids ride along.
struct TokenizerMergeHeap {
    // Each element packs rank (high 32 bits) and pos (low 32 bits); merged ids are kept in `mergedIds`.
    var storage: [UInt64] = []
    var mergedIds: [Int32] = []

    mutating func clear() {
        storage.removeAll(keepingCapacity: true)
        mergedIds.removeAll(keepingCapacity: true)
    }

    mutating func push(rank: Int32, pos: Int32, merged: Int32) {
        storage.append(UInt64(UInt32(bitPattern: rank)) << 32 | UInt64(UInt32(bitPattern: pos)))
        mergedIds.append(merged)
        var c = storage.count - 1
        while c > 0 {
            let par = (c - 1) >> 1
            if storage[par] <= storage[c] { break }
            storage.swapAt(par, c)
            mergedIds.swapAt(par, c)
            c = par
        }
    }

    mutating func pop() -> (rank: Int32, pos: Int32, merged: Int32)? {
        guard let top = storage.first else { return nil }
        let topMerged = mergedIds[0]
        let last = storage.removeLast()
        let lastMerged = mergedIds.removeLast()
        if !storage.isEmpty {
            storage[0] = last
            mergedIds[0] = lastMerged
            var c = 0
            let n = storage.count
            while true {
                let l = 2 * c + 1
                if l >= n { break }
                var m = l
                if l + 1 < n && storage[l + 1] < storage[l] { m = l + 1 }
                if storage[c] <= storage[m] { break }
                storage.swapAt(c, m)
                mergedIds.swapAt(c, m)
                c = m
            }
        }
        return (Int32(truncatingIfNeeded: top >> 32), Int32(truncatingIfNeeded: top), topMerged)
    }
}
