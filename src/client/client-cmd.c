/* SPDX-License-Identifier: MIT */
/*
 * Request issue and the commands: READ, WRITE, FLUSH, TRIM,
 * WRITE_ZEROES, CACHE and BLOCK_STATUS (NBD spec, "Request types").
 *
 * Each command checks its arguments against what the handshake learned
 * (client_info, immutable by now), then issue() registers the request in
 * a free slot, sends it under send_lock and parks until the receiver
 * completes it (the hand-over protocol in client-int.h).  Any coroutine
 * on any loop may issue at the same time.  This file only registers
 * requests; unregistering and completing them is client-recv.c's.  The
 * request itself lives on the issuer's stack.
 */
#include "client-int.h"
#include "nbdsrv/coro.h"
#include "nbdsrv/log.h"

#include <errno.h>
#include <sys/socket.h>

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
    /* With extended headers a payload is announced by PAYLOAD_LEN. */
    if (conn->info.extended && payload_len > 0) {
        flags |= PROTO_CMD_FLAG_PAYLOAD_LEN;
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

/* The checks of a command that changes the export (or caches it): a
 * read-only export refuses all but CACHE. */
static int check_cmd(const struct client_conn *c, uint16_t type, uint64_t len,
                     uint64_t offset, uint16_t flags, uint16_t needed)
{
    if (type != PROTO_CMD_CACHE && (c->info.tx_flags & PROTO_FLAG_READ_ONLY)) {
        return -EPERM;
    }
    int r = check_range(c, len, offset, needed);
    return r < 0 ? r : check_flags(c, flags);
}

/* Sends a READ or WRITE that passed its checks: at most block_max bytes,
 * and nothing to send when there are none. */
static int data_cmd(struct client_conn *c, struct client_req *req,
                    uint16_t flags, const void *payload, size_t payload_len)
{
    if (req->length > c->info.block_max) {
        return -EINVAL;
    }
    if (req->length == 0) {
        return 0;
    }
    return issue(c, req, flags, payload, payload_len);
}

int client_pread(struct client_conn *c, void *buf, size_t len, uint64_t offset,
                 uint16_t flags)
{
    int r = check_range(c, len, offset, 0);
    if (r < 0) {
        return r;
    }
    struct client_req req = {
        .type = PROTO_CMD_READ, .offset = offset, .length = len, .buf = buf};
    return data_cmd(c, &req, flags, NULL, 0);
}

int client_pwrite(struct client_conn *c, const void *buf, size_t len,
                  uint64_t offset, uint16_t flags)
{
    int r = check_cmd(c, PROTO_CMD_WRITE, len, offset, flags, 0);
    if (r < 0) {
        return r;
    }
    struct client_req req = {
        .type = PROTO_CMD_WRITE, .offset = offset, .length = len};
    return data_cmd(c, &req, flags, buf, len);
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
    int r = check_cmd(c, type, len, offset, flags, needed);
    if (r < 0 || len == 0) {
        return r;
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

static int block_status(struct client_conn *c, uint32_t context_id,
                        uint64_t len, uint64_t offset, uint16_t flags,
                        struct client_extent *ext, size_t cap)
{
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
                             .ext_cap = cap,
                             .context_id = context_id};
    r = issue(c, &req, flags, NULL, 0);
    return r < 0 ? r : (int)req.ext_n;
}

int client_block_status(struct client_conn *c, uint64_t len, uint64_t offset,
                        uint16_t flags, struct client_extent *ext, size_t cap)
{
    if (!c->info.has_alloc) {
        return -ENOTSUP;
    }
    return block_status(c, c->info.alloc_id, len, offset, flags, ext, cap);
}

int client_block_status_extra(struct client_conn *c, uint64_t len,
                              uint64_t offset, uint16_t flags,
                              struct client_extent *ext, size_t cap)
{
    if (!c->info.has_extra) {
        return -ENOTSUP;
    }
    return block_status(c, c->info.extra_id, len, offset, flags, ext, cap);
}
