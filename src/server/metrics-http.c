/* SPDX-License-Identifier: MIT */
/*
 * /metrics over HTTP, served by libmicrohttpd on a thread of its own
 * (MHD_USE_INTERNAL_POLLING_THREAD): it never runs on a loop, and it
 * reads the server's counters only through server_metrics_render, which
 * takes no lock the request path takes.  GET (and HEAD) of /metrics
 * answers the text exposition format; any other path is 404, any other
 * method 405.  A few scrapers at a time are enough: the connection limit
 * and the idle timeout keep a client that holds connections open from
 * costing more than that.
 */
#include "nbdsrv/log.h"
#include "nbdsrv/metrics.h"
#include "nbdsrv/server.h"

#include <errno.h>
#include <microhttpd.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define METRICS_HTTP_MAX_CONNECTIONS 16u
#define METRICS_HTTP_TIMEOUT_S 10u
#define METRICS_CONTENT_TYPE "text/plain; version=0.0.4; charset=utf-8"

/* Owned by the caller of metrics_http_start. */
struct metrics_http {
    struct server *srv; /* borrowed; outlives us */
    struct MHD_Daemon *daemon;
};

static enum MHD_Result reply_text(struct MHD_Connection *c, unsigned status,
                                  const char *text)
{
    struct MHD_Response *resp = MHD_create_response_from_buffer(
        strlen(text), (void *)text, MHD_RESPMEM_PERSISTENT);
    if (resp == NULL) {
        return MHD_NO;
    }
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE,
                            "text/plain; charset=utf-8");
    enum MHD_Result r = MHD_queue_response(c, status, resp);
    MHD_destroy_response(resp);
    return r;
}

static enum MHD_Result handle(void *cls, struct MHD_Connection *c,
                              const char *url, const char *method,
                              const char *version, const char *upload_data,
                              size_t *upload_data_size, void **con_cls)
{
    (void)version, (void)upload_data;
    struct metrics_http *mh = cls;
    if (*con_cls == NULL) {
        /* First call: headers only.  Answer on the next one. */
        *con_cls = mh;
        return MHD_YES;
    }
    if (*upload_data_size != 0) {
        *upload_data_size = 0; /* a body we do not want */
        return MHD_YES;
    }
    if (strcmp(method, MHD_HTTP_METHOD_GET) != 0 &&
        strcmp(method, MHD_HTTP_METHOD_HEAD) != 0) {
        return reply_text(c, MHD_HTTP_METHOD_NOT_ALLOWED,
                          "only GET /metrics\n");
    }
    if (strcmp(url, "/metrics") != 0) {
        return reply_text(c, MHD_HTTP_NOT_FOUND, "not found: try /metrics\n");
    }
    struct metrics_text t;
    metrics_text_init(&t);
    server_metrics_render(mh->srv, &t);
    if (t.failed || t.buf == NULL) {
        metrics_text_fini(&t);
        return reply_text(c, MHD_HTTP_INTERNAL_SERVER_ERROR, "out of memory\n");
    }
    struct MHD_Response *resp =
        MHD_create_response_from_buffer(t.len, t.buf, MHD_RESPMEM_MUST_FREE);
    if (resp == NULL) {
        metrics_text_fini(&t);
        return MHD_NO;
    }
    /* The response frees t.buf now. */
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE,
                            METRICS_CONTENT_TYPE);
    enum MHD_Result r = MHD_queue_response(c, MHD_HTTP_OK, resp);
    MHD_destroy_response(resp);
    return r;
}

struct metrics_http *metrics_http_start(struct server *srv, int fd,
                                        struct err *err)
{
    struct metrics_http *mh = calloc(1, sizeof *mh);
    if (mh == NULL) {
        close(fd);
        err_set(err, ENOMEM, "out of memory");
        return NULL;
    }
    mh->srv = srv;
    mh->daemon = MHD_start_daemon(
        MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_AUTO, 0, NULL, NULL, handle,
        mh, MHD_OPTION_LISTEN_SOCKET, fd, MHD_OPTION_CONNECTION_LIMIT,
        (unsigned)METRICS_HTTP_MAX_CONNECTIONS, MHD_OPTION_CONNECTION_TIMEOUT,
        (unsigned)METRICS_HTTP_TIMEOUT_S, MHD_OPTION_END);
    if (mh->daemon == NULL) {
        close(fd);
        free(mh);
        err_set(err, EIO, "metrics-listen: cannot start the HTTP server");
        return NULL;
    }
    return mh;
}

void metrics_http_stop(struct metrics_http *mh)
{
    if (mh == NULL) {
        return;
    }
    /* MHD_stop_daemon closes the listening socket it was given. */
    MHD_stop_daemon(mh->daemon);
    free(mh);
}
