// The AArch64 kernel paths (neon, neon-dotprod), checked without ARM hardware: scripts/test-arm.sh
// cross-compiles the C kernels with Tests/arm/kernels_arm_test.c and runs them under qemu-user on a
// CPU with the dot-product extension (-cpu max) and one without (-cpu cortex-a53).
import Foundation
import XCTest

final class ARMKernelsTests: XCTestCase {
    /// The repository root, from this file's path (Tests/KernelsTests/ARMKernelsTests.swift).
    private static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent()

    func testNEONPathsUnderQEMU() throws {
        let script = Self.root.appendingPathComponent("scripts/test-arm.sh")
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/bin/bash")
        process.arguments = [script.path]
        var environment = ProcessInfo.processInfo.environment
        environment.removeValue(forKey: "FB_KERNELS")  // the script checks the CPU's own choice
        process.environment = environment
        let out = Pipe()
        process.standardOutput = out
        process.standardError = out  // one pipe, read to the end while the script runs
        try process.run()
        let output = String(decoding: out.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        process.waitUntilExit()
        print(output, terminator: "")

        if process.terminationStatus == 3 {
            XCTFail("""
                The ARM kernel tests need a cross toolchain and qemu-user, which are missing here:
                install them with `sudo apt-get install -y gcc-aarch64-linux-gnu libc6-dev-arm64-cross qemu-user` \
                (scripts/setup.sh does). scripts/test-arm.sh said:
                \(output)
                """)
            return
        }
        XCTAssertEqual(process.terminationStatus, 0, "scripts/test-arm.sh failed:\n\(output)")

        // One summary line per run: "kernels-test label=max default=neon-dotprod paths=... result=PASS".
        var runs: [String: [String: String]] = [:]
        for line in output.split(separator: "\n") where line.hasPrefix("kernels-test ") {
            var fields: [String: String] = [:]
            for field in line.split(separator: " ").dropFirst() {
                let kv = field.split(separator: "=", maxSplits: 1)
                if kv.count == 2 { fields[String(kv[0])] = String(kv[1]) }
            }
            if let label = fields["label"] { runs[label] = fields }
        }
        guard let max = runs["max"], let a53 = runs["cortex-a53"] else {
            XCTFail("both CPU models must run (-cpu max and -cpu cortex-a53); got:\n\(output)")
            return
        }
        XCTAssertEqual(max["result"], "PASS")
        XCTAssertEqual(max["default"], "neon-dotprod", "a CPU with the dot product must choose it")
        XCTAssertEqual(max["paths"], "scalar,neon,neon-dotprod")
        XCTAssertEqual(a53["result"], "PASS")
        XCTAssertEqual(a53["default"], "neon", "Cortex-A53 has no dot product: plain NEON")
        XCTAssertEqual(a53["paths"], "scalar,neon", "neon-dotprod must not be selectable on Cortex-A53")
        XCTAssertEqual(runs["max-fb-kernels-neon"]?["default"], "neon", "FB_KERNELS=neon must override the CPU's choice")
        for (label, run) in runs {
            XCTAssertEqual(run["failures"], "0", label)
            XCTAssertGreaterThan(Int(run["checks"] ?? "") ?? 0, 10000, "\(label): too few checks ran")
        }
    }
}
