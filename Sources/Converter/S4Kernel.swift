// S4 (state-spaces "SSMKernelDPLR") convolution kernel, computed once at conversion time.
//
// The Cross-Modal Modulator's S4Block stores the raw S4 parameters (inv_dt, A_real, A_imag, B, C-tilde, P,
// l_kernel). The runtime only executes a causal FIR filter with L real taps per channel, so the converter
// turns the parameters into those taps here, in float64 (the caller stores them as float32). No complex
// arithmetic is left for the runtime.
//
// Semantics (authors' modeling/ssm/s4.py with the defaults used by cossm.py's S4Block: mode "dplr",
// d_state 64 -> N/2 = 32 conjugate pairs, rank 1, n_ssm = H, dt_tie, dt_transform "exp",
// real_transform "exp", imag_transform "none", channels 1, bilinear discretisation), per channel h, with
// t = h mod S the index of the (A, B, P) copy it uses (S = n_ssm, H = S in the released model):
//
//   dt = exp(inv_dt[h])
//   lambda_n = -exp(A_real[t, n]) - i * A_imag[t, n]                       n < N/2
//   the full state has Nf = 2 * halfState entries: every half-size vector v is extended to [v, conj(v)]
//     (lambda, B[t], P[r, t], C-tilde[h]); A = diag(lambda) - sum_r P_r P_r^H  (Nf x Nf complex)
//   dA = (I - dt/2 A)^-1 (I + dt/2 A),  dB = (I - dt/2 A)^-1 dt B
//   C-tilde = C (I - dA^Lk) with Lk = l_kernel (what a checkpoint stores after the first forward pass)
//   K_j = Re(C dA^j dB), j = 0 ..< L      (the full conjugate-extended sum is real; equals 2 Re of the half sum)
//
// Fast path (used when 0 < L <= l_kernel, i.e. always for the released model, L = l_kernel = 512): exactly
// the reference's frequency-domain route. With omega_k = exp(-2 pi i k / Lk), k = 0 ..< Lk, the generating
// function of the first Lk taps is
//   F_k = sum_{j<Lk} K_j omega_k^j = C-tilde (I - omega_k dA)^-1 dB
//       = dt * C-tilde [ (1 - omega_k) I - s_k (diag(lambda) - P P^H) ]^-1 B,     s_k = (1 + omega_k) dt / 2
//       = dt * ( r_CB - s_k r_CP (I + s_k r_QP)^-1 r_QB )                          (Woodbury, rank R)
//   with Cauchy sums r_XY = sum_{n < Nf} X_n Y_n / ((1 - omega_k) - s_k lambda_n), Q = conj(P).
// (This is the reference's z = 2(1 - omega)/(1 + omega) form multiplied through by (1 + omega)/2, which
// removes its singular point at omega = -1.) The taps are the inverse real DFT of F (like torch irfft with
// n = Lk), truncated to the first L.
//
// Slow path (lKernel == 0, or L > l_kernel): the dense float64 state-space recurrence above, with the true C
// recovered from C-tilde by an LU solve with (I - dA^Lk)^T (or taken as stored when l_kernel == 0). In exact
// arithmetic this equals what the reference's length doubling produces. It is also public as
// `tapsByRecurrence` for cross-checking.

import Foundation
import Runtime

/// Raw S4 kernel parameters of one `SSMKernelDPLR`, as float64, in checkpoint layout (row-major).
/// Names below are the tensors under `<prefix>.s4.layer.kernel.` in the PyTorch state dict.
/// H = `channels` (d_model), S = `ssmCount` (n_ssm, divides H), N2 = `halfState` (N/2 complex pairs),
/// R = `rank`. S4Complex tensors are stored as (real, imag) pairs in their last axis.
public struct S4Parameters {
    /// `inv_dt` [H, 1] (also accepted: [H]); dt = exp(inv_dt).
    public var invDt: [Double]
    /// `A_real` [S, N2]; Re(lambda) = -exp(A_real).
    public var aReal: [Double]
    /// `A_imag` [S, N2]; Im(lambda) = -A_imag.
    public var aImag: [Double]
    /// `B` [1, S, N2, 2].
    public var b: [Double]
    /// `C` [1, H, N2, 2]: C-tilde = C (I - dA^lKernel) when lKernel > 0, the plain C when lKernel == 0.
    public var c: [Double]
    /// `P` [R, S, N2, 2]: low-rank factor, A = diag(lambda) - P P^H.
    public var p: [Double]
    /// H: number of channels (d_model), one kernel per channel.
    public var channels: Int
    /// N2: number of conjugate pairs (32 for d_state 64).
    public var halfState: Int
    /// R: rank of the low-rank correction (1).
    public var rank: Int
    /// S: number of independent (A, B, P) copies (n_ssm); channel h uses copy h % S.
    public var ssmCount: Int
    /// `l_kernel` (int64 scalar): the length C-tilde is attuned to (512); 0 = C not yet converted.
    public var lKernel: Int

    /// Validates every shape against the others (H from `C`, S and N2 from `A_real`, R from `P`) and
    /// throws `S4KernelError.badShape` naming the tensor and the expected shape.
    public init(invDt: [Double], invDtShape: [Int],
                aReal: [Double], aRealShape: [Int],
                aImag: [Double], aImagShape: [Int],
                b: [Double], bShape: [Int],
                c: [Double], cShape: [Int],
                p: [Double], pShape: [Int],
                lKernel: Int) throws {
        func fail(_ name: String, _ expected: String, _ got: [Int]) -> S4KernelError {
            .badShape(tensor: name, expected: expected, got: got)
        }
        // C fixes H and N2.
        guard cShape.count == 4, cShape[0] == 1, cShape[1] > 0, cShape[2] > 0, cShape[3] == 2 else {
            throw fail("C", "[1, H, N/2, 2] (kernel channels = 1)", cShape)
        }
        let h = cShape[1], n2 = cShape[2]
        // A_real fixes S.
        guard aRealShape.count == 2, aRealShape[0] > 0, aRealShape[1] == n2, h % aRealShape[0] == 0 else {
            throw fail("A_real", "[S, \(n2)] with S dividing H = \(h)", aRealShape)
        }
        let s = aRealShape[0]
        guard aImagShape == aRealShape else { throw fail("A_imag", "\(aRealShape)", aImagShape) }
        guard invDtShape == [h, 1] || invDtShape == [h] else {
            throw fail("inv_dt", "[\(h), 1] (dt tied across the state)", invDtShape)
        }
        guard bShape == [1, s, n2, 2] else { throw fail("B", "[1, \(s), \(n2), 2]", bShape) }
        guard pShape.count == 4, pShape[0] > 0, Array(pShape[1...]) == [s, n2, 2] else {
            throw fail("P", "[R, \(s), \(n2), 2]", pShape)
        }
        let r = pShape[0]
        let checks: [(String, Int, [Int])] = [
            ("inv_dt", invDt.count, invDtShape), ("A_real", aReal.count, aRealShape),
            ("A_imag", aImag.count, aImagShape), ("B", b.count, bShape),
            ("C", c.count, cShape), ("P", p.count, pShape),
        ]
        for (name, count, shape) in checks where count != shape.reduce(1, *) {
            throw S4KernelError.badData(tensor: name,
                                        reason: "\(count) values for shape \(shape)")
        }
        let all: [(String, [Double])] = [("inv_dt", invDt), ("A_real", aReal), ("A_imag", aImag),
                                          ("B", b), ("C", c), ("P", p)]
        for (name, values) in all where !values.allSatisfy({ $0.isFinite }) {
            throw S4KernelError.badData(tensor: name, reason: "non-finite value")
        }
        guard lKernel >= 0 else {
            throw S4KernelError.badData(tensor: "l_kernel", reason: "negative (\(lKernel))")
        }
        self.invDt = invDt; self.aReal = aReal; self.aImag = aImag
        self.b = b; self.c = c; self.p = p
        self.channels = h; self.halfState = n2; self.rank = r; self.ssmCount = s
        self.lKernel = lKernel
    }
}

public enum S4KernelError: Error, CustomStringConvertible {
    case badShape(tensor: String, expected: String, got: [Int])
    case badData(tensor: String, reason: String)
    case badLength(Int)
    case singular(channel: Int, what: String)
    case nonFinite(channel: Int)

    public var description: String {
        switch self {
        case let .badShape(t, e, g): return "S4 kernel tensor '\(t)': expected shape \(e), got \(g)"
        case let .badData(t, r): return "S4 kernel tensor '\(t)': \(r)"
        case let .badLength(l): return "S4 kernel length must be >= 1, got \(l)"
        case let .singular(ch, w): return "S4 kernel channel \(ch): singular matrix in \(w)"
        case let .nonFinite(ch): return "S4 kernel channel \(ch): non-finite tap"
        }
    }
}

public enum S4Kernel {
    /// taps[ch * L + j] = K_j for channel ch, j in 0..<L (float64), as the reference's SSMKernelDPLR
    /// returns for length L. Frequency-domain (Cauchy + Woodbury + inverse real DFT) when L <= l_kernel,
    /// the dense recurrence otherwise. About 0.4 s for 1024 channels x 512 taps on one core (-O).
    public static func taps(_ p: S4Parameters, length L: Int) throws -> [Double] {
        guard L >= 1 else { throw S4KernelError.badLength(L) }
        // The frequency path is written for the released configuration's rank-1 low-rank factor (Woodbury with a
        // scalar correction); the recurrence would take any rank, but no checkpoint has one to test it with.
        guard p.rank == 1 else { throw S4KernelError.badData(tensor: "P", reason: "low-rank factor of rank \(p.rank); only rank 1 (the released S4) is supported") }
        let k = (p.lKernel == 0 || L > p.lKernel) ? try tapsByRecurrence(p, length: L)
                                                  : try frequencyTaps(p, length: L)
        if let bad = k.firstIndex(where: { !$0.isFinite }) {
            throw S4KernelError.nonFinite(channel: bad / L)
        }
        return k
    }

    /// Same taps by the dense float64 state-space recurrence (Nf x Nf complex matrices per channel;
    /// O(Nf^3 log l_kernel + L Nf^2) per channel, roughly 100x slower than `taps`). Only the channels in
    /// `channels` (default: all) are computed; the result is [channels.count * L], in that order.
    public static func tapsByRecurrence(_ p: S4Parameters, length L: Int,
                                        channels: Range<Int>? = nil) throws -> [Double] {
        guard L >= 1 else { throw S4KernelError.badLength(L) }
        let range = channels ?? 0..<p.channels
        precondition(range.lowerBound >= 0 && range.upperBound <= p.channels, "channel range out of bounds")
        let nf = 2 * p.halfState
        var out = [Double](repeating: 0, count: range.count * L)
        for (slot, h) in range.enumerated() {
            let sys = S4ChannelSystem(p, channel: h)
            let dt = sys.dt
            // A = diag(lambda) - sum_r P_r P_r^H;  M = I - dt/2 A,  Np = I + dt/2 A.
            var m = S4CMatrix(n: nf), np = S4CMatrix(n: nf)
            for i in 0..<nf {
                for j in 0..<nf {
                    var aRe = 0.0, aIm = 0.0
                    for r in 0..<p.rank {
                        let pi = sys.pFull[r][i], pj = sys.pFull[r][j]
                        // P_i * conj(P_j)
                        aRe -= pi.re * pj.re + pi.im * pj.im
                        aIm -= pi.im * pj.re - pi.re * pj.im
                    }
                    if i == j { aRe += sys.lambda[i].re; aIm += sys.lambda[i].im }
                    let d = i == j ? 1.0 : 0.0
                    m.re[i * nf + j] = d - 0.5 * dt * aRe; m.im[i * nf + j] = -0.5 * dt * aIm
                    np.re[i * nf + j] = d + 0.5 * dt * aRe; np.im[i * nf + j] = 0.5 * dt * aIm
                }
            }
            guard let lu = S4LU(m) else { throw S4KernelError.singular(channel: h, what: "I - dt/2 A") }
            let dA = lu.solve(np)
            var dBm = S4CMatrix(n: nf, cols: 1)
            for i in 0..<nf { dBm.re[i] = dt * sys.bFull[i].re; dBm.im[i] = dt * sys.bFull[i].im }
            let dB = lu.solve(dBm)

            // True output row C.
            var cRe = sys.cFull.map { $0.re }, cIm = sys.cFull.map { $0.im }
            if p.lKernel > 0 {
                let aL = dA.power(p.lKernel)
                // C (I - dA^Lk) = C~  <=>  (I - dA^Lk)^T C^T = C~^T
                var t = S4CMatrix(n: nf)
                for i in 0..<nf {
                    for j in 0..<nf {
                        t.re[i * nf + j] = (i == j ? 1.0 : 0.0) - aL.re[j * nf + i]
                        t.im[i * nf + j] = -aL.im[j * nf + i]
                    }
                }
                guard let luT = S4LU(t) else { throw S4KernelError.singular(channel: h, what: "I - dA^L") }
                var rhs = S4CMatrix(n: nf, cols: 1)
                rhs.re = cRe; rhs.im = cIm
                let sol = luT.solve(rhs)
                cRe = sol.re; cIm = sol.im
            }
            // K_j = Re(C x_j), x_0 = dB, x_{j+1} = dA x_j.
            var xRe = dB.re, xIm = dB.im
            var yRe = [Double](repeating: 0, count: nf), yIm = yRe
            for j in 0..<L {
                var acc = 0.0
                for i in 0..<nf { acc += cRe[i] * xRe[i] - cIm[i] * xIm[i] }
                out[slot * L + j] = acc
                if j + 1 < L {
                    dA.multiplyVector(xRe, xIm, into: &yRe, &yIm)
                    swap(&xRe, &yRe); swap(&xIm, &yIm)
                }
            }
        }
        return out
    }

    // MARK: - frequency-domain path

    private static func frequencyTaps(_ p: S4Parameters, length L: Int) throws -> [Double] {
        let lk = p.lKernel
        let nf = 2 * p.halfState
        let kCount = lk / 2 + 1  // rfft bins 0 ... floor(Lk/2)
        // Twiddles exp(-2 pi i m / Lk) for m in 0..<Lk (exact index reduction keeps them accurate).
        var cosT = [Double](repeating: 0, count: lk), sinT = cosT
        for m in 0..<lk {
            let a = 2.0 * Double.pi * Double(m) / Double(lk)
            cosT[m] = cos(a); sinT[m] = sin(a)
        }
        var out = [Double](repeating: 0, count: p.channels * L)
        var fRe = [Double](repeating: 0, count: kCount), fIm = fRe
        // Per-channel products (conjugate-extended): X_n Y_n.
        var cbRe = [Double](repeating: 0, count: nf), cbIm = cbRe
        var cpRe = [Double](repeating: 0, count: nf), cpIm = cpRe     // C~_n P_n
        var qbRe = cpRe, qbIm = cpRe                                   // conj(P_n) B_n
        var qpRe = cpRe, qpIm = cpRe                                   // conj(P_n) P_n
        var lamRe = [Double](repeating: 0, count: nf), lamIm = lamRe

        for h in 0..<p.channels {
            let sys = S4ChannelSystem(p, channel: h)
            let dt = sys.dt
            for n in 0..<nf {
                lamRe[n] = sys.lambda[n].re; lamIm[n] = sys.lambda[n].im
                let cb = sys.cFull[n] * sys.bFull[n]
                cbRe[n] = cb.re; cbIm[n] = cb.im
                let cp = sys.cFull[n] * sys.pFull[0][n]
                let qb = sys.pFull[0][n].conj * sys.bFull[n]
                let qp = sys.pFull[0][n].conj * sys.pFull[0][n]
                cpRe[n] = cp.re; cpIm[n] = cp.im
                qbRe[n] = qb.re; qbIm[n] = qb.im
                qpRe[n] = qp.re; qpIm[n] = qp.im
            }
            for k in 0..<kCount {
                // omega = exp(-2 pi i k / Lk)
                let oRe = cosT[k], oIm = -sinT[k]
                let omRe = 1 - oRe, omIm = -oIm                     // 1 - omega
                let sRe = 0.5 * dt * (1 + oRe), sIm = 0.5 * dt * oIm  // s = (1 + omega) dt / 2
                var accCBRe = 0.0, accCBIm = 0.0
                var cpR = 0.0, cpI = 0.0, qbR = 0.0, qbI = 0.0, qpR = 0.0, qpI = 0.0
                for n in 0..<nf {
                    let dRe = omRe - (sRe * lamRe[n] - sIm * lamIm[n])
                    let dIm = omIm - (sRe * lamIm[n] + sIm * lamRe[n])
                    let den = 1.0 / (dRe * dRe + dIm * dIm)
                    let iRe = dRe * den, iIm = -dIm * den
                    accCBRe += cbRe[n] * iRe - cbIm[n] * iIm
                    accCBIm += cbRe[n] * iIm + cbIm[n] * iRe
                    cpR += cpRe[n] * iRe - cpIm[n] * iIm
                    cpI += cpRe[n] * iIm + cpIm[n] * iRe
                    qbR += qbRe[n] * iRe - qbIm[n] * iIm
                    qbI += qbRe[n] * iIm + qbIm[n] * iRe
                    qpR += qpRe[n] * iRe - qpIm[n] * iIm
                    qpI += qpRe[n] * iIm + qpIm[n] * iRe
                }
                let s = S4Complex(sRe, sIm)
                let f = S4Complex(accCBRe, accCBIm)
                    - s * S4Complex(cpR, cpI) * S4Complex(qbR, qbI) / (S4Complex(1, 0) + s * S4Complex(qpR, qpI))
                fRe[k] = dt * f.re; fIm[k] = dt * f.im
            }
            // Inverse real DFT (torch.fft.irfft, n = Lk): imaginary parts of DC / Nyquist are ignored.
            let hasNyquist = lk % 2 == 0
            let lastFull = hasNyquist ? kCount - 2 : kCount - 1  // bins counted twice
            let scale = 1.0 / Double(lk)
            fRe.withUnsafeBufferPointer { fr in fIm.withUnsafeBufferPointer { fi in
            cosT.withUnsafeBufferPointer { ct in sinT.withUnsafeBufferPointer { st in
                for j in 0..<L {
                    var acc = fr[0]
                    if hasNyquist { acc += (j % 2 == 0 ? fr[kCount - 1] : -fr[kCount - 1]) }
                    var idx = 0  // (j * k) mod Lk
                    var sum = 0.0
                    var k = 1
                    while k <= lastFull {
                        idx += j; if idx >= lk { idx -= lk }
                        // Re(F_k e^{+2 pi i j k / Lk})
                        sum += fr[k] * ct[idx] - fi[k] * st[idx]
                        k += 1
                    }
                    out[h * L + j] = (acc + 2 * sum) * scale
                }
            }}}}
        }
        return out
    }
}

// MARK: - small complex helpers (file-private)

fileprivate struct S4Complex {
    var re: Double, im: Double
    init(_ re: Double, _ im: Double) { self.re = re; self.im = im }
    static let zero = S4Complex(0, 0)
    var conj: S4Complex { S4Complex(re, -im) }
    static func + (a: S4Complex, b: S4Complex) -> S4Complex { S4Complex(a.re + b.re, a.im + b.im) }
    static func - (a: S4Complex, b: S4Complex) -> S4Complex { S4Complex(a.re - b.re, a.im - b.im) }
    static func * (a: S4Complex, b: S4Complex) -> S4Complex {
        S4Complex(a.re * b.re - a.im * b.im, a.re * b.im + a.im * b.re)
    }
    static func / (a: S4Complex, b: S4Complex) -> S4Complex {
        let d = b.re * b.re + b.im * b.im
        return S4Complex((a.re * b.re + a.im * b.im) / d, (a.im * b.re - a.re * b.im) / d)
    }
}

/// One channel's conjugate-extended (length 2 * halfState) vectors.
fileprivate struct S4ChannelSystem {
    var dt: Double
    var lambda: [S4Complex]
    var bFull: [S4Complex]
    var cFull: [S4Complex]
    var pFull: [[S4Complex]]  // [rank][2 * halfState]

    init(_ p: S4Parameters, channel h: Int) {
        let n2 = p.halfState, t = h % p.ssmCount
        dt = exp(p.invDt[h])
        func extend(_ half: [S4Complex]) -> [S4Complex] { half + half.map { $0.conj } }
        lambda = extend((0..<n2).map { n in
            S4Complex(-exp(p.aReal[t * n2 + n]), -p.aImag[t * n2 + n])
        })
        bFull = extend((0..<n2).map { n in S4Complex(p.b[(t * n2 + n) * 2], p.b[(t * n2 + n) * 2 + 1]) })
        cFull = extend((0..<n2).map { n in S4Complex(p.c[(h * n2 + n) * 2], p.c[(h * n2 + n) * 2 + 1]) })
        pFull = (0..<p.rank).map { r in
            extend((0..<n2).map { n in
                let o = ((r * p.ssmCount + t) * n2 + n) * 2
                return S4Complex(p.p[o], p.p[o + 1])
            })
        }
    }
}

/// Dense complex matrix, row-major, split real / imaginary storage.
fileprivate struct S4CMatrix {
    let rows: Int, cols: Int
    var re: [Double], im: [Double]
    init(n: Int, cols: Int? = nil) {
        rows = n; self.cols = cols ?? n
        re = [Double](repeating: 0, count: rows * self.cols); im = re
    }

    static func identity(_ n: Int) -> S4CMatrix {
        var m = S4CMatrix(n: n)
        for i in 0..<n { m.re[i * n + i] = 1 }
        return m
    }

    /// self (rows x cols) times o (cols x o.cols).
    func multiplied(by o: S4CMatrix) -> S4CMatrix {
        precondition(cols == o.rows)
        var r = S4CMatrix(n: rows, cols: o.cols)
        let oc = o.cols
        re.withUnsafeBufferPointer { aR in im.withUnsafeBufferPointer { aI in
        o.re.withUnsafeBufferPointer { bR in o.im.withUnsafeBufferPointer { bI in
        r.re.withUnsafeMutableBufferPointer { cR in r.im.withUnsafeMutableBufferPointer { cI in
            for i in 0..<rows {
                for k in 0..<cols {
                    let xr = aR[i * cols + k], xi = aI[i * cols + k]
                    if xr == 0 && xi == 0 { continue }
                    let bo = k * oc, co = i * oc
                    for j in 0..<oc {
                        cR[co + j] += xr * bR[bo + j] - xi * bI[bo + j]
                        cI[co + j] += xr * bI[bo + j] + xi * bR[bo + j]
                    }
                }
            }
        }}}}}}
        return r
    }

    /// self^e by binary exponentiation (square-and-multiply).
    func power(_ e: Int) -> S4CMatrix {
        var result = S4CMatrix.identity(rows), base = self, e = e
        var first = true
        while e > 0 {
            if e & 1 == 1 {
                result = first ? base : result.multiplied(by: base)
                first = false
            }
            e >>= 1
            if e > 0 { base = base.multiplied(by: base) }
        }
        return result
    }

    func multiplyVector(_ xr: [Double], _ xi: [Double], into yr: inout [Double], _ yi: inout [Double]) {
        for i in 0..<rows {
            var sr = 0.0, si = 0.0
            let o = i * cols
            for k in 0..<cols {
                sr += re[o + k] * xr[k] - im[o + k] * xi[k]
                si += re[o + k] * xi[k] + im[o + k] * xr[k]
            }
            yr[i] = sr; yi[i] = si
        }
    }
}

/// LU factorisation with partial pivoting of a square complex matrix.
fileprivate struct S4LU {
    var lu: S4CMatrix
    var perm: [Int]

    init?(_ a: S4CMatrix) {
        precondition(a.rows == a.cols)
        let n = a.rows
        lu = a
        perm = Array(0..<n)
        for col in 0..<n {
            var piv = col, best = -1.0
            for r in col..<n {
                let v = lu.re[r * n + col] * lu.re[r * n + col] + lu.im[r * n + col] * lu.im[r * n + col]
                if v > best { best = v; piv = r }
            }
            if !(best > 0) { return nil }  // exactly singular (or NaN)
            if piv != col {
                for j in 0..<n {
                    lu.re.swapAt(piv * n + j, col * n + j); lu.im.swapAt(piv * n + j, col * n + j)
                }
                perm.swapAt(piv, col)
            }
            let pr = lu.re[col * n + col], pi = lu.im[col * n + col]
            let d = pr * pr + pi * pi
            let invR = pr / d, invI = -pi / d
            for r in (col + 1)..<n {
                let xr = lu.re[r * n + col], xi = lu.im[r * n + col]
                let fr = xr * invR - xi * invI, fi = xr * invI + xi * invR
                lu.re[r * n + col] = fr; lu.im[r * n + col] = fi
                for j in (col + 1)..<n {
                    let ur = lu.re[col * n + j], ui = lu.im[col * n + j]
                    lu.re[r * n + j] -= fr * ur - fi * ui
                    lu.im[r * n + j] -= fr * ui + fi * ur
                }
            }
        }
    }

    /// Solves A X = B for every column of B.
    func solve(_ b: S4CMatrix) -> S4CMatrix {
        let n = lu.rows, m = b.cols
        precondition(b.rows == n)
        var x = S4CMatrix(n: n, cols: m)
        for i in 0..<n {
            for j in 0..<m {
                x.re[i * m + j] = b.re[perm[i] * m + j]; x.im[i * m + j] = b.im[perm[i] * m + j]
            }
        }
        // Forward substitution (unit lower).
        for i in 0..<n {
            for k in 0..<i {
                let lr = lu.re[i * n + k], li = lu.im[i * n + k]
                if lr == 0 && li == 0 { continue }
                for j in 0..<m {
                    let yr = x.re[k * m + j], yi = x.im[k * m + j]
                    x.re[i * m + j] -= lr * yr - li * yi
                    x.im[i * m + j] -= lr * yi + li * yr
                }
            }
        }
        // Back substitution.
        for i in stride(from: n - 1, through: 0, by: -1) {
            for k in (i + 1)..<n {
                let ur = lu.re[i * n + k], ui = lu.im[i * n + k]
                for j in 0..<m {
                    let yr = x.re[k * m + j], yi = x.im[k * m + j]
                    x.re[i * m + j] -= ur * yr - ui * yi
                    x.im[i * m + j] -= ur * yi + ui * yr
                }
            }
            let pr = lu.re[i * n + i], pi = lu.im[i * n + i]
            let d = pr * pr + pi * pi
            for j in 0..<m {
                let yr = x.re[i * m + j], yi = x.im[i * m + j]
                x.re[i * m + j] = (yr * pr + yi * pi) / d
                x.im[i * m + j] = (yi * pr - yr * pi) / d
            }
        }
        return x
    }
}

extension S4Parameters {
    /// Reads the S4 kernel parameters stored under `prefix` (e.g. `model.fuser.fuser.model.s4.layer.kernel.`).
    init(checkpoint ck: Checkpoint, prefix p: String) throws {
        func values(_ name: String) throws -> ([Double], [Int]) {
            let file = try ck.file(for: p + name)
            return (try file.doubleArray(p + name), try file.shape(p + name))
        }
        let (invDt, invDtShape) = try values("inv_dt")
        let (aReal, aRealShape) = try values("A_real")
        let (aImag, aImagShape) = try values("A_imag")
        let (b, bShape) = try values("B")
        let (c, cShape) = try values("C")
        let (pp, pShape) = try values("P")
        let length = try ck.file(for: p + "l_kernel").int64Array(p + "l_kernel").first ?? 0
        do {
            try self.init(invDt: invDt, invDtShape: invDtShape, aReal: aReal, aRealShape: aRealShape, aImag: aImag,
                          aImagShape: aImagShape, b: b, bShape: bShape, c: c, cShape: cShape, p: pp, pShape: pShape,
                          lKernel: Int(length))
        } catch {
            throw FireboltError("S4 parameters under \(p): \(error)")
        }
    }
}
