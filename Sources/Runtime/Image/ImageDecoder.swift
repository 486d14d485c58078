import CPNG
import CTurboJPEG
import Foundation

/// An 8-bit RGB image, row-major, three bytes per pixel, no padding.
public struct RGBImage: Equatable {
    public let width: Int
    public let height: Int
    /// RGB8, row-major: pixel (x, y) starts at `(y * width + x) * 3`.
    public var pixels: [UInt8]

    public init(width: Int, height: Int, pixels: [UInt8]) {
        precondition(width >= 0 && height >= 0 && pixels.count == width * height * 3,
                     "RGBImage: \(pixels.count) bytes for \(width)×\(height)")
        self.width = width
        self.height = height
        self.pixels = pixels
    }

    /// The image as Pillow's `ImageOps.exif_transpose` shows a photo with this EXIF orientation (1–8);
    /// other values leave it as it is.
    public func applyingEXIFOrientation(_ orientation: Int) -> RGBImage {
        guard (2...8).contains(orientation), width > 0, height > 0 else { return self }
        let w = width, h = height
        let swaps = orientation >= 5  // 5–8 exchange width and height
        let ow = swaps ? h : w, oh = swaps ? w : h
        var out = [UInt8](repeating: 0, count: ow * oh * 3)
        pixels.withUnsafeBufferPointer { src in
            out.withUnsafeMutableBufferPointer { dst in
                for y in 0..<oh {
                    for x in 0..<ow {
                        // The source pixel that lands at (x, y) of the output.
                        let sx: Int, sy: Int
                        switch orientation {
                        case 2: sx = w - 1 - x; sy = y                  // mirror left-right
                        case 3: sx = w - 1 - x; sy = h - 1 - y          // rotate 180°
                        case 4: sx = x; sy = h - 1 - y                  // mirror top-bottom
                        case 5: sx = y; sy = x                          // transpose
                        case 6: sx = y; sy = h - 1 - x                  // rotate 90° clockwise
                        case 7: sx = w - 1 - y; sy = h - 1 - x          // transverse
                        default: sx = w - 1 - y; sy = x                 // 8: rotate 90° counter-clockwise
                        }
                        let s = (sy * w + sx) * 3, d = (y * ow + x) * 3
                        dst[d] = src[s]; dst[d + 1] = src[s + 1]; dst[d + 2] = src[s + 2]
                    }
                }
            }
        }
        return RGBImage(width: ow, height: oh, pixels: out)
    }
}

/// Reads PNG and JPEG files into RGB8 the way Pillow's `Image.open(...)` + `exif_transpose` + `convert("RGB")`
/// does: alpha is dropped (not composited), grey and palette images are expanded, EXIF orientation is applied.
/// The format is recognised by its first bytes, never by the file name.
public enum ImageDecoder {
    /// Images with more pixels are refused before any pixel memory is allocated. Decoding holds at most 9 bytes per
    /// pixel (a 16-bit PNG: its samples, then the 8-bit copy), so 4096 × 4096 costs at most 151 MB: within
    /// what a 512 MB board can spare. `fbrun --max-image-pixels` raises it.
    public static let defaultMaxPixels = 4096 * 4096

    public enum Format: String { case png = "PNG", jpeg = "JPEG" }

    public static func decode(path: String, maxPixels: Int = defaultMaxPixels) throws -> RGBImage {
        let data: Data
        do { data = try InputFile.read(path) } catch InputFile.Problem.notFound {
            throw FireboltError("image file not found", file: path)
        } catch { throw FireboltError("\(error)", file: path) }
        return try decode(data: data, name: path, maxPixels: maxPixels)
    }

    /// `name` is what error messages call the data (a path, usually).
    public static func decode(data: Data, name: String, maxPixels: Int = defaultMaxPixels) throws -> RGBImage {
        if data.isEmpty { throw FireboltError("empty file: no image data", file: name) }
        let bytes = [UInt8](data)
        switch try detect(bytes, name: name) {
        case .png: return try decodePNG(bytes, name: name, maxPixels: maxPixels)
        case .jpeg: return try decodeJPEG(bytes, name: name, maxPixels: maxPixels)
        }
    }

    // MARK: - Format detection

    static let pngSignature: [UInt8] = [0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A]

    static func detect(_ b: [UInt8], name: String) throws -> Format {
        func starts(_ prefix: [UInt8], at offset: Int = 0) -> Bool {
            b.count >= offset + prefix.count && Array(b[offset..<offset + prefix.count]) == prefix
        }
        func ascii(_ s: String) -> [UInt8] { Array(s.utf8) }

        if starts(pngSignature) { return .png }
        if b.count < pngSignature.count && b == Array(pngSignature.prefix(b.count)) {
            throw FireboltError("truncated PNG image: the file ends inside the PNG signature (\(b.count) bytes)", file: name)
        }
        if starts([0xFF, 0xD8, 0xFF]) { return .jpeg }
        if b == [0xFF, 0xD8] || b == [0xFF] {
            throw FireboltError("truncated JPEG image: the file ends after \(b.count) byte(s)", file: name)
        }

        let other: String?
        if starts(ascii("GIF87a")) || starts(ascii("GIF89a")) { other = "GIF" }
        else if starts(ascii("BM")) && b.count >= 14 { other = "BMP" }
        else if starts(ascii("RIFF")) && starts(ascii("WEBP"), at: 8) { other = "WebP" }
        else if starts([0x49, 0x49, 0x2A, 0x00]) || starts([0x4D, 0x4D, 0x00, 0x2A]) { other = "TIFF" }
        else if starts(ascii("ftyp"), at: 4) {
            let brand = b.count >= 12 ? String(decoding: b[8..<12], as: UTF8.self) : ""
            other = brand.hasPrefix("avi") ? "AVIF" : (brand.hasPrefix("hei") || brand.hasPrefix("mif") ? "HEIF" : "ISO media (\(brand))")
        }
        else if starts([0x00, 0x00, 0x01, 0x00]) { other = "ICO" }
        else if starts([0x00, 0x00, 0x00, 0x0C, 0x6A, 0x50, 0x20, 0x20]) || starts([0xFF, 0x4F, 0xFF, 0x51]) { other = "JPEG 2000" }
        else if starts(ascii("8BPS")) { other = "Photoshop (PSD)" }
        else if starts(ascii("%PDF")) { other = "PDF" }
        else if starts(ascii("qoif")) { other = "QOI" }
        else if starts([0xFF, 0x0A]) || starts([0x00, 0x00, 0x00, 0x0C, 0x4A, 0x58, 0x4C, 0x20]) { other = "JPEG XL" }
        else { other = nil }
        if let other {
            throw FireboltError("unsupported image format: \(other) (only PNG and JPEG are supported)", file: name)
        }
        let looksLikeText = b.prefix(512).allSatisfy { $0 == 9 || $0 == 10 || $0 == 13 || (32...126).contains($0) || $0 >= 0x80 }
        throw FireboltError(looksLikeText ? "not an image: the file holds text, not PNG or JPEG data"
                                          : "not a PNG or JPEG image (unrecognised data)", file: name)
    }

    // MARK: - Limits

    static func checkSize(width: Int, height: Int, maxPixels: Int, name: String) throws {
        if width <= 0 || height <= 0 {
            throw FireboltError("image has zero size (\(width)×\(height))", file: name)
        }
        let (pixels, overflow) = width.multipliedReportingOverflow(by: height)
        if overflow || pixels > maxPixels {
            let megapixels = Double(width) * Double(height) / 1e6
            let limit = maxPixels >= 1_000_000 ? "\(formatMegapixels(Double(maxPixels) / 1e6)) megapixels"
                                               : "\(maxPixels) pixels"
            throw FireboltError("image is \(width)×\(height) = \(formatMegapixels(megapixels)) megapixels, more than the limit of \(limit)",
                                file: name)
        }
    }

    static func formatMegapixels(_ v: Double) -> String {
        if v >= 100 || v == v.rounded() { return String(Int(v.rounded())) }
        var s = String(format: v >= 1 ? "%.2f" : "%.3g", v)
        if s.contains(".") {
            while s.hasSuffix("0") { s.removeLast() }
            if s.hasSuffix(".") { s.removeLast() }
        }
        return s
    }

    // MARK: - EXIF

    /// The orientation (tag 0x0112 of IFD0) in a TIFF-structured EXIF block, or nil.
    static func exifOrientation(tiff t: ArraySlice<UInt8>) -> Int? {
        let base = t.startIndex
        guard t.count >= 8 else { return nil }
        let little: Bool
        if t[base] == 0x49 && t[base + 1] == 0x49 { little = true }
        else if t[base] == 0x4D && t[base + 1] == 0x4D { little = false }
        else { return nil }
        func u16(_ o: Int) -> Int? {
            guard o >= 0, o + 2 <= t.count else { return nil }
            let a = Int(t[base + o]), b = Int(t[base + o + 1])
            return little ? a | b << 8 : a << 8 | b
        }
        func u32(_ o: Int) -> Int? {
            guard let hi = u16(little ? o + 2 : o), let lo = u16(little ? o : o + 2) else { return nil }
            return hi << 16 | lo
        }
        guard u16(2) == 42, let ifd = u32(4), let count = u16(ifd) else { return nil }
        for i in 0..<count {
            let entry = ifd + 2 + 12 * i
            guard let tag = u16(entry), let type = u16(entry + 2) else { return nil }
            guard tag == 0x0112 else { continue }
            let value: Int?
            switch type {
            case 3: value = u16(entry + 8)          // SHORT, the standard type
            case 4, 9: value = u32(entry + 8)       // LONG / SLONG, seen in some writers
            default: value = nil
            }
            if let value, (1...8).contains(value) { return value }
            return nil
        }
        return nil
    }

    // MARK: - PNG

    static func be32(_ b: [UInt8], _ o: Int) -> Int {
        Int(b[o]) << 24 | Int(b[o + 1]) << 16 | Int(b[o + 2]) << 8 | Int(b[o + 3])
    }

    static func decodePNG(_ bytes: [UInt8], name: String, maxPixels: Int) throws -> RGBImage {
        // Check IHDR ourselves first: clearer messages, and no allocation for an absurd size.
        guard bytes.count >= 8 + 8 + 13 else {
            throw FireboltError("truncated PNG image: the file ends before the image header (IHDR) is complete", file: name)
        }
        guard be32(bytes, 8) == 13, Array(bytes[12..<16]) == Array("IHDR".utf8) else {
            throw FireboltError("corrupt PNG image: the first chunk is not a valid image header (IHDR)", file: name)
        }
        try checkSize(width: be32(bytes, 16), height: be32(bytes, 20), maxPixels: maxPixels, name: name)
        let bitDepth = Int(bytes[24])

        // Walk the chunks: find eXIf (orientation) and leave out gAMA. Pillow ignores gAMA, while libpng's
        // simplified API would gamma-correct to sRGB; without it libpng leaves the samples as they are.
        var orientation: Int? = nil
        var filtered: [UInt8]? = nil
        var offset = 8
        while offset + 8 <= bytes.count {  // a chunk's length and type: enough to check its claim (CRC may be cut)
            let length = be32(bytes, offset)
            let end = offset + 12 + length
            let type = String(decoding: bytes[offset + 4..<offset + 8], as: UTF8.self)
            guard length <= 0x7FFF_FFFF, end <= bytes.count else {
                // libpng reports cut image data itself, but it allocates any other chunk's claimed length first
                // (a 141-byte file claiming a 2 GB text chunk cost 2 GB): refuse those here.
                if type == "IDAT" { break }
                throw FireboltError("truncated PNG image: the \(type.debugDescription) chunk at byte \(offset) claims \(length) bytes; the file has \(bytes.count - offset - 8) after its type", file: name)
            }
            if type == "eXIf" && orientation == nil {
                orientation = exifOrientation(tiff: bytes[offset + 8..<offset + 8 + length])
            }
            if type == "gAMA" {
                if filtered == nil { filtered = Array(bytes[0..<offset]) }
            } else if filtered != nil {
                filtered!.append(contentsOf: bytes[offset..<end])
            }
            offset = end
            if type == "IEND" { break }
        }
        if filtered != nil && offset < bytes.count { filtered!.append(contentsOf: bytes[offset...]) }
        let input = filtered ?? bytes

        var image = png_image()
        image.version = png_uint_32(PNG_IMAGE_VERSION)
        defer { png_image_free(&image) }

        func libpngMessage() -> String {
            withUnsafeBytes(of: image.message) { raw in
                let text = raw.prefix { $0 != 0 }
                return String(decoding: text, as: UTF8.self)
            }
        }
        func failure(_ stage: String) -> FireboltError {
            let message = libpngMessage()
            if message.contains("beyond end of data") || message.contains("Not enough") || message.contains("Truncated") {
                return FireboltError("truncated PNG image: the data ends before the image is complete (libpng: \(message))", file: name)
            }
            return FireboltError("corrupt PNG image: \(message.isEmpty ? stage : message)", file: name)
        }

        return try input.withUnsafeBytes { raw -> RGBImage in
            guard png_image_begin_read_from_memory(&image, raw.baseAddress, raw.count) != 0 else {
                throw failure("cannot read the header")
            }
            let width = Int(image.width), height = Int(image.height)
            try checkSize(width: width, height: height, maxPixels: maxPixels, name: name)

            // A file with alpha (or tRNS) is read as RGBA, so that libpng never composites it onto a
            // background, and the alpha is dropped afterwards, as Pillow's convert("RGB") does.
            let hasAlpha = image.format & png_uint_32(PNG_FORMAT_FLAG_ALPHA) != 0
            if bitDepth == 16 && !hasAlpha {
                // Read the 16-bit samples as they are (linear in, linear out: no conversion) and keep the
                // high byte, as Pillow does.
                image.format = 6  // PNG_FORMAT_LINEAR_RGB
                var words = [UInt16](repeating: 0, count: width * height * 3)
                let ok = words.withUnsafeMutableBytes { out in
                    png_image_finish_read(&image, nil, out.baseAddress, 0, nil)
                }
                guard ok != 0 else { throw failure("cannot decode the image data") }
                let decoded = RGBImage(width: width, height: height, pixels: words.map { UInt8($0 >> 8) })
                return orientation.map { decoded.applyingEXIFOrientation($0) } ?? decoded
            }
            // 16-bit samples with alpha are taken as sRGB-encoded (as Pillow does) rather than linear light,
            // and libpng rounds them to 8 bits (Pillow truncates: at most one step apart).
            image.flags |= png_uint_32(PNG_IMAGE_FLAG_16BIT_sRGB)
            let channels = hasAlpha ? 4 : 3
            image.format = hasAlpha ? 3 /* PNG_FORMAT_RGBA */ : 2 /* PNG_FORMAT_RGB */
            var pixels = [UInt8](repeating: 0, count: width * height * channels)
            let ok = pixels.withUnsafeMutableBytes { out in
                png_image_finish_read(&image, nil, out.baseAddress, 0, nil)
            }
            guard ok != 0 else { throw failure("cannot decode the image data") }
            if hasAlpha {
                pixels.withUnsafeMutableBufferPointer { p in
                    for i in 0..<(width * height) {
                        p[3 * i] = p[4 * i]; p[3 * i + 1] = p[4 * i + 1]; p[3 * i + 2] = p[4 * i + 2]
                    }
                }
                pixels.removeLast(width * height)
            }
            let decoded = RGBImage(width: width, height: height, pixels: pixels)
            return orientation.map { decoded.applyingEXIFOrientation($0) } ?? decoded
        }
    }

    // MARK: - JPEG

    struct JPEGMarkers {
        var orientation: Int? = nil
        var adobe = false
    }

    /// Reads the marker segments before the first scan: EXIF orientation (APP1) and the Adobe APP14 marker.
    static func scanJPEGMarkers(_ b: [UInt8]) -> JPEGMarkers {
        var result = JPEGMarkers()
        var i = 2
        while i + 4 <= b.count {
            guard b[i] == 0xFF else { break }
            let marker = b[i + 1]
            if marker == 0xFF { i += 1; continue }  // fill byte
            if marker == 0xD8 || marker == 0x01 || (0xD0...0xD7).contains(marker) { i += 2; continue }
            if marker == 0xD9 || marker == 0xDA { break }
            let length = Int(b[i + 2]) << 8 | Int(b[i + 3])
            guard length >= 2, i + 2 + length <= b.count else { break }
            let payload = b[(i + 4)..<(i + 2 + length)]
            let p = payload.startIndex
            if marker == 0xE1, result.orientation == nil, payload.count >= 14,
               Array(payload[p..<p + 6]) == [0x45, 0x78, 0x69, 0x66, 0, 0] {  // "Exif\0\0"
                result.orientation = exifOrientation(tiff: payload[(p + 6)...])
            }
            if marker == 0xEE, payload.count >= 5, Array(payload[p..<p + 5]) == Array("Adobe".utf8) {
                result.adobe = true
            }
            i += 2 + length
        }
        return result
    }

    static func decodeJPEG(_ bytes: [UInt8], name: String, maxPixels: Int) throws -> RGBImage {
        let markers = scanJPEGMarkers(bytes)
        guard let handle = tjInitDecompress() else {
            throw FireboltError("cannot start the JPEG decoder (TurboJPEG)", file: name)
        }
        defer { tjDestroy(handle) }
        func message() -> String { tjGetErrorStr2(handle).map { String(cString: $0) } ?? "unknown error" }

        return try bytes.withUnsafeBufferPointer { buffer -> RGBImage in
            let size = UInt(buffer.count)
            var w: Int32 = 0, h: Int32 = 0, subsampling: Int32 = 0, colorspace: Int32 = 0
            guard tjDecompressHeader3(handle, buffer.baseAddress, size, &w, &h, &subsampling, &colorspace) == 0 else {
                throw FireboltError("truncated or corrupt JPEG image: cannot read its header (\(message()))", file: name)
            }
            let width = Int(w), height = Int(h)
            if width <= 0 || height <= 0 {  // TurboJPEG can "succeed" on a header cut short
                throw FireboltError("truncated or corrupt JPEG image: no usable frame header (size \(width)×\(height))", file: name)
            }
            try checkSize(width: width, height: height, maxPixels: maxPixels, name: name)

            let cmyk = colorspace == Int32(TJCS_CMYK.rawValue) || colorspace == Int32(TJCS_YCCK.rawValue)
            let channels = cmyk ? 4 : 3
            let format = cmyk ? TJPF_CMYK : TJPF_RGB
            var pixels = [UInt8](repeating: 0, count: width * height * channels)
            let status = pixels.withUnsafeMutableBufferPointer { out in
                tjDecompress2(handle, buffer.baseAddress, size, out.baseAddress, w, 0, h, Int32(format.rawValue), 0)
            }
            if status != 0 {
                let text = message()
                // Warnings (a few stray bytes, say) still give a full image, as they do for Pillow; a file that
                // ends early does not.
                let isWarning = tjGetErrorCode(handle) == Int32(TJERR_WARNING.rawValue)
                if !isWarning || text.contains("Premature end") {
                    let what = text.contains("Premature end") ? "truncated JPEG image: the data ends before the image is complete"
                                                               : "truncated or corrupt JPEG image"
                    throw FireboltError("\(what) (\(text))", file: name)
                }
            }
            if cmyk { pixels = cmykToRGB(pixels, count: width * height, inverted: markers.adobe) }
            let decoded = RGBImage(width: width, height: height, pixels: pixels)
            return markers.orientation.map { decoded.applyingEXIFOrientation($0) } ?? decoded
        }
    }

    /// Pillow's CMYK → RGB: R = 255 − C − K·(255 − C)/255 with its rounding; Adobe files store inverted CMYK.
    static func cmykToRGB(_ cmyk: [UInt8], count: Int, inverted: Bool) -> [UInt8] {
        var rgb = [UInt8](repeating: 0, count: count * 3)
        func mulDiv255(_ a: Int, _ b: Int) -> Int { let t = a * b + 128; return ((t >> 8) + t) >> 8 }
        for i in 0..<count {
            var c = Int(cmyk[4 * i]), m = Int(cmyk[4 * i + 1]), y = Int(cmyk[4 * i + 2]), k = Int(cmyk[4 * i + 3])
            if inverted { c = 255 - c; m = 255 - m; y = 255 - y; k = 255 - k }
            let nk = 255 - k
            rgb[3 * i] = UInt8(clamping: nk - mulDiv255(c, nk))
            rgb[3 * i + 1] = UInt8(clamping: nk - mulDiv255(m, nk))
            rgb[3 * i + 2] = UInt8(clamping: nk - mulDiv255(y, nk))
        }
        return rgb
    }
}
