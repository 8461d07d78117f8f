/* SPDX-License-Identifier: MIT */
/*
 * A connection: handshake, then the receive side of the transmission
 * phase, on the connection's home loop.
 *
 * The receive coroutine reads one request header (and a WRITE's payload),
 * hands the request to a new coroutine scheduled on a worker loop, and
 * reads the next header at once.  Flow control: at most
 * limits.max_requests requests in flight, holding at most
 * limits.max_inflight_bytes of buffers (request_memory: what the pools
 * allocate for the payload or the reply), and the server's
 * max-buffer-memory over all connections.  The receive side takes a
 * request's share before it allocates anything; at a cap it waits (on
 * flow_wait, or in the server's budget), so it stops reading the socket,
 * and each finished request wakes it.  A request counts as in flight
 * until its reply is written, including a small reply waiting in a
 * loop's batch (unsent_batches).
 *
 * The receive side stops on end of file, on a framing error, on
 * NBD_CMD_DISC, when the server stops (chan_wake of the read side), or
 * when a request stalls half way (the request timeout, below).  It then
 * waits until every request in flight has sent its reply and drops its
 * reference; the last reference closes the socket.
 */
#include "nbdsrv/bufpool.h"
#include "nbdsrv/chan-sock.h"
#include "nbdsrv/chan-tls.h"
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

struct loop *server_pick_loop(struct server *srv)
{
    unsigned i =
        atomic_fetch_add_explicit(&srv->next_loop, 1, memory_order_relaxed);
    return srv->loops->loops[i % srv->loops->count];
}

/*
 * A request leaves its connection's home loop only when the home loop has
 * at least SERVER_HOME_SLACK more units of work pending than another loop.
 * Serving it at home saves a cross-thread hop: an eventfd write, a
 * wake-up of the other loop's thread and contention for the connection's
 * send lock.  Clients send in bursts (one recvmsg here often brings
 * dozens of request headers), so a small slack moved part of every burst
 * and doubled the server CPU per 4K request.  Measured with fio and nbdc
 * against -t 2 on 2 cores, 4K random read QD 32 (IOPS):
 *   slack               8        32       64      128
 *   nbdc, 1 conn      74-99k  136-155k  173-182k  172k
 *   fio, 2 conns       80k     154k      151-155k  149-157k
 *   1M read QD 8     1.9-3.1  3.0-3.4    3.2-3.6   2.6-2.9  GiB/s
 * A home loop that really falls behind (large reads, many connections
 * homed on one loop) still hands work to the others.
 *
 * Work is counted in units of one small request; a READ counts one more
 * unit per REQUEST_COST_BYTES, so that large reads, whose copying costs
 * far more than the hop, spread sooner.  A WRITE's payload has already
 * been received (and is in this core's cache) on the home loop: moving
 * its copy elsewhere made 1 MiB writes slower (bench-threads, 1M QD32 at
 * -t 2: 3.5-3.9 GiB/s against 4.4-4.6 GiB/s at home).
 */
#define REQUEST_COST_BYTES (64u * 1024)

unsigned request_cost(const struct proto_request *req)
{
    if (req->type != PROTO_CMD_READ) {
        return 1;
    }
    return 1 + (unsigned)(req->length / REQUEST_COST_BYTES);
}

unsigned server_pick_worker(struct server *srv, const struct conn *conn,
                            unsigned cost)
{
    unsigned n = srv->loops->count;
    unsigned best = loop_index(conn->home);
    unsigned best_load =
        atomic_load_explicit(&srv->load[best].pending, memory_order_relaxed);
    for (unsigned i = 0; i < n && best_load > 0; i++) {
        unsigned load =
            atomic_load_explicit(&srv->load[i].pending, memory_order_relaxed);
        if (load + SERVER_HOME_SLACK < best_load) {
            best = i;
            best_load = load;
        }
    }
    atomic_fetch_add_explicit(&srv->load[best].pending, cost,
                              memory_order_relaxed);
    return best;
}

void server_worker_done(struct server *srv, unsigned worker, unsigned cost)
{
    atomic_fetch_sub_explicit(&srv->load[worker].pending, cost,
                              memory_order_relaxed);
}

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
    if (atomic_fetch_sub(&conn->unsent_batches, 1) == 1) {
        /* The receive side may wait for the last reply (wait_idle). */
        co_mutex_lock(&conn->flow_lock);
        co_queue_next(&conn->flow_wait);
        co_mutex_unlock(&conn->flow_lock);
    }
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

bool conn_queue_small_reply(struct conn *conn, struct loop *loop,
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
        atomic_fetch_add(&conn->unsent_batches, 1);
    }
    for (int i = 0; i < n; i++) {
        memcpy(p->obuf + p->olen, iov[i].iov_base, iov[i].iov_len);
        p->olen += iov[i].iov_len;
    }
    conn_push_later(conn, loop);
    return true;
}

void conn_push_later(struct conn *conn, struct loop *loop)
{
    struct conn_push *p = &conn->push[loop_index(loop)];
    if (!p->queued) {
        p->queued = true;
        atomic_fetch_add_explicit(&conn->refcount, 1, memory_order_relaxed);
        loop_defer(loop, &p->task);
    }
}

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
    pthread_mutex_lock(&srv->lock);
    if (conn->prev != NULL) {
        conn->prev->next = conn->next;
    } else {
        srv->conns = conn->next;
    }
    if (conn->next != NULL) {
        conn->next->prev = conn->prev;
    }
    pthread_mutex_unlock(&srv->lock);
    /* Before the socket closes: a client that sees it close may connect
     * again at once and must find its place free. */
    server_admit_release(srv, &conn->peer_addr);

    for (unsigned i = 0; i < srv->loops->count; i++) {
        bufpool_put(conn->push[i].obuf, CONN_OBUF_SIZE);
    }
    free(conn->push);
    chan_unref(conn->ch);
    export_unref(conn->exp);
    export_table_unref(conn->table);
    tls_creds_unref(conn->tls_creds);
    free(conn->meta_export);
    co_queue_fini(&conn->flow_wait);
    co_mutex_fini(&conn->flow_lock);
    co_mutex_fini(&conn->send_lock);
    free(conn);
    /* Before nr_conns drops: once it is 0, server_stop may go on to free
     * the server. */
    server_conn_closed(srv);

    pthread_mutex_lock(&srv->lock);
    srv->nr_conns--;
    if (srv->done_fd >= 0 && srv->nr_conns == 0) {
        server_single_over(srv, clean);
    }
    pthread_cond_broadcast(&srv->changed);
    pthread_mutex_unlock(&srv->lock);
}

void conn_unref(struct conn *conn)
{
    /* acq_rel: the freeing thread sees every request's last writes. */
    if (atomic_fetch_sub_explicit(&conn->refcount, 1, memory_order_acq_rel) ==
        1) {
        conn_free(conn);
    }
}

void conn_set_chan_take(struct conn *conn, struct chan *tls)
{
    struct server *srv = conn->srv;
    pthread_mutex_lock(&srv->lock);
    struct chan *old = conn->ch;
    conn->ch = tls;
    pthread_mutex_unlock(&srv->lock);
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
    pthread_mutex_lock(&srv->lock);
    conn->limits = srv->limits;
    conn->tls_mode = srv->tls_mode;
    conn->tls_creds =
        srv->tls_creds != NULL ? tls_creds_ref(srv->tls_creds) : NULL;
    conn->prev = NULL;
    conn->next = srv->conns;
    if (srv->conns != NULL) {
        srv->conns->prev = conn;
    }
    srv->conns = conn;
    srv->nr_conns++;
    pthread_mutex_unlock(&srv->lock);
    /* server_stop sets `stopping` before it walks the list: a connection
     * added after the walk sees the flag here (both seq_cst). */
    return !atomic_load(&srv->stopping);
}

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

/*
 * Takes a place in flight and `bytes` of buffer memory, the
 * connection's share first, then the server's; waits for either.  A
 * request is admitted alone even when larger than a cap (which
 * server_set_limits makes at least the largest request).
 */
static void flow_acquire(struct conn *conn, uint64_t bytes)
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

void conn_flow_release(struct conn *conn, uint64_t bytes)
{
    buffer_budget_give(&conn->srv->budget, bytes);
    co_mutex_lock(&conn->flow_lock);
    conn->inflight--;
    conn->inflight_bytes -= bytes;
    co_queue_next(&conn->flow_wait);
    co_mutex_unlock(&conn->flow_lock);
}

/*
 * Waits until every request has finished and every reply is written,
 * including those still waiting in another loop's batch: what follows
 * (an error reply and a close, a TLS close_notify) must come after them.
 * The flusher decrements unsent_batches before it takes flow_lock to
 * wake us, and we test it under flow_lock, so the wake is not lost.
 */
static void wait_idle(struct conn *conn)
{
    co_mutex_lock(&conn->flow_lock);
    while (conn->inflight > 0 || atomic_load(&conn->unsent_batches) > 0) {
        co_queue_wait(&conn->flow_wait, &conn->flow_lock);
    }
    co_mutex_unlock(&conn->flow_lock);
}

static void dispatch(struct conn *conn, struct request *rq)
{
    atomic_fetch_add_explicit(&conn->refcount, 1, memory_order_relaxed);
    rq->conn = conn;
    rq->cost = request_cost(&rq->req);
    rq->worker = server_pick_worker(conn->srv, conn, rq->cost);
    struct loop *worker = conn->srv->loops->loops[rq->worker];
    struct coro *co = coro_new(transmit_request, rq, worker);
    if (co == NULL) {
        /* No stack to be had: serve it here, on the receive side. */
        transmit_request(rq);
        return;
    }
    coro_schedule(worker, co);
}

/*
 * Request timeout.  A message (a request header, or a WRITE's payload)
 * that has started to arrive must be complete within
 * limits.request_timeout_ns of the receive side going back to the socket
 * for the rest of it; otherwise the client has stopped half way and holds
 * its place (and a payload buffer) for nothing, so the socket is shut.
 * A read at a message boundary never counts: an idle client waits as long
 * as it likes.  Neither does the receive side's own wait for flow
 * control between a header and its payload: the payload's time starts
 * when it is read.
 *
 * Cost on the hot path: a request that arrives whole in the receive
 * buffer touches no timer and reads no clock.  A message that must go
 * back to the socket reads the clock once (rx_partial_since).  The
 * connection has one timer: the first such message arms it; when it
 * expires, it cuts the connection if the message it finds pending has
 * waited its full time, re-arms itself for the rest of that message's
 * time if a later message is pending, and lapses if none is.  So a busy
 * connection keeps at most one timer in flight, and there is no timer
 * operation per request.
 */
static uint64_t monotonic_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void request_timer_fired(struct coro_timer *timer)
{
    struct conn *conn = container_of(timer, struct conn, rq_timer);
    conn->rq_timer_armed = false;
    if (!conn->rx_partial) {
        return; /* the next message that waits arms it again */
    }
    uint64_t limit = conn->limits.request_timeout_ns;
    uint64_t waited = monotonic_ns() - conn->rx_partial_since;
    if (waited < limit) {
        conn->rq_timer_armed = coro_timer_rearm(timer, limit - waited);
        return;
    }
    log_info("%s: a request did not arrive whole within %g s "
             "(request-timeout), disconnecting",
             conn->peer, (double)limit / 1e9);
    conn->rx_timed_out = true;
    /* The receive side's read ends; replies still owed cannot go out
     * either, so nothing waits on a client that stopped reading too. */
    chan_shutdown(conn->ch, SHUT_RDWR);
}

/* The receive side goes back to the socket in the middle of a message. */
static void message_wait_begins(struct conn *conn)
{
    conn->rx_partial = true;
    conn->rx_partial_since = monotonic_ns();
    if (!conn->rq_timer_armed) {
        conn->rq_timer_armed = true;
        coro_timer_start(&conn->rq_timer, conn->limits.request_timeout_ns,
                         request_timer_fired);
    }
}

/* The message being received is complete. */
static inline void message_done(struct conn *conn)
{
    conn->rx_partial = false;
}

/*
 * Reads exactly `len` bytes through the receive buffer: one recvmsg
 * fetches as many request headers (and small payloads) as the client has
 * sent.  Large reads go straight to `dst` once the buffer is drained.
 * Returns 1 when done, 0 at end of file before the first byte, -errno.
 * A chan_wake (server stopping) interrupts only a read at a message
 * boundary (`boundary` and nothing read yet): -ECANCELED.  Elsewhere the
 * read goes on, so a message is never cut in two.  A read that goes back
 * to the socket anywhere but at a boundary starts the message's request
 * timeout; the caller ends it with message_done.
 */
static int conn_read(struct conn *conn, void *dst, size_t len, bool boundary)
{
    uint8_t *out = dst;
    size_t done = 0;
    while (done < len) {
        size_t avail = conn->rbuf_end - conn->rbuf_start;
        if (avail > 0) {
            size_t n = avail < len - done ? avail : len - done;
            memcpy(out + done, conn->rbuf + conn->rbuf_start, n);
            conn->rbuf_start += n;
            done += n;
            continue;
        }
        conn->rbuf_start = conn->rbuf_end = 0;
        if (!conn->rx_partial && (done > 0 || !boundary) &&
            conn->limits.request_timeout_ns != 0) {
            message_wait_begins(conn);
        }
        /* Big payloads go straight to their buffer, small reads ahead. */
        bool direct = len - done >= CONN_RBUF_SIZE / 2;
        ssize_t n = direct
                        ? chan_read_some(conn->ch, out + done, len - done)
                        : chan_read_some(conn->ch, conn->rbuf, CONN_RBUF_SIZE);
        if (n == -ECANCELED && !(boundary && done == 0)) {
            continue;
        }
        if (n < 0) {
            return (int)n;
        }
        if (n == 0) {
            return done == 0 ? 0 : -ECONNRESET;
        }
        if (direct) {
            done += (size_t)n;
        } else {
            conn->rbuf_end = (size_t)n;
        }
    }
    return 1;
}

/* Reads `len` payload bytes that no command will use. */
static int discard_payload(struct conn *conn, uint64_t len)
{
    char sink[4096];
    while (len > 0) {
        size_t n = len < sizeof sink ? (size_t)len : sizeof sink;
        int r = conn_read(conn, sink, n, false);
        if (r <= 0) {
            return r < 0 ? r : -ECONNRESET;
        }
        len -= n;
    }
    return 0;
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

static void receive_requests(struct conn *conn)
{
    size_t hdr_len =
        conn->extended ? PROTO_EXTENDED_REQUEST_SIZE : PROTO_REQUEST_SIZE;
    /*
     * Once the server stops, requests still arriving are answered with
     * ESHUTDOWN, which tells the client to disconnect softly, instead of
     * the socket closing under a client that is still sending (it would
     * then lose replies already sent).  A client that lingers is cut off
     * after SHUTDOWN_WINDOW_NS.
     */
    struct shutdown_window window = {0}; /* started: draining */
    for (;;) {
        if (!window.started &&
            atomic_load_explicit(&conn->srv->stopping, memory_order_relaxed)) {
            conn_shutdown_window_start(conn, &window);
        }
        uint8_t hdr[PROTO_EXTENDED_REQUEST_SIZE];
        int r = conn_read(conn, hdr, hdr_len, true);
        if (r == -ECANCELED) {
            /* server_stop woke us to start draining (or we already are:
             * the wake can land after we saw `stopping`). */
            continue;
        }
        if (r == 0) {
            log_debug("%s: client closed the connection", conn->peer);
            conn->clean_end = true;
            break;
        }
        if (r < 0) {
            log_debug("%s: read: %s", conn->peer, strerror(-r));
            break;
        }
        message_done(conn);
        struct proto_request req;
        r = proto_decode_request(hdr, hdr_len, conn->extended, &req);
        if (r == -EBADMSG) {
            log_info("%s: bad request magic, disconnecting", conn->peer);
            break;
        }
        int early_error = r == -EINVAL ? EINVAL : 0;
        uint64_t payload = proto_request_payload_len(&req, conn->extended);
        if (req.type == PROTO_CMD_DISC && early_error == 0) {
            log_debug("%s: client sent NBD_CMD_DISC", conn->peer);
            conn->clean_end = true;
            break;
        }
        if (payload > conn->max_payload) {
            /* Cannot stay in step without reading it all: refuse, close. */
            log_info("%s: %s payload of %llu bytes is over the maximum, "
                     "disconnecting",
                     conn->peer, proto_cmd_name(req.type),
                     (unsigned long long)payload);
            wait_idle(conn);
            transmit_send_error(conn, &req, EINVAL);
            break;
        }
        if (payload > 0 && req.type != PROTO_CMD_WRITE) {
            /* A payload no command of ours takes: skip it, fail it. */
            if (discard_payload(conn, payload) < 0) {
                break;
            }
            message_done(conn);
            early_error = EINVAL;
            payload = 0;
        }
        if (window.started && early_error == 0) {
            early_error = ESHUTDOWN;
        }
        uint64_t held = request_memory(conn, &req, payload);
        flow_acquire(conn, held);
        struct request *rq = bufpool_get(sizeof *rq);
        void *buf = payload > 0 ? bufpool_get(payload) : NULL;
        if (rq == NULL || (payload > 0 && buf == NULL)) {
            bufpool_put(buf, payload);
            bufpool_put(rq, sizeof *rq);
            conn_flow_release(conn, held);
            log_error("%s: out of memory for a request", conn->peer);
            break;
        }
        *rq = (struct request){
            .req = req,
            .buf = buf,
            .buf_size = payload,
            .held = held,
            .early_error = early_error,
        };
        if (payload > 0) {
            r = conn_read(conn, buf, payload, false);
            if (r <= 0) {
                if (!conn->rx_timed_out) {
                    log_info("%s: connection lost in a %llu-byte write "
                             "payload",
                             conn->peer, (unsigned long long)payload);
                }
                bufpool_put(buf, payload);
                bufpool_put(rq, sizeof *rq);
                conn_flow_release(conn, held);
                break;
            }
            message_done(conn);
        }
        dispatch(conn, rq);
    }
    conn_shutdown_window_stop(&window);
    coro_timer_stop(&conn->rq_timer);
    conn->rq_timer_armed = false;
}

bool conn_run(struct server *srv, int fd, const char *peer,
              const struct sockaddr_storage *peer_addr)
{
    /* Until conn_register, leaving must release the admission too. */
    struct conn *conn = calloc(1, sizeof *conn);
    if (conn == NULL) {
        log_error("%s: out of memory for a connection", peer);
        server_admit_release(srv, peer_addr);
        close(fd);
        return false;
    }
    conn->ch = chan_sock_new_take(fd);
    if (conn->ch == NULL) {
        log_error("%s: cannot set up the socket: %s", peer, strerror(errno));
        server_admit_release(srv, peer_addr);
        free(conn);
        return false;
    }
    conn->srv = srv;
    conn->home = coro_loop(coro_self());
    conn->push = calloc(srv->loops->count, sizeof *conn->push);
    if (conn->push == NULL) {
        log_error("%s: out of memory for a connection", peer);
        server_admit_release(srv, peer_addr);
        chan_unref(conn->ch);
        free(conn);
        return false;
    }
    for (unsigned i = 0; i < srv->loops->count; i++) {
        conn->push[i].task.fn = push_task_run;
        conn->push[i].conn = conn;
    }
    snprintf(conn->peer, sizeof conn->peer, "%s", peer);
    conn->peer_addr = *peer_addr;
    atomic_init(&conn->refcount, 1);
    co_mutex_init(&conn->send_lock);
    co_mutex_init(&conn->flow_lock);
    co_queue_init(&conn->flow_wait);
    atomic_init(&conn->unsent_batches, 0);
    if (!conn_register(conn)) {
        conn_unref(conn);
        return true;
    }
    log_debug("%s: connected", conn->peer);

    struct handshake_deadline deadline = {.conn = conn};
    uint64_t hs_timeout = conn->limits.handshake_timeout_ns;
    if (hs_timeout != 0) {
        coro_timer_start(&deadline.timer, hs_timeout, handshake_expired);
    }
    conn->table = server_get_table(srv);
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
        receive_requests(conn);
        wait_idle(conn);
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
