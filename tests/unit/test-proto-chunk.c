/* SPDX-License-Identifier: MIT */
/*
 * Unit tests of the NBD protocol codec (include/nbdsrv/proto.h):
 * structured reply chunks.
 * The frames, decoder wrappers and helpers the test-proto-*.c files share
 * are in fixture-proto.c; fixture-proto.h says how the tests are built.
 */
#include "fixture-main.h"
#include "fixture-proto.h"
#include "nbdsrv/compiler.h"
#include "nbdsrv/proto.h"

#include <check.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------------ */
/* Structured reply chunks                                             */
/* ------------------------------------------------------------------ */

struct chunk_check_case {
    enum proto_reply_kind kind;
    uint16_t type;
    uint16_t flags;
    uint64_t length;
    int expect;
};

#define S PROTO_REPLY_STRUCTURED
#define X PROTO_REPLY_EXTENDED
#define DONE PROTO_REPLY_FLAG_DONE

static const struct chunk_check_case chunk_check_cases[] = {
    {S, PROTO_REPLY_TYPE_NONE, DONE, 0, 0},
    {S, PROTO_REPLY_TYPE_NONE, 0, 0, -EBADMSG},    /* NONE without DONE */
    {S, PROTO_REPLY_TYPE_NONE, DONE, 1, -EBADMSG}, /* NONE with payload */
    {S, PROTO_REPLY_TYPE_OFFSET_DATA, 0, 9, 0},
    {S, PROTO_REPLY_TYPE_OFFSET_DATA, 0, 8, -EBADMSG},
    {X, PROTO_REPLY_TYPE_OFFSET_DATA, 0, 1ull << 40, 0},
    {S, PROTO_REPLY_TYPE_OFFSET_HOLE, 0, 12, 0},
    {S, PROTO_REPLY_TYPE_OFFSET_HOLE, 0, 11, -EBADMSG},
    {S, PROTO_REPLY_TYPE_OFFSET_HOLE, 0, 13, -EBADMSG},
    {S, PROTO_REPLY_TYPE_BLOCK_STATUS, DONE, 12, 0},
    {S, PROTO_REPLY_TYPE_BLOCK_STATUS, DONE, 4 + 8 * 1000, 0},
    {S, PROTO_REPLY_TYPE_BLOCK_STATUS, DONE, 4, -EBADMSG}, /* no extent */
    {S, PROTO_REPLY_TYPE_BLOCK_STATUS, DONE, 13, -EBADMSG},
    {S, PROTO_REPLY_TYPE_BLOCK_STATUS, DONE, 16, -EBADMSG},
    {X, PROTO_REPLY_TYPE_BLOCK_STATUS_EXT, DONE, 24, 0},
    {X, PROTO_REPLY_TYPE_BLOCK_STATUS_EXT, DONE, 40, 0},
    {X, PROTO_REPLY_TYPE_BLOCK_STATUS_EXT, DONE, 8, -EBADMSG},
    {X, PROTO_REPLY_TYPE_BLOCK_STATUS_EXT, DONE, 32, -EBADMSG},
    {S, PROTO_REPLY_TYPE_BLOCK_STATUS_EXT, DONE, 24, -EBADMSG}, /* no EH */
    {S, PROTO_REPLY_TYPE_ERROR, DONE, 6, 0},
    {S, PROTO_REPLY_TYPE_ERROR, DONE, 5, -EBADMSG},
    {S, PROTO_REPLY_TYPE_ERROR_OFFSET, DONE, 14, 0},
    {S, PROTO_REPLY_TYPE_ERROR_OFFSET, DONE, 13, -EBADMSG},
    {S, 0x8077, DONE, 6, 0},        /* unknown error type: still an error */
    {S, 0x8077, DONE, 5, -EBADMSG}, /* ...too short for error + length */
    {S, 3, 0, 12, -EBADMSG},        /* unknown non-error type */
    {X, 0x7fff, 0, 0, -EBADMSG},
    {PROTO_REPLY_SIMPLE, PROTO_REPLY_TYPE_NONE, DONE, 0, -EBADMSG},
};

#undef S
#undef X
#undef DONE

UNIT_LOOP_TEST("chunk", test_proto_chunk_length_checked, 0,
               ARRAY_SIZE(chunk_check_cases))
{
    const struct chunk_check_case *c = &chunk_check_cases[_i];
    struct proto_reply rep = {
        .kind = c->kind,
        .type = c->type,
        .flags = c->flags,
        .length = c->length,
    };

    ck_assert_msg(proto_check_chunk(&rep) == c->expect,
                  "type 0x%x length %llu: expected %d", c->type,
                  (unsigned long long)c->length, c->expect);
}
END_TEST

static const struct proto_reply chunk_hdr_s = {
    .kind = PROTO_REPLY_STRUCTURED,
    .cookie = COOKIE,
};

static const struct proto_reply chunk_hdr_x = {
    .kind = PROTO_REPLY_EXTENDED,
    .cookie = COOKIE,
    .offset = 1 << 20,
};

/*
 * Decodes the header a builder wrote, checks it against proto_check_chunk
 * and returns the payload (which follows in the same buffer).
 */
static const uint8_t *chunk_header(const uint8_t *buf, ssize_t n,
                                   const struct proto_reply *hdr, uint16_t type,
                                   struct proto_reply *rep)
{
    bool extended = hdr->kind == PROTO_REPLY_EXTENDED;
    size_t hsize = proto_reply_header_size(hdr->kind);

    ck_assert_int_ge(n, (ssize_t)hsize);
    ck_assert_int_eq(proto_decode_reply(buf, (size_t)n, extended, rep), 0);
    ck_assert_int_eq(rep->kind, hdr->kind);
    ck_assert_uint_eq(rep->type, type);
    ck_assert_uint_eq(rep->cookie, COOKIE);
    ck_assert_uint_eq(rep->offset, extended ? hdr->offset : 0);
    ck_assert_int_eq(proto_check_chunk(rep), 0);
    return buf + hsize;
}

/* Loop index 0: structured header, 1: extended header. */
UNIT_LOOP_TEST("chunk", test_proto_chunk_none_and_data, 0, 2)
{
    const struct proto_reply *hdr = _i ? &chunk_hdr_x : &chunk_hdr_s;
    uint8_t buf[64];
    struct proto_reply rep;
    const uint8_t *pl;
    uint64_t off, len;
    ssize_t n;

    n = proto_build_chunk_none(buf, sizeof buf, hdr);
    ck_assert_int_eq(n, (ssize_t)proto_reply_header_size(hdr->kind));
    chunk_header(buf, n, hdr, PROTO_REPLY_TYPE_NONE, &rep);
    ck_assert_uint_eq(rep.flags, PROTO_REPLY_FLAG_DONE);
    ck_assert_uint_eq(rep.length, 0);

    n = proto_build_chunk_offset_data(buf, sizeof buf, hdr, 512, 4096);
    ck_assert_int_eq(n, (ssize_t)proto_reply_header_size(hdr->kind) + 8);
    pl = chunk_header(buf, n, hdr, PROTO_REPLY_TYPE_OFFSET_DATA, &rep);
    ck_assert_uint_eq(rep.flags, 0);
    ck_assert_uint_eq(rep.length, 8 + 4096);
    ck_assert_mem_eq(pl, offset_data_prefix, 8);
    ck_assert_int_eq(
        proto_decode_chunk_offset_data(pl, 8, rep.length, &off, &len), 0);
    ck_assert_uint_eq(off, 512);
    ck_assert_uint_eq(len, 4096);

    ck_assert_int_eq(proto_build_chunk_offset_data(buf, sizeof buf, hdr, 0, 0),
                     -EINVAL);
    ck_assert_int_eq(
        proto_build_chunk_offset_data(buf, sizeof buf, hdr, 0, ~0ull),
        -EOVERFLOW);
}
END_TEST

UNIT_TEST("chunk", test_proto_chunk_offset_data_too_long_for_compact)
{
    uint8_t buf[64];

    /* 2^32 - 8 data bytes fit a compact header; one more does not. */
    ck_assert_int_eq(proto_build_chunk_offset_data(
                         buf, sizeof buf, &chunk_hdr_s, 0, 0xfffffff7ull),
                     PROTO_STRUCTURED_REPLY_SIZE + 8);
    ck_assert_int_eq(proto_build_chunk_offset_data(
                         buf, sizeof buf, &chunk_hdr_s, 0, 0xfffffff8ull),
                     -EOVERFLOW);
    ck_assert_int_eq(proto_build_chunk_offset_data(
                         buf, sizeof buf, &chunk_hdr_x, 0, 0xfffffff8ull),
                     PROTO_EXTENDED_REPLY_SIZE + 8);
}
END_TEST

UNIT_LOOP_TEST("chunk", test_proto_chunk_offset_hole, 0, 2)
{
    const struct proto_reply *hdr = _i ? &chunk_hdr_x : &chunk_hdr_s;
    uint8_t buf[64];
    struct proto_reply rep;
    const uint8_t *pl;
    uint64_t off;
    uint32_t size;
    ssize_t n;

    n = proto_build_chunk_offset_hole(buf, sizeof buf, hdr, 4096, 8192);
    ck_assert_int_eq(n, (ssize_t)proto_reply_header_size(hdr->kind) + 12);
    pl = chunk_header(buf, n, hdr, PROTO_REPLY_TYPE_OFFSET_HOLE, &rep);
    ck_assert_uint_eq(rep.length, 12);
    ck_assert_mem_eq(pl, offset_hole_bytes, 12);
    ck_assert_int_eq(proto_decode_chunk_offset_hole(pl, 12, &off, &size), 0);
    ck_assert_uint_eq(off, 4096);
    ck_assert_uint_eq(size, 8192);
    ck_assert_int_eq(proto_build_chunk_offset_hole(buf, sizeof buf, hdr, 0, 0),
                     -EINVAL);
    ck_assert_int_eq(
        proto_build_chunk_offset_hole(buf, (size_t)n - 1, hdr, 0, 1), -ENOBUFS);
}
END_TEST

UNIT_LOOP_TEST("chunk", test_proto_chunk_block_status, 0, 2)
{
    const struct proto_reply *hdr = _i ? &chunk_hdr_x : &chunk_hdr_s;
    static const struct proto_extent ext[] = {
        {65536, 0},
        {1 << 20, PROTO_STATE_HOLE | PROTO_STATE_ZERO},
    };
    uint8_t buf[64];
    struct proto_reply rep;
    struct proto_block_status bs;
    struct proto_extent e;
    const uint8_t *pl;
    ssize_t n;

    n = proto_build_chunk_block_status(buf, sizeof buf, hdr, 1, ext, 2);
    ck_assert_int_eq(n, (ssize_t)PROTO_CHUNK_BLOCK_STATUS_SIZE(
                            proto_reply_header_size(hdr->kind), 2));
    pl = chunk_header(buf, n, hdr, PROTO_REPLY_TYPE_BLOCK_STATUS, &rep);
    ck_assert_uint_eq(rep.length, sizeof block_status_bytes);
    ck_assert_mem_eq(pl, block_status_bytes, sizeof block_status_bytes);
    ck_assert_int_eq(
        proto_decode_chunk_block_status(pl, rep.length, false, &bs), 0);
    ck_assert_uint_eq(bs.context_id, 1);
    ck_assert_uint_eq(bs.count, 2);
    for (size_t i = 0; i < 2; i++) {
        proto_block_status_extent(&bs, i, &e);
        ck_assert_uint_eq(e.length, ext[i].length);
        ck_assert_uint_eq(e.status, ext[i].status);
    }
    for (size_t cap = 0; cap < (size_t)n; cap++) {
        ck_assert_int_eq(
            proto_build_chunk_block_status(buf, cap, hdr, 1, ext, 2), -ENOBUFS);
    }
}
END_TEST

UNIT_TEST("chunk", test_proto_chunk_block_status_bad_extents)
{
    struct proto_extent ext[2] = {{512, 0}, {512, 0}};
    uint8_t buf[128];

    ck_assert_int_eq(proto_build_chunk_block_status(buf, sizeof buf,
                                                    &chunk_hdr_s, 1, ext, 0),
                     -EINVAL);
    ext[1].length = 0;
    ck_assert_int_eq(proto_build_chunk_block_status(buf, sizeof buf,
                                                    &chunk_hdr_s, 1, ext, 2),
                     -EINVAL);
    ext[1].length = 1ull << 32; /* needs BLOCK_STATUS_EXT */
    ck_assert_int_eq(proto_build_chunk_block_status(buf, sizeof buf,
                                                    &chunk_hdr_x, 1, ext, 2),
                     -EINVAL);
    ext[1].length = 512;
    ext[1].status = 1ull << 32;
    ck_assert_int_eq(proto_build_chunk_block_status(buf, sizeof buf,
                                                    &chunk_hdr_x, 1, ext, 2),
                     -EINVAL);
    ck_assert_int_eq(proto_build_chunk_block_status_ext(
                         buf, sizeof buf, &chunk_hdr_x, 1, ext, 2),
                     PROTO_CHUNK_BLOCK_STATUS_EXT_SIZE(32, 2));
    /* The extended chunk type needs an extended header. */
    ck_assert_int_eq(proto_build_chunk_block_status_ext(
                         buf, sizeof buf, &chunk_hdr_s, 1, ext, 2),
                     -EINVAL);
    ck_assert_int_eq(proto_build_chunk_block_status_ext(
                         buf, sizeof buf, &chunk_hdr_x, 1, ext, 0),
                     -EINVAL);
    ext[0].length = 0;
    ck_assert_int_eq(proto_build_chunk_block_status_ext(
                         buf, sizeof buf, &chunk_hdr_x, 1, ext, 2),
                     -EINVAL);
}
END_TEST

UNIT_TEST("chunk", test_proto_chunk_block_status_ext)
{
    static const struct proto_extent ext[] = {{8ull << 30, PROTO_STATE_HOLE}};
    uint8_t buf[64];
    struct proto_reply rep;
    struct proto_block_status bs;
    struct proto_extent e;
    const uint8_t *pl;
    ssize_t n;

    n = proto_build_chunk_block_status_ext(buf, sizeof buf, &chunk_hdr_x, 1,
                                           ext, 1);
    ck_assert_int_eq(n, PROTO_CHUNK_BLOCK_STATUS_EXT_SIZE(32, 1));
    pl = chunk_header(buf, n, &chunk_hdr_x, PROTO_REPLY_TYPE_BLOCK_STATUS_EXT,
                      &rep);
    ck_assert_uint_eq(rep.length, sizeof block_status_ext_bytes);
    ck_assert_mem_eq(pl, block_status_ext_bytes, sizeof block_status_ext_bytes);
    ck_assert_int_eq(proto_decode_chunk_block_status(pl, rep.length, true, &bs),
                     0);
    ck_assert_uint_eq(bs.count, 1);
    proto_block_status_extent(&bs, 0, &e);
    ck_assert_uint_eq(e.length, 8ull << 30);
    ck_assert_uint_eq(e.status, PROTO_STATE_HOLE);
}
END_TEST

struct bs_case {
    const char *what;
    bool extended;
    uint8_t bytes[48];
    size_t len;
    int expect;
};

static const struct bs_case block_status_cases[] = {
    {"no descriptor", false, {0, 0, 0, 1}, 4, -EBADMSG},
    {"half a descriptor", false, {0, 0, 0, 1, 0, 0, 2, 0}, 8, -EBADMSG},
    {"4 + 8 + 1 bytes",
     false,
     {0, 0, 0, 1, 0, 0, 2, 0, 0, 0, 0, 0, 0},
     13,
     -EBADMSG},
    {"zero-length extent",
     false,
     {0, 0, 0, 1, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1},
     20,
     -EBADMSG},
    {"one extent", false, {0, 0, 0, 1, 0, 0, 2, 0, 0, 0, 0, 3}, 12, 0},
    {"ext: no descriptor", true, {0, 0, 0, 1, 0, 0, 0, 0}, 8, -EBADMSG},
    {"ext: count 0 (optional)",
     true,
     {0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0},
     24,
     0},
    {"ext: count 2 for one descriptor",
     true,
     {0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0},
     24,
     -EBADMSG},
    {"ext: count 0xffffffff",
     true,
     {0, 0, 0, 1, 0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0,
      0, 0, 2, 0, 0,    0,    0,    0,    0, 0, 0, 0},
     24,
     -EBADMSG},
    {"ext: zero-length extent",
     true,
     {0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0},
     24,
     -EBADMSG},
    {"ext: 8 + 16 + 8 bytes",
     true,
     {0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2, 0,
      0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0},
     32,
     -EBADMSG},
    {"ext: compact layout read as extended",
     true,
     {0, 0, 0, 1, 0, 0, 2, 0, 0, 0, 0, 3},
     12,
     -EBADMSG},
};

UNIT_LOOP_TEST("chunk", test_proto_chunk_block_status_malformed, 0,
               ARRAY_SIZE(block_status_cases))
{
    const struct bs_case *c = &block_status_cases[_i];
    decode_fn *fn = c->extended ? w_block_status_ext : w_block_status;

    ck_assert_msg(run_exact(fn, c->bytes, c->len) == c->expect,
                  "%s: expected %d", c->what, c->expect);
}
END_TEST

UNIT_TEST("chunk", test_proto_chunk_offset_hole_malformed)
{
    static const uint8_t zero_size[] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0};
    uint8_t long_hole[13] = {0};

    ck_assert_int_eq(run_exact(w_offset_hole, zero_size, sizeof zero_size),
                     -EBADMSG);
    memcpy(long_hole, offset_hole_bytes, 12);
    ck_assert_int_eq(run_exact(w_offset_hole, long_hole, sizeof long_hole),
                     -EBADMSG);
    ck_assert_int_eq(run_exact(w_offset_hole, long_hole, 12), 0);
}
END_TEST

UNIT_LOOP_TEST("chunk", test_proto_chunk_error_round_trip, 0, 2)
{
    const struct proto_reply *hdr = _i ? &chunk_hdr_x : &chunk_hdr_s;
    uint8_t buf[96];
    struct proto_reply rep;
    struct proto_chunk_error err;
    const uint8_t *pl;
    ssize_t n;

    n = proto_build_chunk_error(buf, sizeof buf, hdr, PROTO_EIO, "bad", 3);
    ck_assert_int_eq(n, (ssize_t)PROTO_CHUNK_ERROR_SIZE(
                            proto_reply_header_size(hdr->kind), 3));
    pl = chunk_header(buf, n, hdr, PROTO_REPLY_TYPE_ERROR, &rep);
    ck_assert_mem_eq(pl, chunk_error_bytes, sizeof chunk_error_bytes);
    ck_assert_int_eq(proto_decode_chunk_error(pl, rep.length, rep.type, &err),
                     0);
    ck_assert_uint_eq(err.error, PROTO_EIO);
    ck_assert_uint_eq(err.msg.len, 3);
    ck_assert_mem_eq(err.msg.ptr, "bad", 3);
    ck_assert(!err.has_offset);

    n = proto_build_chunk_error_offset(buf, sizeof buf, hdr, PROTO_ENOSPC, "no",
                                       2, 16384);
    ck_assert_int_eq(n, (ssize_t)PROTO_CHUNK_ERROR_OFFSET_SIZE(
                            proto_reply_header_size(hdr->kind), 2));
    pl = chunk_header(buf, n, hdr, PROTO_REPLY_TYPE_ERROR_OFFSET, &rep);
    ck_assert_mem_eq(pl, chunk_error_offset_bytes,
                     sizeof chunk_error_offset_bytes);
    ck_assert_int_eq(proto_decode_chunk_error(pl, rep.length, rep.type, &err),
                     0);
    ck_assert_uint_eq(err.error, PROTO_ENOSPC);
    ck_assert(err.has_offset);
    ck_assert_uint_eq(err.offset, 16384);

    /* No message at all. */
    n = proto_build_chunk_error(buf, sizeof buf, hdr, PROTO_EPERM, NULL, 0);
    pl = chunk_header(buf, n, hdr, PROTO_REPLY_TYPE_ERROR, &rep);
    ck_assert_uint_eq(rep.length, 6);
    ck_assert_int_eq(proto_decode_chunk_error(pl, 6, rep.type, &err), 0);
    ck_assert_uint_eq(err.msg.len, 0);
}
END_TEST

UNIT_TEST("chunk", test_proto_chunk_error_build_limits)
{
    size_t cap = PROTO_CHUNK_ERROR_OFFSET_SIZE(32, PROTO_STRING_MAX + 1);
    uint8_t *buf = malloc(cap);
    char *big = filled(PROTO_STRING_MAX + 1, 'm');

    ck_assert_ptr_nonnull(buf);
    ck_assert_int_eq(
        proto_build_chunk_error(buf, cap, &chunk_hdr_s, 0, NULL, 0), -EINVAL);
    ck_assert_int_eq(proto_build_chunk_error(buf, cap, &chunk_hdr_s, PROTO_EIO,
                                             big, PROTO_STRING_MAX + 1),
                     -EINVAL);
    ck_assert_int_eq(
        proto_build_chunk_error(buf, cap, &chunk_hdr_s, PROTO_EIO, "a\0b", 3),
        -EINVAL);
    ck_assert_int_eq(
        proto_build_chunk_error_offset(buf, cap, &chunk_hdr_x, PROTO_EIO, big,
                                       PROTO_STRING_MAX, 0),
        (ssize_t)PROTO_CHUNK_ERROR_OFFSET_SIZE(32, PROTO_STRING_MAX));
    ck_assert_int_eq(
        proto_build_chunk_error(buf, 25, &chunk_hdr_s, PROTO_EIO, NULL, 0),
        -ENOBUFS);
    free(big);
    free(buf);
}
END_TEST

UNIT_TEST("chunk", test_proto_chunk_builder_needs_chunk_header)
{
    struct proto_reply simple = {.kind = PROTO_REPLY_SIMPLE};
    uint8_t buf[64];

    ck_assert_int_eq(proto_build_chunk_none(buf, sizeof buf, &simple), -EINVAL);
    ck_assert_int_eq(
        proto_build_chunk_offset_hole(buf, sizeof buf, &simple, 0, 1), -EINVAL);
    ck_assert_int_eq(
        proto_build_chunk_error(buf, sizeof buf, &simple, PROTO_EIO, NULL, 0),
        -EINVAL);
}
END_TEST

struct error_case {
    const char *what;
    uint16_t type;
    uint8_t bytes[32];
    size_t len;
    int expect;
};

static const struct error_case chunk_error_cases[] = {
    {"five bytes", PROTO_REPLY_TYPE_ERROR, {0, 0, 0, 5, 0}, 5, -EBADMSG},
    {"error value 0", PROTO_REPLY_TYPE_ERROR, {0, 0, 0, 0, 0, 0}, 6, -EBADMSG},
    {"message longer than the chunk",
     PROTO_REPLY_TYPE_ERROR,
     {0, 0, 0, 5, 0, 4, 'a', 'b', 'c'},
     9,
     -EBADMSG},
    {"message length 0xffff",
     PROTO_REPLY_TYPE_ERROR,
     {0, 0, 0, 5, 0xff, 0xff, 'a'},
     7,
     -EBADMSG},
    {"ERROR with trailing bytes",
     PROTO_REPLY_TYPE_ERROR,
     {0, 0, 0, 5, 0, 1, 'a', 'b'},
     8,
     -EBADMSG},
    {"NUL in the message",
     PROTO_REPLY_TYPE_ERROR,
     {0, 0, 0, 5, 0, 2, 'a', 0},
     8,
     -EBADMSG},
    {"ERROR_OFFSET without the offset",
     PROTO_REPLY_TYPE_ERROR_OFFSET,
     {0, 0, 0, 5, 0, 1, 'a'},
     7,
     -EBADMSG},
    {"ERROR_OFFSET with a short offset",
     PROTO_REPLY_TYPE_ERROR_OFFSET,
     {0, 0, 0, 5, 0, 1, 'a', 0, 0, 0, 0, 0, 0, 0},
     14,
     -EBADMSG},
    {"ERROR_OFFSET with trailing bytes",
     PROTO_REPLY_TYPE_ERROR_OFFSET,
     {0, 0, 0, 5, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 9},
     15,
     -EBADMSG},
    {"ERROR_OFFSET, message eats the offset",
     PROTO_REPLY_TYPE_ERROR_OFFSET,
     {0, 0, 0, 5, 0, 8, 'a', 'b', 'c', 'd', 'e', 'f', 'g', 'h'},
     14,
     -EBADMSG},
    {"unknown error type with extra fields",
     0x8005,
     {0, 0, 0, 5, 0, 1, 'a', 1, 2, 3},
     10,
     0},
    {"unknown error type, message too long",
     0x8005,
     {0, 0, 0, 5, 0, 5, 'a'},
     7,
     -EBADMSG},
    {"not an error type",
     PROTO_REPLY_TYPE_OFFSET_HOLE,
     {0, 0, 0, 5, 0, 0},
     6,
     -EINVAL},
};

UNIT_LOOP_TEST("chunk", test_proto_chunk_error_malformed, 0,
               ARRAY_SIZE(chunk_error_cases))
{
    const struct error_case *c = &chunk_error_cases[_i];
    uint8_t *p = dup_exact(c->bytes, c->len);
    struct proto_chunk_error err;

    ck_assert_msg(proto_decode_chunk_error(p, c->len, c->type, &err) ==
                      c->expect,
                  "%s: expected %d", c->what, c->expect);
    free(p);
}
END_TEST

UNIT_TEST("chunk", test_proto_chunk_error_message_over_limit)
{
    size_t len = 6 + PROTO_STRING_MAX + 1;
    uint8_t *p = malloc(len);
    struct proto_chunk_error err;

    ck_assert_ptr_nonnull(p);
    memset(p, 'm', len);
    p[0] = 0;
    p[1] = 0;
    p[2] = 0;
    p[3] = PROTO_EIO;
    p[4] = (PROTO_STRING_MAX + 1) >> 8;
    p[5] = (PROTO_STRING_MAX + 1) & 0xff;
    ck_assert_int_eq(
        proto_decode_chunk_error(p, len, PROTO_REPLY_TYPE_ERROR, &err), -E2BIG);
    free(p);
}
END_TEST

UNIT_TEST("chunk", test_proto_chunk_offset_data_decode)
{
    uint64_t off, n;

    ck_assert_int_eq(
        proto_decode_chunk_offset_data(offset_data_prefix, 8, 8, &off, &n),
        -EBADMSG);
    ck_assert_int_eq(
        proto_decode_chunk_offset_data(offset_data_prefix, 8, ~0ull, &off, &n),
        0);
    ck_assert_uint_eq(n, ~0ull - 8);
}
END_TEST

UNIT_SUITE("proto");
UNIT_TCASE("chunk", 30, NULL, NULL);
