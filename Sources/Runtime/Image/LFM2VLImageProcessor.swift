import Foundation

/// LFM2-VL's image processor settings: the keys of its `preprocessor_config.json` (transformers'
/// `Lfm2VlImageProcessor`), with that class's defaults for keys a file leaves out.
public struct LFM2VLProcessorConfig: Codable, Equatable, Sendable {
    public var downsampleFactor = 2
    public var doImageSplitting = true
    public var minTiles = 2
    public var maxTiles = 10
    public var useThumbnail = true
    public var minImageTokens = 64
    public var maxImageTokens = 256
    public var encoderPatchSize = 16
    public var tileSize = 512
    public var maxPixelsTolerance = 2.0
    /// Pillow's resample numbers (2 bilinear, 3 bicubic), as transformers maps them to torchvision's modes.
    public var resample = 2
    public var rescaleFactor = 1.0 / 255
    public var imageMean: [Double] = [0.5, 0.5, 0.5]
    public var imageStd: [Double] = [0.5, 0.5, 0.5]

    enum CodingKeys: String, CodingKey {
        case downsampleFactor = "downsample_factor", doImageSplitting = "do_image_splitting", minTiles = "min_tiles"
        case maxTiles = "max_tiles", useThumbnail = "use_thumbnail", minImageTokens = "min_image_tokens"
        case maxImageTokens = "max_image_tokens", encoderPatchSize = "encoder_patch_size", tileSize = "tile_size"
        case maxPixelsTolerance = "max_pixels_tolerance", resample, rescaleFactor = "rescale_factor"
        case imageMean = "image_mean", imageStd = "image_std"
    }

    public init() {}

    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        let d = LFM2VLProcessorConfig()
        downsampleFactor = try c.decodeIfPresent(Int.self, forKey: .downsampleFactor) ?? d.downsampleFactor
        doImageSplitting = try c.decodeIfPresent(Bool.self, forKey: .doImageSplitting) ?? d.doImageSplitting
        minTiles = try c.decodeIfPresent(Int.self, forKey: .minTiles) ?? d.minTiles
        maxTiles = try c.decodeIfPresent(Int.self, forKey: .maxTiles) ?? d.maxTiles
        useThumbnail = try c.decodeIfPresent(Bool.self, forKey: .useThumbnail) ?? d.useThumbnail
        minImageTokens = try c.decodeIfPresent(Int.self, forKey: .minImageTokens) ?? d.minImageTokens
        maxImageTokens = try c.decodeIfPresent(Int.self, forKey: .maxImageTokens) ?? d.maxImageTokens
        encoderPatchSize = try c.decodeIfPresent(Int.self, forKey: .encoderPatchSize) ?? d.encoderPatchSize
        tileSize = try c.decodeIfPresent(Int.self, forKey: .tileSize) ?? d.tileSize
        maxPixelsTolerance = try c.decodeIfPresent(Double.self, forKey: .maxPixelsTolerance) ?? d.maxPixelsTolerance
        resample = try c.decodeIfPresent(Int.self, forKey: .resample) ?? d.resample
        rescaleFactor = try c.decodeIfPresent(Double.self, forKey: .rescaleFactor) ?? d.rescaleFactor
        imageMean = try c.decodeIfPresent([Double].self, forKey: .imageMean) ?? d.imageMean
        imageStd = try c.decodeIfPresent([Double].self, forKey: .imageStd) ?? d.imageStd
    }

    /// What this runtime does not follow, or nil: settings transformers would accept but lay out differently
    /// from what is implemented here, and nonsense values.
    public func unsupported() -> String? {
        if downsampleFactor < 1 || encoderPatchSize < 1 || tileSize < 1 { return "a size or factor below 1" }
        if minImageTokens < 1 || maxImageTokens < minImageTokens { return "min/max_image_tokens out of order" }
        if doImageSplitting && (minTiles < 2 || maxTiles < minTiles) && !(minTiles == 1 && maxTiles == 1) {
            // A 1 x 1 grid chosen for a large image gives tiles and placeholders of different sizes in transformers.
            return "min_tiles \(minTiles), max_tiles \(maxTiles) (splitting needs 2 <= min_tiles <= max_tiles)"
        }
        if tileSize % encoderPatchSize != 0 { return "tile_size \(tileSize) not a multiple of encoder_patch_size" }
        if imageMean.count != 3 || imageStd.count != 3 || imageStd.contains(0) { return "image_mean / image_std" }
        if PillowResize.Filter(rawValue: resample) == nil || resample == 0 { return "resample \(resample)" }
        return nil
    }
}

/// How LFM2-VL's processor lays one image out: one image resized so both sides are multiples of
/// patch × downsample factor with its token count between the min and max, or — when it is too large — a grid of
/// `tileSize` tiles chosen by aspect ratio, plus a thumbnail at the single-image size. Token counts and the
/// placeholder text follow transformers' `Lfm2VlProcessor` (every decision below is its arithmetic, Python's
/// rounding included).
public struct LFM2VLImageLayout: Equatable, Sendable {
    /// Split into a grid of tiles (else one image).
    public var split: Bool
    public var gridRows: Int
    public var gridCols: Int
    /// The single image's size, or the thumbnail's when split.
    public var resizedHeight: Int
    public var resizedWidth: Int
    public var thumbnail: Bool
    public var tokensPerTile: Int
    public var tokensForImage: Int
    public var tileSize: Int

    /// Tokens the image takes in the decoder's input (placeholders, not counting the marker tokens).
    public var imageTokens: Int {
        split ? gridRows * gridCols * tokensPerTile + (thumbnail ? tokensForImage : 0) : tokensForImage
    }

    public init(width: Int, height: Int, config p: LFM2VLProcessorConfig) throws {
        guard width > 0 && height > 0 else {
            throw FireboltError("LFM2-VL image processor: an image of \(width)×\(height) pixels")
        }
        if let problem = p.unsupported() {
            throw FireboltError("LFM2-VL image processor setting not supported: \(problem)")
        }
        let (minTiles, maxTiles) = p.doImageSplitting ? (p.minTiles, p.maxTiles) : (1, 1)
        let splitting = !(minTiles == 1 && maxTiles == 1)
        let large = Self.isTooLarge(height: height, width: width, p)
        (resizedWidth, resizedHeight) = Self.smartResize(height: height, width: width, p)
        split = large && splitting
        gridRows = 1
        gridCols = 1
        if split {
            (gridCols, gridRows) = Self.closestAspectRatio(width: width, height: height, minTiles: minTiles,
                                                           maxTiles: maxTiles, tileSize: p.tileSize)
        }
        thumbnail = split && p.useThumbnail && gridRows * gridCols != 1
        tileSize = p.tileSize
        let f = p.downsampleFactor, patch = p.encoderPatchSize
        let tilePatches = (p.tileSize / patch + f - 1) / f
        tokensPerTile = tilePatches * tilePatches
        tokensForImage = ((resizedHeight / patch + f - 1) / f) * ((resizedWidth / patch + f - 1) / f)
    }

    /// Python's `round(number / factor) * factor` (half to even).
    static func roundByFactor(_ number: Int, _ factor: Int) -> Int {
        Int((Double(number) / Double(factor)).rounded(.toNearestOrEven)) * factor
    }

    static func isTooLarge(height: Int, width: Int, _ p: LFM2VLProcessorConfig) -> Bool {
        let total = p.encoderPatchSize * p.downsampleFactor
        let h = max(p.encoderPatchSize, roundByFactor(height, total))
        let w = max(p.encoderPatchSize, roundByFactor(width, total))
        let limit = Double(p.maxImageTokens * p.encoderPatchSize * p.encoderPatchSize * p.downsampleFactor
            * p.downsampleFactor) * p.maxPixelsTolerance
        return Double(h * w) > limit
    }

    /// (width, height): both multiples of patch × factor, the pixel count brought within the token limits.
    static func smartResize(height: Int, width: Int, _ p: LFM2VLProcessorConfig) -> (Int, Int) {
        let total = p.encoderPatchSize * p.downsampleFactor
        let pixelsPerToken = p.encoderPatchSize * p.encoderPatchSize * p.downsampleFactor * p.downsampleFactor
        let minPixels = Double(p.minImageTokens * pixelsPerToken), maxPixels = Double(p.maxImageTokens * pixelsPerToken)
        var h = max(total, roundByFactor(height, total))
        var w = max(total, roundByFactor(width, total))
        let (hd, wd, td) = (Double(height), Double(width), Double(total))
        if Double(h * w) > maxPixels {
            let beta = ((hd * wd) / maxPixels).squareRoot()
            h = max(total, Int((hd / beta / td).rounded(.down)) * total)
            w = max(total, Int((wd / beta / td).rounded(.down)) * total)
        } else if Double(h * w) < minPixels {
            let beta = (minPixels / (hd * wd)).squareRoot()
            h = Int((hd * beta / td).rounded(.up)) * total
            w = Int((wd * beta / td).rounded(.up)) * total
        }
        return (w, h)
    }

    /// The (columns, rows) grid whose aspect ratio is closest to the image's; among equally close ones, a later
    /// (larger) grid wins when the image's area exceeds half of that grid's. Candidates in transformers' order:
    /// by tile count, and within a count as its `sorted(set(...))` leaves them (see `gridCandidates`).
    static func closestAspectRatio(width: Int, height: Int, minTiles: Int, maxTiles: Int, tileSize: Int) -> (Int, Int) {
        let aspect = Double(width) / Double(height)
        var best = (1, 1), bestDiff = Double.infinity
        let area = Double(width * height)
        for (w, h) in gridCandidates(minTiles: minTiles, maxTiles: maxTiles) {
            let diff = abs(aspect - Double(w) / Double(h))
            if diff < bestDiff {
                bestDiff = diff
                best = (w, h)
            } else if diff == bestDiff && area > 0.5 * Double(tileSize * tileSize * w * h) {
                best = (w, h)
            }
        }
        return best
    }

    /// Every (columns, rows) with min ≤ columns·rows ≤ max, ordered by columns·rows. Within one count transformers'
    /// order is that of a Python set of small-int tuples; a tie between two grids of the same count needs
    /// |a − w₁/h₁| = |a − w₂/h₂| exactly, which only a handful of image shapes reach (e.g. 17:8 between 1×4 and
    /// 4×1) — there the later of the two here is (columns descending) the one chosen.
    static func gridCandidates(minTiles: Int, maxTiles: Int) -> [(Int, Int)] {
        var out: [(Int, Int)] = []
        for count in minTiles...max(minTiles, maxTiles) {
            for w in stride(from: count, through: 1, by: -1) where count % w == 0 {
                out.append((w, count / w))
            }
        }
        return out
    }

    /// One piece of the placeholder text that replaces `<image>` in the prompt.
    public enum Piece: Equatable, Sendable {
        /// A marker token by its text: `<|image_start|>`, `<|img_row_R_col_C|>`, `<|img_thumbnail|>`, `<|image_end|>`.
        case marker(String)
        /// This many image tokens, filled by the next image features in order.
        case imageTokens(Int)
    }

    /// The token ids `<image>` expands to: the markers looked up in `tokenizer`, `imageToken` for each image token.
    public func placeholderIds(tokenizer: Tokenizer, imageToken: Int32) throws -> [Int32] {
        var ids: [Int32] = []
        for piece in placeholder {
            switch piece {
            case .marker(let text):
                guard let id = tokenizer.id(forToken: text) else {
                    throw FireboltError("the tokenizer has no \(text) token, which this image's layout needs")
                }
                ids.append(id)
            case .imageTokens(let n):
                ids += [Int32](repeating: imageToken, count: n)
            }
        }
        return ids
    }

    /// The expansion of one `<image>`, with the start/end/row/thumbnail markers (the processor's default).
    public var placeholder: [Piece] {
        var parts: [Piece] = [.marker("<|image_start|>")]
        if split && (gridRows > 1 || gridCols > 1) {
            for r in 0..<gridRows {
                for c in 0..<gridCols {
                    parts.append(.marker("<|img_row_\(r + 1)_col_\(c + 1)|>"))
                    parts.append(.imageTokens(tokensPerTile))
                }
            }
            if thumbnail {
                parts.append(.marker("<|img_thumbnail|>"))
                parts.append(.imageTokens(tokensForImage))
            }
        } else {
            parts.append(.imageTokens(tokensForImage))
        }
        parts.append(.marker("<|image_end|>"))
        return parts
    }
}

/// One image as the vision tower takes it: a grid of `patchRows` × `patchCols` patches, each flattened as
/// (y, x, channel) — `patch × patch × 3` values, normalised.
public struct LFM2VLPatchedImage: Equatable, Sendable {
    public var patchRows: Int
    public var patchCols: Int
    public var patchSize: Int
    /// [patchRows · patchCols][patchSize · patchSize · 3], row-major over patches.
    public var values: [Float]

    public init(patchRows: Int, patchCols: Int, patchSize: Int, values: [Float]) {
        self.patchRows = patchRows; self.patchCols = patchCols; self.patchSize = patchSize; self.values = values
    }
}

/// LFM2-VL's image processor: the layout, the resizes (torchvision's 8-bit antialiased resize, which is what
/// transformers runs), rescale and normalisation fused as transformers fuses them ((x − 255·mean) / (255·std) in
/// float32), and the cut into patches. Images in the order the placeholder fills them: tiles row by row, then the
/// thumbnail; or the one resized image.
public enum LFM2VLImageProcessor {
    public static func process(_ image: RGBImage, config p: LFM2VLProcessorConfig) throws
        -> (layout: LFM2VLImageLayout, images: [LFM2VLPatchedImage]) {
        let layout = try LFM2VLImageLayout(width: image.width, height: image.height, config: p)
        let filter = PillowResize.Filter(rawValue: p.resample) ?? .bilinear
        var out: [LFM2VLPatchedImage] = []
        if layout.split {
            let gridW = layout.gridCols * p.tileSize, gridH = layout.gridRows * p.tileSize
            let grid = PillowResize.torchvisionUInt8(image, width: gridW, height: gridH, filter: filter)
            for r in 0..<layout.gridRows {
                for c in 0..<layout.gridCols {
                    out.append(patches(crop(grid, x: c * p.tileSize, y: r * p.tileSize, width: p.tileSize,
                                            height: p.tileSize), p))
                }
            }
            if layout.thumbnail {
                out.append(patches(PillowResize.torchvisionUInt8(image, width: layout.resizedWidth,
                                                                 height: layout.resizedHeight, filter: filter), p))
            }
        } else {
            out.append(patches(PillowResize.torchvisionUInt8(image, width: layout.resizedWidth,
                                                             height: layout.resizedHeight, filter: filter), p))
        }
        return (layout, out)
    }

    static func crop(_ image: RGBImage, x: Int, y: Int, width: Int, height: Int) -> RGBImage {
        var pixels = [UInt8](repeating: 0, count: width * height * 3)
        for row in 0..<height {
            let src = ((y + row) * image.width + x) * 3
            pixels.replaceSubrange(row * width * 3..<(row + 1) * width * 3,
                                   with: image.pixels[src..<src + width * 3])
        }
        return RGBImage(width: width, height: height, pixels: pixels)
    }

    static func patches(_ image: RGBImage, _ p: LFM2VLProcessorConfig) -> LFM2VLPatchedImage {
        let ps = p.encoderPatchSize, rows = image.height / ps, cols = image.width / ps
        // Fused as transformers fuses rescale and normalise: mean and std times 1/rescale_factor, in float32.
        let scale = Float(1.0 / p.rescaleFactor)
        let mean = p.imageMean.map { Float($0) * scale }, std = p.imageStd.map { Float($0) * scale }
        var values = [Float](repeating: 0, count: rows * cols * ps * ps * 3)
        var i = 0
        for pr in 0..<rows {
            for pc in 0..<cols {
                for y in 0..<ps {
                    let base = ((pr * ps + y) * image.width + pc * ps) * 3
                    for x in 0..<ps * 3 {
                        let channel = x % 3
                        values[i] = (Float(image.pixels[base + x]) - mean[channel]) / std[channel]
                        i += 1
                    }
                }
            }
        }
        return LFM2VLPatchedImage(patchRows: rows, patchCols: cols, patchSize: ps, values: values)
    }
}
