// Byte-level BPE model: merge table, the merge algorithm, and a word cache.
//
// Merge semantics are those of Hugging Face `tokenizers` (Word::merge_all): repeatedly merge the adjacent pair
// with the lowest rank, the leftmost one on ties, until no adjacent pair has a merge. Short words use a linear
// scan over a small array, long ones a binary heap over a linked list; both give the same result.

import Foundation

/// Open-addressing hash map from a (left id, right id) pair to (rank, merged id).
struct TokenizerPairTable {
    private var keys: [UInt64]
    private var values: [UInt64]
    private let mask: Int
    private(set) var count = 0

    private static let empty = UInt64.max

    init(capacityFor n: Int) {
        var cap = 16
        while cap < n * 2 { cap <<= 1 }
        keys = [UInt64](repeating: TokenizerPairTable.empty, count: cap)
        values = [UInt64](repeating: 0, count: cap)
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
            if keys[s] == TokenizerPairTable.empty {
                keys[s] = k
                count += 1
                break
            }
            if keys[s] == k { break }
            s = (s + 1) & mask
        }
        values[s] = UInt64(UInt32(bitPattern: rank)) << 32 | UInt64(UInt32(bitPattern: merged))
    }

    /// (rank, merged id) or nil.
    @inline(__always)
    func get(_ a: Int32, _ b: Int32) -> (rank: Int32, merged: Int32)? {
        let k = TokenizerPairTable.key(a, b)
        var s = slot(k)
        return keys.withUnsafeBufferPointer { kp in
            while true {
                let kk = kp[s]
                if kk == k {
                    let v = values[s]
                    return (Int32(truncatingIfNeeded: v >> 32), Int32(truncatingIfNeeded: v))
                }
                if kk == TokenizerPairTable.empty { return nil }
                s = (s + 1) & mask
            }
        }
    }
}

/// Cache from a pre-token's bytes to its ids. Cleared wholesale when full.
struct TokenizerWordCache {
    private var slots: [Int32]           // entry index or -1
    private var hashes: [UInt64] = []
    private var keyStart: [Int32] = []
    private var keyLen: [Int32] = []
    private var idStart: [Int32] = []
    private var idCount: [Int32] = []
    private var keyArena: [UInt8] = []
    private(set) var idArena: [Int32] = []
    private let mask: Int
    let maxEntries: Int
    static let maxKeyLength = 128

    init(maxEntries: Int = 1 << 16) {
        self.maxEntries = maxEntries
        var cap = 16
        while cap < maxEntries * 2 { cap <<= 1 }
        slots = [Int32](repeating: -1, count: cap)
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
    func lookup(_ p: UnsafePointer<UInt8>, _ n: Int, hash h: UInt64) -> (start: Int, count: Int)? {
        var s = Int(truncatingIfNeeded: h) & mask
        while true {
            let e = Int(slots[s])
            if e < 0 { return nil }
            if hashes[e] == h && Int(keyLen[e]) == n {
                let ks = Int(keyStart[e])
                let equal = keyArena.withUnsafeBufferPointer { kb in memcmp(kb.baseAddress! + ks, p, n) == 0 }
                if equal { return (Int(idStart[e]), Int(idCount[e])) }
            }
            s = (s + 1) & mask
        }
    }

    mutating func insert(_ p: UnsafePointer<UInt8>, _ n: Int, hash h: UInt64, ids: UnsafeBufferPointer<Int32>) {
        if hashes.count >= maxEntries { clear() }
        let e = Int32(hashes.count)
        hashes.append(h)
        keyStart.append(Int32(keyArena.count))
        keyLen.append(Int32(n))
        idStart.append(Int32(idArena.count))
        idCount.append(Int32(ids.count))
        keyArena.append(contentsOf: UnsafeBufferPointer(start: p, count: n))
        idArena.append(contentsOf: ids)
        var s = Int(truncatingIfNeeded: h) & mask
        while slots[s] >= 0 { s = (s + 1) & mask }
        slots[s] = e
    }

    mutating func clear() {
        for k in slots.indices { slots[k] = -1 }
        hashes.removeAll(keepingCapacity: true)
        keyStart.removeAll(keepingCapacity: true)
        keyLen.removeAll(keepingCapacity: true)
        idStart.removeAll(keepingCapacity: true)
        idCount.removeAll(keepingCapacity: true)
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
    /// Only with ignore_merges: whole byte-level words found in the vocabulary.
    let wholeWords: [[UInt8]: Int32]?

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
        if let ww = wholeWords, let id = ww[Array(UnsafeBufferPointer(start: p, count: n))] {
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
