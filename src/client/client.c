/* SPDX-License-Identifier: MIT */
/*
 * The client connection: request issue, the reply receiver, failure.
 *
 * Cookies: a request takes a slot of the connection's table (waiting
 * for one when max_requests are in flight) and its cookie is the slot
 * number in the low CLIENT_SLOT_BITS bits and a generation count above,
 * so a stale or forged cookie from the server never matches.
 *
 * Hand-over between the issuer and the receiver (they may run on
 * different loops): the issuer registers the request (state SENDING)
 * under `lock`, sends it under `send_lock`, then moves the state from
 * SENDING to WAITING with a compare-and-swap and parks.  The receiver,
 * once the last chunk of the reply is in, unregisters it, stores the
 * result, and exchanges the state to DONE: if the old state was WAITING
 * it wakes the issuer on the issuer's loop; if it was SENDING the
 * issuer's compare-and-swap fails and it does not park.  The exchange
 * and the compare-and-swap are seq_cst (acquire-release would do): the
 * issuer sees every byte the receiver wrote into its buffer.  A wake
 * that arrives before the issuer has finished yielding only queues the
 * coroutine on its own loop, whose thread is the one yielding it, so it
 * runs after it parked (the coro-lock argument).
 *
 * Only the receiver completes requests.  A send that fails shuts the
 * socket down, which makes the receiver's read fail; the receiver then
 * marks the connection dead under `lock` and completes every registered
 * request with the error.  A request registered after that sees `dead`
 * and fails at once.  So every request ends, and none ends twice.
 */
#include "client-int.h"
#include "nbdsrv/chan-sock.h"
#include "nbdsrv/chan-tls.h"
#include "nbdsrv/coro.h"
#include "nbdsrv/log.h"
#include "nbdsrv/tls-creds.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#define DEFAULT_MAX_REQUESTS 64u
#define MAX_SLOTS (1u << CLIENT_SLOT_BITS)
/* Largest structured reply payload accepted besides READ data. */
#define MAX_CHUNK_PAYLOAD (64u * 1024 * 1024)

static void conn_unref(struct client_conn *conn)
{
    if (conn == NULL) {
        return;
    }
    if (atomic_fetch_sub_explicit(&conn->refcount, 1, memory_order_acq_rel) !=
        1) {
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

static struct client_conn *conn_new(struct chan *ch, unsigned max_requests)
{
    if (max_requests == 0) {
        max_requests = DEFAULT_MAX_REQUESTS;
    }
    if (max_requests > MAX_SLOTS) {
        max_requests = MAX_SLOTS;
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
    atomic_init(&conn->refcount, 1);
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

/* Ends a request: see the hand-over protocol above.  Receiver only. */
static void complete(struct client_req *req, int result)
{
    if (req->result == 0) {
        req->result = result;
    }
    struct coro *co = req->co;
    if (atomic_exchange(&req->state, CLIENT_REQ_DONE) == CLIENT_REQ_WAITING) {
        coro_wake(co);
    }
}

/* Frees a slot, or hands it to the oldest waiter.  Caller holds lock. */
static struct coro *release_slot_locked(struct client_conn *conn, int slot)
{
    conn->slots[slot] = NULL;
    struct client_slot_waiter *w = conn->slot_head;
    if (w == NULL) {
        conn->free_slots[conn->nr_free++] = slot;
        return NULL;
    }
    conn->slot_head = w->next;
    if (conn->slot_head == NULL) {
        conn->slot_tail = &conn->slot_head;
    }
    w->slot = slot;
    return w->co;
}

/*
 * Marks the connection dead with `error` and completes every request
 * with it.  Receiver only (it is the only completer).
 */
PRINTF_FMT(3, 4)
static void conn_fail(struct client_conn *conn, int error, const char *fmt, ...)
{
    pthread_mutex_lock(&conn->lock);
    if (conn->dead != 0) {
        pthread_mutex_unlock(&conn->lock);
        return;
    }
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(conn->dead_msg, sizeof conn->dead_msg, fmt, ap);
    va_end(ap);
    conn->dead = error;
    struct client_slot_waiter *waiters = conn->slot_head;
    conn->slot_head = NULL;
    conn->slot_tail = &conn->slot_head;
    struct client_req **reqs = conn->slots;
    unsigned n = conn->nr_slots;
    pthread_mutex_unlock(&conn->lock);

    /*
     * The table is ours now: with `dead` set nobody registers, and only
     * this coroutine unregisters.
     */
    for (unsigned i = 0; i < n; i++) {
        struct client_req *req = reqs[i];
        if (req != NULL) {
            reqs[i] = NULL;
            complete(req, error);
        }
    }
    while (waiters != NULL) {
        struct client_slot_waiter *next = waiters->next;
        struct coro *co = waiters->co;
        waiters->slot = -1;
        coro_wake(co);
        waiters = next;
    }
}

/* ---- Receiver ---- */

/*
 * Makes at least n (<= CLIENT_RBUF_SIZE) bytes available at rbuf+rpos.
 * Returns 0, -ENODATA at end of file on a message boundary (nothing
 * buffered, at_start), -ENOMSG at end of file inside one, or -errno.
 */
static int ensure(struct client_conn *conn, size_t n, bool at_start)
{
    if (conn->rlen - conn->rpos >= n) {
        return 0;
    }
    if (conn->rpos > 0) {
        memmove(conn->rbuf, conn->rbuf + conn->rpos, conn->rlen - conn->rpos);
        conn->rlen -= conn->rpos;
        conn->rpos = 0;
    }
    while (conn->rlen < n) {
        size_t ask = CLIENT_RBUF_SIZE - conn->rlen;
        if (conn->read_hint < ask && conn->rlen + conn->read_hint >= n) {
            ask = conn->read_hint;
        }
        ssize_t r = chan_read_some(conn->ch, conn->rbuf + conn->rlen, ask);
        if (r == 0) {
            return at_start && conn->rlen == 0 ? -ENODATA : -ENOMSG;
        }
        if (r < 0) {
            return (int)r;
        }
        conn->rlen += (size_t)r;
    }
    return 0;
}

/* Reads n bytes into dst (or drops them when dst is NULL). */
static int recv_into(struct client_conn *conn, void *dst, uint64_t n)
{
    uint8_t *d = dst;
    while (n > 0) {
        size_t avail = conn->rlen - conn->rpos;
        if (avail == 0 && n >= CLIENT_DIRECT_MIN && d != NULL) {
            conn->went_direct = true;
            return chan_read_all(conn->ch, d, n);
        }
        if (avail == 0) {
            int r = ensure(conn, 1, false);
            if (r < 0) {
                return r;
            }
            avail = conn->rlen - conn->rpos;
        }
        size_t take = avail < n ? avail : (size_t)n;
        if (d != NULL) {
            memcpy(d, conn->rbuf + conn->rpos, take);
            d += take;
        }
        conn->rpos += take;
        n -= take;
    }
    return 0;
}

/*
 * Reads a chunk payload of `len` bytes: a pointer into the receive
 * buffer when it fits, else into *heap (which the caller frees).
 */
static int recv_payload(struct client_conn *conn, uint64_t len,
                        const uint8_t **out, uint8_t **heap)
{
    *heap = NULL;
    if (len <= CLIENT_RBUF_SIZE) {
        int r = ensure(conn, len, false);
        if (r < 0) {
            return r;
        }
        *out = conn->rbuf + conn->rpos;
        conn->rpos += len;
        return 0;
    }
    if (len > MAX_CHUNK_PAYLOAD) {
        return -EBADMSG;
    }
    *heap = malloc(len);
    if (*heap == NULL) {
        return -ENOMEM;
    }
    int r = recv_into(conn, *heap, len);
    if (r < 0) {
        free(*heap);
        *heap = NULL;
        return r;
    }
    *out = *heap;
    return 0;
}

static struct client_req *lookup(struct client_conn *conn, uint64_t cookie)
{
    unsigned slot = (unsigned)(cookie & (MAX_SLOTS - 1));
    struct client_req *req = NULL;
    pthread_mutex_lock(&conn->lock);
    if (slot < conn->nr_slots && conn->slots[slot] != NULL &&
        conn->slots[slot]->cookie == cookie) {
        req = conn->slots[slot];
    }
    pthread_mutex_unlock(&conn->lock);
    return req;
}

/* The last chunk of req's reply is in: unregister and complete it. */
static void finish(struct client_conn *conn, struct client_req *req)
{
    int result = 0;
    if (req->result == 0 && conn->info.structured) {
        if (req->type == PROTO_CMD_READ && req->data_seen != req->length) {
            result = -EIO; /* the server left part of the range out */
        }
        if (req->type == PROTO_CMD_BLOCK_STATUS && req->ext_n == 0) {
            result = -EIO;
        }
    }
    unsigned slot = (unsigned)(req->cookie & (MAX_SLOTS - 1));
    pthread_mutex_lock(&conn->lock);
    struct coro *next = release_slot_locked(conn, (int)slot);
    pthread_mutex_unlock(&conn->lock);
    complete(req, result);
    if (next != NULL) {
        coro_wake(next);
    }
}

/* Stores the extents of a base:allocation block status payload. */
static void store_extents(struct client_conn *conn, struct client_req *req,
                          const struct proto_block_status *bs)
{
    if (!conn->info.has_alloc || bs->context_id != conn->info.alloc_id ||
        req->ext_n > 0) {
        return;
    }
    uint64_t off = req->offset;
    for (size_t i = 0; i < bs->count && req->ext_n < req->ext_cap; i++) {
        struct proto_extent e;
        proto_block_status_extent(bs, i, &e);
        req->ext[req->ext_n].offset = off;
        req->ext[req->ext_n].length = e.length;
        req->ext[req->ext_n].flags = (uint32_t)e.status;
        req->ext_n++;
        off += e.length;
    }
}

/* Checks that [off, off+len) lies inside req's range. */
static bool in_range(const struct client_req *req, uint64_t off, uint64_t len)
{
    return off >= req->offset && len <= req->length &&
           off - req->offset <= req->length - len;
}

/* Handles one structured chunk of req.  Returns 0 or -errno (fatal). */
static int recv_chunk(struct client_conn *conn, const struct proto_reply *rep,
                      struct client_req *req, char *why, size_t why_len)
{
    const uint8_t *p;
    uint8_t *heap = NULL;
    int r;

    if (proto_check_chunk(rep) < 0) {
        snprintf(why, why_len, "malformed reply chunk (type %u, length %llu)",
                 rep->type, (unsigned long long)rep->length);
        return -EBADMSG;
    }
    switch (rep->type) {
    case PROTO_REPLY_TYPE_NONE:
        return 0;
    case PROTO_REPLY_TYPE_OFFSET_DATA: {
        uint64_t off, dlen;
        r = ensure(conn, 8, false);
        if (r < 0) {
            return r;
        }
        proto_decode_chunk_offset_data(conn->rbuf + conn->rpos, 8, rep->length,
                                       &off, &dlen);
        conn->rpos += 8;
        if (req->type != PROTO_CMD_READ || !in_range(req, off, dlen)) {
            snprintf(why, why_len, "data chunk outside the request");
            return -EBADMSG;
        }
        req->data_seen += dlen;
        return recv_into(conn, req->buf + (off - req->offset), dlen);
    }
    case PROTO_REPLY_TYPE_OFFSET_HOLE: {
        uint64_t off;
        uint32_t size;
        r = recv_payload(conn, rep->length, &p, &heap);
        if (r < 0) {
            return r;
        }
        r = proto_decode_chunk_offset_hole(p, rep->length, &off, &size);
        if (r < 0 || req->type != PROTO_CMD_READ || !in_range(req, off, size)) {
            snprintf(why, why_len, "hole chunk outside the request");
            return -EBADMSG;
        }
        memset(req->buf + (off - req->offset), 0, size);
        req->data_seen += size;
        return 0;
    }
    case PROTO_REPLY_TYPE_BLOCK_STATUS:
    case PROTO_REPLY_TYPE_BLOCK_STATUS_EXT: {
        struct proto_block_status bs;
        r = recv_payload(conn, rep->length, &p, &heap);
        if (r < 0) {
            snprintf(why, why_len, "block status chunk too long");
            return r;
        }
        r = proto_decode_chunk_block_status(
            p, rep->length, rep->type == PROTO_REPLY_TYPE_BLOCK_STATUS_EXT,
            &bs);
        if (r < 0 || req->type != PROTO_CMD_BLOCK_STATUS) {
            free(heap);
            snprintf(why, why_len, "unexpected block status chunk");
            return -EBADMSG;
        }
        store_extents(conn, req, &bs);
        free(heap);
        return 0;
    }
    default: {
        struct proto_chunk_error ce;
        r = recv_payload(conn, rep->length, &p, &heap);
        if (r < 0) {
            snprintf(why, why_len, "error chunk too long");
            return r;
        }
        r = proto_decode_chunk_error(p, rep->length, rep->type, &ce);
        free(heap);
        if (r < 0) {
            snprintf(why, why_len, "malformed error chunk");
            return -EBADMSG;
        }
        if (req->result == 0) {
            req->result = -proto_nbd_to_errno(ce.error);
        }
        return 0;
    }
    }
}

/* Reads and handles one reply (or chunk).  Returns 0 or -errno. */
static int recv_one(struct client_conn *conn, char *why, size_t why_len)
{
    conn->read_hint = conn->went_direct ? CLIENT_HEADER_READ : CLIENT_RBUF_SIZE;
    conn->went_direct = false;
    int r = ensure(conn, 4, true);
    if (r < 0) {
        return r;
    }
    int kind =
        proto_peek_reply_kind(conn->rbuf + conn->rpos, 4, conn->info.extended);
    if (kind < 0) {
        snprintf(why, why_len, "bad reply magic");
        return -EBADMSG;
    }
    size_t hsize = proto_reply_header_size((enum proto_reply_kind)kind);
    r = ensure(conn, hsize, false);
    if (r < 0) {
        return r;
    }
    struct proto_reply rep;
    r = proto_decode_reply(conn->rbuf + conn->rpos, hsize, conn->info.extended,
                           &rep);
    if (r < 0) {
        snprintf(why, why_len, "malformed reply header");
        return -EBADMSG;
    }
    conn->rpos += hsize;
    if (kind != PROTO_REPLY_SIMPLE && !conn->info.structured) {
        snprintf(why, why_len, "structured reply that was not negotiated");
        return -EBADMSG;
    }
    struct client_req *req = lookup(conn, rep.cookie);
    if (req == NULL) {
        snprintf(why, why_len, "reply with unknown cookie %#llx",
                 (unsigned long long)rep.cookie);
        return -EBADMSG;
    }
    if (kind == PROTO_REPLY_SIMPLE) {
        if (rep.error != 0) {
            req->result = -proto_nbd_to_errno(rep.error);
        } else if (req->type == PROTO_CMD_READ) {
            r = recv_into(conn, req->buf, req->length);
            if (r < 0) {
                return r;
            }
            req->data_seen = req->length;
        } else if (req->type == PROTO_CMD_BLOCK_STATUS) {
            snprintf(why, why_len, "simple reply to NBD_CMD_BLOCK_STATUS");
            return -EBADMSG;
        }
        if (req->type == PROTO_CMD_READ) {
            req->data_seen = req->length; /* a simple error covers it all */
        }
        finish(conn, req);
        return 0;
    }
    r = recv_chunk(conn, &rep, req, why, why_len);
    if (r < 0) {
        return r;
    }
    if (rep.flags & PROTO_REPLY_FLAG_DONE) {
        finish(conn, req);
    }
    return 0;
}

static void recv_entry(void *arg)
{
    struct client_conn *conn = arg;
    char why[160] = "";
    int r;
    do {
        r = recv_one(conn, why, sizeof why);
    } while (r == 0);

    if (r == -ENODATA) {
        conn_fail(conn, -ECONNRESET, "the server closed the connection");
    } else if (r == -EBADMSG) {
        conn_fail(conn, -EPROTO, "protocol error from the server: %s", why);
    } else if (r == -ENOMSG) {
        conn_fail(conn, -ECONNRESET,
                  "the server closed the connection in the middle of a "
                  "reply");
    } else {
        conn_fail(conn, r, "connection to the server lost: %s", strerror(-r));
    }
    chan_shutdown(conn->ch, SHUT_RDWR);

    pthread_mutex_lock(&conn->lock);
    conn->recv_done = true;
    struct coro *closer = conn->closer;
    conn->closer = NULL;
    pthread_mutex_unlock(&conn->lock);
    if (closer != NULL) {
        coro_wake(closer);
    }
    conn_unref(conn);
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
    struct client_conn *conn = conn_new(ch, opts->max_requests);
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
        conn_unref(conn);
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
        conn_unref(conn);
        conn = NULL;
    }
    if (conn == NULL) {
        return NULL;
    }
    struct loop *loop = opts->recv_loop;
    if (loop == NULL) {
        loop = coro_loop(coro_self());
    }
    struct coro *co = coro_new(recv_entry, conn, loop);
    if (co == NULL) {
        err_set_errno(err, errno, "creating the reply receiver");
        conn_unref(conn);
        return NULL;
    }
    atomic_fetch_add_explicit(&conn->refcount, 1, memory_order_relaxed);
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
    conn_unref(conn);
}

/* ---- Requests ---- */

/* Takes a free slot, waiting for one.  Returns it, or the dead error. */
static int take_slot(struct client_conn *conn, struct client_req *req)
{
    pthread_mutex_lock(&conn->lock);
    if (conn->dead != 0) {
        int dead = conn->dead;
        pthread_mutex_unlock(&conn->lock);
        return dead;
    }
    int slot;
    if (conn->nr_free > 0) {
        slot = conn->free_slots[--conn->nr_free];
    } else {
        struct client_slot_waiter w = {.co = coro_self(), .slot = -1};
        *conn->slot_tail = &w;
        conn->slot_tail = &w.next;
        pthread_mutex_unlock(&conn->lock);
        coro_yield();
        pthread_mutex_lock(&conn->lock);
        /*
         * The connection may have died between the hand-over and now:
         * its requests were failed already, so registering would wait
         * forever.  The slot is lost with the connection.
         */
        if (w.slot < 0 || conn->dead != 0) {
            int dead = conn->dead;
            pthread_mutex_unlock(&conn->lock);
            return dead;
        }
        slot = w.slot;
    }
    conn->generation++;
    req->cookie = (conn->generation << CLIENT_SLOT_BITS) | (uint64_t)slot;
    conn->slots[slot] = req;
    pthread_mutex_unlock(&conn->lock);
    return slot;
}

static int issue(struct client_conn *conn, struct client_req *req,
                 uint16_t flags, const void *payload, size_t payload_len)
{
    req->co = coro_self();
    req->result = 0;
    req->data_seen = 0;
    req->ext_n = 0;
    atomic_init(&req->state, CLIENT_REQ_SENDING);
    int slot = take_slot(conn, req);
    if (slot < 0) {
        return slot;
    }
    struct proto_request pr = {
        .flags = flags,
        .type = req->type,
        .cookie = req->cookie,
        .offset = req->offset,
        .length = req->length,
    };
    uint8_t hdr[PROTO_EXTENDED_REQUEST_SIZE];
    ssize_t hlen =
        proto_encode_request(hdr, sizeof hdr, &pr, conn->info.extended);
    struct iovec iov[2] = {
        {.iov_base = hdr, .iov_len = hlen > 0 ? (size_t)hlen : 0},
        {.iov_base = (void *)payload, .iov_len = payload_len},
    };
    co_mutex_lock(&conn->send_lock);
    int r = hlen < 0 ? (int)hlen : chan_writev_all(conn->ch, iov, 2);
    co_mutex_unlock(&conn->send_lock);
    if (r < 0) {
        /* The receiver sees the socket go and fails the request. */
        chan_shutdown(conn->ch, SHUT_RDWR);
        chan_wake(conn->ch, CHAN_IN);
    }
    int expected = CLIENT_REQ_SENDING;
    if (atomic_compare_exchange_strong(&req->state, &expected,
                                       CLIENT_REQ_WAITING)) {
        coro_yield();
    }
    if (atomic_load(&req->state) != CLIENT_REQ_DONE) {
        BUG("client request resumed before its reply");
    }
    return req->result;
}

/* Checks a data command against the export before sending it. */
static int check_range(const struct client_conn *c, uint64_t len,
                       uint64_t offset, uint16_t needed_flag)
{
    const struct client_info *info = &c->info;
    if (needed_flag != 0 && !(info->tx_flags & needed_flag)) {
        return -ENOTSUP;
    }
    if (offset > info->size || len > info->size - offset) {
        return -EINVAL;
    }
    if (!info->extended && len > UINT32_MAX) {
        return -EOVERFLOW;
    }
    return 0;
}

static int check_flags(const struct client_conn *c, uint16_t flags)
{
    if ((flags & PROTO_CMD_FLAG_FUA) &&
        !(c->info.tx_flags & PROTO_FLAG_SEND_FUA)) {
        return -ENOTSUP;
    }
    return 0;
}

int client_pread(struct client_conn *c, void *buf, size_t len, uint64_t offset,
                 uint16_t flags)
{
    int r = check_range(c, len, offset, 0);
    if (r < 0) {
        return r;
    }
    if (len > c->info.block_max) {
        return -EINVAL;
    }
    if (len == 0) {
        return 0;
    }
    struct client_req req = {
        .type = PROTO_CMD_READ, .offset = offset, .length = len, .buf = buf};
    return issue(c, &req, flags, NULL, 0);
}

int client_pwrite(struct client_conn *c, const void *buf, size_t len,
                  uint64_t offset, uint16_t flags)
{
    if (c->info.tx_flags & PROTO_FLAG_READ_ONLY) {
        return -EPERM;
    }
    int r = check_range(c, len, offset, 0);
    if (r == 0) {
        r = check_flags(c, flags);
    }
    if (r < 0) {
        return r;
    }
    if (len > c->info.block_max) {
        return -EINVAL;
    }
    if (len == 0) {
        return 0;
    }
    struct client_req req = {
        .type = PROTO_CMD_WRITE, .offset = offset, .length = len};
    return issue(c, &req, flags, buf, len);
}

int client_flush(struct client_conn *c, uint16_t flags)
{
    if (!(c->info.tx_flags & PROTO_FLAG_SEND_FLUSH)) {
        return -ENOTSUP;
    }
    struct client_req req = {.type = PROTO_CMD_FLUSH};
    return issue(c, &req, flags, NULL, 0);
}

static int simple_cmd(struct client_conn *c, uint16_t type, uint64_t len,
                      uint64_t offset, uint16_t flags, uint16_t needed)
{
    if (type != PROTO_CMD_CACHE && (c->info.tx_flags & PROTO_FLAG_READ_ONLY)) {
        return -EPERM;
    }
    int r = check_range(c, len, offset, needed);
    if (r == 0) {
        r = check_flags(c, flags);
    }
    if (r < 0) {
        return r;
    }
    if (len == 0) {
        return 0;
    }
    struct client_req req = {.type = type, .offset = offset, .length = len};
    return issue(c, &req, flags, NULL, 0);
}

int client_trim(struct client_conn *c, uint64_t len, uint64_t offset,
                uint16_t flags)
{
    return simple_cmd(c, PROTO_CMD_TRIM, len, offset, flags,
                      PROTO_FLAG_SEND_TRIM);
}

int client_write_zeroes(struct client_conn *c, uint64_t len, uint64_t offset,
                        uint16_t flags)
{
    if ((flags & PROTO_CMD_FLAG_FAST_ZERO) &&
        !(c->info.tx_flags & PROTO_FLAG_SEND_FAST_ZERO)) {
        return -ENOTSUP;
    }
    return simple_cmd(c, PROTO_CMD_WRITE_ZEROES, len, offset, flags,
                      PROTO_FLAG_SEND_WRITE_ZEROES);
}

int client_cache(struct client_conn *c, uint64_t len, uint64_t offset,
                 uint16_t flags)
{
    return simple_cmd(c, PROTO_CMD_CACHE, len, offset, flags,
                      PROTO_FLAG_SEND_CACHE);
}

int client_block_status(struct client_conn *c, uint64_t len, uint64_t offset,
                        uint16_t flags, struct client_extent *ext, size_t cap)
{
    if (!c->info.has_alloc) {
        return -ENOTSUP;
    }
    if (cap == 0 || len == 0) {
        return -EINVAL;
    }
    if (!c->info.extended && len > UINT32_MAX) {
        len = UINT32_MAX -
              (UINT32_MAX % (c->info.block_min > 0 ? c->info.block_min : 1));
    }
    int r = check_range(c, len, offset, 0);
    if (r < 0) {
        return r;
    }
    struct client_req req = {.type = PROTO_CMD_BLOCK_STATUS,
                             .offset = offset,
                             .length = len,
                             .ext = ext,
                             .ext_cap = cap};
    r = issue(c, &req, flags, NULL, 0);
    return r < 0 ? r : (int)req.ext_n;
}

/* ---- Pools ---- */

int client_pool_connect(struct client_pool *pool, const struct client_uri *uri,
                        const struct client_opts *opts, unsigned count,
                        const struct loop_group *loops, struct err *err)
{
    struct client_opts o = {0};
    struct tls_creds *own = NULL;
    int r = 0;
    if (opts != NULL) {
        o = *opts;
    }
    if (count == 0) {
        count = 1;
    }
    pool->count = 0;
    pool->conns = calloc(count, sizeof *pool->conns);
    if (pool->conns == NULL) {
        return err_set(err, ENOMEM, "out of memory");
    }
    if (uri->tls && o.tls_creds == NULL) {
        /* Once for the pool: every connection shares them read-only. */
        struct err e = {0};
        own = client_tls_creds_new(uri, &e);
        if (own == NULL) {
            r = err_set(err, e.errnum, "%s", e.msg);
            goto out_close;
        }
        o.tls_creds = own;
    }
    for (unsigned i = 0; i < count; i++) {
        if (loops != NULL) {
            o.recv_loop = loops->loops[i % loops->count];
        }
        struct client_conn *c = client_connect(uri, &o, err);
        if (c == NULL) {
            r = -(err != NULL && err->errnum != 0 ? err->errnum : EIO);
            goto out_close;
        }
        pool->conns[pool->count++] = c;
        if (i == 0 && !(c->info.tx_flags & PROTO_FLAG_CAN_MULTI_CONN)) {
            break;
        }
    }
    tls_creds_unref(own);
    return 0;

out_close:
    tls_creds_unref(own);
    client_pool_close(pool);
    return r;
}

struct client_conn *client_pool_get(const struct client_pool *pool, unsigned i)
{
    return pool->conns[i % pool->count];
}

void client_pool_close(struct client_pool *pool)
{
    for (unsigned i = 0; i < pool->count; i++) {
        client_close(pool->conns[i]);
    }
    free(pool->conns);
    pool->conns = NULL;
    pool->count = 0;
}
