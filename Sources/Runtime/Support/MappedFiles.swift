import Foundation
import Synchronization

/// Files mapped into memory (a raw .fbm's weights, the converter's safetensors inputs). If such a file shrinks
/// while it is mapped (truncated, or rewritten in place by another program), the next read of a lost page raises
/// SIGBUS, which would kill the process without a word. The handler installed here names the file instead, removes
/// the converter's temporary output (TemporaryFiles) and exits with status 1.
public enum MappedFiles {
    private struct Entry {
        var start: UInt = 0
        var end: UInt = 0
        var message: UnsafeMutablePointer<CChar>? = nil   // the whole line, composed up front: the handler only writes
        var messageLength = 0
    }
    private static let capacity = 64
    private static let lock = NSLock()
    nonisolated(unsafe) private static var table: UnsafeMutablePointer<Entry> = {
        let t = UnsafeMutablePointer<Entry>.allocate(capacity: capacity)
        t.initialize(repeating: Entry(), count: capacity)
        return t
    }()
    nonisolated(unsafe) private static var installed = false

    /// Records that `length` bytes at `base` map `path`; `tool` names the program in the message.
    public static func register(base: UnsafeRawPointer, length: Int, path: String) {
        lock.lock(); defer { lock.unlock() }
        if !installed {
            _ = table
            var action = sigaction()
            action.sa_flags = SA_SIGINFO
            action.__sigaction_handler.sa_sigaction = mappedFileFaultHandler
            sigaction(SIGBUS, &action, nil)
            installed = true
        }
        let tool = URL(fileURLWithPath: CommandLine.arguments.first ?? "firebolt").lastPathComponent
        let line = "\(tool): error: \(path): the file was truncated or changed while in use (its memory-mapped data is gone)\n"
        let message = strdup(line)!
        for i in 0..<capacity where table[i].message == nil {
            table[i] = Entry(start: UInt(bitPattern: base), end: UInt(bitPattern: base) + UInt(length),
                             message: message, messageLength: strlen(message))
            return
        }
        free(message)  // table full: such a fault is reported by the generic line
    }

    public static func unregister(base: UnsafeRawPointer) {
        lock.lock(); defer { lock.unlock() }
        for i in 0..<capacity where table[i].start == UInt(bitPattern: base) && table[i].message != nil {
            let message = table[i].message
            table[i] = Entry()
            free(message)
        }
    }

    fileprivate static func message(for address: UInt) -> (UnsafeMutablePointer<CChar>, Int)? {
        for i in 0..<capacity {
            let e = table[i]
            if let m = e.message, address >= e.start, address < e.end { return (m, e.messageLength) }
        }
        return nil
    }
}

/// Set by the first faulting thread: the others wait for its _exit instead of printing the line again.
private let faultReported = Atomic<Bool>(false)
private let genericBusError = "error: bus error (SIGBUS): a memory-mapped file was truncated or changed while in use\n"

private func mappedFileFaultHandler(_ signal: Int32, _ info: UnsafeMutablePointer<siginfo_t>?, _ context: UnsafeMutableRawPointer?) {
    guard faultReported.compareExchange(expected: false, desired: true, ordering: .acquiringAndReleasing).exchanged else {
        while true { pause() }
    }
    let address = UInt(bitPattern: info?.pointee._sifields._sigfault.si_addr)
    if let (message, length) = MappedFiles.message(for: address) {
        _ = write(STDERR_FILENO, message, length)
    } else {
        genericBusError.withCString { _ = write(STDERR_FILENO, $0, strlen($0)) }
    }
    TemporaryFiles.removeAllFromSignalHandler()
    _exit(1)
}
