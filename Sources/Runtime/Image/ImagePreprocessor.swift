import Foundation

/// Pillow's `Image.resize` for 8-bit RGB images (what `ImagingResample` computes, bit for bit):
/// separable, one pass per axis, each skipped when its size does not change; the filter widens by the
/// downscale factor (antialiasing); coefficients are normalised per output pixel and applied in 22-bit
/// fixed point with the result rounded back to 8 bits after each pass (so the pass order matters).
public enum PillowResize {
    /// Which Pillow's pass order to follow when both axes change.
    public enum PassOrder {
        /// Pillow 13 and later: vertical pass first when the height shrinks by more than twice as many
        /// pixels as the width does (`newH < h && h − newH > 2·(w − newW)`), else horizontal first.
        case pillow13
        /// Pillow 12 and earlier: always horizontal first.
        case horizontalFirst
    }

    /// Pillow's resample numbers.
    public enum Filter: Int {
        case nearest = 0, lanczos = 1, bilinear = 2, bicubic = 3, box = 4, hamming = 5

        var support: Double {
            switch self {
            case .nearest, .box: return 0.5
            case .bilinear, .hamming: return 1
            case .bicubic: return 2
            case .lanczos: return 3
            }
        }

        func weight(_ t: Double) -> Double {
            switch self {
            case .nearest, .box:
                return t > -0.5 && t <= 0.5 ? 1 : 0
            case .bilinear:
                let x = abs(t)
                return x < 1 ? 1 - x : 0
            case .hamming:
                let x = abs(t)
                if x == 0 { return 1 }
                if x >= 1 { return 0 }
                let px = x * Double.pi
                // Pillow mixes float constants in here: 0.54f and 0.46f.
                return sin(px) / px * (Double(Float(0.54)) + Double(Float(0.46)) * cos(px))
            case .bicubic:
                let a = -0.5  // Pillow's cubic (PyTorch uses -0.75)
                let x = abs(t)
                if x < 1 { return ((a + 2) * x - (a + 3)) * x * x + 1 }
                if x < 2 { return (((x - 5) * x + 8) * x - 4) * a }
                return 0
            case .lanczos:
                func sinc(_ v: Double) -> Double { v == 0 ? 1 : sin(v * Double.pi) / (v * Double.pi) }
                return t >= -3 && t < 3 ? sinc(t) * sinc(t / 3) : 0
            }
        }
    }

    static let precisionBits = 32 - 8 - 2

    /// Resizes to `width`×`height` with Pillow's `resample` number (0 nearest, 1 Lanczos, 2 bilinear,
    /// 3 bicubic, 4 box, 5 Hamming); an unknown number is taken as bicubic, Pillow's default.
    public static func resize(_ image: RGBImage, width: Int, height: Int, resample: Int,
                              order: PassOrder = .pillow13) -> RGBImage {
        resize(image, width: width, height: height, filter: Filter(rawValue: resample) ?? .bicubic, order: order)
    }

    public static func resize(_ image: RGBImage, width: Int, height: Int, filter: Filter,
                              order: PassOrder = .pillow13) -> RGBImage {
        resize(image, width: width, height: height, filter: filter, order: order, bits: .pillow)
    }

    /// What torchvision's `resize` (antialias on) computes for an 8-bit image on an x86 CPU with AVX2, bit for bit:
    /// PyTorch's 8-bit path, the same filters and coefficients as Pillow's but 16-bit weights and always the
    /// horizontal pass first (its float path on other CPUs rounds differently).
    public static func torchvisionUInt8(_ image: RGBImage, width: Int, height: Int, filter: Filter) -> RGBImage {
        resize(image, width: width, height: height, filter: filter, order: .horizontalFirst, bits: .int16)
    }

    /// How many fractional bits the fixed-point weights keep.
    enum WeightBits {
        /// Pillow: always 22 (32-bit coefficients).
        case pillow
        /// PyTorch's 8-bit antialiased resize on x86 (what torchvision runs on a uint8 tensor there): 16-bit
        /// coefficients, so per axis the most bits (at most 22) that keep the largest weight below 2¹⁵.
        case int16
    }

    static func resize(_ image: RGBImage, width: Int, height: Int, filter: Filter, order: PassOrder,
                       bits: WeightBits) -> RGBImage {
        precondition(width >= 0 && height >= 0, "resize to \(width)×\(height)")
        if width == image.width && height == image.height { return image }
        if width == 0 || height == 0 || image.width == 0 || image.height == 0 {
            return RGBImage(width: width, height: height, pixels: [UInt8](repeating: 0, count: width * height * 3))
        }
        if filter == .nearest { return nearest(image, width: width, height: height) }

        let needHorizontal = width != image.width
        let needVertical = height != image.height
        let vertical = Coefficients(inSize: image.height, outSize: height, filter: filter, bits: bits)
        if needHorizontal && needVertical && order == .pillow13
            && height < image.height && image.height - height > 2 * (image.width - width) {
            let shorter = verticalPass(image, rowOffset: 0, coefficients: vertical)
            let horizontal = Coefficients(inSize: image.width, outSize: width, filter: filter, bits: bits)
            return horizontalPass(shorter, rows: 0..<height, coefficients: horizontal)
        }
        var current = image
        var rowOffset = 0  // first source row the (horizontally resized) `current` holds
        if needHorizontal {
            // Only the rows the vertical pass will read, as Pillow does (the values are the same either way).
            let first = needVertical ? vertical.start[0] : 0
            let last = needVertical ? vertical.start[height - 1] + vertical.count[height - 1] : image.height
            let horizontal = Coefficients(inSize: image.width, outSize: width, filter: filter, bits: bits)
            current = horizontalPass(image, rows: first..<last, coefficients: horizontal)
            rowOffset = first
        }
        if needVertical {
            current = verticalPass(current, rowOffset: rowOffset, coefficients: vertical)
        }
        return current
    }

    /// Per output position: the first input index, how many inputs, and their fixed-point weights.
    struct Coefficients {
        var start: [Int] = []
        var count: [Int] = []
        var weights: [Int32] = []  // `stride` per output position
        var stride = 0
        var precision = PillowResize.precisionBits  // fractional bits of `weights`

        init(inSize: Int, outSize: Int, filter: Filter, bits: WeightBits = .pillow) {
            // Pillow: box = (0, 0, inSize, outSize) as floats; scale in double.
            let scale = Double(Float(inSize)) / Double(outSize)
            let filterScale = max(scale, 1.0)
            let support = filter.support * filterScale
            stride = Int(support.rounded(.up)) * 2 + 1
            start = [Int](repeating: 0, count: outSize)
            count = [Int](repeating: 0, count: outSize)
            weights = [Int32](repeating: 0, count: outSize * stride)
            var normalised = [Double](repeating: 0, count: outSize * stride)
            let invScale = 1.0 / filterScale
            var largest = 0.0
            for xx in 0..<outSize {
                let center = (Double(xx) + 0.5) * scale
                var xmin = Int(center - support + 0.5)  // truncation, as C's (int)
                if xmin < 0 { xmin = 0 }
                var xmax = Int(center + support + 0.5)
                if xmax > inSize { xmax = inSize }
                xmax -= xmin
                xmax = min(xmax, stride)
                var total = 0.0
                for x in 0..<xmax {
                    let w = filter.weight((Double(x + xmin) - center + 0.5) * invScale)
                    normalised[xx * stride + x] = w
                    total += w
                }
                if total != 0 {
                    for x in 0..<xmax { normalised[xx * stride + x] /= total }
                }
                for x in 0..<xmax { largest = max(largest, normalised[xx * stride + x]) }
                start[xx] = xmin
                count[xx] = xmax
            }
            if bits == .int16 {
                // As PyTorch chooses it: the first precision whose next one would overflow int16, at most 22.
                precision = 0
                while precision < 22 && Int(0.5 + largest * Double(1 << (precision + 1))) < 1 << 15 { precision += 1 }
            }
            let one = Double(1 << precision)
            for (i, v) in normalised.enumerated() {
                // Both round half away from zero, then truncate.
                weights[i] = v < 0 ? Int32(-0.5 + v * one) : Int32(0.5 + v * one)
            }
        }
    }

    @inline(__always)
    static func clip8(_ v: Int, _ precision: Int) -> UInt8 {
        let s = v >> precision
        return s < 0 ? 0 : (s > 255 ? 255 : UInt8(s))
    }

    static func horizontalPass(_ image: RGBImage, rows: Range<Int>, coefficients c: Coefficients) -> RGBImage {
        let outW = c.start.count, inW = image.width
        var out = [UInt8](repeating: 0, count: outW * rows.count * 3)
        let half = 1 << (c.precision - 1), bits = c.precision
        image.pixels.withUnsafeBufferPointer { src in
            c.weights.withUnsafeBufferPointer { k in
                out.withUnsafeMutableBufferPointer { dst in
                    for (row, y) in rows.enumerated() {
                        let srcRow = y * inW * 3, dstRow = row * outW * 3
                        for xx in 0..<outW {
                            let xmin = c.start[xx], n = c.count[xx], kb = xx * c.stride
                            var s0 = half, s1 = half, s2 = half
                            for x in 0..<n {
                                let w = Int(k[kb + x]), p = srcRow + (xmin + x) * 3
                                s0 += Int(src[p]) * w
                                s1 += Int(src[p + 1]) * w
                                s2 += Int(src[p + 2]) * w
                            }
                            let d = dstRow + xx * 3
                            dst[d] = clip8(s0, bits); dst[d + 1] = clip8(s1, bits); dst[d + 2] = clip8(s2, bits)
                        }
                    }
                }
            }
        }
        return RGBImage(width: outW, height: rows.count, pixels: out)
    }

    /// `image` holds source rows from `rowOffset` on.
    static func verticalPass(_ image: RGBImage, rowOffset: Int, coefficients c: Coefficients) -> RGBImage {
        let outH = c.start.count, w = image.width, rowBytes = w * 3
        var out = [UInt8](repeating: 0, count: outH * rowBytes)
        let half = 1 << (c.precision - 1), bits = c.precision
        image.pixels.withUnsafeBufferPointer { src in
            c.weights.withUnsafeBufferPointer { k in
                out.withUnsafeMutableBufferPointer { dst in
                    for yy in 0..<outH {
                        let ymin = c.start[yy] - rowOffset, n = c.count[yy], kb = yy * c.stride
                        for i in 0..<rowBytes {
                            var s = half
                            for y in 0..<n {
                                s += Int(src[(ymin + y) * rowBytes + i]) * Int(k[kb + y])
                            }
                            dst[yy * rowBytes + i] = clip8(s, bits)
                        }
                    }
                }
            }
        }
        return RGBImage(width: w, height: outH, pixels: out)
    }

    /// Pillow's NEAREST resize (an affine scale): source index = ⌊(i + ½)·in/out⌋, accumulated in double.
    static func nearest(_ image: RGBImage, width: Int, height: Int) -> RGBImage {
        func table(_ inSize: Int, _ outSize: Int) -> [Int] {
            let a = Double(Float(inSize)) / Double(outSize)
            var o = a * 0.5
            var result = [Int](repeating: 0, count: outSize)
            for i in 0..<outSize {
                result[i] = min(max(o < 0 ? -1 : Int(o), 0), inSize - 1)
                o += a
            }
            return result
        }
        let xs = table(image.width, width), ys = table(image.height, height)
        var out = [UInt8](repeating: 0, count: width * height * 3)
        for y in 0..<height {
            for x in 0..<width {
                let s = (ys[y] * image.width + xs[x]) * 3, d = (y * width + x) * 3
                out[d] = image.pixels[s]; out[d + 1] = image.pixels[s + 1]; out[d + 2] = image.pixels[s + 2]
            }
        }
        return RGBImage(width: width, height: height, pixels: out)
    }
}

/// A preprocessed image: float32, channels first (3 × height × width).
public struct PreprocessedImage {
    public let width: Int
    public let height: Int
    public var chw: [Float]

    public init(width: Int, height: Int, chw: [Float]) {
        precondition(chw.count == 3 * width * height, "PreprocessedImage: \(chw.count) values for 3×\(height)×\(width)")
        self.width = width
        self.height = height
        self.chw = chw
    }
}

/// The SigLIP image processor (transformers' slow, PIL-backed one), and Firebolt-VL's five views.
public enum SiglipPreprocessor {
    /// resize (Pillow, if `doResize`) → × rescaleFactor (if `doRescale`) → (x − mean) / std (if `doNormalize`),
    /// channels first. The float steps round as transformers' numpy code does: the rescale is computed in
    /// float64 and stored as float32; the normalisation is float32 throughout.
    public static func preprocess(_ image: RGBImage, config: PreprocessorConfig) -> PreprocessedImage {
        let resized = config.doResize
            ? PillowResize.resize(image, width: config.width, height: config.height, resample: config.resample)
            : image
        let w = resized.width, h = resized.height, plane = w * h
        var chw = [Float](repeating: 0, count: 3 * plane)
        func perChannel(_ values: [Double], _ c: Int, _ fallback: Double) -> Double {
            values.isEmpty ? fallback : values[min(c, values.count - 1)]
        }
        resized.pixels.withUnsafeBufferPointer { src in
            chw.withUnsafeMutableBufferPointer { dst in
                for c in 0..<3 {
                    let mean = Float(perChannel(config.imageMean, c, 0))
                    let std = Float(perChannel(config.imageStd, c, 1))
                    // The 256 possible values, computed once.
                    var lut = [Float](repeating: 0, count: 256)
                    for v in 0..<256 {
                        var x = config.doRescale ? Float(Double(v) * config.rescaleFactor) : Float(v)
                        if config.doNormalize { x = (x - mean) / std }
                        lut[v] = x
                    }
                    for i in 0..<plane { dst[c * plane + i] = lut[Int(src[i * 3 + c])] }
                }
            }
        }
        return PreprocessedImage(width: w, height: h, chw: chw)
    }

    /// `preprocess(...).chw`: 3 × height × width floats.
    public static func pixelValues(_ image: RGBImage, config: PreprocessorConfig) -> [Float] {
        preprocess(image, config: config).chw
    }

    /// The reference `GridVisionEncoder`'s views of a square `size`×`size` channels-first image: first the
    /// global view (the image resized to `globalSize` with PyTorch's bilinear `F.interpolate`,
    /// align_corners=False; the identity when `size == globalSize`), then `tileSize` tiles at stride
    /// `tileSize − overlap`, row-major, replicate-padded where they pass the edge. At 256: the global view
    /// and four 128×128 tiles at (y, x) = (0, 0), (0, 126), (126, 0), (126, 126).
    public static func views(_ pixelValues: [Float], size: Int, tileSize: Int = 128, overlap: Int = 2,
                             globalSize: Int = 256) -> [[Float]] {
        precondition(size > 0 && pixelValues.count == 3 * size * size,
                     "views: \(pixelValues.count) values for 3×\(size)×\(size)")
        var result: [[Float]] = []
        result.append(size == globalSize ? pixelValues
                                         : bilinearTorch(pixelValues, inSize: size, outSize: globalSize))
        let step = tileSize - overlap
        let corners = Array(stride(from: 0, through: max(size - tileSize, 0), by: max(step, 1)))
        for y0 in corners {
            for x0 in corners {
                var tile = [Float](repeating: 0, count: 3 * tileSize * tileSize)
                for c in 0..<3 {
                    for y in 0..<tileSize {
                        let sy = min(y0 + y, size - 1)
                        for x in 0..<tileSize {
                            let sx = min(x0 + x, size - 1)
                            tile[(c * tileSize + y) * tileSize + x] = pixelValues[(c * size + sy) * size + sx]
                        }
                    }
                }
                result.append(tile)
            }
        }
        return result
    }

    /// PyTorch `F.interpolate(mode="bilinear", align_corners=False)` (no antialias) of a square CHW image.
    static func bilinearTorch(_ x: [Float], inSize: Int, outSize: Int) -> [Float] {
        let scale = Float(inSize) / Float(outSize)
        var index0 = [Int](repeating: 0, count: outSize), index1 = index0
        var lambda0 = [Float](repeating: 0, count: outSize), lambda1 = lambda0
        for d in 0..<outSize {
            let src = max(scale * (Float(d) + 0.5) - 0.5, 0)
            let i0 = min(Int(src), inSize - 1)
            index0[d] = i0
            index1[d] = i0 < inSize - 1 ? i0 + 1 : i0
            lambda1[d] = src - Float(i0)
            lambda0[d] = 1 - lambda1[d]
        }
        var out = [Float](repeating: 0, count: 3 * outSize * outSize)
        for c in 0..<3 {
            let plane = c * inSize * inSize
            for oy in 0..<outSize {
                let r0 = plane + index0[oy] * inSize, r1 = plane + index1[oy] * inSize
                for ox in 0..<outSize {
                    let a = lambda0[ox] * x[r0 + index0[ox]] + lambda1[ox] * x[r0 + index1[ox]]
                    let b = lambda0[ox] * x[r1 + index0[ox]] + lambda1[ox] * x[r1 + index1[ox]]
                    out[(c * outSize + oy) * outSize + ox] = lambda0[oy] * a + lambda1[oy] * b
                }
            }
        }
        return out
    }
}
