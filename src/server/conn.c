/* SPDX-License-Identifier: MIT */
/*
 * The connection object: creation (registered in the server's list, with
 * the limits and TLS policy of the moment), the channel swap after
 * STARTTLS, the shutdown window, and the last reference, which unlinks
 * it, releases its admission and closes the socket.  Its life (handshake,
 * then transmission) is session.c's.
 */
#include "nbdsrv/bufpool.h"
#include "nbdsrv/chan-sock.h"
#include "nbdsrv/coro-io.h"
#include "nbdsrv/coro.h"
#include "nbdsrv/log.h"
#include "server-int.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static void conn_free(struct conn *conn)
{
    struct server *srv = conn->srv;
    bool clean = conn->clean_end;
    /*
     * Unlink first: server_stop walks the list under srv->lock and wakes
     * each connection's channel, so the channel must outlive the link.
     * nr_conns drops only after the channel (and with it the socket) is
     * gone, so server_stop returns with every socket closed.
     */
    mutex_lock(&srv->lock);
    struct conn_links *l = conn_links(srv, conn);
    if (l->prev != NULL) {
        conn_links(srv, l->prev)->next = l->next;
    } else {
        server_locked(srv)->conns = l->next;
    }
    if (l->next != NULL) {
        conn_links(srv, l->next)->prev = l->prev;
    }
    mutex_unlock(&srv->lock);
    /* Before the socket closes: a client that sees it close may connect
     * again at once and must find its place free. */
    server_admit_release(srv, &conn->peer_addr);

    for (unsigned i = 0; i < srv->loops->count; i++) {
        bufpool_put(conn->push[i].batch, sizeof(struct reply_batch));
    }
    free(conn->push);
    flow_fini(conn);
    co_mutex_fini(&conn->send_lock);
    chan_unref(conn->ch);
    export_unref(conn->exp);
    export_table_unref(conn->table);
    tls_creds_unref(conn->tls_creds);
    free(conn->meta_export);
    dirty_list_unref(conn->meta_dirty);
    free(conn);
    /* Before nr_conns drops: once it is 0, server_stop may go on to free
     * the server. */
    server_conn_closed(srv);

    mutex_lock(&srv->lock);
    server_locked(srv)->nr_conns--;
    if (srv->done_fd >= 0 && server_locked(srv)->nr_conns == 0) {
        server_single_over(srv, clean);
    }
    pthread_cond_broadcast(&srv->changed);
    mutex_unlock(&srv->lock);
}

void conn_unref(struct conn *conn)
{
    if (refcount_put(&conn->refs)) {
        conn_free(conn);
    }
}

void conn_set_chan_take(struct conn *conn, struct chan *tls)
{
    struct server *srv = conn->srv;
    mutex_lock(&srv->lock);
    struct chan *old = conn->ch;
    conn->ch = tls;
    mutex_unlock(&srv->lock);
    chan_unref(old);
    /* server_stop may have woken the old channel after we stopped
     * waiting on it: pass the wake on (`stopping` is set before the walk
     * that takes srv->lock, so one of us sees the other). */
    if (atomic_load(&srv->stopping)) {
        chan_wake(tls, CHAN_IN);
    }
}

/*
 * Adds the connection to the server's list and copies the current limits
 * and TLS policy (with a reference to the credentials); false once
 * stopping.  (The acceptor has counted it against the connection limits.)
 */
static bool conn_register(struct conn *conn)
{
    struct server *srv = conn->srv;
    mutex_lock(&srv->lock);
    struct server_shared *sh = server_locked(srv);
    conn->limits = sh->limits;
    conn->tls_mode = sh->tls_mode;
    conn->tls_creds =
        sh->tls_creds != NULL ? tls_creds_ref(sh->tls_creds) : NULL;
    *conn_links(srv, conn) = (struct conn_links){.next = sh->conns};
    if (sh->conns != NULL) {
        conn_links(srv, sh->conns)->prev = conn;
    }
    sh->conns = conn;
    sh->nr_conns++;
    mutex_unlock(&srv->lock);
    /* server_stop sets `stopping` before it walks the list: a connection
     * added after the walk sees the flag here (both seq_cst). */
    return !atomic_load(&srv->stopping);
}

struct conn *conn_new(struct server *srv, int fd, const char *peer,
                      const struct sockaddr_storage *peer_addr,
                      bool *registered)
{
    *registered = false;
    /* Until conn_register, leaving must release the admission too. */
    struct conn *conn = calloc(1, sizeof *conn);
    if (conn == NULL) {
        log_error("%s: out of memory for a connection", peer);
        server_admit_release(srv, peer_addr);
        close(fd);
        return NULL;
    }
    conn->ch = chan_sock_new_take(fd);
    if (conn->ch == NULL) {
        log_error("%s: cannot set up the socket: %s", peer, strerror(errno));
        server_admit_release(srv, peer_addr);
        free(conn);
        return NULL;
    }
    conn->srv = srv;
    conn->home = coro_loop(coro_self());
    conn->push = calloc(srv->loops->count, sizeof *conn->push);
    if (conn->push == NULL) {
        log_error("%s: out of memory for a connection", peer);
        server_admit_release(srv, peer_addr);
        chan_unref(conn->ch);
        free(conn);
        return NULL;
    }
    snprintf(conn->peer, sizeof conn->peer, "%s", peer);
    conn->peer_addr = *peer_addr;
    conn->id =
        atomic_fetch_add_explicit(&srv->next_conn_id, 1, memory_order_relaxed) +
        1;
    conn->started = (int64_t)time(NULL);
    refcount_init(&conn->refs);
    co_mutex_init(&conn->send_lock);
    flow_init(conn);
    bool open = conn_register(conn);
    *registered = true;
    if (!open) {
        conn_unref(conn);
        return NULL;
    }
    return conn;
}

/* How long a connection may go on sending once the server stops. */
#define SHUTDOWN_WINDOW_NS (2ull * 1000 * 1000 * 1000)

static void shutdown_window_over(struct coro_timer *timer)
{
    struct shutdown_window *w =
        container_of(timer, struct shutdown_window, timer);
    /* Stop the read side only: replies still in flight go out. */
    chan_shutdown(w->conn->ch, SHUT_RD);
}

void conn_shutdown_window_start(struct conn *conn, struct shutdown_window *w)
{
    if (w->started) {
        return;
    }
    w->conn = conn;
    w->started = true;
    uint64_t ns = conn->limits.shutdown_timeout_ns;
    coro_timer_start(&w->timer,
                     ns < SHUTDOWN_WINDOW_NS ? ns : SHUTDOWN_WINDOW_NS,
                     shutdown_window_over);
}

void conn_shutdown_window_stop(struct shutdown_window *w)
{
    if (w->started) {
        coro_timer_stop(&w->timer);
        w->started = false;
    }
}
