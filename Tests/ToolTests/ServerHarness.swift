import Foundation
import TestSupport
import XCTest
#if canImport(Glibc)
import Glibc
#endif

/// fbserve started by a test on a free port, stopped (SIGTERM) by it.
final class ServerProcess {
    let process = Process()
    private(set) var port = 0
    private let errors = Pipe()

    init(model: String, _ arguments: [String] = []) throws {
        process.executableURL = URL(fileURLWithPath: Tools.path("fbserve"))
        process.arguments = ["--model", model, "--port", "0", "--threads", "2"] + arguments
        let out = Pipe()
        process.standardOutput = out
        process.standardError = errors
        process.standardInput = FileHandle.nullDevice
        try process.run()
        // The first line says where it listens: "fbserve: listening on http://127.0.0.1:PORT (…)".
        var line = Data()
        while !line.contains(UInt8(ascii: "\n")) {
            let more = out.fileHandleForReading.availableData
            if more.isEmpty { break }
            line += more
        }
        let text = String(decoding: line, as: UTF8.self)
        guard let range = text.range(of: #"127\.0\.0\.1:(\d+)"#, options: .regularExpression),
              let port = Int(text[range].split(separator: ":").last!) else {
            process.waitUntilExit()
            let stderr = String(decoding: errors.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
            throw ServerStartFailed(message: "fbserve did not start: \(text) \(stderr)")
        }
        self.port = port
    }

    /// SIGTERM, then the exit status and what it printed to stderr. A server still running 30 s later is killed and
    /// reported as status -1 (a hang fails the test instead of stalling the suite).
    @discardableResult
    func stop() -> (status: Int32, stderr: String) {
        if process.isRunning { kill(process.processIdentifier, SIGTERM) }
        let deadline = Date(timeIntervalSinceNow: 30)
        while process.isRunning && Date() < deadline { usleep(20_000) }
        if process.isRunning {
            kill(process.processIdentifier, SIGKILL)
            process.waitUntilExit()
            return (-1, "fbserve did not stop within 30 s of SIGTERM")
        }
        process.waitUntilExit()
        return (process.terminationStatus, String(decoding: errors.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self))
    }

    deinit { if process.isRunning { kill(process.processIdentifier, SIGKILL) } }

    func request(_ method: String, _ path: String, json: Any? = nil, body: Data? = nil,
                 headers: [String: String] = [:]) throws -> HTTPReply {
        let data = try json.map { try JSONSerialization.data(withJSONObject: $0) } ?? body
        return try HTTPClient.request(port: port, method: method, path: path, body: data, headers: headers)
    }

    /// A JSON body's value at a path of keys and indices ("choices", 0, "message", "content").
    func post(_ path: String, _ json: [String: Any], headers: [String: String] = [:]) throws -> HTTPReply {
        try request("POST", path, json: json, headers: headers)
    }

    /// The metric's value in /metrics (the first sample whose line starts with `name`).
    func metric(_ name: String) throws -> Double {
        let text = try request("GET", "/metrics").text
        for line in text.split(separator: "\n") where line.hasPrefix(name + " ") || line.hasPrefix(name + "{") {
            if let value = Double(line.split(separator: " ").last!) { return value }
        }
        return 0
    }
}

struct ServerStartFailed: Error, CustomStringConvertible { let message: String; var description: String { message } }

struct HTTPReply {
    let status: Int
    let headers: [String: String]
    let body: Data
    var text: String { String(decoding: body, as: UTF8.self) }
    var json: [String: Any] { (try? JSONSerialization.jsonObject(with: body)) as? [String: Any] ?? [:] }

    /// The server-sent events' data payloads, in order.
    var events: [String] {
        text.components(separatedBy: "\n").filter { $0.hasPrefix("data: ") }.map { String($0.dropFirst(6)) }
    }

    /// `error.param` and `error.message` of an OpenAI-shaped error.
    var errorParam: String? { (json["error"] as? [String: Any])?["param"] as? String }
    var errorMessage: String? { (json["error"] as? [String: Any])?["message"] as? String }
}

/// A small HTTP/1.1 client on a socket (one request per connection), so tests can also hang up mid-answer.
enum HTTPClient {
    static func connect(port: Int) throws -> Int32 {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw ServerStartFailed(message: "socket: \(errno)") }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = in_port_t(UInt16(port).bigEndian)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        var timeout = timeval(tv_sec: 120, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        let result = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard result == 0 else { close(fd); throw ServerStartFailed(message: "connect to port \(port): errno \(errno)") }
        return fd
    }

    static func send(_ fd: Int32, method: String, path: String, body: Data?, headers: [String: String]) throws {
        var head = "\(method) \(path) HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
        if let body { head += "Content-Type: application/json\r\nContent-Length: \(body.count)\r\n" }
        for (k, v) in headers { head += "\(k): \(v)\r\n" }
        let bytes = Data((head + "\r\n").utf8) + (body ?? Data())
        var sent = 0
        while sent < bytes.count {
            let n = bytes.withUnsafeBytes { Glibc.send(fd, $0.baseAddress! + sent, bytes.count - sent, Int32(MSG_NOSIGNAL)) }
            if n <= 0 { break }  // the server may answer (413) and close before reading everything
            sent += n
        }
    }

    /// Reads until the server closes the connection, then parses status, headers and the (de-chunked) body.
    static func request(port: Int, method: String, path: String, body: Data?, headers: [String: String]) throws -> HTTPReply {
        let fd = try connect(port: port)
        defer { close(fd) }
        try send(fd, method: method, path: path, body: body, headers: headers)
        var raw = Data()
        var buffer = [UInt8](repeating: 0, count: 65536)
        while true {
            let n = recv(fd, &buffer, buffer.count, 0)
            if n <= 0 { break }
            raw.append(contentsOf: buffer[0..<n])
        }
        return try parse(raw)
    }

    static func parse(_ raw: Data) throws -> HTTPReply {
        guard let split = raw.range(of: Data("\r\n\r\n".utf8)) else {
            throw ServerStartFailed(message: "no HTTP response (\(raw.count) bytes)")
        }
        let head = String(decoding: raw[..<split.lowerBound], as: UTF8.self).components(separatedBy: "\r\n")
        let status = Int(head[0].split(separator: " ")[1]) ?? 0
        var headers: [String: String] = [:]
        for line in head.dropFirst() {
            if let colon = line.firstIndex(of: ":") {
                headers[line[..<colon].lowercased()] = line[line.index(after: colon)...].trimmingCharacters(in: .whitespaces)
            }
        }
        var body = Data(raw[split.upperBound...])
        if headers["transfer-encoding"]?.lowercased() == "chunked" {
            var out = Data(), rest = body[...]
            while let lineEnd = rest.range(of: Data("\r\n".utf8)) {
                let size = Int(String(decoding: rest[..<lineEnd.lowerBound], as: UTF8.self)
                    .split(separator: ";")[0].trimmingCharacters(in: .whitespaces), radix: 16) ?? 0
                if size == 0 { break }
                let start = lineEnd.upperBound
                guard rest.distance(from: start, to: rest.endIndex) >= size else { break }
                out += rest[start..<rest.index(start, offsetBy: size)]
                rest = rest[(rest.index(start, offsetBy: size + 2, limitedBy: rest.endIndex) ?? rest.endIndex)...]
            }
            body = out
        }
        return HTTPReply(status: status, headers: headers, body: body)
    }
}

extension Dictionary where Key == String, Value == Any {
    /// The assistant's text of a chat completion (or a completion's text).
    var answerText: String? {
        guard let choice = (self["choices"] as? [[String: Any]])?.first else { return nil }
        return (choice["message"] as? [String: Any])?["content"] as? String ?? choice["text"] as? String
    }
    var finishReason: String? { ((self["choices"] as? [[String: Any]])?.first)?["finish_reason"] as? String }
    var usage: [String: Any] { self["usage"] as? [String: Any] ?? [:] }
}
