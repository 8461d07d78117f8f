/* SPDX-License-Identifier: MIT */
/*
 * Flow control of one connection: at most limits.max_requests requests
 * in flight, holding at most limits.max_inflight_bytes of buffers
 * (request_memory: what the pools allocate for the payload or the
 * reply), and the server's max-buffer-memory over all connections.  The
 * receive side takes a request's share before it allocates anything; at
 * a cap it waits (on flow_wait, or in the server's budget), so it stops
 * reading the socket, and each finished request wakes it.  A request
 * counts as in flight until its reply is written, including a small reply
 * waiting in a loop's batch (unsent_batches, counted by reply.c).
 */
#include "server-int.h"

void flow_init(struct conn *conn)
{
    co_mutex_init(&conn->flow_lock);
    co_queue_init(&conn->flow_wait);
    atomic_init(&conn->unsent_batches, 0);
}

void flow_fini(struct conn *conn)
{
    co_queue_fini(&conn->flow_wait);
    co_mutex_fini(&conn->flow_lock);
}

/*
 * A request is admitted alone even when larger than a cap (which
 * server_set_limits makes at least the largest request).
 */
void flow_acquire(struct conn *conn, uint64_t bytes)
{
    const struct server_limits *lim = &conn->limits;
    co_mutex_lock(&conn->flow_lock);
    while (conn->inflight >= lim->max_requests ||
           (conn->inflight > 0 &&
            conn->inflight_bytes + bytes > lim->max_inflight_bytes)) {
        co_queue_wait(&conn->flow_wait, &conn->flow_lock);
    }
    conn->inflight++;
    conn->inflight_bytes += bytes;
    co_mutex_unlock(&conn->flow_lock);
    buffer_budget_take(&conn->srv->budget, bytes);
}

void flow_release(struct conn *conn, uint64_t bytes)
{
    buffer_budget_give(&conn->srv->budget, bytes);
    co_mutex_lock(&conn->flow_lock);
    conn->inflight--;
    conn->inflight_bytes -= bytes;
    co_queue_next(&conn->flow_wait);
    co_mutex_unlock(&conn->flow_lock);
}

void flow_batch_queued(struct conn *conn)
{
    atomic_fetch_add(&conn->unsent_batches, 1);
}

void flow_batch_sent(struct conn *conn)
{
    if (atomic_fetch_sub(&conn->unsent_batches, 1) == 1) {
        /* The receive side may wait for the last reply (flow_wait_idle). */
        co_mutex_lock(&conn->flow_lock);
        co_queue_next(&conn->flow_wait);
        co_mutex_unlock(&conn->flow_lock);
    }
}

/*
 * The sender decrements unsent_batches before it takes flow_lock to wake
 * us, and we test it under flow_lock, so the wake is not lost.
 */
void flow_wait_idle(struct conn *conn)
{
    co_mutex_lock(&conn->flow_lock);
    while (conn->inflight > 0 || atomic_load(&conn->unsent_batches) > 0) {
        co_queue_wait(&conn->flow_wait, &conn->flow_lock);
    }
    co_mutex_unlock(&conn->flow_lock);
}
