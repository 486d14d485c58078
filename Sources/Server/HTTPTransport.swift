import Foundation
import HTTP

/// One HTTP request as the C layer hands it over; valid only inside the handler call, which must answer it once.
struct HTTPRequest {
    fileprivate let raw: UnsafePointer<fb_http_request>

    var method: String { String(cString: raw.pointee.method) }
    /// The path without the query string.
    var path: String {
        let url = String(cString: raw.pointee.url)
        return url.split(separator: "?", maxSplits: 1, omittingEmptySubsequences: false).first.map(String.init) ?? url
    }
    var body: Data { Data(bytes: raw.pointee.body, count: raw.pointee.body_length) }
    var bodyTooLarge: Bool { raw.pointee.body_too_large != 0 }

    func header(_ name: String) -> String? { fb_http_header(raw, name).map { String(cString: $0) } }
    /// Whether the client hung up (polled while a whole-body answer is being generated).
    var clientClosed: Bool { fb_http_peer_closed(raw) != 0 }

    func respond(status: Int, contentType: String, body: Data, header: (String, String)? = nil) {
        body.withUnsafeBytes { bytes in
            _ = fb_http_respond(raw, Int32(status), contentType, bytes.baseAddress?.assumingMemoryBound(to: CChar.self),
                                bytes.count, header?.0, header?.1)
        }
    }

    /// A body of unknown length, produced by `source` on this connection's thread until it reports the end.
    func respondStream(status: Int, contentType: String, source: StreamSource) {
        let context = Unmanaged.passRetained(source).toOpaque()
        _ = fb_http_respond_stream(raw, Int32(status), contentType, { context, buffer, capacity in
            let source = Unmanaged<StreamSource>.fromOpaque(context!).takeUnretainedValue()
            return source.read(into: buffer!, capacity: capacity)
        }, { context in
            let source = Unmanaged<StreamSource>.fromOpaque(context!).takeRetainedValue()
            source.released()
        }, context)
    }
}

/// Produces a streamed body. `next()` blocks until it has bytes, and returns nil at the end.
class StreamSource {
    private var pending = [UInt8]()
    private var offset = 0
    private var finished = false

    /// The next piece of the body (non-empty), or nil when the body is complete.
    func next() -> [UInt8]? { nil }
    /// The response is over: sent whole, or the client went away.
    func released() {}

    fileprivate func read(into buffer: UnsafeMutablePointer<CChar>, capacity: Int) -> Int {
        while offset == pending.count {
            if finished { return 0 }
            guard let piece = next() else { finished = true; return 0 }
            pending = piece
            offset = 0
        }
        let n = min(capacity, pending.count - offset)
        pending.withUnsafeBytes { _ = memcpy(buffer, $0.baseAddress! + offset, n) }
        offset += n
        return n
    }
}

/// The listening socket and its threads (libmicrohttpd, one thread per connection).
final class HTTPListener {
    typealias Handler = (HTTPRequest) -> Void
    private var server: OpaquePointer?
    private let handlerBox: HandlerBox
    let port: Int

    private final class HandlerBox { let handle: Handler; init(_ h: @escaping Handler) { handle = h } }

    init(host: String, port: Int, maxBodyBytes: Int, maxConnections: Int, handler: @escaping Handler) throws {
        handlerBox = HandlerBox(handler)
        var error = [CChar](repeating: 0, count: 256)
        let context = Unmanaged.passUnretained(handlerBox).toOpaque()
        server = fb_http_start(host, Int32(port), maxBodyBytes, UInt32(maxConnections), { context, request in
            Unmanaged<HandlerBox>.fromOpaque(context!).takeUnretainedValue().handle(HTTPRequest(raw: request!))
        }, context, &error, error.count)
        guard let server else { throw ServerError(String(cString: error)) }
        self.port = Int(fb_http_port(server))
    }

    /// Stop accepting connections; those open keep being served.
    func stopAccepting() { if let server { fb_http_quiesce(server) } }

    func close() {
        if let server { fb_http_stop(server) }
        server = nil
    }

    deinit { close() }
}

/// A start-up problem of the server (bad option, port in use), shown as one line.
struct ServerError: Error, CustomStringConvertible {
    let description: String
    init(_ message: String) { description = message }
}
