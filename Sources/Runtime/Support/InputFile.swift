import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// Reading a whole input file (configs, tokenizers, images, question files, .npy) with the checks every reader
/// needs: only regular files (a FIFO would block forever, /dev/zero never ends, a directory is a mistake), opened
/// without blocking.
public enum InputFile {
    public enum Problem: Error, CustomStringConvertible, Equatable {
        case notFound
        case notRegular(String)
        case unreadable(String)

        public var description: String {
            switch self {
            case .notFound: return "file not found"
            case let .notRegular(kind): return "not a regular file (\(kind))"
            case let .unreadable(reason): return "cannot read: \(reason)"
            }
        }
    }

    /// Opens `path` for reading if it is a regular file: the descriptor and the file's size. O_NONBLOCK keeps
    /// open() from waiting on a FIFO; it changes nothing for a regular file.
    public static func openRegular(_ path: String) throws -> (fd: Int32, size: Int) {
        let fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC)
        guard fd >= 0 else {
            throw errno == ENOENT || errno == ENOTDIR ? Problem.notFound : Problem.unreadable(String(cString: strerror(errno)))
        }
        var st = stat()
        guard fstat(fd, &st) == 0 else {
            let reason = String(cString: strerror(errno))
            close(fd)
            throw Problem.unreadable(reason)
        }
        if let kind = kindOfNonRegular(st.st_mode) {
            close(fd)
            throw Problem.notRegular(kind)
        }
        return (fd, Int(st.st_size))
    }

    /// "a directory", "a FIFO", ... for what is not a regular file; nil for a regular file.
    public static func kindOfNonRegular(_ mode: mode_t) -> String? {
        switch mode & S_IFMT {
        case S_IFREG: return nil
        case S_IFDIR: return "a directory"
        case S_IFIFO: return "a FIFO"
        case S_IFCHR: return "a character device"
        case S_IFBLK: return "a block device"
        case S_IFSOCK: return "a socket"
        default: return "not a plain file"
        }
    }

    /// The whole file.
    public static func read(_ path: String) throws -> Data {
        let (fd, size) = try openRegular(path)
        defer { close(fd) }
        var data = Data(count: size)
        var done = 0
        while done < size {
            let n = data.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress! + done, size - done) }
            if n < 0 && errno == EINTR { continue }
            guard n > 0 else {
                throw Problem.unreadable(n < 0 ? String(cString: strerror(errno)) : "the file shrank while being read")
            }
            done += n
        }
        return data
    }
}
