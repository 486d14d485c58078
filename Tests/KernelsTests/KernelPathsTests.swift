// The kernel paths this machine kind cannot run natively, checked by scripts that build the C kernels with
// Tests/KernelPaths/kernel_paths_test.c outside SwiftPM (which cannot cross-build or emulate):
// - AArch64 (neon, neon-dotprod): scripts/test-arm.sh cross-compiles and runs under qemu-user on a CPU with the
//   dot-product extension (-cpu max) and one without (-cpu cortex-a53);
// - x86 kernel sets beyond AVX2 (avx2-vnni, avx512, avx512-vnni): scripts/test-x86-emulated.sh builds with SIMDe's
//   portable definitions of the intrinsics standing in for the instructions.
// Each run prints one "kernels-test label=... default=... paths=... checks=N failures=F ... result=PASS|FAIL" line.
import Foundation
import XCTest

final class KernelPathsTests: XCTestCase {
    /// The repository root, from this file's path (Tests/KernelsTests/KernelPathsTests.swift).
    private static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent()

    /// Runs scripts/`name`; returns its exit status, its output and the summary lines' fields by label.
    private func runScript(_ name: String) throws -> (status: Int32, output: String, runs: [String: [String: String]]) {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/bin/bash")
        process.arguments = [Self.root.appendingPathComponent("scripts/\(name)").path]
        var environment = ProcessInfo.processInfo.environment
        environment.removeValue(forKey: "FB_KERNELS")  // the scripts check the CPU's own choice
        process.environment = environment
        let out = Pipe()
        process.standardOutput = out
        process.standardError = out  // one pipe, read to the end while the script runs
        try process.run()
        let output = String(decoding: out.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        process.waitUntilExit()
        print(output, terminator: "")
        var runs: [String: [String: String]] = [:]
        for line in output.split(separator: "\n") where line.hasPrefix("kernels-test ") {
            var fields: [String: String] = [:]
            for field in line.split(separator: " ").dropFirst() {
                let kv = field.split(separator: "=", maxSplits: 1)
                if kv.count == 2 { fields[String(kv[0])] = String(kv[1]) }
            }
            if let label = fields["label"] { runs[label] = fields }
        }
        return (process.terminationStatus, output, runs)
    }

    private func assertAllPassed(_ runs: [String: [String: String]]) {
        for (label, run) in runs {
            XCTAssertEqual(run["result"], "PASS", label)
            XCTAssertEqual(run["failures"], "0", label)
            XCTAssertGreaterThan(Int(run["checks"] ?? "") ?? 0, 10000, "\(label): too few checks ran")
        }
    }

    func testNEONPathsUnderQEMU() throws {
        let (status, output, runs) = try runScript("test-arm.sh")
        if status == 3 {
            XCTFail("""
                The ARM kernel tests need a cross toolchain and qemu-user, which are missing here:
                install them with `sudo apt-get install -y gcc-aarch64-linux-gnu libc6-dev-arm64-cross qemu-user` \
                (scripts/setup.sh does). scripts/test-arm.sh said:
                \(output)
                """)
            return
        }
        XCTAssertEqual(status, 0, "scripts/test-arm.sh failed:\n\(output)")
        guard let max = runs["max"], let a53 = runs["cortex-a53"] else {
            XCTFail("both CPU models must run (-cpu max and -cpu cortex-a53); got:\n\(output)")
            return
        }
        XCTAssertEqual(max["default"], "neon-dotprod", "a CPU with the dot product must choose it")
        XCTAssertEqual(max["paths"], "scalar,neon,neon-dotprod")
        XCTAssertEqual(a53["default"], "neon", "Cortex-A53 has no dot product: plain NEON")
        XCTAssertEqual(a53["paths"], "scalar,neon", "neon-dotprod must not be selectable on Cortex-A53")
        XCTAssertEqual(runs["max-fb-kernels-neon"]?["default"], "neon", "FB_KERNELS=neon must override the CPU's choice")
        assertAllPassed(runs)
    }

    func testX86KernelSetsEmulated() throws {
        #if arch(x86_64)
        let (status, output, runs) = try runScript("test-x86-emulated.sh")
        if status == 3 {
            XCTFail("""
                The emulated x86 kernel tests need SIMDe's headers, which are missing here: install them with \
                `sudo apt-get install -y libsimde-dev` (scripts/setup.sh does). scripts/test-x86-emulated.sh said:
                \(output)
                """)
            return
        }
        XCTAssertEqual(status, 0, "scripts/test-x86-emulated.sh failed:\n\(output)")
        guard let all = runs["emulated"] else {
            XCTFail("the emulated run printed no summary; got:\n\(output)")
            return
        }
        XCTAssertEqual(all["paths"], "scalar,avx2,avx2-vnni,avx512,avx512-vnni", "every x86 kernel set must be checked")
        XCTAssertEqual(all["default"], "avx512-vnni", "with every instruction present, AVX-512 VNNI is preferred")
        XCTAssertEqual(runs["emulated-fb-kernels-avx2-vnni"]?["default"], "avx2-vnni",
                       "FB_KERNELS=avx2-vnni must override the CPU's choice")
        assertAllPassed(runs)
        #else
        throw XCTSkip("the x86 kernel sets are emulated on x86-64 hosts only")
        #endif
    }
}
