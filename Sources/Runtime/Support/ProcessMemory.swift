import Foundation

/// This process's memory, from /proc/self/status.
public enum ProcessMemory {
    /// Peak resident set size of this process (VmHWM), in bytes.
    public static var peakResidentBytes: UInt64 { field("VmHWM:") }
    /// Current resident set size (VmRSS), in bytes.
    public static var residentBytes: UInt64 { field("VmRSS:") }

    private static func field(_ name: String) -> UInt64 {
        guard let text = try? String(contentsOfFile: "/proc/self/status", encoding: .utf8) else { return 0 }
        for line in text.split(separator: "\n") where line.hasPrefix(name) {
            let digits = line.dropFirst(name.count).trimmingCharacters(in: .whitespaces).split(separator: " ").first ?? ""
            return (UInt64(digits) ?? 0) * 1024
        }
        return 0
    }
}
