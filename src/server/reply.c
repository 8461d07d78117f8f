/* SPDX-License-Identifier: MIT */
/*
 * Sending replies: one connection's replies leave under its send_lock,
 * from whichever loop the request coroutine runs on.  The replies of one
 * loop's batch of tasks (a burst of requests read from one receive) are
 * gathered in that loop's reply_batch for the connection and leave in one
 * send when the batch ends: one system call, one pass through the
 * socket's lock and one wake-up of the client for the burst, instead of
 * one each per reply.
 */
#include "nbdsrv/bufpool.h"
#include "nbdsrv/coro.h"
#include "nbdsrv/log.h"
#include "server-int.h"
#include "stats-int.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

/* Writes iov under the send lock, counting the write. */
static int send_locked(struct conn *conn, const struct iovec *iov, int n,
                       int flags)
{
    co_mutex_lock(&conn->send_lock);
    int r = chan_writev_all_flags(conn->ch, iov, n, flags);
    co_mutex_unlock(&conn->send_lock);
    if (conn->srv->stats_on) {
        stats_reply_write(conn->srv);
    }
    return r;
}

/* Sends one loop's gathered replies under the send lock and wakes the
 * coroutines whose payloads they referenced. */
static void flush_entry(void *opaque)
{
    struct conn_push *p = opaque;
    struct conn *conn = p->conn;
    /* Detach before the first yield: new replies start a new batch. */
    struct reply_batch *b = p->batch;
    p->batch = NULL;
    int r = send_locked(conn, b->iov, b->niov, 0);
    if (r < 0) {
        log_debug("%s: sending replies: %s", conn->peer, strerror(-r));
        chan_shutdown(conn->ch, SHUT_RDWR);
    }
    for (int i = 0; i < b->nwait; i++) {
        b->wait[i]->result = r;
        coro_wake(b->wait[i]->co);
    }
    bufpool_put(b, sizeof *b);
    flow_batch_sent(conn);
    conn_unref(conn);
}

static void push_task_run(struct loop_task *task)
{
    struct conn_push *p = container_of(task, struct conn_push, task);
    struct conn *conn = p->conn;
    p->queued = false;
    if (p->batch == NULL || p->batch->niov == 0) {
        chan_push(conn->ch);
        conn_unref(conn);
        return;
    }
    /* Taking the send lock may wait: that needs a coroutine. */
    struct coro *co = coro_new(flush_entry, p, loop_current());
    if (co == NULL) {
        p->queued = true;
        loop_defer(loop_current(), &p->task); /* try after the next batch */
        return;
    }
    coro_enter(co); /* the conn reference passes to flush_entry */
}

/* Pushes this loop's held-back replies once its batch is done. */
static void push_later(struct conn *conn, struct loop *loop)
{
    struct conn_push *p = &conn->push[loop_index(loop)];
    if (!p->queued) {
        p->queued = true;
        p->task.fn = push_task_run;
        p->conn = conn;
        refcount_get(&conn->refs);
        loop_defer(loop, &p->task);
    }
}

/* Appends len bytes to the batch's header area, growing the last piece
 * when it ends there. */
static void batch_copy(struct reply_batch *b, const void *data, size_t len)
{
    uint8_t *dst = b->hdr + b->hlen;
    memcpy(dst, data, len);
    b->hlen += len;
    struct iovec *last = b->niov > 0 ? &b->iov[b->niov - 1] : NULL;
    if (last != NULL && (uint8_t *)last->iov_base + last->iov_len == dst) {
        last->iov_len += len;
    } else {
        b->iov[b->niov++] = (struct iovec){dst, len};
    }
}

enum batch_added {
    BATCH_NO_ROOM, /* send it directly */
    BATCH_COPIED,  /* every piece was copied: done */
    BATCH_WAITS,   /* a piece is referenced: park in w until the send */
};

/*
 * Adds a reply to this loop's batch for conn: pieces up to
 * CONN_SMALL_REPLY_MAX are copied, larger ones referenced, and then w
 * joins the batch's waiters.
 */
static enum batch_added batch_add(struct conn *conn, struct loop *loop,
                                  const struct iovec *iov, int n, size_t total,
                                  struct reply_waiter *w)
{
    struct conn_push *p = &conn->push[loop_index(loop)];
    struct reply_batch *b = p->batch;
    if (b == NULL) {
        b = bufpool_get(sizeof *b);
        if (b == NULL) {
            return BATCH_NO_ROOM;
        }
        b->niov = b->nwait = 0;
        b->hlen = b->bytes = 0;
        p->batch = b;
    }
    size_t copied = 0;
    bool referenced = false;
    for (int i = 0; i < n; i++) {
        if (iov[i].iov_len <= CONN_SMALL_REPLY_MAX) {
            copied += iov[i].iov_len;
        } else {
            referenced = true;
        }
    }
    /* A waiter brings a referenced piece, so nwait <= niov: iov[]'s bound
     * is wait[]'s too. */
    if (b->niov + n > REPLY_BATCH_IOV || b->hlen + copied > REPLY_BATCH_HDR ||
        b->bytes + total > REPLY_BATCH_BYTES) {
        return BATCH_NO_ROOM;
    }
    if (b->niov == 0) {
        flow_batch_queued(conn);
    }
    for (int i = 0; i < n; i++) {
        if (iov[i].iov_len <= CONN_SMALL_REPLY_MAX) {
            batch_copy(b, iov[i].iov_base, iov[i].iov_len);
        } else {
            b->iov[b->niov++] = iov[i];
        }
    }
    b->bytes += total;
    push_later(conn, loop);
    if (!referenced) {
        return BATCH_COPIED;
    }
    b->wait[b->nwait++] = w;
    return BATCH_WAITS;
}

/*
 * Sends iov under the send lock; a failure shuts the socket down so the
 * receive side stops too.  While more tasks are queued on this loop
 * (other replies are likely to follow at once), or replies of this batch
 * are already waiting, a reply up to CONN_BATCH_REPLY_MAX joins the
 * loop's batch: a data-less one is copied and returns at once, one with
 * a payload parks until the batch is sent (its buffer must stay until
 * then).  A larger reply is sent at once, with CHAN_WRITE_MORE while more
 * tasks are queued, and pushed when the loop's batch ends.
 */
int reply_send(struct conn *conn, const struct iovec *iov, int n)
{
    struct loop *here = coro_loop(coro_self());
    bool more = loop_has_ready(here);
    const struct reply_batch *b = conn->push[loop_index(here)].batch;
    size_t total = 0;
    for (int i = 0; i < n; i++) {
        total += iov[i].iov_len;
    }
    if ((more || (b != NULL && b->niov > 0)) && total <= CONN_BATCH_REPLY_MAX) {
        struct reply_waiter w = {.co = coro_self(), .result = 0};
        switch (batch_add(conn, here, iov, n, total, &w)) {
        case BATCH_COPIED:
            return 0;
        case BATCH_WAITS:
            coro_yield(); /* until flush_entry wakes us */
            return w.result;
        case BATCH_NO_ROOM:
            break;
        }
    }
    int r = send_locked(conn, iov, n, more ? CHAN_WRITE_MORE : 0);
    if (r == 0 && more) {
        /* Re-read: co_mutex_lock may have yielded (docs/design.md, "Threads
         * and affinity"). */
        push_later(conn, coro_loop(coro_self()));
    }
    if (r < 0) {
        log_debug("%s: sending a reply: %s", conn->peer, strerror(-r));
        chan_shutdown(conn->ch, SHUT_RDWR);
    }
    return r;
}
