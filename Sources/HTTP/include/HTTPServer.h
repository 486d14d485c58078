// A narrow HTTP/1.1 server on libmicrohttpd (Debian's libmicrohttpd-dev): one thread per connection, whole request
// bodies collected up to a limit, then one handler call that answers with a whole body or a stream. fbserve's API
// (Sources/Server) is written in Swift on top of this; nothing here knows about JSON or models.
#ifndef FB_HTTP_SERVER_H
#define FB_HTTP_SERVER_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct fb_http_server fb_http_server;

/// One request, complete. Valid only during the handler call.
typedef struct fb_http_request {
    void *connection;
    const char *method;
    const char *url;
    const char *body;        // NUL-terminated copy of the body (body_length bytes before the NUL)
    size_t body_length;
    int body_too_large;      // the body passed the server's limit: body is empty, the handler should answer 413
} fb_http_request;

/// Called once per request on the connection's own thread; must answer with fb_http_respond or
/// fb_http_respond_stream (a 500 is sent if it does neither). It may block (thread per connection).
typedef void (*fb_http_handler)(void *context, const fb_http_request *request);

/// Fills up to `capacity` bytes of a streamed body; may block until it has some. Returns the count (> 0), 0 at the end
/// of the body, or -1 to abort the connection.
typedef long (*fb_http_stream_reader)(void *stream, char *buffer, size_t capacity);
/// Called exactly once when a streamed response is finished or its client went away.
typedef void (*fb_http_stream_release)(void *stream);

/// Listens on `host` (an IPv4 address) and `port` (0: any free port). Returns NULL with a message in `error` on
/// failure.
fb_http_server *fb_http_start(const char *host, int port, size_t max_body_bytes, unsigned max_connections,
                              fb_http_handler handler, void *context, char *error, size_t error_capacity);
/// The port actually bound.
int fb_http_port(const fb_http_server *server);
/// Stops accepting new connections (running ones continue).
void fb_http_quiesce(fb_http_server *server);
/// Closes everything and frees the server.
void fb_http_stop(fb_http_server *server);

/// A request header's value (case-insensitive name), or NULL.
const char *fb_http_header(const fb_http_request *request, const char *name);
/// Whether the client has closed its side of the connection (checked without blocking).
int fb_http_peer_closed(const fb_http_request *request);
/// Answers with a whole body. `header_name` / `header_value` may add one more header (or be NULL).
int fb_http_respond(const fb_http_request *request, int status, const char *content_type, const char *body,
                    size_t length, const char *header_name, const char *header_value);
/// Answers with a body of unknown length (chunked), produced by `reader`; `release` is called once at the end.
int fb_http_respond_stream(const fb_http_request *request, int status, const char *content_type,
                           fb_http_stream_reader reader, fb_http_stream_release release, void *stream);

#ifdef __cplusplus
}
#endif
#endif
