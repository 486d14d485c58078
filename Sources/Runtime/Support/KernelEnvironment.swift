import Foundation
import Kernels

/// The environment variables that steer the kernels (FB_KERNELS, FB_BATCHED), checked before any work: an unknown
/// value, or a kernel set this CPU lacks, would otherwise fall back silently (FB_KERNELS to the scalar path, many
/// times slower). Returns what is wrong, or nil.
public enum KernelEnvironment {
    /// The kernel sets this CPU runs, in order of preference ("scalar, avx2", ...).
    public static var runnableKernelSets: String { kernelSets(runnableOnly: true) }

    private static func kernelSets(runnableOnly: Bool) -> String {
        String(cString: fb_kernels_list(runnableOnly ? 1 : 0)).replacingOccurrences(of: ",", with: ", ")
    }

    public static func problem(_ environment: [String: String] = ProcessInfo.processInfo.environment) -> String? {
        if let name = environment["FB_KERNELS"], !name.isEmpty {
            switch fb_kernels_check(name) {
            case 1: break
            case 0:
                return "FB_KERNELS=\(name): this CPU cannot run that kernel set (it runs: \(runnableKernelSets))"
            default:
                return "FB_KERNELS=\(name): no such kernel set (this build has: \(kernelSets(runnableOnly: false)))"
            }
        }
        if let route = environment["FB_BATCHED"], !route.isEmpty, fb_batched_check(route) != 0 {
            return "FB_BATCHED=\(route): must be one of auto, gemm, int8, off"
        }
        return nil
    }
}
