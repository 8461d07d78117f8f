/* SPDX-License-Identifier: MIT */
/* Transmission-phase codec: requests, replies, chunks, error mapping. */
/*
 * Covers doc/proto.md "Transmission" (request message, simple reply,
 * structured reply chunk message), "Structured reply types" and "Error
 * values", plus the extended-headers extension (32-byte requests and
 * replies, NBD_REPLY_TYPE_BLOCK_STATUS_EXT).
 *
 * The request decoder and the reply encoders run once per request on the
 * hot path: they touch only the caller's buffers and a few locals.  The
 * decoders separate a lost framing (-EBADMSG: the caller cannot know
 * where the next message starts and must disconnect) from a well-framed
 * message with bad contents (-EINVAL: the caller answers with an error
 * and carries on), as the spec tells servers to do for unknown flags.
 */
#include "nbdsrv/proto.h"
#include "proto-int.h"

#include <errno.h>
#include <limits.h>
#include <string.h>

int proto_check_string(const char *s, size_t len)
{
    if (len > PROTO_STRING_MAX) {
        return -E2BIG;
    }
    if (len > 0 && memchr(s, '\0', len) != NULL) {
        return -EBADMSG;
    }
    return 0;
}

/* ---- Requests ---- */

ssize_t proto_encode_request(void *buf, size_t cap,
                             const struct proto_request *req, bool extended)
{
    uint8_t *p = buf;
    size_t n = extended ? PROTO_EXTENDED_REQUEST_SIZE : PROTO_REQUEST_SIZE;

    if (cap < n) {
        return -ENOBUFS;
    }
    if (!extended && req->length > UINT32_MAX) {
        return -EOVERFLOW;
    }
    put_u32(p, extended ? PROTO_EXTENDED_REQUEST_MAGIC : PROTO_REQUEST_MAGIC);
    put_u16(p + 4, req->flags);
    put_u16(p + 6, req->type);
    put_u64(p + 8, req->cookie);
    put_u64(p + 16, req->offset);
    if (extended) {
        put_u64(p + 24, req->length);
    } else {
        put_u32(p + 24, (uint32_t)req->length);
    }
    return (ssize_t)n;
}

int proto_decode_request(const void *buf, size_t len, bool extended,
                         struct proto_request *req)
{
    const uint8_t *p = buf;
    uint32_t known;

    if (extended) {
        if (len < PROTO_EXTENDED_REQUEST_SIZE ||
            get_u32(p) != PROTO_EXTENDED_REQUEST_MAGIC) {
            return -EBADMSG;
        }
        req->length = get_u64(p + 24);
        known = PROTO_CMD_FLAGS_ALL;
    } else {
        if (len < PROTO_REQUEST_SIZE || get_u32(p) != PROTO_REQUEST_MAGIC) {
            return -EBADMSG;
        }
        req->length = get_u32(p + 24);
        known = PROTO_CMD_FLAGS_COMPACT;
    }
    req->flags = get_u16(p + 4);
    req->type = get_u16(p + 6);
    req->cookie = get_u64(p + 8);
    req->offset = get_u64(p + 16);
    if (req->flags & ~known) {
        return -EINVAL;
    }
    return 0;
}

uint64_t proto_request_payload_len(const struct proto_request *req,
                                   bool extended)
{
    /*
     * A WRITE always carries its data.  With extended headers a client
     * should also set PAYLOAD_LEN on it, but qemu 10 does not, and its
     * data follows all the same; other commands carry a payload only
     * with PAYLOAD_LEN.
     */
    if (req->type == PROTO_CMD_WRITE) {
        return req->length;
    }
    return extended && (req->flags & PROTO_CMD_FLAG_PAYLOAD_LEN) ? req->length
                                                                 : 0;
}

/* ---- Reply headers ---- */

size_t proto_reply_header_size(enum proto_reply_kind kind)
{
    switch (kind) {
    case PROTO_REPLY_SIMPLE:
        return PROTO_SIMPLE_REPLY_SIZE;
    case PROTO_REPLY_STRUCTURED:
        return PROTO_STRUCTURED_REPLY_SIZE;
    case PROTO_REPLY_EXTENDED:
        return PROTO_EXTENDED_REPLY_SIZE;
    }
    return 0;
}

ssize_t proto_encode_reply(void *buf, size_t cap, const struct proto_reply *rep)
{
    uint8_t *p = buf;
    size_t n = proto_reply_header_size(rep->kind);

    if (n == 0) {
        return -EINVAL;
    }
    if (cap < n) {
        return -ENOBUFS;
    }
    switch (rep->kind) {
    case PROTO_REPLY_SIMPLE:
        put_u32(p, PROTO_SIMPLE_REPLY_MAGIC);
        put_u32(p + 4, rep->error);
        put_u64(p + 8, rep->cookie);
        break;
    case PROTO_REPLY_STRUCTURED:
        if (rep->length > UINT32_MAX) {
            return -EOVERFLOW;
        }
        put_u32(p, PROTO_STRUCTURED_REPLY_MAGIC);
        put_u16(p + 4, rep->flags);
        put_u16(p + 6, rep->type);
        put_u64(p + 8, rep->cookie);
        put_u32(p + 16, (uint32_t)rep->length);
        break;
    case PROTO_REPLY_EXTENDED:
        put_u32(p, PROTO_EXTENDED_REPLY_MAGIC);
        put_u16(p + 4, rep->flags);
        put_u16(p + 6, rep->type);
        put_u64(p + 8, rep->cookie);
        put_u64(p + 16, rep->offset);
        put_u64(p + 24, rep->length);
        break;
    }
    return (ssize_t)n;
}

ssize_t proto_encode_simple_reply(void *buf, size_t cap, uint64_t cookie,
                                  uint32_t error)
{
    struct proto_reply rep = {
        .kind = PROTO_REPLY_SIMPLE,
        .cookie = cookie,
        .error = error,
    };

    return proto_encode_reply(buf, cap, &rep);
}

int proto_peek_reply_kind(const void *buf, size_t len, bool extended)
{
    uint32_t magic;

    if (len < 4) {
        return -EBADMSG;
    }
    magic = get_u32(buf);
    if (extended) {
        /* With extended headers, every reply uses the extended form. */
        if (magic == PROTO_EXTENDED_REPLY_MAGIC) {
            return PROTO_REPLY_EXTENDED;
        }
        return -EBADMSG;
    }
    if (magic == PROTO_SIMPLE_REPLY_MAGIC) {
        return PROTO_REPLY_SIMPLE;
    }
    if (magic == PROTO_STRUCTURED_REPLY_MAGIC) {
        return PROTO_REPLY_STRUCTURED;
    }
    return -EBADMSG;
}

int proto_decode_reply(const void *buf, size_t len, bool extended,
                       struct proto_reply *rep)
{
    const uint8_t *p = buf;
    int kind = proto_peek_reply_kind(buf, len, extended);

    if (kind < 0) {
        return kind;
    }
    if (len < proto_reply_header_size(kind)) {
        return -EBADMSG;
    }
    memset(rep, 0, sizeof *rep);
    rep->kind = kind;
    rep->cookie = get_u64(p + 8);
    switch (rep->kind) {
    case PROTO_REPLY_SIMPLE:
        rep->error = get_u32(p + 4);
        break;
    case PROTO_REPLY_STRUCTURED:
        rep->flags = get_u16(p + 4);
        rep->type = get_u16(p + 6);
        rep->length = get_u32(p + 16);
        break;
    case PROTO_REPLY_EXTENDED:
        rep->flags = get_u16(p + 4);
        rep->type = get_u16(p + 6);
        rep->offset = get_u64(p + 16);
        rep->length = get_u64(p + 24);
        break;
    }
    return 0;
}

int proto_check_chunk(const struct proto_reply *rep)
{
    uint64_t len = rep->length;

    if (rep->kind != PROTO_REPLY_STRUCTURED &&
        rep->kind != PROTO_REPLY_EXTENDED) {
        return -EBADMSG;
    }
    switch (rep->type) {
    case PROTO_REPLY_TYPE_NONE:
        if (len != 0 || !(rep->flags & PROTO_REPLY_FLAG_DONE)) {
            return -EBADMSG;
        }
        return 0;
    case PROTO_REPLY_TYPE_OFFSET_DATA:
        return len >= 9 ? 0 : -EBADMSG;
    case PROTO_REPLY_TYPE_OFFSET_HOLE:
        return len == 12 ? 0 : -EBADMSG;
    case PROTO_REPLY_TYPE_BLOCK_STATUS:
        return len >= 12 && (len - 4) % 8 == 0 ? 0 : -EBADMSG;
    case PROTO_REPLY_TYPE_BLOCK_STATUS_EXT:
        if (rep->kind != PROTO_REPLY_EXTENDED) {
            return -EBADMSG;
        }
        return len >= 24 && (len - 8) % 16 == 0 ? 0 : -EBADMSG;
    case PROTO_REPLY_TYPE_ERROR:
        return len >= 6 ? 0 : -EBADMSG;
    case PROTO_REPLY_TYPE_ERROR_OFFSET:
        return len >= 14 ? 0 : -EBADMSG;
    default:
        /* Unknown error chunks still start with error and message. */
        if (rep->type & PROTO_REPLY_TYPE_ERR_BIT) {
            return len >= 6 ? 0 : -EBADMSG;
        }
        return -EBADMSG;
    }
}

/* ---- Chunk builders ---- */

/*
 * Writes the header of a chunk of `type` carrying `payload_len` bytes, of
 * which the builder writes `fixed` right after the header; returns the
 * header size once it is sure the header and the fixed part fit.
 */
static ssize_t chunk_start(uint8_t *p, size_t cap,
                           const struct proto_reply *hdr, uint16_t type,
                           uint16_t extra_flags, uint64_t payload_len,
                           size_t fixed)
{
    struct proto_reply rep = *hdr;
    size_t n;

    if (hdr->kind != PROTO_REPLY_STRUCTURED &&
        hdr->kind != PROTO_REPLY_EXTENDED) {
        return -EINVAL;
    }
    if (hdr->kind == PROTO_REPLY_STRUCTURED && payload_len > UINT32_MAX) {
        return -EOVERFLOW;
    }
    n = proto_reply_header_size(hdr->kind);
    if (cap < n || cap - n < fixed) {
        return -ENOBUFS;
    }
    rep.type = type;
    rep.flags |= extra_flags;
    rep.length = payload_len;
    rep.error = 0;
    return proto_encode_reply(p, cap, &rep);
}

ssize_t proto_build_chunk_none(void *buf, size_t cap,
                               const struct proto_reply *hdr)
{
    return chunk_start(buf, cap, hdr, PROTO_REPLY_TYPE_NONE,
                       PROTO_REPLY_FLAG_DONE, 0, 0);
}

ssize_t proto_build_chunk_offset_data(void *buf, size_t cap,
                                      const struct proto_reply *hdr,
                                      uint64_t offset, uint64_t data_len)
{
    uint8_t *p = buf;
    ssize_t r;

    if (data_len == 0) {
        return -EINVAL;
    }
    if (data_len > UINT64_MAX - 8) {
        return -EOVERFLOW;
    }
    r = chunk_start(p, cap, hdr, PROTO_REPLY_TYPE_OFFSET_DATA, 0, 8 + data_len,
                    8);
    if (r < 0) {
        return r;
    }
    put_u64(p + r, offset);
    return r + 8;
}

ssize_t proto_build_chunk_offset_hole(void *buf, size_t cap,
                                      const struct proto_reply *hdr,
                                      uint64_t offset, uint32_t size)
{
    uint8_t *p = buf;
    ssize_t r;

    if (size == 0) {
        return -EINVAL;
    }
    r = chunk_start(p, cap, hdr, PROTO_REPLY_TYPE_OFFSET_HOLE, 0, 12, 12);
    if (r < 0) {
        return r;
    }
    put_u64(p + r, offset);
    put_u32(p + r + 8, size);
    return r + 12;
}

ssize_t proto_build_chunk_block_status(void *buf, size_t cap,
                                       const struct proto_reply *hdr,
                                       uint32_t context_id,
                                       const struct proto_extent *ext, size_t n)
{
    uint8_t *p = buf;
    size_t payload;
    ssize_t r;

    if (n == 0) {
        return -EINVAL;
    }
    for (size_t i = 0; i < n; i++) {
        if (ext[i].length == 0 || ext[i].length > UINT32_MAX ||
            ext[i].status > UINT32_MAX) {
            return -EINVAL;
        }
    }
    /* Bound n by the buffer first so that the size cannot wrap. */
    if (n > cap / 8) {
        return -ENOBUFS;
    }
    payload = 4 + 8 * n;
    r = chunk_start(p, cap, hdr, PROTO_REPLY_TYPE_BLOCK_STATUS, 0, payload,
                    payload);
    if (r < 0) {
        return r;
    }
    p += r;
    put_u32(p, context_id);
    p += 4;
    for (size_t i = 0; i < n; i++) {
        put_u32(p, (uint32_t)ext[i].length);
        put_u32(p + 4, (uint32_t)ext[i].status);
        p += 8;
    }
    return r + (ssize_t)payload;
}

ssize_t proto_build_chunk_block_status_ext(void *buf, size_t cap,
                                           const struct proto_reply *hdr,
                                           uint32_t context_id,
                                           const struct proto_extent *ext,
                                           size_t n)
{
    uint8_t *p = buf;
    size_t payload;
    ssize_t r;

    if (n == 0 || n > UINT32_MAX || hdr->kind != PROTO_REPLY_EXTENDED) {
        return -EINVAL;
    }
    for (size_t i = 0; i < n; i++) {
        if (ext[i].length == 0) {
            return -EINVAL;
        }
    }
    if (n > cap / 16) {
        return -ENOBUFS;
    }
    payload = 8 + 16 * n;
    r = chunk_start(p, cap, hdr, PROTO_REPLY_TYPE_BLOCK_STATUS_EXT, 0, payload,
                    payload);
    if (r < 0) {
        return r;
    }
    p += r;
    put_u32(p, context_id);
    put_u32(p + 4, (uint32_t)n);
    p += 8;
    for (size_t i = 0; i < n; i++) {
        put_u64(p, ext[i].length);
        put_u64(p + 8, ext[i].status);
        p += 16;
    }
    return r + (ssize_t)payload;
}

/* ERROR and ERROR_OFFSET share everything but the trailing offset. */
static ssize_t build_error(uint8_t *p, size_t cap,
                           const struct proto_reply *hdr, uint16_t type,
                           uint32_t nbd_error, const char *msg, size_t len,
                           const uint64_t *offset)
{
    size_t payload = 6 + len + (offset != NULL ? 8 : 0);
    ssize_t r;

    if (nbd_error == 0 || proto_check_string(msg, len) < 0) {
        return -EINVAL;
    }
    r = chunk_start(p, cap, hdr, type, 0, payload, payload);
    if (r < 0) {
        return r;
    }
    p += r;
    put_u32(p, nbd_error);
    put_u16(p + 4, (uint16_t)len);
    put_bytes(p + 6, msg, len);
    if (offset != NULL) {
        put_u64(p + 6 + len, *offset);
    }
    return r + (ssize_t)payload;
}

ssize_t proto_build_chunk_error(void *buf, size_t cap,
                                const struct proto_reply *hdr,
                                uint32_t nbd_error, const char *msg, size_t len)
{
    return build_error(buf, cap, hdr, PROTO_REPLY_TYPE_ERROR, nbd_error, msg,
                       len, NULL);
}

ssize_t proto_build_chunk_error_offset(void *buf, size_t cap,
                                       const struct proto_reply *hdr,
                                       uint32_t nbd_error, const char *msg,
                                       size_t len, uint64_t offset)
{
    return build_error(buf, cap, hdr, PROTO_REPLY_TYPE_ERROR_OFFSET, nbd_error,
                       msg, len, &offset);
}

/* ---- Chunk payload decoders ---- */

int proto_decode_chunk_offset_data(const void *payload, size_t len,
                                   uint64_t chunk_len, uint64_t *offset,
                                   uint64_t *data_len)
{
    if (chunk_len < 9 || len < 8) {
        return -EBADMSG;
    }
    *offset = get_u64(payload);
    *data_len = chunk_len - 8;
    return 0;
}

int proto_decode_chunk_offset_hole(const void *payload, size_t len,
                                   uint64_t *offset, uint32_t *size)
{
    const uint8_t *p = payload;

    if (len != 12 || get_u32(p + 8) == 0) {
        return -EBADMSG;
    }
    *offset = get_u64(p);
    *size = get_u32(p + 8);
    return 0;
}

int proto_decode_chunk_block_status(const void *payload, size_t len,
                                    bool extended,
                                    struct proto_block_status *bs)
{
    const uint8_t *p = payload;
    size_t head = extended ? 8 : 4;
    size_t desc = extended ? 16 : 8;
    size_t n;

    if (len < head + desc || (len - head) % desc != 0) {
        return -EBADMSG;
    }
    n = (len - head) / desc;
    if (n > UINT32_MAX) {
        return -EBADMSG;
    }
    if (extended) {
        /* The count is optional (0) but must be right when present. */
        uint32_t count = get_u32(p + 4);
        if (count != 0 && count != n) {
            return -EBADMSG;
        }
    }
    for (size_t i = 0; i < n; i++) {
        const uint8_t *d = p + head + i * desc;
        uint64_t length = extended ? get_u64(d) : get_u32(d);
        if (length == 0) {
            return -EBADMSG;
        }
    }
    bs->context_id = get_u32(p);
    bs->count = (uint32_t)n;
    bs->extended = extended;
    bs->ext = p + head;
    return 0;
}

void proto_block_status_extent(const struct proto_block_status *bs, size_t i,
                               struct proto_extent *out)
{
    if (bs->extended) {
        out->length = get_u64(bs->ext + 16 * i);
        out->status = get_u64(bs->ext + 16 * i + 8);
    } else {
        out->length = get_u32(bs->ext + 8 * i);
        out->status = get_u32(bs->ext + 8 * i + 4);
    }
}

int proto_decode_chunk_error(const void *payload, size_t len, uint16_t type,
                             struct proto_chunk_error *err)
{
    const uint8_t *p = payload;
    uint16_t msg_len;
    int r;

    if (!(type & PROTO_REPLY_TYPE_ERR_BIT)) {
        return -EINVAL;
    }
    if (len < 6) {
        return -EBADMSG;
    }
    msg_len = get_u16(p + 4);
    if (msg_len > len - 6) {
        return -EBADMSG;
    }
    if (type == PROTO_REPLY_TYPE_ERROR && len != 6 + (size_t)msg_len) {
        return -EBADMSG;
    }
    if (type == PROTO_REPLY_TYPE_ERROR_OFFSET && len != 14 + (size_t)msg_len) {
        return -EBADMSG;
    }
    if (get_u32(p) == 0) {
        return -EBADMSG;
    }
    r = proto_check_string((const char *)p + 6, msg_len);
    if (r < 0) {
        return r;
    }
    err->error = get_u32(p);
    err->msg.ptr = (const char *)p + 6;
    err->msg.len = msg_len;
    err->has_offset = type == PROTO_REPLY_TYPE_ERROR_OFFSET;
    err->offset = err->has_offset ? get_u64(p + 6 + msg_len) : 0;
    return 0;
}

/* ---- Error values ---- */

uint32_t proto_errno_to_nbd(int errnum)
{
    if (errnum == INT_MIN) {
        return PROTO_EINVAL;
    }
    if (errnum < 0) {
        errnum = -errnum;
    }
    switch (errnum) {
    case 0:
        return 0;
    case EPERM:
    case EACCES:
    case EROFS:
        return PROTO_EPERM;
    case EIO:
        return PROTO_EIO;
    case ENOMEM:
        return PROTO_ENOMEM;
    case EINVAL:
        return PROTO_EINVAL;
    case ENOSPC:
    case EDQUOT:
    case EFBIG:
        return PROTO_ENOSPC;
    case EOVERFLOW:
        return PROTO_EOVERFLOW;
    case ENOTSUP:
#if EOPNOTSUPP != ENOTSUP
    case EOPNOTSUPP:
#endif
        return PROTO_ENOTSUP;
    case ESHUTDOWN:
        return PROTO_ESHUTDOWN;
    default:
        return PROTO_EINVAL;
    }
}

int proto_nbd_to_errno(uint32_t nbd_error)
{
    switch (nbd_error) {
    case 0:
        return 0;
    case PROTO_EPERM:
        return EPERM;
    case PROTO_EIO:
        return EIO;
    case PROTO_ENOMEM:
        return ENOMEM;
    case PROTO_EINVAL:
        return EINVAL;
    case PROTO_ENOSPC:
        return ENOSPC;
    case PROTO_EOVERFLOW:
        return EOVERFLOW;
    case PROTO_ENOTSUP:
        return ENOTSUP;
    case PROTO_ESHUTDOWN:
        return ESHUTDOWN;
    default:
        return EINVAL;
    }
}
