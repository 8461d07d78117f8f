/* SPDX-License-Identifier: MIT */
/*
 * A connection's life on its home loop: the handshake (negotiate.c)
 * within handshake-timeout, then the transmission phase (receive.c) until
 * the client is done and every reply is written, then a TLS close_notify.
 */
#include "nbdsrv/bufpool.h"
#include "nbdsrv/chan-tls.h"
#include "nbdsrv/coro-io.h"
#include "nbdsrv/coro.h"
#include "nbdsrv/log.h"
#include "server-int.h"

#include <errno.h>
#include <sys/socket.h>

struct handshake_deadline {
    struct coro_timer timer;
    struct conn *conn;
};

static void handshake_expired(struct coro_timer *timer)
{
    struct handshake_deadline *d =
        container_of(timer, struct handshake_deadline, timer);
    log_info("%s: handshake timed out, disconnecting", d->conn->peer);
    /* Every wait on the socket now ends with an error or end of file. */
    chan_shutdown(d->conn->ch, SHUT_RDWR);
}

bool conn_run(struct server *srv, int fd, const char *peer,
              const struct sockaddr_storage *peer_addr)
{
    bool registered;
    struct conn *conn = conn_new(srv, fd, peer, peer_addr, &registered);
    if (conn == NULL) {
        return registered;
    }
    log_debug("%s: connected", conn->peer);

    struct handshake_deadline deadline = {.conn = conn};
    uint64_t hs_timeout = conn->limits.handshake_timeout_ns;
    if (hs_timeout != 0) {
        coro_timer_start(&deadline.timer, hs_timeout, handshake_expired);
    }
    conn->table = server_get_table(srv);
    conn->hs_failure = STATS_HS_OTHER;
    int r = negotiate(conn);
    export_table_unref(conn->table);
    conn->table = NULL;
    conn->rbuf = bufpool_get(CONN_RBUF_SIZE);
    if (conn->rbuf == NULL) {
        r = -ENOMEM;
    }
    bool expired = hs_timeout != 0 && coro_timer_stop(&deadline.timer);
    if (r == 0 && !expired) {
        log_debug("%s: serving export '%s'%s%s", conn->peer, conn->exp->name,
                  conn->structured ? ", structured replies" : "",
                  conn->extended ? ", extended headers" : "");
        /* exp, tls and tls_identity are final: the control socket may
         * read them from now on (release, paired with server-info.c). */
        atomic_store_explicit(&conn->transmitting, true, memory_order_release);
        receive_requests(conn);
        flow_wait_idle(conn);
    } else {
        /* A client that only asked (LIST, INFO) and left politely did
         * not fail; one that was refused on the way did, even then. */
        unsigned why = expired ? STATS_HS_TIMEOUT : conn->hs_failure;
        if (why != STATS_HS_OTHER || !conn->clean_end) {
            atomic_fetch_add_explicit(&srv->events.handshake_failed[why], 1,
                                      memory_order_relaxed);
        }
    }
    if (conn->tls) {
        /* close_notify, if the socket takes it at once: a client that
         * stopped reading must not keep us here. */
        co_mutex_lock(&conn->send_lock);
        chan_tls_bye(conn->ch, false);
        co_mutex_unlock(&conn->send_lock);
    }
    log_debug("%s: disconnected", conn->peer);
    bufpool_put(conn->rbuf, CONN_RBUF_SIZE);
    conn->rbuf = NULL;
    conn_unref(conn);
    return true;
}
