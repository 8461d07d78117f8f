/* SPDX-License-Identifier: MIT */
/*
 * Sending replies: one connection's replies leave under its send_lock,
 * from whichever loop the request coroutine runs on.  A burst of small
 * replies on one loop is copied into that loop's buffer for the
 * connection (struct conn_push) and written in one send when the loop's
 * batch of tasks ends, so that it leaves in a few segments and wakes the
 * client once.
 */
#include "nbdsrv/bufpool.h"
#include "nbdsrv/coro.h"
#include "nbdsrv/log.h"
#include "server-int.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

/* Sends one loop's queued small replies under the send lock. */
static void flush_entry(void *opaque)
{
    struct conn_push *p = opaque;
    struct conn *conn = p->conn;
    /* Detach before the first yield: new replies start a new buffer. */
    uint8_t *buf = p->obuf;
    size_t len = p->olen;
    p->obuf = NULL;
    p->olen = 0;
    co_mutex_lock(&conn->send_lock);
    int r = chan_write_all(conn->ch, buf, len);
    co_mutex_unlock(&conn->send_lock);
    if (r < 0) {
        chan_shutdown(conn->ch, SHUT_RDWR);
    }
    bufpool_put(buf, CONN_OBUF_SIZE);
    flow_batch_sent(conn);
    conn_unref(conn);
}

static void push_task_run(struct loop_task *task)
{
    struct conn_push *p = container_of(task, struct conn_push, task);
    struct conn *conn = p->conn;
    p->queued = false;
    if (p->olen == 0) {
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

static void push_later(struct conn *conn, struct loop *loop);

/* Queues a small reply to go out with this loop's push; false when it
 * does not fit (send it directly then). */
static bool queue_small_reply(struct conn *conn, struct loop *loop,
                              const struct iovec *iov, int n, size_t total)
{
    struct conn_push *p = &conn->push[loop_index(loop)];
    if (p->obuf == NULL) {
        p->obuf = bufpool_get(CONN_OBUF_SIZE);
        if (p->obuf == NULL) {
            return false;
        }
    }
    if (p->olen + total > CONN_OBUF_SIZE) {
        return false;
    }
    if (p->olen == 0 && total > 0) {
        flow_batch_queued(conn);
    }
    for (int i = 0; i < n; i++) {
        memcpy(p->obuf + p->olen, iov[i].iov_base, iov[i].iov_len);
        p->olen += iov[i].iov_len;
    }
    push_later(conn, loop);
    return true;
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

/*
 * Sends iov under the send lock; a failure shuts the socket down so the
 * receive side stops too.  When more tasks are queued on this loop (other
 * replies are likely to follow at once), the reply is sent with
 * CHAN_WRITE_MORE and pushed when the loop's batch ends, and a small one
 * (no data) is copied into the loop's buffer for the connection and sent
 * with the others of the batch in one write: a burst of replies leaves in
 * a few segments and wakes the client once.
 */
int reply_send(struct conn *conn, const struct iovec *iov, int n)
{
    struct loop *here = coro_loop(coro_self());
    bool more = loop_has_ready(here);
    if (more) {
        size_t total = 0;
        for (int i = 0; i < n; i++) {
            total += iov[i].iov_len;
        }
        /* Small replies of one batch leave together in one send. */
        if (total <= CONN_SMALL_REPLY_MAX &&
            queue_small_reply(conn, here, iov, n, total)) {
            return 0;
        }
    }
    co_mutex_lock(&conn->send_lock);
    int r = chan_writev_all_flags(conn->ch, iov, n, more ? CHAN_WRITE_MORE : 0);
    co_mutex_unlock(&conn->send_lock);
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
