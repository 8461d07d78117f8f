/* SPDX-License-Identifier: MIT */
/*
 * The reply receiver: one coroutine per connection, on opts->recv_loop,
 * that reads simple replies and structured reply chunks (NBD spec,
 * "Transmission phase"), matches each to its request by cookie, fills
 * the request's buffer or extent array, and completes the request.
 *
 * This file is the only completer: lookup, unregistering a slot (or
 * handing it to a coroutine waiting in client-cmd.c's take_slot), the
 * DONE exchange, and failing every request when the connection breaks
 * all happen here, on the receiver coroutine, following the hand-over
 * protocol in client-int.h.  The receive buffer (rbuf, rpos, rlen,
 * read_hint, went_direct) is the receiver's alone; the slot table is
 * touched only under `lock`.  Replies coalesce into reads of up to
 * CLIENT_RBUF_SIZE, and a long READ payload is read straight into its
 * destination.
 */
#include "client-int.h"
#include "nbdsrv/coro.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

/* Largest structured reply payload accepted besides READ data. */
#define MAX_CHUNK_PAYLOAD (64u * 1024 * 1024)

/* Ends a request (the hand-over protocol in client-int.h).  Receiver only. */
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
static void fail_all(struct client_conn *conn, int error, const char *fmt, ...)
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
    unsigned slot = (unsigned)(cookie & (CLIENT_MAX_SLOTS - 1));
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
    unsigned slot = (unsigned)(req->cookie & (CLIENT_MAX_SLOTS - 1));
    pthread_mutex_lock(&conn->lock);
    struct coro *next = release_slot_locked(conn, (int)slot);
    pthread_mutex_unlock(&conn->lock);
    complete(req, result);
    if (next != NULL) {
        coro_wake(next);
    }
}

/* Stores the extents of the block status payload of the context asked. */
static void store_extents(struct client_conn *conn, struct client_req *req,
                          const struct proto_block_status *bs)
{
    (void)conn;
    if (bs->context_id != req->context_id || req->ext_n > 0) {
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

void client_recv_entry(void *arg)
{
    struct client_conn *conn = arg;
    char why[160] = "";
    int r;
    do {
        r = recv_one(conn, why, sizeof why);
    } while (r == 0);

    if (r == -ENODATA) {
        fail_all(conn, -ECONNRESET, "the server closed the connection");
    } else if (r == -EBADMSG) {
        fail_all(conn, -EPROTO, "protocol error from the server: %s", why);
    } else if (r == -ENOMSG) {
        fail_all(conn, -ECONNRESET,
                 "the server closed the connection in the middle of a "
                 "reply");
    } else {
        fail_all(conn, r, "connection to the server lost: %s", strerror(-r));
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
    client_conn_unref(conn);
}
