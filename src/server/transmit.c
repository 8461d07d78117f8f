/* SPDX-License-Identifier: MIT */
/*
 * The transmission phase, request side: each request coroutine checks its
 * request, does the backend I/O on the ring of the loop it runs on, and
 * sends the reply under the connection's send_lock (NBD protocol,
 * "Transmission phase", "Structured replies", "Extended headers").
 *
 * Reply shapes: without structured replies, a simple reply (plus data for
 * READ).  With them, one chunk with NBD_REPLY_FLAG_DONE: NONE for
 * success, OFFSET_DATA or OFFSET_HOLE for READ, ERROR for failures; block
 * status is one BLOCK_STATUS(_EXT) chunk per selected context, the last
 * with DONE.  Extended headers use the 32-byte
 * header for the same chunks.  A READ is always one chunk, so DF is
 * honoured by construction.
 */
#include "nbdsrv/bufpool.h"
#include "nbdsrv/coro.h"
#include "nbdsrv/log.h"
#include "server-int.h"

#include <errno.h>
#include <string.h>
#include <sys/socket.h>

/* Reads at least this long are checked for being one hole. */
#define HOLE_CHECK_MIN (64u * 1024)
/* Extents in one BLOCK_STATUS reply. */
#define MAX_EXTENTS 1024u

/* What do_block_status takes from the pools for `max` extents. */
static size_t block_status_ext_size(unsigned max)
{
    return max * sizeof(struct backend_extent);
}

static size_t block_status_out_size(unsigned max)
{
    return max * sizeof(struct proto_extent);
}

/* One chunk per selected context, in one buffer. */
static size_t block_status_reply_size(const struct conn *conn, unsigned max)
{
    size_t contexts = (size_t)__builtin_popcount(conn->meta);
    return contexts * (PROTO_REPLY_HEADER_MAX + 8 + 16 * (size_t)max);
}

uint64_t request_memory(const struct conn *conn,
                        const struct proto_request *req, uint64_t payload)
{
    uint64_t bytes = bufpool_alloc_size(sizeof(struct request));
    if (payload > 0) {
        /* A WRITE's data, or a payload no command takes (read into a
         * small sink, but counted as it arrives). */
        return bytes + bufpool_alloc_size(payload);
    }
    switch (req->type) {
    case PROTO_CMD_READ:
        /* Over the maximum it is refused before anything is allocated. */
        if (req->length <= conn->max_payload) {
            bytes += bufpool_alloc_size(req->length);
        }
        break;
    case PROTO_CMD_BLOCK_STATUS: {
        unsigned max = (req->flags & PROTO_CMD_FLAG_REQ_ONE) ? 1 : MAX_EXTENTS;
        bytes += bufpool_alloc_size(block_status_ext_size(max)) +
                 bufpool_alloc_size(block_status_out_size(max)) +
                 bufpool_alloc_size(block_status_reply_size(conn, max));
        break;
    }
    default:
        break;
    }
    return bytes;
}

static struct proto_reply chunk_header(const struct conn *conn,
                                       const struct proto_request *req)
{
    struct proto_reply hdr = {
        .kind = conn->extended ? PROTO_REPLY_EXTENDED : PROTO_REPLY_STRUCTURED,
        .flags = PROTO_REPLY_FLAG_DONE,
        .cookie = req->cookie,
        .offset = req->offset,
    };
    return hdr;
}

int transmit_send_error(struct conn *conn, const struct proto_request *req,
                        int errnum)
{
    uint8_t buf[PROTO_REPLY_HEADER_MAX + 8];
    uint32_t nbd_error = proto_errno_to_nbd(errnum);
    ssize_t n;
    if (conn->structured) {
        struct proto_reply hdr = chunk_header(conn, req);
        n = proto_build_chunk_error(buf, sizeof buf, &hdr, nbd_error, NULL, 0);
    } else {
        n = proto_encode_simple_reply(buf, sizeof buf, req->cookie, nbd_error);
    }
    if (n < 0) {
        BUG("error reply did not fit");
    }
    log_debug("%s: %s at %llu+%llu: %s", conn->peer, proto_cmd_name(req->type),
              (unsigned long long)req->offset, (unsigned long long)req->length,
              strerror(errnum));
    struct iovec iov = {buf, (size_t)n};
    return reply_send(conn, &iov, 1);
}

static int send_ok(struct conn *conn, const struct proto_request *req)
{
    uint8_t buf[PROTO_REPLY_HEADER_MAX];
    ssize_t n;
    if (conn->structured) {
        struct proto_reply hdr = chunk_header(conn, req);
        n = proto_build_chunk_none(buf, sizeof buf, &hdr);
    } else {
        n = proto_encode_simple_reply(buf, sizeof buf, req->cookie, 0);
    }
    struct iovec iov = {buf, (size_t)n};
    return reply_send(conn, &iov, 1);
}

/* Sends an error reply; returns errnum, what the request ended with. */
static int fail_request(struct conn *conn, const struct proto_request *req,
                        int errnum)
{
    transmit_send_error(conn, req, errnum);
    return errnum;
}

/* Keeps errors the spec gives a meaning to; any other failure of the
 * storage is an I/O error to the client. */
static int storage_errno(int r)
{
    switch (-r) {
    case ENOSPC:
    case EDQUOT:
    case EFBIG:
    case EPERM:
    case EROFS:
    case ENOTSUP:
    case ENOMEM:
        return -r;
    default:
        return EIO;
    }
}

/*
 * The command flags a request of `type` may carry.  NBD_CMD_FLAG_FUA is
 * valid on every command once NBD_FLAG_SEND_FUA is advertised ("the
 * server MUST accept all commands with this bit set (even by ignoring
 * the bit)"): it only matters for commands that write, and the others
 * ignore it.
 */
static uint16_t allowed_flags(const struct conn *conn, uint16_t type)
{
    uint16_t fua =
        (conn->tx_flags & PROTO_FLAG_SEND_FUA) ? PROTO_CMD_FLAG_FUA : 0;
    switch (type) {
    case PROTO_CMD_READ:
        return fua | (conn->structured ? PROTO_CMD_FLAG_DF : 0);
    case PROTO_CMD_WRITE:
        return fua | (conn->extended ? PROTO_CMD_FLAG_PAYLOAD_LEN : 0);
    case PROTO_CMD_WRITE_ZEROES:
        return fua | PROTO_CMD_FLAG_NO_HOLE |
               ((conn->tx_flags & PROTO_FLAG_SEND_FAST_ZERO)
                    ? PROTO_CMD_FLAG_FAST_ZERO
                    : 0);
    case PROTO_CMD_BLOCK_STATUS:
        return fua | PROTO_CMD_FLAG_REQ_ONE;
    default:
        /* FLUSH, TRIM, CACHE; DISC never gets here. */
        return fua;
    }
}

/* Returns 0 or the errno the request is refused with. */
static int validate(const struct conn *conn, const struct proto_request *req)
{
    uint16_t type = req->type;
    switch (type) {
    case PROTO_CMD_READ:
    case PROTO_CMD_WRITE:
    case PROTO_CMD_FLUSH:
    case PROTO_CMD_CACHE:
    case PROTO_CMD_BLOCK_STATUS:
        break;
    case PROTO_CMD_TRIM:
        if (!(conn->tx_flags & PROTO_FLAG_SEND_TRIM) &&
            !(conn->tx_flags & PROTO_FLAG_READ_ONLY)) {
            return EINVAL;
        }
        break;
    case PROTO_CMD_WRITE_ZEROES:
        if (!(conn->tx_flags & PROTO_FLAG_SEND_WRITE_ZEROES) &&
            !(conn->tx_flags & PROTO_FLAG_READ_ONLY)) {
            return EINVAL;
        }
        break;
    default:
        return EINVAL;
    }
    if (req->flags & ~allowed_flags(conn, type)) {
        return EINVAL;
    }
    bool writes = type == PROTO_CMD_WRITE || type == PROTO_CMD_TRIM ||
                  type == PROTO_CMD_WRITE_ZEROES;
    if (writes && conn->exp->read_only) {
        return EPERM;
    }
    if (type == PROTO_CMD_FLUSH) {
        return 0;
    }
    uint64_t size = backend_size(conn->exp->be);
    if (req->offset > size || req->length > size - req->offset) {
        return type == PROTO_CMD_WRITE || type == PROTO_CMD_WRITE_ZEROES
                   ? ENOSPC
                   : EINVAL;
    }
    if (type == PROTO_CMD_READ && req->length > conn->max_payload) {
        return (req->flags & PROTO_CMD_FLAG_DF) ? EOVERFLOW : EINVAL;
    }
    if (type == PROTO_CMD_BLOCK_STATUS &&
        (conn->meta == 0 || req->length == 0)) {
        return EINVAL;
    }
    return 0;
}

/* Returns 0, or the errno of the error reply it sent. */
static int do_read(struct conn *conn, const struct proto_request *req)
{
    struct backend *be = conn->exp->be;
    uint32_t len = (uint32_t)req->length;
    uint8_t hdr_buf[PROTO_REPLY_HEADER_MAX + 16];
    struct iovec iov[2];
    ssize_t n;

    if (len == 0) {
        send_ok(conn, req);
        return 0;
    }
    if (conn->structured && len >= HOLE_CHECK_MIN && backend_can_extents(be) &&
        backend_range_is_hole(be, req->offset, len) == 1) {
        struct proto_reply hdr = chunk_header(conn, req);
        n = proto_build_chunk_offset_hole(hdr_buf, sizeof hdr_buf, &hdr,
                                          req->offset, len);
        iov[0] = (struct iovec){hdr_buf, (size_t)n};
        reply_send(conn, iov, 1);
        return 0;
    }
    void *data = bufpool_get(len);
    if (data == NULL) {
        return fail_request(conn, req, ENOMEM);
    }
    int r = backend_pread(be, data, len, req->offset);
    if (r < 0) {
        bufpool_put(data, len);
        return fail_request(conn, req, storage_errno(r));
    }
    if (conn->structured) {
        struct proto_reply hdr = chunk_header(conn, req);
        n = proto_build_chunk_offset_data(hdr_buf, sizeof hdr_buf, &hdr,
                                          req->offset, len);
    } else {
        n = proto_encode_simple_reply(hdr_buf, sizeof hdr_buf, req->cookie, 0);
    }
    iov[0] = (struct iovec){hdr_buf, (size_t)n};
    iov[1] = (struct iovec){data, len};
    reply_send(conn, iov, 2);
    bufpool_put(data, len);
    return 0;
}

/* One BLOCK_STATUS(_EXT) chunk for each selected context, the last one
 * with NBD_REPLY_FLAG_DONE, sent together.  Returns 0, or the errno of
 * the error reply it sent. */
static int do_block_status(struct conn *conn, const struct proto_request *req)
{
    unsigned max = (req->flags & PROTO_CMD_FLAG_REQ_ONE) ? 1 : MAX_EXTENTS;
    uint64_t len = req->length;
    if (!conn->extended && len > UINT32_MAX) {
        len = UINT32_MAX;
    }
    struct backend_extent *ext = bufpool_get(block_status_ext_size(max));
    struct proto_extent *out = bufpool_get(block_status_out_size(max));
    size_t reply_size = block_status_reply_size(conn, max);
    uint8_t *reply = bufpool_get(reply_size);
    size_t used = 0;
    int r;
    if (ext == NULL || out == NULL || reply == NULL) {
        r = fail_request(conn, req, ENOMEM);
        goto out;
    }
    for (unsigned m = 0; m < server_meta_count(conn->meta_dirty); m++) {
        if (!(conn->meta & SERVER_META_BIT(m))) {
            continue;
        }
        int nr = server_meta_extents(conn->exp, conn->meta_dirty, m,
                                     req->offset, len, ext, out, max);
        if (nr <= 0) {
            r = fail_request(conn, req, nr < 0 ? storage_errno(nr) : EIO);
            goto out;
        }
        struct proto_reply hdr = chunk_header(conn, req);
        if (conn->meta >> (m + 1) != 0) {
            hdr.flags &= (uint16_t)~PROTO_REPLY_FLAG_DONE;
        }
        ssize_t n;
        if (conn->extended) {
            n = proto_build_chunk_block_status_ext(
                reply + used, reply_size - used, &hdr, server_meta_id(m), out,
                (size_t)nr);
        } else {
            n = proto_build_chunk_block_status(reply + used, reply_size - used,
                                               &hdr, server_meta_id(m), out,
                                               (size_t)nr);
        }
        if (n < 0) {
            r = fail_request(conn, req, EIO);
            goto out;
        }
        used += (size_t)n;
    }
    struct iovec iov = {reply, used};
    reply_send(conn, &iov, 1);
    r = 0;
out:
    bufpool_put(reply, reply_size);
    bufpool_put(out, block_status_out_size(max));
    bufpool_put(ext, block_status_ext_size(max));
    return r;
}

/* Runs the request; returns 0 or the errno to reply with. */
static int execute(struct conn *conn, struct request *rq)
{
    const struct proto_request *req = &rq->req;
    struct backend *be = conn->exp->be;
    bool fua = (req->flags & PROTO_CMD_FLAG_FUA) != 0;
    int r = 0;
    switch (req->type) {
    case PROTO_CMD_WRITE:
        if (req->length > 0) {
            r = backend_pwrite(be, rq->buf, (uint32_t)req->length, req->offset,
                               fua);
        }
        break;
    case PROTO_CMD_FLUSH:
        r = backend_flush(be);
        break;
    case PROTO_CMD_TRIM:
        if (req->length > 0) {
            r = backend_trim(be, req->offset, req->length, fua);
        }
        break;
    case PROTO_CMD_WRITE_ZEROES:
        if (req->length > 0) {
            unsigned flags = 0;
            if (!(req->flags & PROTO_CMD_FLAG_NO_HOLE)) {
                flags |= BACKEND_ZERO_MAY_TRIM;
            }
            if (req->flags & PROTO_CMD_FLAG_FAST_ZERO) {
                flags |= BACKEND_ZERO_FAST;
            }
            r = backend_zero(be, req->offset, req->length, flags, fua);
        }
        break;
    case PROTO_CMD_CACHE:
        /* Advisory: one request never starts more read-ahead than the
         * largest READ it could send (up to 4 GiB, or 2^64 with extended
         * headers, fit in 28 bytes). */
        if (req->length > 0) {
            uint64_t len = req->length < conn->max_payload ? req->length
                                                           : conn->max_payload;
            r = backend_cache(be, req->offset, len);
        }
        break;
    default:
        BUG("execute: unvalidated command");
    }
    return r < 0 ? storage_errno(r) : 0;
}

int transmit_request(struct conn *conn, struct request *rq)
{
    const struct proto_request *req = &rq->req;

    int err = rq->early_error != 0 ? rq->early_error : validate(conn, req);
    if (err != 0) {
        return fail_request(conn, req, err);
    }
    if (req->type == PROTO_CMD_READ) {
        err = do_read(conn, req);
        if (err == 0) {
            /* Relaxed: a statistic (struct conn). */
            atomic_fetch_add_explicit(&conn->bytes_read, req->length,
                                      memory_order_relaxed);
        }
        return err;
    }
    if (req->type == PROTO_CMD_BLOCK_STATUS) {
        return do_block_status(conn, req);
    }
    err = execute(conn, rq);
    if (err != 0) {
        return fail_request(conn, req, err);
    }
    if (req->type == PROTO_CMD_WRITE) {
        atomic_fetch_add_explicit(&conn->bytes_written, req->length,
                                  memory_order_relaxed);
    }
    send_ok(conn, req);
    return 0;
}
