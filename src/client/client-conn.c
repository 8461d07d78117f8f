/* SPDX-License-Identifier: MIT */
/*
 * The client connection object: its allocation and reference count,
 * connect (handshake, then the start of the reply receiver) and close.
 *
 * A connection is shared by its user and its receiver coroutine, each
 * holding a reference: client_connect_chan takes the receiver's before
 * scheduling it, and client_close drops the user's after the receiver
 * has ended.  While the receiver runs, this file only reads `info`
 * (immutable after connect) and `dead` (under lock), and client_close
 * sends DISC under send_lock like any request, then shuts the socket
 * down and waits for the receiver under lock; the rest runs before the
 * receiver starts or after it has ended.  The request table is set up
 * here but used only by client-cmd.c (which registers requests) and
 * client-recv.c (which alone unregisters and completes them); see
 * client-int.h for the hand-over between the two.
 */
#include "client-int.h"
#include "nbdsrv/chan-sock.h"
#include "nbdsrv/chan-tls.h"
#include "nbdsrv/coro.h"

#include <errno.h>
#include <stdlib.h>
#include <sys/socket.h>

#define DEFAULT_MAX_REQUESTS 64u

void client_conn_unref(struct client_conn *conn)
{
    if (conn == NULL) {
        return;
    }
    if (!refcount_put(&conn->refs)) {
        return;
    }
    chan_unref(conn->ch);
    free(conn->info.name);
    free(conn->info.description);
    free(conn->slots);
    free(conn->free_slots);
    free(conn->rbuf);
    co_mutex_fini(&conn->send_lock);
    pthread_mutex_destroy(&conn->lock);
    free(conn);
}

static struct client_conn *client_conn_new(struct chan *ch,
                                           unsigned max_requests)
{
    if (max_requests == 0) {
        max_requests = DEFAULT_MAX_REQUESTS;
    }
    if (max_requests > CLIENT_MAX_SLOTS) {
        max_requests = CLIENT_MAX_SLOTS;
    }
    struct client_conn *conn = calloc(1, sizeof *conn);
    if (conn == NULL) {
        return NULL;
    }
    conn->slots = calloc(max_requests, sizeof *conn->slots);
    conn->free_slots = calloc(max_requests, sizeof *conn->free_slots);
    conn->rbuf = malloc(CLIENT_RBUF_SIZE);
    if (conn->slots == NULL || conn->free_slots == NULL || conn->rbuf == NULL) {
        free(conn->slots);
        free(conn->free_slots);
        free(conn->rbuf);
        free(conn);
        return NULL;
    }
    conn->ch = ch;
    refcount_init(&conn->refs);
    co_mutex_init(&conn->send_lock);
    pthread_mutex_init(&conn->lock, NULL);
    conn->nr_slots = max_requests;
    for (unsigned i = 0; i < max_requests; i++) {
        conn->free_slots[i] = (int)(max_requests - 1 - i);
    }
    conn->nr_free = max_requests;
    conn->slot_tail = &conn->slot_head;
    return conn;
}

const struct client_info *client_info(const struct client_conn *c)
{
    return &c->info;
}

const char *client_error(struct client_conn *conn)
{
    pthread_mutex_lock(&conn->lock);
    int dead = conn->dead;
    pthread_mutex_unlock(&conn->lock);
    return dead != 0 ? conn->dead_msg : NULL;
}

/* ---- Connect and close ---- */

static struct client_conn *handshake(struct chan *ch,
                                     const struct client_uri *uri,
                                     const struct client_opts *opts,
                                     struct err *err)
{
    uint16_t hs_flags;
    if (client_start(&ch, uri, opts->tls_creds, &hs_flags, err) < 0) {
        chan_unref(ch);
        return NULL;
    }
    struct client_conn *conn = client_conn_new(ch, opts->max_requests);
    if (conn == NULL) {
        chan_unref(ch);
        err_set(err, ENOMEM, "out of memory");
        return NULL;
    }
    conn->info.hs_flags = hs_flags;
    conn->info.tls = chan_is_tls(ch);
    if (conn->info.tls) {
        struct chan_tls_info ti;
        chan_tls_get_info(ch, &ti);
        conn->info.tls_version = ti.version;
        conn->info.tls_cipher = ti.cipher;
    }
    if (client_negotiate(conn, uri, opts, err) < 0) {
        client_conn_unref(conn);
        return NULL;
    }
    return conn;
}

struct client_conn *client_connect_chan(struct chan *ch,
                                        const struct client_uri *uri,
                                        const struct client_opts *opts,
                                        struct err *err)
{
    static const struct client_opts defaults;
    if (opts == NULL) {
        opts = &defaults;
    }
    struct client_deadline deadline;
    client_deadline_start(&deadline, ch, opts->handshake_timeout_ns);
    struct client_conn *conn = handshake(ch, uri, opts, err);
    if (client_deadline_stop(&deadline, err) < 0) {
        client_conn_unref(conn);
        conn = NULL;
    }
    if (conn == NULL) {
        return NULL;
    }
    struct loop *loop = opts->recv_loop;
    if (loop == NULL) {
        loop = coro_loop(coro_self());
    }
    struct coro *co = coro_new(client_recv_entry, conn, loop);
    if (co == NULL) {
        err_set_errno(err, errno, "creating the reply receiver");
        client_conn_unref(conn);
        return NULL;
    }
    refcount_get(&conn->refs);
    coro_schedule(loop, co);
    return conn;
}

struct client_conn *client_connect(const struct client_uri *uri,
                                   const struct client_opts *opts,
                                   struct err *err)
{
    struct sock_addr addr;
    if (client_uri_address(uri, &addr.ss, &addr.len, err) < 0) {
        return NULL;
    }
    struct chan *ch = chan_sock_connect(&addr, err);
    if (ch == NULL) {
        return NULL;
    }
    return client_connect_chan(ch, uri, opts, err);
}

void client_close(struct client_conn *conn)
{
    if (conn == NULL) {
        return;
    }
    pthread_mutex_lock(&conn->lock);
    bool dead = conn->dead != 0;
    pthread_mutex_unlock(&conn->lock);
    if (!dead) {
        uint8_t buf[PROTO_EXTENDED_REQUEST_SIZE];
        struct proto_request req = {.type = PROTO_CMD_DISC};
        ssize_t n =
            proto_encode_request(buf, sizeof buf, &req, conn->info.extended);
        co_mutex_lock(&conn->send_lock);
        chan_write_all(conn->ch, buf, (size_t)n);
        co_mutex_unlock(&conn->send_lock);
    }
    chan_shutdown(conn->ch, SHUT_RDWR);
    chan_wake(conn->ch, CHAN_IN);

    pthread_mutex_lock(&conn->lock);
    if (!conn->recv_done) {
        conn->closer = coro_self();
        pthread_mutex_unlock(&conn->lock);
        coro_yield();
    } else {
        pthread_mutex_unlock(&conn->lock);
    }
    client_conn_unref(conn);
}
