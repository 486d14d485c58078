import CPNG
import CTurboJPEG
import Foundation
import Runtime
import TestSupport
import XCTest

final class ImageTests: XCTestCase {

    // MARK: - Golden: image.png through the SigLIP processor

    func testGoldenPixelValues() throws {
        let image = try ImageDecoder.decode(path: Fixtures.tiny + "/image.png")
        XCTAssertEqual(image.width, 320)
        XCTAssertEqual(image.height, 240)

        let json = try JSONSerialization.jsonObject(
            with: Data(contentsOf: URL(fileURLWithPath: Fixtures.tiny + "/preprocessor_config.json"))) as! [String: Any]
        let size = json["size"] as! [String: Any]
        var config = PreprocessorConfig.siglipDefault
        config.width = size["width"] as! Int
        config.height = size["height"] as! Int
        config.resample = json["resample"] as! Int
        config.rescaleFactor = (json["rescale_factor"] as! NSNumber).doubleValue
        config.imageMean = (json["image_mean"] as! [NSNumber]).map(\.doubleValue)
        config.imageStd = (json["image_std"] as! [NSNumber]).map(\.doubleValue)
        config.doResize = json["do_resize"] as! Bool
        config.doRescale = json["do_rescale"] as! Bool
        config.doNormalize = json["do_normalize"] as! Bool
        XCTAssertEqual(config.resample, 2)

        let values = SiglipPreprocessor.pixelValues(image, config: config)
        let golden = try Fixtures.npy("pixel_values.npy")
        XCTAssertEqual(golden.shape, [1, 3, 256, 256])
        let expected = golden.floats
        XCTAssertEqual(values.count, expected.count)
        guard values.count == expected.count else { return }
        var identical = 0
        var maxDiff: Float = 0
        for i in 0..<values.count {
            if values[i] == expected[i] { identical += 1 }
            maxDiff = max(maxDiff, abs(values[i] - expected[i]))
        }
        // Measured: all 196608 identical (max diff 0).
        XCTAssertGreaterThanOrEqual(Double(identical), 0.999 * Double(values.count),
                                    "\(identical) of \(values.count) identical, max diff \(maxDiff)")
        XCTAssertLessThanOrEqual(maxDiff, 1 / 127.5 + 1e-6)
        XCTAssertEqual(identical, values.count, "max diff \(maxDiff)")

        // Views: the global view is the whole image at 256; four tiles of 128 at stride 126.
        let views = SiglipPreprocessor.views(values, size: 256)
        XCTAssertEqual(views.count, 5)
        XCTAssertEqual(views[0], values)
        let corners = [(0, 0), (0, 126), (126, 0), (126, 126)]
        for (v, (y0, x0)) in corners.enumerated() {
            let tile = views[v + 1]
            XCTAssertEqual(tile.count, 3 * 128 * 128)
            for (c, y, x) in [(0, 0, 0), (1, 5, 127), (2, 127, 0), (2, 127, 127), (0, 64, 33)] {
                XCTAssertEqual(tile[(c * 128 + y) * 128 + x], values[(c * 256 + y0 + y) * 256 + x0 + x])
            }
        }
    }

    func testPreprocessFlags() {
        let image = RGBImage(width: 2, height: 1, pixels: [0, 128, 255, 10, 20, 30])
        var config = PreprocessorConfig.siglipDefault
        config.doResize = false
        // transformers: rescale in float64 stored as float32, then normalise in float32.
        func expected(_ v: Double) -> Float { (Float(v * (1.0 / 255)) - 0.5) / 0.5 }
        // Channels first: R of both pixels, then G, then B.
        XCTAssertEqual(SiglipPreprocessor.pixelValues(image, config: config),
                       [expected(0), expected(10), expected(128), expected(20), expected(255), expected(30)])
        XCTAssertEqual(SiglipPreprocessor.pixelValues(image, config: config)[0], -1)
        XCTAssertEqual(SiglipPreprocessor.pixelValues(image, config: config)[4], 1)
        config.doNormalize = false
        config.doRescale = false
        XCTAssertEqual(SiglipPreprocessor.pixelValues(image, config: config), [0, 10, 128, 20, 255, 30])
        let pre = SiglipPreprocessor.preprocess(image, config: PreprocessorConfig.siglipDefault)
        XCTAssertEqual(pre.width, 256)
        XCTAssertEqual(pre.height, 256)
        XCTAssertEqual(pre.chw.count, 3 * 256 * 256)
    }

    // MARK: - Resize against Pillow

    /// 7×5 synthetic image: R a 0/255 checker (forces bicubic overshoot and clipping), G and B ramps.
    static func synthetic() -> RGBImage {
        var pixels: [UInt8] = []
        for y in 0..<5 {
            for x in 0..<7 {
                pixels += [UInt8(((x + y) % 2) * 255), UInt8(x * 36 + y * 5), UInt8((x * y * 23) % 256)]
            }
        }
        return RGBImage(width: 7, height: 5, pixels: pixels)
    }

    /// Expected values computed with Pillow 13.0.0:
    /// `np.asarray(Image.fromarray(a).resize((w, h), resample=f)).flatten()` for the image of `synthetic()`.
    static let pillowResults: [(Int, Int, Int, [UInt8])] = [
        (4, 3, 2, [125, 21, 5, 127, 77, 21, 127, 143, 39, 125, 199, 54, 125, 29, 24, 127, 85, 96, 127, 151, 139, 125, 207, 121, 125, 37, 43, 127, 93, 130, 127, 159, 97, 125, 215, 117]),
        (4, 3, 3, [124, 16, 3, 127, 77, 17, 127, 143, 38, 124, 204, 54, 127, 24, 18, 127, 85, 101, 127, 151, 150, 127, 212, 125, 124, 32, 40, 127, 93, 138, 127, 159, 96, 124, 220, 119]),
        (9, 7, 2, [0, 0, 0, 170, 24, 0, 142, 52, 0, 57, 80, 0, 255, 108, 0, 57, 136, 0, 142, 164, 0, 170, 192, 0, 0, 216, 0, 146, 3, 0, 121, 27, 9, 125, 55, 19, 138, 83, 29, 109, 111, 39, 138, 139, 50, 125, 167, 60, 121, 195, 70, 146, 219, 79, 182, 6, 0, 109, 30, 20, 121, 58, 42, 158, 86, 66, 73, 114, 89, 158, 142, 112, 121, 170, 135, 109, 198, 134, 182, 222, 104, 0, 10, 0, 170, 34, 31, 142, 62, 66, 57, 90, 102, 255, 118, 138, 57, 146, 174, 142, 174, 210, 170, 202, 160, 0, 226, 20, 182, 14, 0, 109, 38, 42, 121, 66, 90, 158, 94, 138, 73, 122, 187, 158, 150, 94, 121, 178, 101, 109, 206, 126, 182, 230, 119, 146, 17, 0, 121, 41, 52, 125, 69, 114, 138, 97, 151, 109, 125, 127, 138, 153, 75, 125, 181, 103, 121, 209, 128, 146, 233, 107, 0, 20, 0, 170, 44, 61, 142, 72, 133, 57, 100, 148, 255, 128, 20, 57, 156, 92, 142, 184, 163, 170, 212, 149, 0, 236, 40]),
        (9, 7, 3, [0, 0, 0, 198, 22, 0, 152, 52, 0, 21, 80, 0, 255, 108, 0, 21, 136, 0, 152, 164, 0, 198, 194, 0, 0, 218, 0, 160, 1, 0, 111, 24, 7, 122, 54, 16, 152, 82, 25, 95, 110, 34, 152, 138, 43, 122, 166, 51, 111, 196, 67, 160, 220, 86, 204, 4, 0, 89, 28, 18, 115, 58, 42, 185, 86, 65, 51, 114, 89, 185, 142, 118, 115, 170, 148, 89, 200, 145, 204, 224, 114, 0, 8, 0, 191, 32, 28, 149, 62, 66, 32, 90, 102, 255, 118, 138, 32, 146, 174, 149, 174, 227, 191, 204, 166, 0, 228, 10, 204, 12, 0, 89, 36, 38, 115, 66, 89, 185, 94, 146, 51, 122, 206, 185, 150, 79, 115, 178, 82, 89, 208, 126, 204, 232, 130, 160, 16, 0, 111, 40, 49, 122, 70, 123, 152, 98, 163, 95, 126, 129, 152, 154, 57, 122, 182, 92, 111, 212, 131, 160, 236, 114, 0, 18, 0, 198, 42, 57, 152, 72, 150, 21, 100, 160, 255, 128, 9, 21, 156, 89, 152, 184, 189, 198, 214, 160, 0, 238, 24]),
        // Only the vertical pass (width unchanged) and only the horizontal pass (height unchanged).
        (7, 3, 2, [109, 2, 0, 146, 38, 10, 109, 74, 20, 146, 110, 30, 109, 146, 39, 146, 182, 49, 109, 218, 59, 113, 10, 0, 142, 46, 46, 113, 82, 92, 142, 118, 138, 113, 154, 127, 142, 190, 173, 113, 226, 77, 109, 18, 0, 146, 54, 82, 109, 90, 164, 146, 126, 100, 109, 162, 73, 146, 198, 155, 109, 234, 91]),
        (7, 3, 3, [106, 2, 0, 149, 38, 8, 106, 74, 16, 149, 110, 24, 106, 146, 40, 149, 182, 49, 106, 218, 57, 126, 10, 0, 129, 46, 46, 126, 82, 92, 129, 118, 148, 126, 154, 130, 129, 190, 176, 126, 226, 83, 106, 18, 0, 149, 54, 84, 106, 90, 168, 149, 126, 102, 106, 162, 72, 149, 198, 155, 106, 234, 90]),
        (3, 5, 2, [109, 31, 0, 135, 108, 0, 109, 185, 0, 146, 36, 20, 120, 113, 69, 146, 190, 118, 109, 41, 39, 135, 118, 138, 109, 195, 145, 146, 46, 59, 120, 123, 132, 146, 200, 99, 109, 51, 79, 135, 128, 95, 109, 205, 126]),
        // Width grows, height shrinks: Pillow 13 runs the vertical pass first here (Pillow 12 did not).
        (8, 2, 2, [116, 5, 0, 135, 34, 19, 123, 66, 39, 129, 97, 59, 129, 129, 74, 123, 160, 87, 135, 192, 96, 116, 221, 68, 116, 15, 0, 135, 44, 56, 123, 76, 116, 129, 107, 131, 129, 139, 110, 123, 170, 112, 135, 202, 146, 116, 231, 88]),
        (8, 2, 3, [112, 3, 0, 139, 32, 16, 120, 65, 32, 130, 96, 55, 130, 128, 73, 120, 159, 86, 139, 192, 95, 112, 221, 64, 112, 15, 0, 139, 44, 57, 120, 77, 129, 130, 108, 141, 130, 140, 109, 120, 171, 114, 139, 204, 159, 112, 233, 86]),
        (3, 5, 3, [111, 26, 0, 130, 108, 0, 111, 190, 0, 144, 31, 17, 125, 113, 69, 144, 195, 121, 111, 36, 33, 130, 118, 146, 111, 200, 145, 144, 41, 59, 125, 123, 133, 144, 205, 99, 111, 46, 75, 130, 128, 102, 111, 210, 123]),
    ]

    func testResizeMatchesPillow() {
        let image = Self.synthetic()
        for (w, h, filter, expected) in Self.pillowResults {
            let out = PillowResize.resize(image, width: w, height: h, resample: filter)
            XCTAssertEqual(out.width, w)
            XCTAssertEqual(out.height, h)
            XCTAssertEqual(out.pixels, expected, "\(w)×\(h) resample \(filter)")
        }
        // Pillow 12's order (horizontal first) is the two single-axis resizes in turn.
        for filter in [2, 3] {
            let classic = PillowResize.resize(image, width: 8, height: 2, resample: filter, order: .horizontalFirst)
            let stepwise = PillowResize.resize(PillowResize.resize(image, width: 8, height: 5, resample: filter),
                                               width: 8, height: 2, resample: filter)
            XCTAssertEqual(classic, stepwise)
            XCTAssertNotEqual(classic, PillowResize.resize(image, width: 8, height: 2, resample: filter))
        }
        // Same size: a copy, whatever the filter.
        XCTAssertEqual(PillowResize.resize(image, width: 7, height: 5, resample: 3), image)
    }

    func testResizeFlatImageStaysFlat() {
        let flat = RGBImage(width: 13, height: 9, pixels: [UInt8](repeating: 0, count: 13 * 9).flatMap { _ in [17, 200, 255] })
        for filter in [2, 3] {
            for (w, h) in [(256, 256), (5, 3), (1, 1), (13, 40)] {
                let out = PillowResize.resize(flat, width: w, height: h, resample: filter)
                XCTAssertEqual(Set(stride(from: 0, to: out.pixels.count, by: 3).map { out.pixels[$0] }), [17])
                XCTAssertEqual(Set(stride(from: 2, to: out.pixels.count, by: 3).map { out.pixels[$0] }), [255])
            }
        }
    }

    // MARK: - PNG variants

    /// Encodes with libpng's simplified writer. `format`: PNG_FORMAT_* value; 16-bit formats take `words`.
    func makePNG(width: Int, height: Int, format: UInt32, bytes: [UInt8] = [], words: [UInt16] = [],
                 colormap: [UInt8]? = nil) throws -> Data {
        var image = png_image()
        image.version = png_uint_32(PNG_IMAGE_VERSION)
        image.width = png_uint_32(width)
        image.height = png_uint_32(height)
        image.format = format
        if let colormap { image.colormap_entries = png_uint_32(colormap.count / (format & 1 != 0 ? 4 : 3)) }
        defer { png_image_free(&image) }
        // Stable copies for the C calls.
        let bytesCopy = UnsafeMutableBufferPointer<UInt8>.allocate(capacity: max(bytes.count, 1))
        _ = bytesCopy.initialize(from: bytes)
        let wordsCopy = UnsafeMutableBufferPointer<UInt16>.allocate(capacity: max(words.count, 1))
        _ = wordsCopy.initialize(from: words)
        let colormapCopy = colormap.map { map -> UnsafeMutableBufferPointer<UInt8> in
            let copy = UnsafeMutableBufferPointer<UInt8>.allocate(capacity: map.count)
            _ = copy.initialize(from: map)
            return copy
        }
        defer { bytesCopy.deallocate(); wordsCopy.deallocate(); colormapCopy?.deallocate() }
        func write(_ memory: UnsafeMutableRawPointer?, _ size: inout Int) -> Int32 {
            let samples: UnsafeRawBufferPointer = words.isEmpty
                ? UnsafeRawBufferPointer(start: bytesCopy.baseAddress, count: bytesCopy.count)
                : UnsafeRawBufferPointer(start: wordsCopy.baseAddress, count: wordsCopy.count * 2)
            return png_image_write_to_memory(&image, memory, &size, 0, samples.baseAddress, 0,
                                             colormapCopy.map { UnsafeRawPointer($0.baseAddress) } ?? nil)
        }
        var size = 0
        guard write(nil, &size) != 0, size > 0 else { throw FireboltError("png_image_write_to_memory (size) failed") }
        var out = [UInt8](repeating: 0, count: size)
        let ok = out.withUnsafeMutableBytes { write($0.baseAddress, &size) }
        guard ok != 0 else { throw FireboltError("png_image_write_to_memory failed") }
        return Data(out.prefix(size))
    }

    func testPNGRGBAAlphaIsDroppedNotComposited() throws {
        let rgba: [UInt8] = [200, 100, 50, 0, 1, 2, 3, 255, 90, 80, 70, 128, 255, 255, 255, 0, 0, 0, 0, 0, 10, 20, 30, 40]
        let png = try makePNG(width: 3, height: 2, format: 3 /* RGBA */, bytes: rgba)
        let image = try ImageDecoder.decode(data: png, name: "rgba.png")
        XCTAssertEqual(image.width, 3)
        XCTAssertEqual(image.height, 2)
        XCTAssertEqual(image.pixels, [200, 100, 50, 1, 2, 3, 90, 80, 70, 255, 255, 255, 0, 0, 0, 10, 20, 30])
    }

    func testPNGRGB() throws {
        let rgb: [UInt8] = (0..<(5 * 3 * 3)).map { UInt8(($0 * 37) % 256) }
        let image = try ImageDecoder.decode(data: try makePNG(width: 5, height: 3, format: 2, bytes: rgb), name: "rgb.png")
        XCTAssertEqual(image, RGBImage(width: 5, height: 3, pixels: rgb))
    }

    func testPNGGreyAndGreyAlpha() throws {
        let grey: [UInt8] = [0, 77, 128, 255, 3, 250]
        let g = try ImageDecoder.decode(data: try makePNG(width: 3, height: 2, format: 0 /* GRAY */, bytes: grey), name: "g.png")
        XCTAssertEqual(g.pixels, grey.flatMap { [$0, $0, $0] })

        let greyAlpha: [UInt8] = [77, 0, 128, 255, 9, 1, 200, 100]
        let ga = try ImageDecoder.decode(data: try makePNG(width: 2, height: 2, format: 1 /* GA */, bytes: greyAlpha), name: "ga.png")
        XCTAssertEqual(ga.pixels, [77, 77, 77, 128, 128, 128, 9, 9, 9, 200, 200, 200])
    }

    func testPNGPalette() throws {
        let palette: [UInt8] = [255, 0, 0, 0, 255, 0, 0, 0, 255, 12, 34, 56]
        let indices: [UInt8] = [0, 1, 2, 3, 3, 2, 1, 0]
        let p = try ImageDecoder.decode(data: try makePNG(width: 4, height: 2, format: 0x0A /* RGB_COLORMAP */,
                                                          bytes: indices, colormap: palette), name: "p.png")
        XCTAssertEqual(p.pixels, indices.flatMap { Array(palette[Int($0) * 3..<Int($0) * 3 + 3]) })

        // Palette with transparency (tRNS): the colours come out, the alpha is dropped.
        let paletteRGBA: [UInt8] = [255, 0, 0, 0, 0, 255, 0, 128, 7, 8, 9, 255]
        let pt = try ImageDecoder.decode(data: try makePNG(width: 3, height: 1, format: 0x0B /* RGBA_COLORMAP */,
                                                           bytes: [0, 1, 2], colormap: paletteRGBA), name: "pt.png")
        XCTAssertEqual(pt.pixels, [255, 0, 0, 0, 255, 0, 7, 8, 9])
    }

    func testPNG16Bit() throws {
        let words: [UInt16] = [0, 65535, 32768, 257 * 77, 1000, 65280, 12345, 54321, 255, 256, 511, 40000]
        let png = try makePNG(width: 2, height: 2, format: 6 /* LINEAR_RGB: 16-bit */, words: words)
        XCTAssertEqual(png[png.startIndex + 24], 16, "bit depth in IHDR")
        let image = try ImageDecoder.decode(data: png, name: "16.png")
        XCTAssertEqual(image.width, 2)
        // Pillow keeps the high byte, and applies no gamma curve (the writer's gAMA 1.0 is ignored, as Pillow ignores it).
        XCTAssertEqual(image.pixels, words.map { UInt8($0 >> 8) })

        // With alpha, libpng's own 16 → 8 reduction rounds: never more than one step from Pillow's.
        let rgba: [UInt16] = [0, 65535, 32768, 0, 257 * 77, 1000, 65280, 65535, 12345, 54321, 255, 1, 256, 511, 40000, 30000]
        let withAlpha = try ImageDecoder.decode(data: try makePNG(width: 2, height: 2, format: 7 /* LINEAR_RGB_ALPHA */,
                                                                  words: rgba), name: "16a.png")
        XCTAssertEqual(withAlpha.width, 2)
        for i in 0..<4 where rgba[4 * i + 3] == 65535 {  // the writer premultiplies linear data: check opaque pixels
            for c in 0..<3 {
                let w = rgba[4 * i + c], v = withAlpha.pixels[3 * i + c]
                XCTAssertLessThanOrEqual(abs(Int(v) - Int(w >> 8)), 1, "pixel \(i): \(w) → \(v)")
            }
        }
    }

    func testPNGGammaChunkIsIgnored() throws {
        let rgb: [UInt8] = (0..<(4 * 4 * 3)).map { UInt8(($0 * 23) % 256) }
        var png = [UInt8](try makePNG(width: 4, height: 4, format: 2, bytes: rgb))
        png.insert(contentsOf: Self.chunk("gAMA", [0, 1, 0x86, 0xA0]) /* 1.0 */, at: 33)
        XCTAssertEqual(try ImageDecoder.decode(data: Data(png), name: "gamma.png").pixels, rgb)
    }

    func testPNGExifOrientation() throws {
        let base = Self.quadrants(width: 16, height: 8)
        var png = [UInt8](try makePNG(width: 16, height: 8, format: 2, bytes: base.pixels))
        png.insert(contentsOf: Self.chunk("eXIf", Self.tiff(orientation: 6, littleEndian: false)), at: 33)
        let image = try ImageDecoder.decode(data: Data(png), name: "exif.png")
        XCTAssertEqual(image, Self.transform(base, orientation: 6))
    }

    // MARK: - JPEG and EXIF orientation

    func makeJPEG(_ image: RGBImage, quality: Int32 = 95) throws -> [UInt8] {
        guard let handle = tjInitCompress() else { throw FireboltError("tjInitCompress failed") }
        defer { tjDestroy(handle) }
        var buffer: UnsafeMutablePointer<UInt8>? = nil
        var size: UInt = 0
        let rc = image.pixels.withUnsafeBufferPointer {
            tjCompress2(handle, $0.baseAddress, Int32(image.width), 0, Int32(image.height), Int32(TJPF_RGB.rawValue),
                        &buffer, &size, Int32(TJSAMP_444.rawValue), quality, 0)
        }
        defer { tjFree(buffer) }
        guard rc == 0, let buffer else { throw FireboltError("tjCompress2 failed") }
        return Array(UnsafeBufferPointer(start: buffer, count: Int(size)))
    }

    /// Four flat 8-aligned quadrants: red, green / blue, white.
    static func quadrants(width: Int, height: Int) -> RGBImage {
        var pixels: [UInt8] = []
        for y in 0..<height {
            for x in 0..<width {
                switch (y < height / 2, x < width / 2) {
                case (true, true): pixels += [255, 0, 0]
                case (true, false): pixels += [0, 255, 0]
                case (false, true): pixels += [0, 0, 255]
                case (false, false): pixels += [255, 255, 255]
                }
            }
        }
        return RGBImage(width: width, height: height, pixels: pixels)
    }

    /// The test's own version of what each EXIF orientation asks for (independent of the decoder's).
    static func transform(_ image: RGBImage, orientation: Int) -> RGBImage {
        var img = image
        func pixel(_ i: RGBImage, _ x: Int, _ y: Int) -> [UInt8] { Array(i.pixels[(y * i.width + x) * 3..<(y * i.width + x) * 3 + 3]) }
        func mirror(_ i: RGBImage) -> RGBImage {
            RGBImage(width: i.width, height: i.height, pixels: (0..<i.height).flatMap { y in (0..<i.width).flatMap { x in pixel(i, i.width - 1 - x, y) } })
        }
        func rotateClockwise(_ i: RGBImage) -> RGBImage {
            RGBImage(width: i.height, height: i.width, pixels: (0..<i.width).flatMap { y in (0..<i.height).flatMap { x in pixel(i, y, i.height - 1 - x) } })
        }
        func rotate(_ i: RGBImage, _ quarterTurns: Int) -> RGBImage { (0..<quarterTurns).reduce(i) { r, _ in rotateClockwise(r) } }
        switch orientation {
        case 2: img = mirror(img)
        case 3: img = rotate(img, 2)
        case 4: img = mirror(rotate(img, 2))
        case 5: img = rotate(mirror(img), 3)
        case 6: img = rotate(img, 1)
        case 7: img = rotate(mirror(img), 1)
        case 8: img = rotate(img, 3)
        default: break
        }
        return img
    }

    /// A minimal TIFF block: IFD0 with one entry, tag 0x0112 (orientation), SHORT.
    static func tiff(orientation: Int, littleEndian: Bool) -> [UInt8] {
        func u16(_ v: Int) -> [UInt8] { littleEndian ? [UInt8(v & 255), UInt8(v >> 8)] : [UInt8(v >> 8), UInt8(v & 255)] }
        func u32(_ v: Int) -> [UInt8] { littleEndian ? u16(v & 0xFFFF) + u16(v >> 16) : u16(v >> 16) + u16(v & 0xFFFF) }
        return (littleEndian ? [0x49, 0x49] : [0x4D, 0x4D]) + u16(42) + u32(8) + u16(1)
            + u16(0x0112) + u16(3) + u32(1) + u16(orientation) + u16(0) + u32(0)
    }

    static func withExif(_ jpeg: [UInt8], orientation: Int, littleEndian: Bool) -> [UInt8] {
        let payload: [UInt8] = Array("Exif".utf8) + [0, 0] + tiff(orientation: orientation, littleEndian: littleEndian)
        let length = payload.count + 2
        return Array(jpeg[0..<2]) + [0xFF, 0xE1, UInt8(length >> 8), UInt8(length & 255)] + payload + Array(jpeg[2...])
    }

    func testJPEGDecode() throws {
        let base = Self.quadrants(width: 32, height: 16)
        let jpeg = try makeJPEG(base)
        let image = try ImageDecoder.decode(data: Data(jpeg), name: "q.jpg")
        XCTAssertEqual(image.width, 32)
        XCTAssertEqual(image.height, 16)
        let maxError = zip(image.pixels, base.pixels).map { abs(Int($0) - Int($1)) }.max() ?? 0
        XCTAssertLessThanOrEqual(maxError, 8)
    }

    func testJPEGExifOrientations() throws {
        let jpeg = try makeJPEG(Self.quadrants(width: 32, height: 16))
        let upright = try ImageDecoder.decode(data: Data(jpeg), name: "o1.jpg")
        for orientation in 1...8 {
            for littleEndian in [false, true] {
                let tagged = Self.withExif(jpeg, orientation: orientation, littleEndian: littleEndian)
                let image = try ImageDecoder.decode(data: Data(tagged), name: "o\(orientation).jpg")
                XCTAssertEqual(image, Self.transform(upright, orientation: orientation), "orientation \(orientation)")
            }
        }
        // What the picture looks like: the top-left corner after each turn (red, green / blue, white quadrants).
        func topLeft(_ orientation: Int) throws -> [UInt8] {
            let image = try ImageDecoder.decode(data: Data(Self.withExif(jpeg, orientation: orientation, littleEndian: true)), name: "x.jpg")
            return Array(image.pixels[0..<3]).map { $0 > 127 ? 255 : 0 }
        }
        XCTAssertEqual(try topLeft(1), [255, 0, 0])
        XCTAssertEqual(try topLeft(3), [255, 255, 255])  // 180°
        XCTAssertEqual(try topLeft(6), [0, 0, 255])      // 90° clockwise: bottom-left comes to the top-left
        XCTAssertEqual(try topLeft(8), [0, 255, 0])      // 90° counter-clockwise: top-right comes to the top-left
        let rotated = try ImageDecoder.decode(data: Data(Self.withExif(jpeg, orientation: 6, littleEndian: false)), name: "6.jpg")
        XCTAssertEqual(rotated.width, 16)
        XCTAssertEqual(rotated.height, 32)
    }

    func testJPEGGreyscale() throws {
        guard let handle = tjInitCompress() else { return XCTFail("tjInitCompress") }
        defer { tjDestroy(handle) }
        let grey: [UInt8] = (0..<(16 * 8)).map { $0 < 64 ? 40 : 220 }
        var buffer: UnsafeMutablePointer<UInt8>? = nil
        var size: UInt = 0
        let rc = grey.withUnsafeBufferPointer {
            tjCompress2(handle, $0.baseAddress, 16, 0, 8, Int32(TJPF_GRAY.rawValue), &buffer, &size, Int32(TJSAMP_GRAY.rawValue), 95, 0)
        }
        defer { tjFree(buffer) }
        XCTAssertEqual(rc, 0)
        let image = try ImageDecoder.decode(data: Data(bytes: buffer!, count: Int(size)), name: "grey.jpg")
        XCTAssertEqual(image.width, 16)
        for i in 0..<(16 * 8) {
            XCTAssertEqual(image.pixels[3 * i], image.pixels[3 * i + 1])
            XCTAssertEqual(image.pixels[3 * i], image.pixels[3 * i + 2])
            XCTAssertLessThanOrEqual(abs(Int(image.pixels[3 * i]) - Int(grey[i])), 4)
        }
    }

    // MARK: - Errors

    func assertThrows(_ data: [UInt8], name: String = "bad.img", maxPixels: Int = ImageDecoder.defaultMaxPixels,
                      _ fragments: [String], line: UInt = #line) {
        XCTAssertThrowsError(try ImageDecoder.decode(data: Data(data), name: name, maxPixels: maxPixels), line: line) { error in
            guard let error = error as? FireboltError else { return XCTFail("not a FireboltError: \(error)", line: line) }
            XCTAssertTrue(error.description.contains(name), "\(error)", line: line)
            for fragment in fragments {
                XCTAssertTrue(error.description.lowercased().contains(fragment.lowercased()), "'\(fragment)' not in: \(error)", line: line)
            }
        }
    }

    static func crc32(_ bytes: [UInt8]) -> UInt32 {
        var crc: UInt32 = 0xFFFF_FFFF
        for b in bytes {
            crc ^= UInt32(b)
            for _ in 0..<8 { crc = crc & 1 != 0 ? (crc >> 1) ^ 0xEDB8_8320 : crc >> 1 }
        }
        return ~crc
    }

    static func chunk(_ type: String, _ data: [UInt8]) -> [UInt8] {
        func be(_ v: UInt32) -> [UInt8] { [UInt8(v >> 24), UInt8(v >> 16 & 255), UInt8(v >> 8 & 255), UInt8(v & 255)] }
        let body = Array(type.utf8) + data
        return be(UInt32(data.count)) + body + be(crc32(body))
    }

    static func pngHeaderOnly(width: UInt32, height: UInt32) -> [UInt8] {
        func be(_ v: UInt32) -> [UInt8] { [UInt8(v >> 24), UInt8(v >> 16 & 255), UInt8(v >> 8 & 255), UInt8(v & 255)] }
        return [0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A]
            + chunk("IHDR", be(width) + be(height) + [8, 2, 0, 0, 0])
            + chunk("IEND", [])
    }

    func testErrors() throws {
        let folder = TemporaryFolder("image-errors")
        let fixture = [UInt8](try Data(contentsOf: URL(fileURLWithPath: Fixtures.tiny + "/image.png")))
        let jpeg = try makeJPEG(Self.quadrants(width: 64, height: 32))

        assertThrows([], name: "empty.png", ["empty"])
        assertThrows(Array(fixture.prefix(fixture.count / 2)), name: "half.png", ["truncated", "PNG"])
        assertThrows(Array(fixture.prefix(20)), name: "short.png", ["truncated", "PNG"])
        assertThrows(Array(fixture.prefix(5)), name: "tiny.png", ["truncated", "PNG"])
        // A text chunk claiming 2 GB in a tiny file: refused before libpng would allocate the claimed length.
        var huge = Array(fixture.prefix(33))                                   // signature + IHDR
        huge += [0x7F, 0xFF, 0xFF, 0x00] + Array("tEXt".utf8) + Array("comment\0hi".utf8)
        assertThrows(huge, name: "huge-text.png", ["truncated PNG image", "\"tEXt\" chunk at byte 33 claims 2147483392 bytes"])
        assertThrows(Array(jpeg.prefix(jpeg.count * 2 / 3)), name: "half.jpg", ["truncated", "JPEG"])
        assertThrows(Array(jpeg.prefix(40)), name: "head.jpg", ["truncated", "JPEG"])
        assertThrows(Array("just some words\nnot a picture\n".utf8), name: "notes.txt", ["text", "not"])
        assertThrows(Array("GIF89a".utf8) + [1, 0, 1, 0, 0, 0, 0, 0x3B], name: "anim.gif", ["unsupported", "GIF"])
        assertThrows(Array("BM".utf8) + [UInt8](repeating: 0, count: 60), name: "pic.bmp", ["unsupported", "BMP"])
        assertThrows(Array("RIFF".utf8) + [0, 0, 0, 0] + Array("WEBPVP8 ".utf8), name: "pic.webp", ["unsupported", "WebP"])
        assertThrows([0x00, 0x01, 0x02, 0x03, 0xF0, 0xF1, 0x00, 0x9A], name: "blob.bin", ["not a PNG or JPEG"])
        assertThrows(Self.pngHeaderOnly(width: 100_000, height: 100_000), name: "huge.png",
                     ["100000×100000", "10000 megapixels", "limit of 16.78 megapixels"])
        assertThrows(Self.pngHeaderOnly(width: 4097, height: 4096), name: "camera.png", ["4097×4096", "limit of 16.78 megapixels"])
        assertThrows(Self.pngHeaderOnly(width: 0, height: 5), name: "zero.png", ["zero size"])
        assertThrows(fixture, name: "limited.png", maxPixels: 10, ["320×240", "limit of 10 pixels"])
        assertThrows(jpeg, name: "limited.jpg", maxPixels: 1000, ["64×32", "limit of 1000 pixels"])
        // A valid header, then garbage instead of image data.
        var corrupt = Array(fixture.prefix(33)) + Self.chunk("IDAT", [UInt8](repeating: 0x55, count: 64)) + Self.chunk("IEND", [])
        assertThrows(corrupt, name: "garbage.png", ["PNG"])
        corrupt = Array(jpeg.prefix(200)) + [UInt8](repeating: 0x00, count: 10)
        XCTAssertThrowsError(try ImageDecoder.decode(data: Data(corrupt), name: "garbage.jpg"))

        // Files.
        let missing = folder.file("missing.png")
        XCTAssertThrowsError(try ImageDecoder.decode(path: missing)) { error in
            XCTAssertEqual((error as? FireboltError)?.file, missing)
            XCTAssertTrue("\(error)".contains("not found"), "\(error)")
        }
        let empty = folder.file("empty.jpg")
        XCTAssertTrue(FileManager.default.createFile(atPath: empty, contents: Data()))
        XCTAssertThrowsError(try ImageDecoder.decode(path: empty)) { error in
            XCTAssertEqual("\(error)", "\(empty): empty file: no image data")
        }
        XCTAssertThrowsError(try ImageDecoder.decode(path: folder.path)) { error in
            XCTAssertTrue("\(error)".contains("directory"), "\(error)")
        }
        let text = folder.file("photo.png")  // the name lies; the content decides
        try Data("hello".utf8).write(to: URL(fileURLWithPath: text))
        XCTAssertThrowsError(try ImageDecoder.decode(path: text)) { error in
            XCTAssertEqual("\(error)", "\(text): not an image: the file holds text, not PNG or JPEG data")
        }
        let renamed = folder.file("really-a-jpeg.png")
        try Data(jpeg).write(to: URL(fileURLWithPath: renamed))
        XCTAssertEqual(try ImageDecoder.decode(path: renamed).width, 64)
    }

    /// Every prefix of a small PNG and JPEG, and single-byte corruptions: an error or an image, never a crash.
    func testDamagedInputNeverCrashes() throws {
        let png = [UInt8](try makePNG(width: 8, height: 8, format: 3, bytes: (0..<256).map { UInt8($0) }))
        let jpeg = try makeJPEG(Self.quadrants(width: 16, height: 16), quality: 80)
        for source in [png, jpeg] {
            for length in 0..<source.count {
                if let image = try? ImageDecoder.decode(data: Data(source.prefix(length)), name: "p") {
                    XCTAssertEqual(image.pixels.count, image.width * image.height * 3)
                }
            }
            var state: UInt64 = 0x9E37_79B9_7F4A_7C15  // fixed seed: the same damage every run
            func next() -> Int { state = state &* 6364136223846793005 &+ 1442695040888963407; return Int(state >> 33) }
            for _ in 0..<200 {
                var damaged = source
                damaged[2 + next() % (damaged.count - 2)] = UInt8(next() % 256)
                if let image = try? ImageDecoder.decode(data: Data(damaged), name: "d", maxPixels: 1 << 20) {
                    XCTAssertEqual(image.pixels.count, image.width * image.height * 3)
                }
            }
        }
    }
}
