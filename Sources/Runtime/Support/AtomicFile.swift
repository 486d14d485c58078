import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// Writes a file so that readers only ever see nothing or the complete file: the bytes go to a temporary
/// file in the destination folder, are fsync'd, then renamed over the destination. A failed or interrupted
/// write (an error, SIGINT, SIGTERM) removes the temporary file; one left by a killed process (SIGKILL, power
/// loss) is removed by the next writer to the same destination.
///
/// The destination is checked before any work: only a regular file is ever replaced (never a device, a FIFO or
/// a folder), never one of the `protecting` inputs, and a symlink is written through (the link stays, its target
/// gets the new content). A replaced file keeps its permission bits; a new one gets 0644 less the umask.
public final class AtomicFileWriter {
    public let destination: String
    public let temporaryPath: String
    private var fd: Int32
    private var finished = false
    public private(set) var bytesWritten: UInt64 = 0

    public init(destination requested: String, protecting inputs: [String] = []) throws {
        let target = try Self.checkDestination(requested, protecting: inputs)
        destination = target.path
        let url = URL(fileURLWithPath: target.path)
        let folder = url.deletingLastPathComponent().path
        Self.removeStaleTemporaries(folder: folder, name: url.lastPathComponent)
        temporaryPath = folder + "/." + url.lastPathComponent + ".tmp-\(getpid())"
        fd = open(temporaryPath, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
        guard fd >= 0 else {
            throw FireboltError("cannot create output file: \(String(cString: strerror(errno)))", file: requested)
        }
        if let mode = target.existingMode { fchmod(fd, mode) }
        TemporaryFiles.register(temporaryPath)
    }

    /// Where `requested` really writes (a symlink's target) and the mode of the file it replaces, or an error
    /// naming the problem. The writer runs it when created, which callers do before their long work.
    public static func checkDestination(_ requested: String, protecting inputs: [String] = []) throws
        -> (path: String, existingMode: mode_t?) {
        if requested.hasSuffix("/") { throw FireboltError("names a folder: give the output file's name", file: requested) }
        let path = URL(fileURLWithPath: requested).resolvingSymlinksInPath().path
        let folder = URL(fileURLWithPath: path).deletingLastPathComponent().path
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: folder, isDirectory: &isDirectory), isDirectory.boolValue else {
            throw FireboltError("output folder does not exist", file: folder)
        }
        var st = stat()
        guard stat(path, &st) == 0 else { return (path, nil) }
        if let kind = InputFile.kindOfNonRegular(st.st_mode) {
            throw FireboltError("exists and is not a regular file (\(kind)): refusing to replace it", file: requested)
        }
        for input in inputs {
            var other = stat()
            if stat(input, &other) == 0 && other.st_dev == st.st_dev && other.st_ino == st.st_ino {
                throw FireboltError("is an input of this conversion: refusing to overwrite it", file: requested)
            }
        }
        return (path, st.st_mode & 0o7777)
    }

    /// Removes `.NAME.tmp-PID` files whose process no longer runs.
    private static func removeStaleTemporaries(folder: String, name: String) {
        let prefix = "." + name + ".tmp-"
        for entry in (try? FileManager.default.contentsOfDirectory(atPath: folder)) ?? [] where entry.hasPrefix(prefix) {
            guard let pid = Int32(entry.dropFirst(prefix.count)), pid > 0, pid != getpid() else { continue }
            if kill(pid, 0) != 0 && errno == ESRCH { unlink(folder + "/" + entry) }
        }
    }

    deinit { abort() }

    /// Appends after everything written so far with `write`.
    public func write(_ bytes: UnsafeRawBufferPointer) throws {
        try write(bytes, at: bytesWritten)
        bytesWritten += UInt64(bytes.count)
    }

    public func write(_ data: Data) throws {
        try data.withUnsafeBytes { try write($0) }
    }

    /// Writes at an absolute position (used to fill in a header after the data is known).
    public func write(_ bytes: UnsafeRawBufferPointer, at position: UInt64) throws {
        var offset = 0
        while offset < bytes.count {
            let n = pwrite(fd, bytes.baseAddress! + offset, bytes.count - offset, off_t(position) + off_t(offset))
            if n < 0 {
                if errno == EINTR { continue }
                let reason = String(cString: strerror(errno))
                abort()
                throw FireboltError("write failed: \(reason)", file: destination)
            }
            offset += n
        }
    }

    /// Extends (with zeros) or cuts the file to `length` bytes.
    public func setLength(_ length: UInt64) throws {
        if ftruncate(fd, off_t(length)) != 0 {
            let reason = String(cString: strerror(errno))
            abort()
            throw FireboltError("cannot set the file length: \(reason)", file: destination)
        }
    }

    /// Zero bytes up to the next multiple of `alignment`.
    public func pad(to alignment: UInt64) throws {
        let padding = Int((alignment - bytesWritten % alignment) % alignment)
        if padding > 0 { try write(Data(count: padding)) }
    }

    /// fsync, close, rename into place.
    public func finish() throws {
        guard !finished else { return }
        if fsync(fd) != 0 {
            let reason = String(cString: strerror(errno))
            abort()
            throw FireboltError("fsync failed: \(reason)", file: destination)
        }
        close(fd)
        fd = -1
        if rename(temporaryPath, destination) != 0 {
            let reason = String(cString: strerror(errno))
            unlink(temporaryPath)
            TemporaryFiles.unregister(temporaryPath)
            finished = true
            throw FireboltError("cannot move the finished file into place: \(reason)", file: destination)
        }
        TemporaryFiles.unregister(temporaryPath)
        finished = true
    }

    /// Drop the partial file. Safe to call more than once.
    public func abort() {
        guard !finished else { return }
        finished = true
        if fd >= 0 { close(fd); fd = -1 }
        unlink(temporaryPath)
        TemporaryFiles.unregister(temporaryPath)
    }
}

public enum AtomicFile {
    public static func write(_ data: Data, to path: String) throws {
        let writer = try AtomicFileWriter(destination: path)
        try writer.write(data)
        try writer.finish()
    }
}

/// Temporary files to delete if the process is interrupted. The signal handler only calls unlink and _exit.
enum TemporaryFiles {
    private static let lock = NSLock()
    nonisolated(unsafe) private static var paths: [String: UnsafeMutablePointer<CChar>] = [:]
    // A fixed table the signal handler can walk without allocating.
    nonisolated(unsafe) fileprivate static var table = UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>.allocate(capacity: 64)
    nonisolated(unsafe) private static var installed = false

    static func register(_ path: String) {
        lock.lock(); defer { lock.unlock() }
        if !installed {
            table.initialize(repeating: nil, count: 64)
            signal(SIGINT, temporaryFilesSignalHandler)
            signal(SIGTERM, temporaryFilesSignalHandler)
            signal(SIGHUP, temporaryFilesSignalHandler)
            installed = true
        }
        let copy = strdup(path)!
        paths[path] = copy
        for i in 0..<64 where table[i] == nil { table[i] = copy; break }
    }

    static func unregister(_ path: String) {
        lock.lock(); defer { lock.unlock() }
        guard let copy = paths.removeValue(forKey: path) else { return }
        for i in 0..<64 where table[i] == copy { table[i] = nil }
        free(copy)
    }
}

extension TemporaryFiles {
    /// Only unlink(2): safe inside a signal handler.
    static func removeAllFromSignalHandler() {
        guard installed else { return }   // the table is initialised with the first registration
        for i in 0..<64 {
            if let path = table[i] { unlink(path) }
        }
    }
}

private func temporaryFilesSignalHandler(_ signalNumber: Int32) {
    TemporaryFiles.removeAllFromSignalHandler()
    _exit(128 + signalNumber)
}
