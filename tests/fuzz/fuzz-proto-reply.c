/* SPDX-License-Identifier: MIT */
/* libFuzzer target: reply headers and structured reply chunks. */
/*
 * The input is read as a reply without and with extended headers: simple
 * (16 bytes), structured (20) or extended (32).  A header that decodes
 * must encode back to the same bytes, and proto_check_chunk must judge
 * it.  The bytes after the header (or the whole input when no header
 * decodes) then go through every chunk payload decoder: offset data,
 * offset hole, block status compact and extended, and the error chunks
 * (ERROR, ERROR_OFFSET and an unknown error type).  Whatever decodes is
 * rebuilt with the matching proto_build_chunk_* and must give the same
 * payload bytes, and the whole frame when the header announced that
 * chunk; every built chunk must itself pass proto_decode_reply and
 * proto_check_chunk.  Error values go through both errno mappings.
 */
#include "fuzz.h"
#include "nbdsrv/proto.h"

#include <endian.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

/* Where a chunk decoder's input came from. */
struct chunk_in {
    const struct proto_reply *hdr; /* header used to rebuild the chunk */
    const uint8_t *frame;          /* the decoded header, or NULL */
    const uint8_t *p;              /* the payload */
    size_t len;
    uint8_t *out; /* for FUZZ_BUILD: twice a header and len + 16 */
    size_t cap;
};

static bool is_known_error(uint32_t v)
{
    return v == 0 || strcmp(proto_err_name(v), "unknown") != 0;
}

static void check_error_value(uint32_t v)
{
    int e = proto_nbd_to_errno(v);
    uint32_t back = proto_errno_to_nbd(e);

    FUZZ_ASSERT(e >= 0 && (e == 0) == (v == 0));
    FUZZ_ASSERT(back == (is_known_error(v) ? v : (uint32_t)PROTO_EINVAL));
    FUZZ_ASSERT(is_known_error(proto_errno_to_nbd((int)v)));
}

/*
 * A chunk just built from `hdr` with `type` and `payload_len` must
 * decode as such, pass proto_check_chunk, and match the input frame when
 * the input header announced the same chunk.
 */
static void check_built(const struct chunk_in *in, ssize_t n, uint16_t type,
                        uint64_t payload_len)
{
    const struct proto_reply *hdr = in->hdr;
    bool extended = hdr->kind == PROTO_REPLY_EXTENDED;
    size_t hsize = proto_reply_header_size(hdr->kind);
    uint16_t flags = hdr->flags;
    struct proto_reply rep;

    if (type == PROTO_REPLY_TYPE_NONE) {
        flags |= PROTO_REPLY_FLAG_DONE;
    }
    FUZZ_ASSERT(n >= (ssize_t)hsize);
    FUZZ_ASSERT(proto_decode_reply(in->out, (size_t)n, extended, &rep) == 0);
    FUZZ_ASSERT(rep.kind == hdr->kind && rep.type == type &&
                rep.flags == flags && rep.cookie == hdr->cookie &&
                rep.length == payload_len && rep.error == 0);
    FUZZ_ASSERT(rep.offset == (extended ? hdr->offset : 0));
    FUZZ_ASSERT(proto_check_chunk(&rep) == 0);
    if (in->frame != NULL && hdr->type == type && hdr->length == payload_len) {
        FUZZ_ASSERT(memcmp(in->out, in->frame, hsize) == 0);
    }
}

static void fuzz_offset_data(const struct chunk_in *in)
{
    uint64_t chunk_len = in->frame != NULL ? in->hdr->length : in->len;
    size_t hsize = proto_reply_header_size(in->hdr->kind);
    uint64_t offset, data_len;
    ssize_t n;
    int r = proto_decode_chunk_offset_data(in->p, in->len, chunk_len, &offset,
                                           &data_len);

    if (in->frame != NULL && in->hdr->type == PROTO_REPLY_TYPE_OFFSET_DATA &&
        proto_check_chunk(in->hdr) == 0 && in->len >= 8) {
        FUZZ_ASSERT(r == 0);
    }
    if (r < 0) {
        FUZZ_ASSERT(r == -EBADMSG && (chunk_len < 9 || in->len < 8));
        return;
    }
    FUZZ_ASSERT(data_len == chunk_len - 8 && data_len > 0);
    n = FUZZ_BUILD(in->out, in->cap,
                   proto_build_chunk_offset_data(FUZZ_OUT, FUZZ_CAP, in->hdr,
                                                 offset, data_len));
    FUZZ_ASSERT(n == (ssize_t)hsize + 8);
    FUZZ_ASSERT(memcmp(in->out + hsize, in->p, 8) == 0);
    check_built(in, n, PROTO_REPLY_TYPE_OFFSET_DATA, chunk_len);
}

static void fuzz_offset_hole(const struct chunk_in *in)
{
    size_t hsize = proto_reply_header_size(in->hdr->kind);
    uint64_t offset;
    uint32_t size;
    ssize_t n;
    int r = proto_decode_chunk_offset_hole(in->p, in->len, &offset, &size);

    if (r < 0) {
        FUZZ_ASSERT(r == -EBADMSG);
        return;
    }
    FUZZ_ASSERT(in->len == 12 && size != 0);
    n = FUZZ_BUILD(in->out, in->cap,
                   proto_build_chunk_offset_hole(FUZZ_OUT, FUZZ_CAP, in->hdr,
                                                 offset, size));
    FUZZ_ASSERT(n == (ssize_t)hsize + 12);
    FUZZ_ASSERT(memcmp(in->out + hsize, in->p, 12) == 0);
    check_built(in, n, PROTO_REPLY_TYPE_OFFSET_HOLE, 12);
}

/*
 * BLOCK_STATUS_EXT needs an extended header: the payload of a structured
 * one is rebuilt under an extended copy of it (and matches no frame).
 */
static void fuzz_block_status(const struct chunk_in *in, bool extended)
{
    struct proto_reply ehdr = *in->hdr;
    struct chunk_in ein = *in;
    const struct chunk_in *use = in;
    size_t head = extended ? 8 : 4;
    size_t desc = extended ? 16 : 8;
    struct proto_block_status bs;
    struct proto_extent *ext;
    size_t hsize;
    ssize_t n;
    int r = proto_decode_chunk_block_status(in->p, in->len, extended, &bs);

    if (r < 0) {
        FUZZ_ASSERT(r == -EBADMSG);
        return;
    }
    FUZZ_ASSERT(bs.count >= 1 && bs.extended == extended);
    FUZZ_ASSERT(in->len == head + desc * (size_t)bs.count);
    FUZZ_ASSERT(bs.ext == in->p + head);
    ext = calloc(bs.count, sizeof *ext);
    FUZZ_ASSERT(ext != NULL);
    for (size_t i = 0; i < bs.count; i++) {
        proto_block_status_extent(&bs, i, &ext[i]);
        FUZZ_ASSERT(ext[i].length != 0);
        FUZZ_ASSERT(extended || (ext[i].length <= UINT32_MAX &&
                                 ext[i].status <= UINT32_MAX));
    }
    if (!extended) {
        n = FUZZ_BUILD(in->out, in->cap,
                       proto_build_chunk_block_status(FUZZ_OUT, FUZZ_CAP,
                                                      in->hdr, bs.context_id,
                                                      ext, bs.count));
    } else {
        if (in->hdr->kind != PROTO_REPLY_EXTENDED) {
            ehdr.kind = PROTO_REPLY_EXTENDED;
            ein.hdr = &ehdr;
            ein.frame = NULL;
            use = &ein;
        }
        n = FUZZ_BUILD(
            in->out, in->cap,
            proto_build_chunk_block_status_ext(FUZZ_OUT, FUZZ_CAP, use->hdr,
                                               bs.context_id, ext, bs.count));
    }
    free(ext);
    hsize = proto_reply_header_size(use->hdr->kind);
    FUZZ_ASSERT(n == (ssize_t)(hsize + in->len));
    if (extended) {
        uint32_t count;

        /* The builder always fills in the optional descriptor count. */
        memcpy(&count, in->out + hsize + 4, 4);
        FUZZ_ASSERT(be32toh(count) == bs.count);
        FUZZ_ASSERT(memcmp(in->out + hsize, in->p, 4) == 0);
        FUZZ_ASSERT(memcmp(in->out + hsize + 8, in->p + 8, in->len - 8) == 0);
        check_built(use, n, PROTO_REPLY_TYPE_BLOCK_STATUS_EXT, in->len);
    } else {
        FUZZ_ASSERT(memcmp(in->out + hsize, in->p, in->len) == 0);
        check_built(use, n, PROTO_REPLY_TYPE_BLOCK_STATUS, in->len);
    }
}

static void fuzz_error(const struct chunk_in *in, uint16_t type)
{
    size_t hsize = proto_reply_header_size(in->hdr->kind);
    struct proto_chunk_error err;
    ssize_t n;
    int r = proto_decode_chunk_error(in->p, in->len, type, &err);

    if (r < 0) {
        FUZZ_ASSERT(r == -EBADMSG || r == -E2BIG);
        return;
    }
    FUZZ_ASSERT(err.error != 0);
    FUZZ_ASSERT(err.msg.ptr == (const char *)in->p + 6);
    FUZZ_ASSERT(err.msg.len <= in->len - 6);
    FUZZ_ASSERT(proto_check_string(err.msg.ptr, err.msg.len) == 0);
    FUZZ_ASSERT(err.has_offset == (type == PROTO_REPLY_TYPE_ERROR_OFFSET));
    check_error_value(err.error);
    FUZZ_ASSERT(proto_err_name(err.error) != NULL);
    if (type == PROTO_REPLY_TYPE_ERROR) {
        FUZZ_ASSERT(in->len == 6 + err.msg.len);
        n = FUZZ_BUILD(in->out, in->cap,
                       proto_build_chunk_error(FUZZ_OUT, FUZZ_CAP, in->hdr,
                                               err.error, err.msg.ptr,
                                               err.msg.len));
    } else if (type == PROTO_REPLY_TYPE_ERROR_OFFSET) {
        FUZZ_ASSERT(in->len == 14 + err.msg.len);
        n = FUZZ_BUILD(in->out, in->cap,
                       proto_build_chunk_error_offset(
                           FUZZ_OUT, FUZZ_CAP, in->hdr, err.error, err.msg.ptr,
                           err.msg.len, err.offset));
    } else {
        return;
    }
    FUZZ_ASSERT(n == (ssize_t)(hsize + in->len));
    FUZZ_ASSERT(memcmp(in->out + hsize, in->p, in->len) == 0);
    check_built(in, n, type, in->len);
}

static void fuzz_chunks(const struct chunk_in *in)
{
    uint16_t unknown_err = in->hdr->type | PROTO_REPLY_TYPE_ERR_BIT;
    struct proto_chunk_error err;

    if (unknown_err == PROTO_REPLY_TYPE_ERROR ||
        unknown_err == PROTO_REPLY_TYPE_ERROR_OFFSET) {
        unknown_err = PROTO_REPLY_TYPE_ERR_BIT | 0x7fff;
    }
    fuzz_offset_data(in);
    fuzz_offset_hole(in);
    fuzz_block_status(in, false);
    fuzz_block_status(in, true);
    fuzz_error(in, PROTO_REPLY_TYPE_ERROR);
    fuzz_error(in, PROTO_REPLY_TYPE_ERROR_OFFSET);
    fuzz_error(in, unknown_err);
    FUZZ_ASSERT(proto_decode_chunk_error(in->p, in->len, PROTO_REPLY_TYPE_NONE,
                                         &err) == -EINVAL);
    if (in->frame != NULL && in->hdr->type == PROTO_REPLY_TYPE_NONE &&
        proto_check_chunk(in->hdr) == 0) {
        ssize_t n =
            FUZZ_BUILD(in->out, in->cap,
                       proto_build_chunk_none(FUZZ_OUT, FUZZ_CAP, in->hdr));
        check_built(in, n, PROTO_REPLY_TYPE_NONE, 0);
    }
}

/* A header that decoded: it must encode back and be judged sanely. */
static void check_header(const uint8_t *data, const struct proto_reply *rep,
                         int kind)
{
    size_t hsize = proto_reply_header_size(rep->kind);
    uint8_t out[PROTO_REPLY_HEADER_MAX];
    int r;

    FUZZ_ASSERT(kind == (int)rep->kind && hsize > 0);
    FUZZ_ASSERT(proto_encode_reply(out, sizeof out, rep) == (ssize_t)hsize);
    FUZZ_ASSERT(memcmp(out, data, hsize) == 0);
    FUZZ_ASSERT(proto_encode_reply(out, hsize - 1, rep) == -ENOBUFS);
    if (rep->kind == PROTO_REPLY_SIMPLE) {
        FUZZ_ASSERT(rep->flags == 0 && rep->type == 0 && rep->length == 0);
        FUZZ_ASSERT(proto_encode_simple_reply(out, sizeof out, rep->cookie,
                                              rep->error) == (ssize_t)hsize);
        FUZZ_ASSERT(memcmp(out, data, hsize) == 0);
        FUZZ_ASSERT(proto_check_chunk(rep) == -EBADMSG);
        check_error_value(rep->error);
        return;
    }
    FUZZ_ASSERT(rep->error == 0);
    FUZZ_ASSERT(rep->kind == PROTO_REPLY_EXTENDED || rep->offset == 0);
    r = proto_check_chunk(rep);
    FUZZ_ASSERT(r == 0 || r == -EBADMSG);
    FUZZ_ASSERT(proto_reply_type_name(rep->type) != NULL);
    fuzz_check_flags(PROTO_FIELD_REPLY, rep->flags);
}

static void fuzz_reply(const uint8_t *data, size_t size, bool extended)
{
    struct proto_reply rep = {
        .kind = extended ? PROTO_REPLY_EXTENDED : PROTO_REPLY_STRUCTURED,
    };
    struct chunk_in in = {.hdr = &rep, .p = data, .len = size};
    int kind = proto_peek_reply_kind(data, size, extended);
    int r = proto_decode_reply(data, size, extended, &rep);

    if (r < 0) {
        FUZZ_ASSERT(r == -EBADMSG);
        FUZZ_ASSERT(kind < 0 || size < proto_reply_header_size(kind));
    } else {
        size_t hsize = proto_reply_header_size(rep.kind);

        check_header(data, &rep, kind);
        if (rep.kind == PROTO_REPLY_SIMPLE) {
            return;
        }
        in.frame = data;
        in.p = data + hsize;
        in.len = size - hsize;
    }
    in.cap = 2 * (PROTO_REPLY_HEADER_MAX + in.len + 16);
    in.out = malloc(in.cap);
    FUZZ_ASSERT(in.out != NULL);
    fuzz_chunks(&in);
    free(in.out);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fuzz_reply(data, size, false);
    fuzz_reply(data, size, true);
    return 0;
}
