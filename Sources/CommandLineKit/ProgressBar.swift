import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// A one-line progress bar on stderr, shared by the tools. On a terminal it is redrawn in place, at most ten times
/// a second; elsewhere (a log, a pipe) it prints a plain line at each tenth when `linesWhenPiped`, else nothing.
public final class ProgressBar {
    private let enabled: Bool
    private let terminal = isatty(STDERR_FILENO) != 0
    private let linesWhenPiped: Bool
    private var lastDraw = Date.distantPast
    private var lastTenth = 0

    public init(enabled: Bool = true, linesWhenPiped: Bool = false) {
        self.enabled = enabled
        self.linesWhenPiped = linesWhenPiped
    }

    /// `fraction` done (0...1) and a short text after the bar.
    public func update(fraction: Double, text: String) {
        guard enabled else { return }
        let fraction = min(1, max(0, fraction)), width = 30
        let filled = Int(fraction * Double(width))
        let line = "[" + String(repeating: "#", count: filled) + String(repeating: ".", count: width - filled) + "] " + text
        if terminal {
            guard Date().timeIntervalSince(lastDraw) > 0.1 || fraction == 1 else { return }
            lastDraw = Date()
            StandardError.write("\r" + line + "\u{1B}[K")
        } else if linesWhenPiped, Int(fraction * 10) > lastTenth {
            lastTenth = Int(fraction * 10)
            StandardError.write(line + "\n")
        }
    }

    /// Erases the bar (on a terminal), so that what follows starts on a clean line.
    public func clear() {
        if enabled && terminal { StandardError.write("\r\u{1B}[K") }
    }

    /// Leaves the finished bar on screen and moves to the next line (on a terminal).
    public func finish() {
        if enabled && terminal { StandardError.write("\n") }
    }
}
