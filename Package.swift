// swift-tools-version:5.9
// firebolt-edge: run Firebolt-VL (and plain LFM2) on small CPUs.
// No Swift package dependencies: only the toolchain and Debian system libraries (see README).
import PackageDescription
import Foundation

// FB_EMULATE_X86=1 in the environment (scripts/test-x86-emulated.sh --runtime, into its own build folder) builds the
// kernels on SIMDe's portable intrinsics, claiming every x86 instruction set, so that the runtime's parity tests can
// run on the AVX-VNNI / AVX-512 kernel sets this machine kind lacks (Sources/Kernels/simd_x86.h).
let emulateX86 = ProcessInfo.processInfo.environment["FB_EMULATE_X86"] != nil
// Only that switch adds compiler flags: a package that depends on this one may not carry unsafe flags. Debug builds
// of the kernels are therefore -O0 unless asked otherwise; scripts/test.sh asks (`-Xcc -O3`), since the tests run the
// kernels on real sizes.
let kernelSettings: [CSetting] = emulateX86
    ? [.define("FB_EMULATE_X86"), .define("SIMDE_NO_NATIVE"),
       .unsafeFlags(["-I", Context.packageDirectory + "/Tests/KernelPaths", "-Wno-psabi", "-O2"])]
    : []

let package = Package(
    name: "firebolt-edge",
    products: [
        // The runtime as a library: load a .fbm, ask about an image, stream the answer (docs/library.md).
        .library(name: "FireboltRuntime", targets: ["Runtime"]),
        .executable(name: "fbconvert", targets: ["fbconvert"]),
        .executable(name: "fbrun", targets: ["fbrun"]),
        .executable(name: "fbserve", targets: ["fbserve"]),
    ],
    targets: [
        // System libraries, found through pkg-config (Debian: libzstd-dev).
        .systemLibrary(name: "CZstd", pkgConfig: "libzstd", providers: [.apt(["libzstd-dev"])]),
        .systemLibrary(name: "CPNG", pkgConfig: "libpng", providers: [.apt(["libpng-dev"])]),
        .systemLibrary(name: "CTurboJPEG", pkgConfig: "libturbojpeg", providers: [.apt(["libturbojpeg0-dev"])]),

        // Hand-written C kernels: quantization layouts, matrix products (one token and batched GEMM), element-wise
        // ops, the thread pool, hashing; SIMD chosen at run time.
        .target(name: "Kernels", cSettings: kernelSettings),

        // HTTP/1.1 on libmicrohttpd (Debian: libmicrohttpd-dev): the sockets, threads and body limits under fbserve.
        .target(name: "HTTP", linkerSettings: [.linkedLibrary("microhttpd")]),

        // Small argument parser shared by the tools.
        .target(name: "CommandLineKit"),

        // Byte-level BPE tokenizer with tokenizer.json's pre-tokenizers, post-processors and decoders (Foundation only).
        .target(name: "Tokenization"),

        // The .fbm reader, image decoding and preprocessing, the model graphs, generation.
        .target(name: "Runtime", dependencies: ["Kernels", "Tokenization", "CZstd", "CPNG", "CTurboJPEG"]),

        // `fbrun bench` and the CI gate: timed runs with machine probes, compared as ratios.
        .target(name: "Benchmarks", dependencies: ["Runtime", "Kernels"]),

        // safetensors reading, sanitising, quantization policy, .fbm writing.
        .target(name: "Converter", dependencies: ["Runtime", "Kernels", "CZstd"]),

        // The OpenAI-compatible API: request parsing and errors, the engine that decodes sequences together, metrics.
        .target(name: "Server", dependencies: ["Runtime", "HTTP"]),

        .executableTarget(name: "fbconvert", dependencies: ["Converter", "Runtime", "CommandLineKit"]),
        .executableTarget(name: "fbserve", dependencies: ["Server", "Runtime", "CommandLineKit"]),
        .executableTarget(name: "fbrun", dependencies: ["Runtime", "Benchmarks", "CommandLineKit"]),
        // The library's example: an app that asks a model about an image (uses only the public API).
        .executableTarget(name: "ask", dependencies: ["Runtime"], path: "Examples/ask"),

        // Every parser of untrusted bytes as a libFuzzer target (scripts/fuzz.sh), or replaying files through one.
        .executableTarget(name: "fbfuzz", dependencies: ["Converter", "Runtime", "Server"]),

        // Fixture paths, temporary folders and running the built tools, for the test targets only.
        .target(name: "TestSupport", dependencies: ["Runtime"], path: "Tests/Support"),

        .testTarget(name: "KernelsTests", dependencies: ["Kernels"]),
        .testTarget(name: "CommandLineKitTests", dependencies: ["CommandLineKit"]),
        .testTarget(name: "RuntimeTests", dependencies: ["Runtime", "Benchmarks", "Kernels", "Converter", "TestSupport"]),
        .testTarget(name: "ConverterTests", dependencies: ["Converter", "Runtime", "Kernels", "TestSupport"]),
        // End-to-end: runs the built fbconvert / fbrun binaries as a user would.
        .testTarget(name: "ToolTests", dependencies: ["fbconvert", "fbrun", "fbserve", "fbfuzz", "ask", "Converter", "Runtime", "Kernels", "TestSupport"]),
    ]
)
