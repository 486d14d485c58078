#define _GNU_SOURCE  // POLLRDHUP
// libmicrohttpd glue: collects each request's body (bounded), hands the complete request to one handler call, and
// turns the handler's answer into an MHD response. See include/HTTPServer.h.
#include "HTTPServer.h"

#include <arpa/inet.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

struct fb_http_server {
    struct MHD_Daemon *daemon;
    fb_http_handler handler;
    void *context;
    size_t max_body;
};

// Per-request state between MHD's calls of the access handler; `request` first, so the handler's pointer leads back.
typedef struct {
    fb_http_request request;
    char *body;
    size_t length, capacity;
    int too_large;
    int answered;   // 1 once a response was queued, -1 if queueing it failed
} request_state;

typedef struct {
    fb_http_stream_reader reader;
    fb_http_stream_release release;
    void *stream;
} stream_state;

static ssize_t stream_read(void *cls, uint64_t pos, char *buf, size_t max) {
    (void)pos;
    stream_state *s = cls;
    long n = s->reader(s->stream, buf, max);
    if (n > 0) return (ssize_t)n;
    return n == 0 ? MHD_CONTENT_READER_END_OF_STREAM : MHD_CONTENT_READER_END_WITH_ERROR;
}

static void stream_free(void *cls) {
    stream_state *s = cls;
    s->release(s->stream);
    free(s);
}

static int queue(const fb_http_request *request, int status, struct MHD_Response *response) {
    request_state *state = (request_state *)request;
    enum MHD_Result r = MHD_queue_response(request->connection, (unsigned)status, response);
    MHD_destroy_response(response);  // MHD holds its own reference until the response is sent
    state->answered = r == MHD_YES ? 1 : -1;
    return r == MHD_YES;
}

int fb_http_respond(const fb_http_request *request, int status, const char *content_type, const char *body,
                    size_t length, const char *header_name, const char *header_value) {
    struct MHD_Response *response =
        MHD_create_response_from_buffer(length, (void *)(body ? body : ""), MHD_RESPMEM_MUST_COPY);
    if (!response) return 0;
    if (content_type) MHD_add_response_header(response, MHD_HTTP_HEADER_CONTENT_TYPE, content_type);
    if (header_name && header_value) MHD_add_response_header(response, header_name, header_value);
    return queue(request, status, response);
}

int fb_http_respond_stream(const fb_http_request *request, int status, const char *content_type,
                           fb_http_stream_reader reader, fb_http_stream_release release, void *stream) {
    stream_state *s = malloc(sizeof *s);
    if (!s) { release(stream); return 0; }
    s->reader = reader;
    s->release = release;
    s->stream = stream;
    struct MHD_Response *response = MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 4096, stream_read, s, stream_free);
    if (!response) { stream_free(s); return 0; }
    if (content_type) MHD_add_response_header(response, MHD_HTTP_HEADER_CONTENT_TYPE, content_type);
    MHD_add_response_header(response, MHD_HTTP_HEADER_CACHE_CONTROL, "no-cache");
    return queue(request, status, response);
}

const char *fb_http_header(const fb_http_request *request, const char *name) {
    return MHD_lookup_connection_value(request->connection, MHD_HEADER_KIND, name);
}

int fb_http_peer_closed(const fb_http_request *request) {
    const union MHD_ConnectionInfo *info =
        MHD_get_connection_info(request->connection, MHD_CONNECTION_INFO_CONNECTION_FD);
    if (!info) return 1;
    struct pollfd p = {.fd = info->connect_fd, .events = POLLRDHUP};
    if (poll(&p, 1, 0) < 0) return 0;
    return (p.revents & (POLLRDHUP | POLLHUP | POLLERR)) != 0;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *connection, const char *url, const char *method,
                                  const char *version, const char *upload_data, size_t *upload_data_size,
                                  void **con_cls) {
    (void)version;
    fb_http_server *server = cls;
    request_state *state = *con_cls;
    if (!state) {  // headers arrived: the body (if any) follows in later calls
        state = calloc(1, sizeof *state);
        if (!state) return MHD_NO;
        *con_cls = state;
        return MHD_YES;
    }
    if (*upload_data_size > 0) {
        size_t n = *upload_data_size;
        *upload_data_size = 0;
        if (state->too_large) return MHD_YES;  // drain the rest without keeping it
        if (state->length + n > server->max_body) {
            state->too_large = 1;
            free(state->body);
            state->body = NULL;
            state->length = state->capacity = 0;
            return MHD_YES;
        }
        if (state->length + n + 1 > state->capacity) {
            size_t capacity = state->capacity ? state->capacity : 4096;
            while (capacity < state->length + n + 1) capacity *= 2;
            char *grown = realloc(state->body, capacity);
            if (!grown) return MHD_NO;
            state->body = grown;
            state->capacity = capacity;
        }
        memcpy(state->body + state->length, upload_data, n);
        state->length += n;
        return MHD_YES;
    }
    if (state->answered) return state->answered > 0 ? MHD_YES : MHD_NO;
    // The whole request is here.
    state->request.connection = connection;
    state->request.method = method;
    state->request.url = url;
    if (state->body) state->body[state->length] = 0;
    state->request.body = state->body ? state->body : "";
    state->request.body_length = state->length;
    state->request.body_too_large = state->too_large;
    server->handler(server->context, &state->request);
    if (!state->answered) {
        static const char message[] = "{\"error\":{\"message\":\"the server did not answer\",\"type\":\"server_error\"}}";
        fb_http_respond(&state->request, 500, "application/json", message, sizeof message - 1, NULL, NULL);
    }
    return state->answered > 0 ? MHD_YES : MHD_NO;
}

static void on_completed(void *cls, struct MHD_Connection *connection, void **con_cls,
                         enum MHD_RequestTerminationCode code) {
    (void)cls; (void)connection; (void)code;
    request_state *state = *con_cls;
    if (!state) return;
    free(state->body);
    free(state);
    *con_cls = NULL;
}

fb_http_server *fb_http_start(const char *host, int port, size_t max_body_bytes, unsigned max_connections,
                              fb_http_handler handler, void *context, char *error, size_t error_capacity) {
    struct sockaddr_in address;
    memset(&address, 0, sizeof address);
    address.sin_family = AF_INET;
    address.sin_port = htons((uint16_t)port);
    if (port < 0 || port > 65535) {
        snprintf(error, error_capacity, "port %d is out of range (0-65535)", port);
        return NULL;
    }
    if (inet_pton(AF_INET, host, &address.sin_addr) != 1) {
        snprintf(error, error_capacity, "host '%s' is not an IPv4 address (e.g. 127.0.0.1 or 0.0.0.0)", host);
        return NULL;
    }
    fb_http_server *server = calloc(1, sizeof *server);
    if (!server) { snprintf(error, error_capacity, "out of memory"); return NULL; }
    server->handler = handler;
    server->context = context;
    server->max_body = max_body_bytes;
    server->daemon = MHD_start_daemon(
        MHD_USE_THREAD_PER_CONNECTION | MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_ITC, 0, NULL, NULL,
        on_request, server,
        MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&address,
        MHD_OPTION_CONNECTION_LIMIT, max_connections,
        MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)600,
        MHD_OPTION_NOTIFY_COMPLETED, on_completed, NULL,
        MHD_OPTION_END);
    if (!server->daemon) {
        snprintf(error, error_capacity, "cannot listen on %s:%d (in use, or not allowed)", host, port);
        free(server);
        return NULL;
    }
    return server;
}

int fb_http_port(const fb_http_server *server) {
    const union MHD_DaemonInfo *info = MHD_get_daemon_info(server->daemon, MHD_DAEMON_INFO_BIND_PORT);
    return info ? info->port : -1;
}

void fb_http_quiesce(fb_http_server *server) {
    MHD_socket listening = MHD_quiesce_daemon(server->daemon);  // the listening socket is ours to close now
    if (listening != MHD_INVALID_SOCKET) close(listening);
}

void fb_http_stop(fb_http_server *server) {
    MHD_stop_daemon(server->daemon);
    free(server);
}
