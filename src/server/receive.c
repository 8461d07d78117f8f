/* SPDX-License-Identifier: MIT */
/*
 * The receive side of the transmission phase, on the connection's home
 * loop.  The receive coroutine reads one request header (and a WRITE's
 * payload), takes the request's place in flight (flow.c), hands it to a
 * new request coroutine on a worker loop (worker.c), and reads the next
 * header at once.  The request coroutine runs the request (transmit.c)
 * and then gives back what the receive side took for it.
 *
 * The receive side stops on end of file, on a framing error, on
 * NBD_CMD_DISC, when the server stops or the control socket disconnects
 * the client (chan_wake of the read side, then the shutdown window), or
 * when a request stalls half way (the request timeout, below).  Its
 * caller then waits until every request in flight has sent its reply.
 */
#include "nbdsrv/bufpool.h"
#include "nbdsrv/coro-io.h"
#include "nbdsrv/coro.h"
#include "nbdsrv/log.h"
#include "server-int.h"

#include <errno.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

/* A request coroutine: the request, then what it held comes back. */
static void request_entry(void *opaque)
{
    struct request *rq = opaque;
    struct conn *conn = rq->conn;
    int err = transmit_request(conn, rq);
    if (conn->srv->stats_on) {
        stats_request_done(conn, &rq->req, rq->arrival_ns, err);
    }
    uint64_t held = rq->held;
    server_worker_done(conn->srv, rq->worker, rq->cost);
    bufpool_put(rq->buf, rq->buf_size);
    bufpool_put(rq, sizeof *rq);
    atomic_fetch_sub_explicit(&conn->requests_inflight, 1,
                              memory_order_relaxed);
    flow_release(conn, held);
    conn_unref(conn);
}

static void dispatch(struct conn *conn, struct request *rq)
{
    refcount_get(&conn->refs);
    /* Relaxed: a statistic (struct conn). */
    atomic_fetch_add_explicit(&conn->requests_inflight, 1,
                              memory_order_relaxed);
    rq->conn = conn;
    rq->cost = request_cost(&rq->req);
    rq->worker = server_pick_worker(conn->srv, conn, rq->cost);
    struct loop *worker = conn->srv->loops->loops[rq->worker];
    struct coro *co = coro_new(request_entry, rq, worker);
    if (co == NULL) {
        /* No stack to be had: serve it here, on the receive side. */
        request_entry(rq);
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

void receive_requests(struct conn *conn)
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
            (atomic_load_explicit(&conn->srv->stopping, memory_order_relaxed) ||
             atomic_load(&conn->disconnecting))) {
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
        /* Latency counts from here: the header is read. */
        uint64_t arrival_ns = conn->srv->stats_on ? stats_clock_ns() : 0;
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
            flow_wait_idle(conn);
            transmit_send_error(conn, &req, EINVAL);
            if (conn->srv->stats_on) {
                stats_request_received(conn->srv);
                stats_request_done(conn, &req, arrival_ns, EINVAL);
            }
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
        /* Again after the read: a wake can lose the race with data
         * that arrived meanwhile, and a request sent after a disconnect
         * was acknowledged must be refused. */
        if (!window.started && atomic_load(&conn->disconnecting)) {
            conn_shutdown_window_start(conn, &window);
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
            flow_release(conn, held);
            log_error("%s: out of memory for a request", conn->peer);
            break;
        }
        *rq = (struct request){
            .req = req,
            .buf = buf,
            .buf_size = payload,
            .held = held,
            .early_error = early_error,
            .arrival_ns = arrival_ns,
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
                flow_release(conn, held);
                break;
            }
            message_done(conn);
        }
        if (conn->srv->stats_on) {
            stats_request_received(conn->srv);
        }
        dispatch(conn, rq);
    }
    conn_shutdown_window_stop(&window);
    coro_timer_stop(&conn->rq_timer);
    conn->rq_timer_armed = false;
}
