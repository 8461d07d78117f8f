/* SPDX-License-Identifier: MIT */
/* Unit tests of the NBD protocol codec (include/nbdsrv/proto.h). */
/*
 * Table-driven: known-good frames written out by hand from doc/proto.md
 * are decoded and compared field by field, encoders must reproduce them
 * byte for byte, and malformed or truncated input must be refused with
 * the documented errno.  Every malformed input is copied into a heap
 * buffer of exactly its length, so that under ASan a decoder that reads
 * one byte too far fails the test instead of passing by luck.
 */
#include "fixture-main.h"
#include "nbdsrv/compiler.h"
#include "nbdsrv/proto.h"

#include <check.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TIMEOUT 30

/* A heap copy of exactly `len` bytes (at least one byte allocated). */
static uint8_t *dup_exact(const void *src, size_t len)
{
    uint8_t *p = malloc(len > 0 ? len : 1);

    ck_assert_ptr_nonnull(p);
    if (len > 0) {
        memcpy(p, src, len);
    }
    return p;
}

/* A heap buffer of `len` bytes of `c`, for long strings. */
static char *filled(size_t len, char c)
{
    char *p = malloc(len > 0 ? len : 1);

    ck_assert_ptr_nonnull(p);
    memset(p, c, len);
    return p;
}

#define COOKIE 0x0102030405060708ull

/* ------------------------------------------------------------------ */
/* Uniform wrappers: each decodes one message kind and returns 0/-errno */
/* ------------------------------------------------------------------ */

typedef int decode_fn(const void *buf, size_t len);

static int w_greeting(const void *buf, size_t len)
{
    uint16_t f;
    return proto_decode_greeting(buf, len, &f);
}

static int w_client_flags(const void *buf, size_t len)
{
    uint32_t f;
    return proto_decode_client_flags(buf, len, PROTO_HS_FLAGS_ALL, &f);
}

static int w_option_header(const void *buf, size_t len)
{
    struct proto_option_header h;
    return proto_decode_option_header(buf, len, &h);
}

static int w_opt_info(const void *buf, size_t len)
{
    struct proto_opt_info info;
    int r = proto_parse_opt_info(buf, len, &info);

    if (r == 0) {
        /* Touch every request so ASan sees any overrun. */
        for (size_t i = 0; i < info.nr_requests; i++) {
            (void)proto_opt_info_request(&info, i);
        }
    }
    return r;
}

static int w_opt_meta(const void *buf, size_t len)
{
    struct proto_opt_meta meta;
    struct proto_string q;
    size_t pos = 0;
    uint32_t n = 0;
    int r = proto_parse_opt_meta(buf, len, &meta);

    if (r == 0) {
        while (proto_opt_meta_next(&meta, &pos, &q)) {
            n++;
        }
        ck_assert_uint_eq(n, meta.nr_queries);
    }
    return r;
}

static int w_option_reply(const void *buf, size_t len)
{
    struct proto_option_reply rep;
    return proto_decode_option_reply(buf, len, &rep);
}

static int w_rep_server(const void *buf, size_t len)
{
    struct proto_string name, desc;
    return proto_parse_rep_server(buf, len, &name, &desc);
}

static int w_rep_info(const void *buf, size_t len)
{
    struct proto_info_reply info;
    return proto_parse_rep_info(buf, len, &info);
}

static int w_rep_meta_context(const void *buf, size_t len)
{
    struct proto_string name;
    uint32_t id;
    return proto_parse_rep_meta_context(buf, len, &id, &name);
}

static int w_export_name_reply(const void *buf, size_t len)
{
    uint64_t size;
    uint16_t flags;
    return proto_decode_export_name_reply(buf, len, &size, &flags);
}

static int w_request(const void *buf, size_t len)
{
    struct proto_request req;
    return proto_decode_request(buf, len, false, &req);
}

static int w_request_ext(const void *buf, size_t len)
{
    struct proto_request req;
    return proto_decode_request(buf, len, true, &req);
}

static int w_reply(const void *buf, size_t len)
{
    struct proto_reply rep;
    return proto_decode_reply(buf, len, false, &rep);
}

static int w_reply_ext(const void *buf, size_t len)
{
    struct proto_reply rep;
    return proto_decode_reply(buf, len, true, &rep);
}

static int w_offset_data(const void *buf, size_t len)
{
    uint64_t off, n;
    /* The chunk length claims just the prefix plus one data byte. */
    return proto_decode_chunk_offset_data(buf, len, 9, &off, &n);
}

static int w_offset_hole(const void *buf, size_t len)
{
    uint64_t off;
    uint32_t size;
    return proto_decode_chunk_offset_hole(buf, len, &off, &size);
}

static int block_status_common(const void *buf, size_t len, bool ext)
{
    struct proto_block_status bs;
    struct proto_extent e;
    int r = proto_decode_chunk_block_status(buf, len, ext, &bs);

    if (r == 0) {
        for (size_t i = 0; i < bs.count; i++) {
            proto_block_status_extent(&bs, i, &e);
            ck_assert_uint_ne(e.length, 0);
        }
    }
    return r;
}

static int w_block_status(const void *buf, size_t len)
{
    return block_status_common(buf, len, false);
}

static int w_block_status_ext(const void *buf, size_t len)
{
    return block_status_common(buf, len, true);
}

static int w_chunk_error(const void *buf, size_t len)
{
    struct proto_chunk_error err;
    return proto_decode_chunk_error(buf, len, PROTO_REPLY_TYPE_ERROR, &err);
}

static int w_chunk_error_offset(const void *buf, size_t len)
{
    struct proto_chunk_error err;
    return proto_decode_chunk_error(buf, len, PROTO_REPLY_TYPE_ERROR_OFFSET,
                                    &err);
}

/* Runs `fn` on an exact heap copy of the bytes. */
static int run_exact(decode_fn *fn, const uint8_t *bytes, size_t len)
{
    uint8_t *copy = dup_exact(bytes, len);
    int r = fn(copy, len);

    free(copy);
    return r;
}

/* ------------------------------------------------------------------ */
/* Known-good frames, used by the round-trip and truncation tests      */
/* ------------------------------------------------------------------ */

static const uint8_t greeting_bytes[] = {
    'N',  'B',  'D', 'M', 'A', 'G', 'I', 'C', /* NBDMAGIC */
    'I',  'H',  'A', 'V', 'E', 'O', 'P', 'T', /* IHAVEOPT */
    0x00, 0x03,                               /* FIXED_NEWSTYLE|NO_ZEROES */
};

static const uint8_t client_flags_bytes[] = {0x00, 0x00, 0x00, 0x03};

static const uint8_t option_header_bytes[] = {
    'I',  'H',  'A',  'V',  'E', 'O', 'P', 'T', /* magic */
    0x00, 0x00, 0x00, 0x07,                     /* NBD_OPT_GO */
    0x00, 0x00, 0x00, 0x0e,                     /* 14 bytes follow */
};

static const uint8_t opt_go_bytes[] = {
    0x00, 0x00, 0x00, 0x04, 'd', 'i', 's', 'k', /* name */
    0x00, 0x02,                                 /* two requests */
    0x00, 0x03, 0x00, 0x01,                     /* BLOCK_SIZE, NAME */
};

static const uint8_t opt_meta_bytes[] = {
    0x00, 0x00, 0x00, 0x04, 'd', 'i', 's', 'k', /* export name */
    0x00, 0x00, 0x00, 0x02,                     /* two queries */
    0x00, 0x00, 0x00, 0x0f, 'b', 'a', 's', 'e', ':', 'a',
    'l',  'l',  'o',  'c',  'a', 't', 'i', 'o', 'n', /* query 1 */
    0x00, 0x00, 0x00, 0x05, 'q', 'e', 'm', 'u', ':', /* query 2 */
};

static const uint8_t option_reply_ack_bytes[] = {
    0x00, 0x03, 0xe8, 0x89, 0x04, 0x55, 0x65, 0xa9, /* reply magic */
    0x00, 0x00, 0x00, 0x08,                         /* STRUCTURED_REPLY */
    0x00, 0x00, 0x00, 0x01,                         /* NBD_REP_ACK */
    0x00, 0x00, 0x00, 0x00,                         /* no data */
};

static const uint8_t rep_info_export_data[] = {
    0x00, 0x00,                                     /* NBD_INFO_EXPORT */
    0x00, 0x00, 0x00, 0x00, 0x40, 0x00, 0x00, 0x00, /* 1 GiB */
    0x01, 0x0d, /* HAS_FLAGS|SEND_FLUSH|SEND_FUA|CAN_MULTI_CONN */
};

static const uint8_t rep_info_block_size_data[] = {
    0x00, 0x03,                                     /* BLOCK_SIZE */
    0x00, 0x00, 0x02, 0x00, 0x00, 0x00, 0x10, 0x00, /* 512, 4096 */
    0x02, 0x00, 0x00, 0x00,                         /* 32 MiB */
};

static const uint8_t export_name_reply_short[] = {
    0x00, 0x00, 0x00, 0x00, 0x00, 0x10, 0x00, 0x00, /* 1 MiB */
    0x00, 0x03,                                     /* HAS_FLAGS|READ_ONLY */
};

static const uint8_t request_bytes[] = {
    0x25, 0x60, 0x95, 0x13,                         /* compact magic */
    0x00, 0x01,                                     /* FUA */
    0x00, 0x01,                                     /* NBD_CMD_WRITE */
    0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, /* cookie */
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x10, 0x00, /* offset 4096 */
    0x00, 0x00, 0x02, 0x00,                         /* length 512 */
};

static const uint8_t request_ext_bytes[] = {
    0x21, 0xe4, 0x1c, 0x71,                         /* extended magic */
    0x00, 0x08,                                     /* REQ_ONE */
    0x00, 0x07,                                     /* BLOCK_STATUS */
    0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, /* cookie */
    0x00, 0x00, 0x00, 0x02, 0x00, 0x00, 0x00, 0x00, /* offset 8 GiB */
    0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, /* length 4 GiB */
};

static const uint8_t simple_reply_bytes[] = {
    0x67, 0x44, 0x66, 0x98,                         /* simple reply magic */
    0x00, 0x00, 0x00, 0x16,                         /* NBD_EINVAL */
    0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, /* cookie */
};

static const uint8_t structured_reply_bytes[] = {
    0x66, 0x8e, 0x33, 0xef,                         /* structured reply magic */
    0x00, 0x01,                                     /* DONE */
    0x00, 0x02,                                     /* OFFSET_HOLE */
    0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, /* cookie */
    0x00, 0x00, 0x00, 0x0c,                         /* 12 bytes */
};

static const uint8_t extended_reply_bytes[] = {
    0x6e, 0x8a, 0x27, 0x8c,                         /* extended magic */
    0x00, 0x01,                                     /* DONE */
    0x00, 0x00,                                     /* NONE */
    0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, /* cookie */
    0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, /* offset 64 KiB */
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, /* length 0 */
};

static const uint8_t offset_data_prefix[] = {
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x02, 0x00, /* offset 512 */
};

static const uint8_t offset_hole_bytes[] = {
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x10, 0x00, /* offset 4096 */
    0x00, 0x00, 0x20, 0x00,                         /* size 8192 */
};

static const uint8_t block_status_bytes[] = {
    0x00, 0x00, 0x00, 0x01,                         /* context 1 */
    0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, /* 64 KiB data */
    0x00, 0x10, 0x00, 0x00, 0x00, 0x00, 0x00, 0x03, /* 1 MiB hole+zero */
};

/* One extent only: every prefix of a longer list would be a valid list. */
static const uint8_t block_status_one_bytes[] = {
    0x00, 0x00, 0x00, 0x02,                         /* context 2 */
    0x00, 0x00, 0x10, 0x00, 0x00, 0x00, 0x00, 0x02, /* 4 KiB zero */
};

static const uint8_t block_status_ext_bytes[] = {
    0x00, 0x00, 0x00, 0x01,                         /* context 1 */
    0x00, 0x00, 0x00, 0x01,                         /* one descriptor */
    0x00, 0x00, 0x00, 0x02, 0x00, 0x00, 0x00, 0x00, /* 8 GiB */
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, /* hole */
};

static const uint8_t chunk_error_bytes[] = {
    0x00, 0x00, 0x00, 0x05, /* NBD_EIO */
    0x00, 0x03, 'b',  'a',  'd',
};

static const uint8_t chunk_error_offset_bytes[] = {
    0x00, 0x00, 0x00, 0x1c, /* NBD_ENOSPC */
    0x00, 0x02, 'n',  'o',  0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x40, 0x00, /* offset 16 KiB */
};

struct frame {
    const char *what;
    decode_fn *decode;
    const uint8_t *bytes;
    size_t len;
};

#define FRAME(what, fn, arr)                                                   \
    {                                                                          \
        what, fn, arr, sizeof(arr)                                             \
    }

static const struct frame frames[] = {
    FRAME("greeting", w_greeting, greeting_bytes),
    FRAME("client flags", w_client_flags, client_flags_bytes),
    FRAME("option header", w_option_header, option_header_bytes),
    FRAME("NBD_OPT_GO data", w_opt_info, opt_go_bytes),
    FRAME("SET_META_CONTEXT data", w_opt_meta, opt_meta_bytes),
    FRAME("option reply", w_option_reply, option_reply_ack_bytes),
    FRAME("NBD_INFO_EXPORT", w_rep_info, rep_info_export_data),
    FRAME("NBD_INFO_BLOCK_SIZE", w_rep_info, rep_info_block_size_data),
    FRAME("EXPORT_NAME reply", w_export_name_reply, export_name_reply_short),
    FRAME("compact request", w_request, request_bytes),
    FRAME("extended request", w_request_ext, request_ext_bytes),
    FRAME("simple reply", w_reply, simple_reply_bytes),
    FRAME("structured reply", w_reply, structured_reply_bytes),
    FRAME("extended reply", w_reply_ext, extended_reply_bytes),
    FRAME("OFFSET_DATA prefix", w_offset_data, offset_data_prefix),
    FRAME("OFFSET_HOLE", w_offset_hole, offset_hole_bytes),
    FRAME("BLOCK_STATUS", w_block_status, block_status_one_bytes),
    FRAME("BLOCK_STATUS_EXT", w_block_status_ext, block_status_ext_bytes),
    FRAME("ERROR", w_chunk_error, chunk_error_bytes),
    FRAME("ERROR_OFFSET", w_chunk_error_offset, chunk_error_offset_bytes),
};

/* Every known-good frame decodes, and every strict prefix of it fails. */
START_TEST(test_proto_truncated_frames_fail)
{
    const struct frame *f = &frames[_i];

    ck_assert_msg(run_exact(f->decode, f->bytes, f->len) == 0,
                  "%s: full frame refused", f->what);
    for (size_t n = 0; n < f->len; n++) {
        int r = run_exact(f->decode, f->bytes, n);
        ck_assert_msg(r < 0, "%s: %zu-byte prefix accepted", f->what, n);
    }
}
END_TEST

/* ------------------------------------------------------------------ */
/* Handshake                                                           */
/* ------------------------------------------------------------------ */

START_TEST(test_proto_greeting_round_trip)
{
    uint8_t buf[PROTO_GREETING_SIZE];
    uint16_t flags = 0;

    ck_assert_int_eq(
        proto_encode_greeting(buf, sizeof buf,
                              PROTO_FLAG_FIXED_NEWSTYLE | PROTO_FLAG_NO_ZEROES),
        PROTO_GREETING_SIZE);
    ck_assert_mem_eq(buf, greeting_bytes, sizeof greeting_bytes);
    ck_assert_int_eq(proto_decode_greeting(buf, sizeof buf, &flags), 0);
    ck_assert_uint_eq(flags, 3);
    ck_assert_int_eq(proto_encode_greeting(buf, sizeof buf - 1, 0), -ENOBUFS);
}
END_TEST

START_TEST(test_proto_greeting_bad_magic)
{
    uint8_t buf[PROTO_GREETING_SIZE];
    uint16_t flags;

    memcpy(buf, greeting_bytes, sizeof buf);
    buf[0] ^= 0x01;
    ck_assert_int_eq(proto_decode_greeting(buf, sizeof buf, &flags), -EBADMSG);
    memcpy(buf, greeting_bytes, sizeof buf);
    buf[15] = 'X';
    ck_assert_int_eq(proto_decode_greeting(buf, sizeof buf, &flags), -EBADMSG);
}
END_TEST

START_TEST(test_proto_greeting_oldstyle_refused)
{
    static const uint8_t old[] = {
        'N',  'B',  'D',  'M',  'A',  'G',  'I',  'C',
        0x00, 0x00, 0x42, 0x02, 0x81, 0x86, 0x12, 0x53, /* cliserv_magic */
        0x00, 0x00,
    };
    uint16_t flags;

    ck_assert_int_eq(run_exact(w_greeting, old, sizeof old), -EPROTONOSUPPORT);
    (void)flags;
}
END_TEST

struct client_flags_case {
    uint16_t hs_flags;
    uint32_t client_flags;
    int expect;
};

static const struct client_flags_case client_flags_cases[] = {
    {3, 0, 0},
    {3, 1, 0},
    {3, 2, 0},
    {3, 3, 0},
    {1, 1, 0},
    {1, 2, -EINVAL},          /* NO_ZEROES answered but never offered */
    {0, 1, -EINVAL},          /* FIXED_NEWSTYLE never offered */
    {3, 4, -EINVAL},          /* unknown bit */
    {3, 0x80000000, -EINVAL}, /* unknown top bit */
    {0xffff, 0xffffffff, -EINVAL},
};

START_TEST(test_proto_client_flags_unknown_rejected)
{
    const struct client_flags_case *c = &client_flags_cases[_i];
    uint8_t buf[4];
    uint32_t got = 0;

    ck_assert_int_eq(
        proto_encode_client_flags(buf, sizeof buf, c->client_flags), 4);
    ck_assert_int_eq(
        proto_decode_client_flags(buf, sizeof buf, c->hs_flags, &got),
        c->expect);
    ck_assert_uint_eq(got, c->client_flags);
}
END_TEST

/* ------------------------------------------------------------------ */
/* Option requests                                                     */
/* ------------------------------------------------------------------ */

START_TEST(test_proto_option_header_round_trip)
{
    uint8_t buf[PROTO_OPTION_HEADER_SIZE];
    struct proto_option_header h;

    ck_assert_int_eq(
        proto_encode_option_header(buf, sizeof buf, PROTO_OPT_GO, 14),
        PROTO_OPTION_HEADER_SIZE);
    ck_assert_mem_eq(buf, option_header_bytes, sizeof buf);
    ck_assert_int_eq(proto_decode_option_header(buf, sizeof buf, &h), 0);
    ck_assert_uint_eq(h.option, PROTO_OPT_GO);
    ck_assert_uint_eq(h.length, 14);
    ck_assert_int_eq(proto_encode_option_header(buf, 15, 1, 0), -ENOBUFS);
}
END_TEST

START_TEST(test_proto_option_header_bad_magic)
{
    uint8_t buf[PROTO_OPTION_HEADER_SIZE];
    struct proto_option_header h;

    memcpy(buf, option_header_bytes, sizeof buf);
    buf[7] = 'U';
    ck_assert_int_eq(proto_decode_option_header(buf, sizeof buf, &h), -EBADMSG);
    /* The option-reply magic is not an option request. */
    memcpy(buf, option_reply_ack_bytes, sizeof buf);
    ck_assert_int_eq(proto_decode_option_header(buf, sizeof buf, &h), -EBADMSG);
}
END_TEST

START_TEST(test_proto_option_length_over_limit)
{
    uint8_t buf[PROTO_OPTION_HEADER_SIZE];
    struct proto_option_header h;
    static const uint32_t lengths[] = {PROTO_OPTION_MAX_LEN + 1, 0x7fffffff,
                                       0xffffffff};

    proto_encode_option_header(buf, sizeof buf, PROTO_OPT_INFO,
                               PROTO_OPTION_MAX_LEN);
    ck_assert_int_eq(proto_decode_option_header(buf, sizeof buf, &h), 0);
    for (size_t i = 0; i < ARRAY_SIZE(lengths); i++) {
        proto_encode_option_header(buf, sizeof buf, PROTO_OPT_INFO, lengths[i]);
        ck_assert_int_eq(proto_decode_option_header(buf, sizeof buf, &h),
                         -E2BIG);
        /* Still filled in, so the server can log what it refused. */
        ck_assert_uint_eq(h.length, lengths[i]);
    }
}
END_TEST

START_TEST(test_proto_export_name_limits)
{
    struct proto_string name;
    char *big = filled(PROTO_STRING_MAX + 1, 'x');
    static const char with_nul[] = {'d', 'i', '\0', 'k'};
    uint8_t *p;

    ck_assert_int_eq(proto_parse_opt_export_name(NULL, 0, &name), 0);
    ck_assert_uint_eq(name.len, 0);
    ck_assert_int_eq(proto_parse_opt_export_name(big, PROTO_STRING_MAX, &name),
                     0);
    ck_assert_uint_eq(name.len, PROTO_STRING_MAX);
    ck_assert_int_eq(
        proto_parse_opt_export_name(big, PROTO_STRING_MAX + 1, &name), -E2BIG);
    p = dup_exact(with_nul, sizeof with_nul);
    ck_assert_int_eq(proto_parse_opt_export_name(p, sizeof with_nul, &name),
                     -EBADMSG);
    free(p);
    free(big);
}
END_TEST

START_TEST(test_proto_export_name_build)
{
    uint8_t buf[64];
    struct proto_option_header h;
    struct proto_string name;
    char *big = filled(PROTO_STRING_MAX + 1, 'x');

    ck_assert_int_eq(proto_build_opt_export_name(buf, sizeof buf, "disk", 4),
                     PROTO_OPTION_HEADER_SIZE + 4);
    ck_assert_int_eq(proto_decode_option_header(buf, sizeof buf, &h), 0);
    ck_assert_uint_eq(h.option, PROTO_OPT_EXPORT_NAME);
    ck_assert_uint_eq(h.length, 4);
    ck_assert_int_eq(proto_parse_opt_export_name(buf + 16, 4, &name), 0);
    ck_assert_mem_eq(name.ptr, "disk", 4);
    ck_assert_int_eq(proto_build_opt_export_name(buf, sizeof buf, "a\0b", 3),
                     -EINVAL);
    ck_assert_int_eq(
        proto_build_opt_export_name(buf, sizeof buf, big, PROTO_STRING_MAX + 1),
        -EINVAL);
    ck_assert_int_eq(proto_build_opt_export_name(buf, 19, "disk", 4), -ENOBUFS);
    free(big);
}
END_TEST

START_TEST(test_proto_opt_info_round_trip)
{
    static const uint16_t reqs[] = {PROTO_INFO_BLOCK_SIZE, PROTO_INFO_NAME};
    uint8_t buf[64];
    struct proto_option_header h;
    struct proto_opt_info info;
    ssize_t n;

    n = proto_build_opt_info(buf, sizeof buf, PROTO_OPT_GO, "disk", 4, reqs, 2);
    ck_assert_int_eq(n, PROTO_OPTION_HEADER_SIZE + sizeof opt_go_bytes);
    ck_assert_mem_eq(buf, option_header_bytes, PROTO_OPTION_HEADER_SIZE);
    ck_assert_mem_eq(buf + 16, opt_go_bytes, sizeof opt_go_bytes);
    ck_assert_int_eq(proto_decode_option_header(buf, (size_t)n, &h), 0);
    ck_assert_int_eq(proto_parse_opt_info(buf + 16, h.length, &info), 0);
    ck_assert_uint_eq(info.name.len, 4);
    ck_assert_mem_eq(info.name.ptr, "disk", 4);
    ck_assert_uint_eq(info.nr_requests, 2);
    ck_assert_uint_eq(proto_opt_info_request(&info, 0), PROTO_INFO_BLOCK_SIZE);
    ck_assert_uint_eq(proto_opt_info_request(&info, 1), PROTO_INFO_NAME);

    /* The default export with no requests. */
    n = proto_build_opt_info(buf, sizeof buf, PROTO_OPT_INFO, "", 0, NULL, 0);
    ck_assert_int_eq(n, PROTO_OPTION_HEADER_SIZE + 6);
    ck_assert_int_eq(proto_parse_opt_info(buf + 16, 6, &info), 0);
    ck_assert_uint_eq(info.name.len, 0);
    ck_assert_uint_eq(info.nr_requests, 0);

    ck_assert_int_eq(
        proto_build_opt_info(buf, sizeof buf, PROTO_OPT_GO, "disk", 4, reqs, 2),
        n + 8);
    ck_assert_int_eq(
        proto_build_opt_info(buf, 20, PROTO_OPT_GO, "disk", 4, reqs, 2),
        -ENOBUFS);
}
END_TEST

/* A hand-written option payload and the errno its parser must give. */
struct payload_case {
    const char *what;
    uint8_t bytes[48];
    size_t len;
    int expect;
};

static const struct payload_case opt_info_cases[] = {
    {"empty", {0}, 0, -EBADMSG},
    {"five bytes", {0, 0, 0, 0, 0}, 5, -EBADMSG},
    {"default export, no requests", {0, 0, 0, 0, 0, 0}, 6, 0},
    {"name length 0xffffffff", {0xff, 0xff, 0xff, 0xff, 0, 0}, 6, -EBADMSG},
    {"name length 0xfffffffa (wraps len - 6)",
     {0xff, 0xff, 0xff, 0xfa, 'd', 'i', 's', 'k', 0, 0},
     10,
     -EBADMSG},
    {"name one byte longer than the data",
     {0, 0, 0, 5, 'd', 'i', 's', 'k', 0, 0},
     10,
     -EBADMSG},
    {"count 1 but no request",
     {0, 0, 0, 4, 'd', 'i', 's', 'k', 0, 1},
     10,
     -EBADMSG},
    {"count 0 but one request",
     {0, 0, 0, 4, 'd', 'i', 's', 'k', 0, 0, 0, 3},
     12,
     -EBADMSG},
    {"count 1 and an odd trailing byte",
     {0, 0, 0, 4, 'd', 'i', 's', 'k', 0, 1, 0, 3, 0},
     13,
     -EBADMSG},
    {"count 0xffff",
     {0, 0, 0, 4, 'd', 'i', 's', 'k', 0xff, 0xff, 0, 3},
     12,
     -EBADMSG},
    {"NUL inside the name",
     {0, 0, 0, 4, 'd', 0, 's', 'k', 0, 1, 0, 3},
     12,
     -EBADMSG},
    {"three requests", {0, 0, 0, 1, 'x', 0, 3, 0, 0, 0, 1, 0, 2}, 13, 0},
};

START_TEST(test_proto_opt_info_malformed)
{
    const struct payload_case *c = &opt_info_cases[_i];

    ck_assert_msg(run_exact(w_opt_info, c->bytes, c->len) == c->expect,
                  "%s: expected %d", c->what, c->expect);
}
END_TEST

START_TEST(test_proto_opt_info_name_over_limit)
{
    size_t len = 4 + PROTO_STRING_MAX + 1 + 2;
    uint8_t *p = malloc(len);
    struct proto_opt_info info;

    ck_assert_ptr_nonnull(p);
    memset(p, 'n', len);
    p[0] = 0;
    p[1] = 0;
    p[2] = (PROTO_STRING_MAX + 1) >> 8;
    p[3] = (PROTO_STRING_MAX + 1) & 0xff;
    p[len - 2] = 0;
    p[len - 1] = 0;
    ck_assert_int_eq(proto_parse_opt_info(p, len, &info), -E2BIG);
    /* The same name one byte shorter is fine. */
    p[3] -= 1;
    ck_assert_int_eq(proto_parse_opt_info(p, len - 1, &info), -EBADMSG);
    memmove(p + 4 + PROTO_STRING_MAX, p + len - 2, 2);
    ck_assert_int_eq(proto_parse_opt_info(p, len - 1, &info), 0);
    ck_assert_uint_eq(info.name.len, PROTO_STRING_MAX);
    free(p);
}
END_TEST

START_TEST(test_proto_opt_meta_round_trip)
{
    static const struct proto_string queries[] = {
        {"base:allocation", 15},
        {"qemu:", 5},
    };
    uint8_t buf[128];
    struct proto_opt_meta meta;
    struct proto_string q;
    size_t pos = 0;
    ssize_t n;

    n = proto_build_opt_meta(buf, sizeof buf, PROTO_OPT_SET_META_CONTEXT,
                             "disk", 4, queries, 2);
    ck_assert_int_eq(n, PROTO_OPTION_HEADER_SIZE + sizeof opt_meta_bytes);
    ck_assert_mem_eq(buf + 16, opt_meta_bytes, sizeof opt_meta_bytes);
    ck_assert_int_eq(
        proto_parse_opt_meta(buf + 16, sizeof opt_meta_bytes, &meta), 0);
    ck_assert_uint_eq(meta.export_name.len, 4);
    ck_assert_mem_eq(meta.export_name.ptr, "disk", 4);
    ck_assert_uint_eq(meta.nr_queries, 2);
    ck_assert(proto_opt_meta_next(&meta, &pos, &q));
    ck_assert_uint_eq(q.len, 15);
    ck_assert_mem_eq(q.ptr, "base:allocation", 15);
    ck_assert(proto_opt_meta_next(&meta, &pos, &q));
    ck_assert_uint_eq(q.len, 5);
    ck_assert_mem_eq(q.ptr, "qemu:", 5);
    ck_assert(!proto_opt_meta_next(&meta, &pos, &q));

    /* No queries at all (LIST: "everything"; SET: "nothing"). */
    n = proto_build_opt_meta(buf, sizeof buf, PROTO_OPT_LIST_META_CONTEXT, "",
                             0, NULL, 0);
    ck_assert_int_eq(n, PROTO_OPTION_HEADER_SIZE + 8);
    ck_assert_int_eq(proto_parse_opt_meta(buf + 16, 8, &meta), 0);
    ck_assert_uint_eq(meta.nr_queries, 0);
    pos = 0;
    ck_assert(!proto_opt_meta_next(&meta, &pos, &q));
}
END_TEST

static const struct payload_case opt_meta_cases[] = {
    {"empty", {0}, 0, -EBADMSG},
    {"seven bytes", {0, 0, 0, 0, 0, 0, 0}, 7, -EBADMSG},
    {"no name, no queries", {0, 0, 0, 0, 0, 0, 0, 0}, 8, 0},
    {"name length 0xffffffff",
     {0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0},
     8,
     -EBADMSG},
    {"name length eats the count", {0, 0, 0, 2, 'a', 'b', 0, 0}, 8, -EBADMSG},
    {"query count 0xffffffff, no queries",
     {0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff},
     8,
     -EBADMSG},
    {"query count 1, length field cut",
     {0, 0, 0, 0, 0, 0, 0, 1, 0, 0},
     10,
     -EBADMSG},
    {"query length 0xffffffff",
     {0, 0, 0, 0, 0, 0, 0, 1, 0xff, 0xff, 0xff, 0xff, 'b'},
     13,
     -EBADMSG},
    {"query one byte longer than the data",
     {0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 6, 'b', 'a', 's', 'e', ':'},
     17,
     -EBADMSG},
    {"trailing byte after the last query",
     {0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 5, 'b', 'a', 's', 'e', ':', 'x'},
     18,
     -EBADMSG},
    {"count 1 but two queries",
     {0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 1, 'a', 0, 0, 0, 1, 'b'},
     18,
     -EBADMSG},
    {"count 2 but one query",
     {0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0, 1, 'a'},
     13,
     -EBADMSG},
    {"NUL in a query",
     {0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 3, 'a', 0, 'b'},
     15,
     -EBADMSG},
    {"NUL in the export name", {0, 0, 0, 2, 'a', 0, 0, 0, 0, 0}, 10, -EBADMSG},
    {"empty query", {0, 0, 0, 1, 'a', 0, 0, 0, 1, 0, 0, 0, 0}, 13, 0},
};

START_TEST(test_proto_opt_meta_malformed)
{
    const struct payload_case *c = &opt_meta_cases[_i];

    ck_assert_msg(run_exact(w_opt_meta, c->bytes, c->len) == c->expect,
                  "%s: expected %d", c->what, c->expect);
}
END_TEST

START_TEST(test_proto_opt_meta_query_over_limit)
{
    size_t qlen = PROTO_STRING_MAX + 1;
    size_t len = 4 + 4 + 4 + qlen;
    uint8_t *p = calloc(1, len + 1);
    struct proto_opt_meta meta;

    ck_assert_ptr_nonnull(p);
    p[7] = 1;          /* one query */
    p[10] = qlen >> 8; /* of 4097 bytes */
    p[11] = qlen & 0xff;
    memset(p + 12, 'q', qlen);
    ck_assert_int_eq(proto_parse_opt_meta(p, len, &meta), -E2BIG);
    /* A framing error wins over the over-long string. */
    ck_assert_int_eq(proto_parse_opt_meta(p, len + 1, &meta), -EBADMSG);
    free(p);
}
END_TEST

START_TEST(test_proto_opt_meta_build_limits)
{
    uint8_t *buf = malloc(2 * PROTO_OPTION_MAX_LEN);
    struct proto_string qs[20];
    char *big = filled(PROTO_STRING_MAX, 'q');

    ck_assert_ptr_nonnull(buf);
    for (size_t i = 0; i < ARRAY_SIZE(qs); i++) {
        qs[i].ptr = big;
        qs[i].len = PROTO_STRING_MAX;
    }
    /* 20 queries of 4 KiB exceed the 64 KiB option cap. */
    ck_assert_int_eq(proto_build_opt_meta(buf, 2 * PROTO_OPTION_MAX_LEN,
                                          PROTO_OPT_SET_META_CONTEXT, "", 0, qs,
                                          ARRAY_SIZE(qs)),
                     -E2BIG);
    qs[0].len = PROTO_STRING_MAX + 1;
    ck_assert_int_eq(proto_build_opt_meta(buf, 2 * PROTO_OPTION_MAX_LEN,
                                          PROTO_OPT_SET_META_CONTEXT, "", 0, qs,
                                          1),
                     -EINVAL);
    free(big);
    free(buf);
}
END_TEST

START_TEST(test_proto_build_option_raw)
{
    uint8_t buf[32];
    struct proto_option_header h;

    ck_assert_int_eq(proto_build_option(buf, sizeof buf,
                                        PROTO_OPT_STRUCTURED_REPLY, NULL, 0),
                     PROTO_OPTION_HEADER_SIZE);
    ck_assert_int_eq(proto_decode_option_header(buf, sizeof buf, &h), 0);
    ck_assert_uint_eq(h.option, PROTO_OPT_STRUCTURED_REPLY);
    ck_assert_uint_eq(h.length, 0);
    ck_assert_int_eq(proto_build_option(buf, sizeof buf, 0x1234, "abc", 3),
                     PROTO_OPTION_HEADER_SIZE + 3);
    ck_assert_mem_eq(buf + 16, "abc", 3);
    ck_assert_int_eq(
        proto_build_option(buf, sizeof buf, 1, buf, PROTO_OPTION_MAX_LEN + 1),
        -E2BIG);
}
END_TEST

/* ------------------------------------------------------------------ */
/* Option replies                                                      */
/* ------------------------------------------------------------------ */

START_TEST(test_proto_rep_ack_bytes)
{
    uint8_t buf[PROTO_OPTION_REPLY_SIZE];
    struct proto_option_reply rep;

    ck_assert_int_eq(
        proto_build_rep_ack(buf, sizeof buf, PROTO_OPT_STRUCTURED_REPLY),
        PROTO_OPTION_REPLY_SIZE);
    ck_assert_mem_eq(buf, option_reply_ack_bytes, sizeof buf);
    ck_assert_int_eq(proto_decode_option_reply(buf, sizeof buf, &rep), 0);
    ck_assert_uint_eq(rep.option, PROTO_OPT_STRUCTURED_REPLY);
    ck_assert_uint_eq(rep.type, PROTO_REP_ACK);
    ck_assert_uint_eq(rep.length, 0);
    ck_assert_int_eq(proto_build_rep_ack(buf, sizeof buf - 1, 1), -ENOBUFS);
}
END_TEST

START_TEST(test_proto_option_reply_malformed)
{
    uint8_t buf[PROTO_OPTION_REPLY_SIZE];
    struct proto_option_reply rep;

    memcpy(buf, option_reply_ack_bytes, sizeof buf);
    buf[0] = 0xff;
    ck_assert_int_eq(proto_decode_option_reply(buf, sizeof buf, &rep),
                     -EBADMSG);
    /* An option request header is not a reply. */
    ck_assert_int_eq(proto_decode_option_reply(
                         option_header_bytes, sizeof option_header_bytes, &rep),
                     -EBADMSG);
    proto_encode_option_reply(buf, sizeof buf, 1, PROTO_REP_SERVER, 0xffffffff);
    ck_assert_int_eq(proto_decode_option_reply(buf, sizeof buf, &rep), -E2BIG);
    ck_assert_uint_eq(rep.length, 0xffffffff);
}
END_TEST

/* A builder's output compared against hand-written bytes. */
struct rep_case {
    const char *what;
    ssize_t (*build)(uint8_t *buf, size_t cap);
    uint8_t expect[40];
    size_t len;
};

static ssize_t b_rep_server(uint8_t *buf, size_t cap)
{
    return proto_build_rep_server(buf, cap, PROTO_OPT_LIST, "a", 1, "xy", 2);
}

static ssize_t b_rep_server_nodesc(uint8_t *buf, size_t cap)
{
    return proto_build_rep_server(buf, cap, PROTO_OPT_LIST, "ab", 2, NULL, 0);
}

static ssize_t b_info_export(uint8_t *buf, size_t cap)
{
    return proto_build_rep_info_export(buf, cap, PROTO_OPT_GO, 1ull << 30,
                                       0x010d);
}

static ssize_t b_info_name(uint8_t *buf, size_t cap)
{
    return proto_build_rep_info_name(buf, cap, PROTO_OPT_INFO, "d", 1);
}

static ssize_t b_info_desc(uint8_t *buf, size_t cap)
{
    return proto_build_rep_info_description(buf, cap, PROTO_OPT_INFO, "hi", 2);
}

static ssize_t b_info_block_size(uint8_t *buf, size_t cap)
{
    return proto_build_rep_info_block_size(buf, cap, PROTO_OPT_GO, 512, 4096,
                                           32u << 20);
}

static ssize_t b_meta_context(uint8_t *buf, size_t cap)
{
    return proto_build_rep_meta_context(buf, cap, PROTO_OPT_SET_META_CONTEXT, 7,
                                        "base:x", 6);
}

static ssize_t b_rep_error(uint8_t *buf, size_t cap)
{
    return proto_build_rep_error(buf, cap, PROTO_OPT_GO, PROTO_REP_ERR_UNKNOWN,
                                 "no", 2);
}

static ssize_t b_rep_error_nomsg(uint8_t *buf, size_t cap)
{
    return proto_build_rep_error(buf, cap, 42, PROTO_REP_ERR_UNSUP, NULL, 0);
}

#define REP_MAGIC_BYTES 0x00, 0x03, 0xe8, 0x89, 0x04, 0x55, 0x65, 0xa9

static const struct rep_case rep_cases[] = {
    {"REP_SERVER",
     b_rep_server,
     {REP_MAGIC_BYTES,
      0,
      0,
      0,
      3,
      0,
      0,
      0,
      2,
      0,
      0,
      0,
      7,
      0,
      0,
      0,
      1,
      'a',
      'x',
      'y'},
     27},
    {"REP_SERVER without description",
     b_rep_server_nodesc,
     {REP_MAGIC_BYTES, 0, 0, 0, 3, 0, 0, 0, 2, 0, 0, 0, 6, 0, 0, 0, 2, 'a',
      'b'},
     26},
    {"INFO_EXPORT",
     b_info_export,
     {REP_MAGIC_BYTES,
      0,
      0,
      0,
      7,
      0,
      0,
      0,
      3,
      0,
      0,
      0,
      12,
      0,
      0,
      0,
      0,
      0,
      0,
      0x40,
      0,
      0,
      0,
      0x01,
      0x0d},
     32},
    {"INFO_NAME",
     b_info_name,
     {REP_MAGIC_BYTES, 0, 0, 0, 6, 0, 0, 0, 3, 0, 0, 0, 3, 0, 1, 'd'},
     23},
    {"INFO_DESCRIPTION",
     b_info_desc,
     {REP_MAGIC_BYTES, 0, 0, 0, 6, 0, 0, 0, 3, 0, 0, 0, 4, 0, 2, 'h', 'i'},
     24},
    {"INFO_BLOCK_SIZE",
     b_info_block_size,
     {REP_MAGIC_BYTES,
      0,
      0,
      0,
      7,
      0,
      0,
      0,
      3,
      0,
      0,
      0,
      14,
      0,
      3,
      0,
      0,
      2,
      0,
      0,
      0,
      0x10,
      0,
      0x02,
      0,
      0,
      0},
     34},
    {"REP_META_CONTEXT",
     b_meta_context,
     {REP_MAGIC_BYTES,
      0,
      0,
      0,
      10,
      0,
      0,
      0,
      4,
      0,
      0,
      0,
      10,
      0,
      0,
      0,
      7,
      'b',
      'a',
      's',
      'e',
      ':',
      'x'},
     30},
    {"REP_ERR_UNKNOWN with a message",
     b_rep_error,
     {REP_MAGIC_BYTES, 0, 0, 0, 7, 0x80, 0, 0, 6, 0, 0, 0, 2, 'n', 'o'},
     22},
    {"REP_ERR_UNSUP without a message",
     b_rep_error_nomsg,
     {REP_MAGIC_BYTES, 0, 0, 0, 42, 0x80, 0, 0, 1, 0, 0, 0, 0},
     20},
};

/* Exact bytes, and -ENOBUFS for every buffer one byte short or smaller. */
START_TEST(test_proto_rep_builders_bytes)
{
    const struct rep_case *c = &rep_cases[_i];
    uint8_t buf[64];
    uint8_t *small;

    memset(buf, 0xee, sizeof buf);
    ck_assert_msg(c->build(buf, sizeof buf) == (ssize_t)c->len, "%s: size",
                  c->what);
    ck_assert_msg(memcmp(buf, c->expect, c->len) == 0, "%s: bytes", c->what);
    ck_assert_uint_eq(buf[c->len], 0xee);
    for (size_t cap = 0; cap < c->len; cap++) {
        small = malloc(cap > 0 ? cap : 1);
        ck_assert_ptr_nonnull(small);
        ck_assert_msg(c->build(small, cap) == -ENOBUFS, "%s: cap %zu", c->what,
                      cap);
        free(small);
    }
}
END_TEST

START_TEST(test_proto_rep_builders_bad_args)
{
    uint8_t buf[PROTO_OPTION_REPLY_SIZE + PROTO_STRING_MAX + 16];
    char *big = filled(PROTO_STRING_MAX + 1, 'z');

    /* An error reply needs bit 31. */
    ck_assert_int_eq(
        proto_build_rep_error(buf, sizeof buf, 1, PROTO_REP_ACK, NULL, 0),
        -EINVAL);
    ck_assert_int_eq(proto_build_rep_error(buf, sizeof buf, 1,
                                           PROTO_REP_ERR_POLICY, big,
                                           PROTO_STRING_MAX + 1),
                     -EINVAL);
    ck_assert_int_eq(proto_build_rep_error(buf, sizeof buf, 1,
                                           PROTO_REP_ERR_POLICY, big,
                                           PROTO_STRING_MAX),
                     PROTO_OPTION_REPLY_SIZE + PROTO_STRING_MAX);
    ck_assert_int_eq(
        proto_build_rep_server(buf, sizeof buf, 3, "a\0", 2, NULL, 0), -EINVAL);
    ck_assert_int_eq(proto_build_rep_info_name(buf, sizeof buf, 6, big,
                                               PROTO_STRING_MAX + 1),
                     -EINVAL);
    ck_assert_int_eq(
        proto_build_rep_meta_context(buf, sizeof buf, 10, 1, "x\0y", 3),
        -EINVAL);
    free(big);
}
END_TEST

START_TEST(test_proto_rep_server_parse)
{
    static const uint8_t ok[] = {0, 0, 0, 1, 'a', 'x', 'y'};
    static const uint8_t name_only[] = {0, 0, 0, 2, 'a', 'b'};
    static const uint8_t too_long[] = {0, 0, 0, 4, 'a', 'b', 'c'};
    static const uint8_t huge[] = {0xff, 0xff, 0xff, 0xff, 'a'};
    static const uint8_t nul_desc[] = {0, 0, 0, 1, 'a', 'x', 0};
    uint8_t *p = dup_exact(ok, sizeof ok);
    struct proto_string name, desc;

    ck_assert_int_eq(proto_parse_rep_server(p, sizeof ok, &name, &desc), 0);
    ck_assert_uint_eq(name.len, 1);
    ck_assert_mem_eq(name.ptr, "a", 1);
    ck_assert_uint_eq(desc.len, 2);
    ck_assert_mem_eq(desc.ptr, "xy", 2);
    free(p);
    ck_assert_int_eq(run_exact(w_rep_server, name_only, sizeof name_only), 0);
    ck_assert_int_eq(run_exact(w_rep_server, too_long, sizeof too_long),
                     -EBADMSG);
    ck_assert_int_eq(run_exact(w_rep_server, huge, sizeof huge), -EBADMSG);
    ck_assert_int_eq(run_exact(w_rep_server, nul_desc, sizeof nul_desc),
                     -EBADMSG);
    ck_assert_int_eq(run_exact(w_rep_server, ok, 3), -EBADMSG);
}
END_TEST

static const struct payload_case rep_info_cases[] = {
    {"one byte", {0}, 1, -EBADMSG},
    {"EXPORT, 11 bytes", {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1}, 11, -EBADMSG},
    {"EXPORT, 13 bytes", {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0}, 13, -EBADMSG},
    {"BLOCK_SIZE, 13 bytes",
     {0, 3, 0, 0, 2, 0, 0, 0, 0x10, 0, 0, 0, 0x10},
     13,
     -EBADMSG},
    {"BLOCK_SIZE, 15 bytes",
     {0, 3, 0, 0, 2, 0, 0, 0, 0x10, 0, 0, 0, 0x10, 0, 0},
     15,
     -EBADMSG},
    {"NAME, empty", {0, 1}, 2, 0},
    {"NAME with NUL", {0, 1, 'a', 0}, 4, -EBADMSG},
    {"DESCRIPTION", {0, 2, 'h', 'i'}, 4, 0},
    {"unknown type is ignored", {0x12, 0x34, 1, 2, 3}, 5, 0},
};

START_TEST(test_proto_rep_info_parse)
{
    const struct payload_case *c = &rep_info_cases[_i];

    ck_assert_msg(run_exact(w_rep_info, c->bytes, c->len) == c->expect,
                  "%s: expected %d", c->what, c->expect);
}
END_TEST

START_TEST(test_proto_rep_info_round_trip)
{
    uint8_t buf[64];
    struct proto_info_reply info;
    ssize_t n;

    n = proto_build_rep_info_export(buf, sizeof buf, PROTO_OPT_GO,
                                    0x123456789aull, 0x0403);
    ck_assert_int_eq(n, 32);
    ck_assert_int_eq(proto_parse_rep_info(buf + 20, 12, &info), 0);
    ck_assert_uint_eq(info.type, PROTO_INFO_EXPORT);
    ck_assert_uint_eq(info.u.export_info.size, 0x123456789aull);
    ck_assert_uint_eq(info.u.export_info.tx_flags, 0x0403);

    n = proto_build_rep_info_block_size(buf, sizeof buf, PROTO_OPT_GO, 1, 4096,
                                        0xffffffff);
    ck_assert_int_eq(proto_parse_rep_info(buf + 20, (size_t)n - 20, &info), 0);
    ck_assert_uint_eq(info.type, PROTO_INFO_BLOCK_SIZE);
    ck_assert_uint_eq(info.u.block_size.min, 1);
    ck_assert_uint_eq(info.u.block_size.pref, 4096);
    ck_assert_uint_eq(info.u.block_size.max, 0xffffffff);

    n = proto_build_rep_info_name(buf, sizeof buf, PROTO_OPT_GO, "disk", 4);
    ck_assert_int_eq(proto_parse_rep_info(buf + 20, (size_t)n - 20, &info), 0);
    ck_assert_uint_eq(info.type, PROTO_INFO_NAME);
    ck_assert_mem_eq(info.u.name.ptr, "disk", 4);

    n = proto_build_rep_info_description(buf, sizeof buf, PROTO_OPT_GO,
                                         "a disk", 6);
    ck_assert_int_eq(proto_parse_rep_info(buf + 20, (size_t)n - 20, &info), 0);
    ck_assert_uint_eq(info.type, PROTO_INFO_DESCRIPTION);
    ck_assert_uint_eq(info.u.description.len, 6);
    ck_assert_mem_eq(info.u.description.ptr, "a disk", 6);
}
END_TEST

START_TEST(test_proto_rep_meta_context_and_error_parse)
{
    static const uint8_t ok[] = {0, 0, 0, 9, 'b', 'a', 's', 'e', ':', 'a'};
    static const uint8_t nul[] = {0, 0, 0, 9, 'b', 0};
    uint8_t *p = dup_exact(ok, sizeof ok);
    struct proto_string s;
    char *big = filled(PROTO_STRING_MAX + 1, 'e');
    uint32_t id;

    ck_assert_int_eq(proto_parse_rep_meta_context(p, sizeof ok, &id, &s), 0);
    ck_assert_uint_eq(id, 9);
    ck_assert_uint_eq(s.len, 6);
    ck_assert_mem_eq(s.ptr, "base:a", 6);
    free(p);
    ck_assert_int_eq(run_exact(w_rep_meta_context, ok, 3), -EBADMSG);
    ck_assert_int_eq(run_exact(w_rep_meta_context, nul, sizeof nul), -EBADMSG);

    ck_assert_int_eq(proto_parse_rep_error(NULL, 0, &s), 0);
    ck_assert_uint_eq(s.len, 0);
    ck_assert_int_eq(proto_parse_rep_error("oops", 4, &s), 0);
    ck_assert_int_eq(proto_parse_rep_error("o\0ps", 4, &s), -EBADMSG);
    ck_assert_int_eq(proto_parse_rep_error(big, PROTO_STRING_MAX + 1, &s),
                     -E2BIG);
    free(big);
}
END_TEST

START_TEST(test_proto_export_name_reply)
{
    uint8_t buf[PROTO_EXPORT_NAME_REPLY_SIZE + 1];
    uint64_t size;
    uint16_t flags;

    memset(buf, 0xee, sizeof buf);
    ck_assert_int_eq(
        proto_encode_export_name_reply(buf, sizeof buf, 1 << 20, 3, false),
        PROTO_EXPORT_NAME_REPLY_SIZE);
    ck_assert_mem_eq(buf, export_name_reply_short,
                     sizeof export_name_reply_short);
    for (size_t i = 10; i < PROTO_EXPORT_NAME_REPLY_SIZE; i++) {
        ck_assert_uint_eq(buf[i], 0);
    }
    ck_assert_uint_eq(buf[PROTO_EXPORT_NAME_REPLY_SIZE], 0xee);

    memset(buf, 0xee, sizeof buf);
    ck_assert_int_eq(proto_encode_export_name_reply(buf, 10, 1 << 20, 3, true),
                     PROTO_EXPORT_NAME_REPLY_SHORT);
    ck_assert_mem_eq(buf, export_name_reply_short, 10);
    ck_assert_uint_eq(buf[10], 0xee);
    ck_assert_int_eq(proto_encode_export_name_reply(buf, 133, 0, 1, false),
                     -ENOBUFS);
    ck_assert_int_eq(proto_encode_export_name_reply(buf, 9, 0, 1, true),
                     -ENOBUFS);

    ck_assert_int_eq(proto_decode_export_name_reply(buf, 10, &size, &flags), 0);
    ck_assert_uint_eq(size, 1 << 20);
    ck_assert_uint_eq(flags, 3);
}
END_TEST

/* ------------------------------------------------------------------ */
/* Requests                                                            */
/* ------------------------------------------------------------------ */

START_TEST(test_proto_request_decode_known_bytes)
{
    struct proto_request req;

    ck_assert_int_eq(
        proto_decode_request(request_bytes, sizeof request_bytes, false, &req),
        0);
    ck_assert_uint_eq(req.flags, PROTO_CMD_FLAG_FUA);
    ck_assert_uint_eq(req.type, PROTO_CMD_WRITE);
    ck_assert_uint_eq(req.cookie, COOKIE);
    ck_assert_uint_eq(req.offset, 4096);
    ck_assert_uint_eq(req.length, 512);
    ck_assert_uint_eq(proto_request_payload_len(&req, false), 512);

    ck_assert_int_eq(proto_decode_request(request_ext_bytes,
                                          sizeof request_ext_bytes, true, &req),
                     0);
    ck_assert_uint_eq(req.flags, PROTO_CMD_FLAG_REQ_ONE);
    ck_assert_uint_eq(req.type, PROTO_CMD_BLOCK_STATUS);
    ck_assert_uint_eq(req.cookie, COOKIE);
    ck_assert_uint_eq(req.offset, 8ull << 30);
    ck_assert_uint_eq(req.length, 4ull << 30);
    ck_assert_uint_eq(proto_request_payload_len(&req, true), 0);
}
END_TEST

struct request_case {
    struct proto_request req;
    bool extended;
};

static const struct request_case request_cases[] = {
    {{0, PROTO_CMD_READ, 0, 0, 0}, false},
    {{PROTO_CMD_FLAG_FUA, PROTO_CMD_WRITE, COOKIE, 4096, 512}, false},
    {{0, PROTO_CMD_DISC, ~0ull, 0, 0}, false},
    {{PROTO_CMD_FLAG_DF, PROTO_CMD_READ, 1, ~0ull, 0xffffffff}, false},
    {{PROTO_CMD_FLAG_NO_HOLE | PROTO_CMD_FLAG_FAST_ZERO, PROTO_CMD_WRITE_ZEROES,
      7, 1 << 20, 1 << 30},
     false},
    {{0, 0xffff, 2, 3, 4}, false}, /* unknown command: not the codec's job */
    {{0, PROTO_CMD_TRIM, 9, 0, 1ull << 40}, true},
    {{PROTO_CMD_FLAG_PAYLOAD_LEN, PROTO_CMD_BLOCK_STATUS, 3, 0, 16}, true},
    {{0, PROTO_CMD_CACHE, ~0ull, ~0ull, ~0ull}, true},
};

START_TEST(test_proto_request_round_trip)
{
    const struct request_case *c = &request_cases[_i];
    size_t size =
        c->extended ? PROTO_EXTENDED_REQUEST_SIZE : PROTO_REQUEST_SIZE;
    uint8_t buf[PROTO_EXTENDED_REQUEST_SIZE];
    struct proto_request out;
    uint8_t *exact;

    ck_assert_int_eq(
        proto_encode_request(buf, sizeof buf, &c->req, c->extended),
        (ssize_t)size);
    exact = dup_exact(buf, size);
    ck_assert_int_eq(proto_decode_request(exact, size, c->extended, &out), 0);
    ck_assert_uint_eq(out.flags, c->req.flags);
    ck_assert_uint_eq(out.type, c->req.type);
    ck_assert_uint_eq(out.cookie, c->req.cookie);
    ck_assert_uint_eq(out.offset, c->req.offset);
    ck_assert_uint_eq(out.length, c->req.length);
    /* The other header form must not accept it. */
    ck_assert_int_eq(proto_decode_request(exact, size, !c->extended, &out),
                     -EBADMSG);
    free(exact);
    ck_assert_int_eq(proto_encode_request(buf, size - 1, &c->req, c->extended),
                     -ENOBUFS);
}
END_TEST

START_TEST(test_proto_request_bad_magic)
{
    static const uint32_t magics[] = {
        0,          0xffffffff, 0x12560953, /* historic request magic */
        0x25609514,                         /* nbd-server transaction log */
        0x67446698,                         /* a reply magic */
        0x13956025,                         /* byte-swapped */
    };
    uint8_t buf[PROTO_EXTENDED_REQUEST_SIZE];
    struct proto_request req;

    for (size_t i = 0; i < ARRAY_SIZE(magics); i++) {
        memcpy(buf, request_ext_bytes, sizeof buf);
        buf[0] = magics[i] >> 24;
        buf[1] = magics[i] >> 16;
        buf[2] = magics[i] >> 8;
        buf[3] = magics[i];
        ck_assert_int_eq(
            proto_decode_request(buf, PROTO_REQUEST_SIZE, false, &req),
            -EBADMSG);
        ck_assert_int_eq(proto_decode_request(buf, sizeof buf, true, &req),
                         -EBADMSG);
    }
}
END_TEST

struct flags_case {
    uint16_t flags;
    bool extended;
    int expect;
};

static const struct flags_case request_flag_cases[] = {
    {0x001f, false, 0},       /* every compact flag */
    {0x0020, false, -EINVAL}, /* PAYLOAD_LEN needs extended headers */
    {0x0040, false, -EINVAL}, {0x8000, false, -EINVAL},
    {0xffff, false, -EINVAL}, {0x003f, true, 0},
    {0x0040, true, -EINVAL},  {0x8001, true, -EINVAL},
};

/* Unknown flags are -EINVAL, with the request still decoded. */
START_TEST(test_proto_request_unknown_flags)
{
    const struct flags_case *c = &request_flag_cases[_i];
    struct proto_request in = {c->flags, PROTO_CMD_WRITE, COOKIE, 512, 1024};
    struct proto_request out;
    uint8_t buf[PROTO_EXTENDED_REQUEST_SIZE];
    ssize_t n = proto_encode_request(buf, sizeof buf, &in, c->extended);

    ck_assert_int_gt(n, 0);
    memset(&out, 0, sizeof out);
    ck_assert_int_eq(proto_decode_request(buf, (size_t)n, c->extended, &out),
                     c->expect);
    ck_assert_uint_eq(out.flags, c->flags);
    ck_assert_uint_eq(out.cookie, COOKIE);
    ck_assert_uint_eq(out.length, 1024);
    bool has_payload =
        !c->extended || (c->flags & PROTO_CMD_FLAG_PAYLOAD_LEN) != 0;
    ck_assert_uint_eq(proto_request_payload_len(&out, c->extended),
                      has_payload ? 1024 : 0);
}
END_TEST

START_TEST(test_proto_request_length_overflow)
{
    struct proto_request req = {0, PROTO_CMD_TRIM, 1, 0, 1ull << 32};
    uint8_t buf[PROTO_EXTENDED_REQUEST_SIZE];

    ck_assert_int_eq(proto_encode_request(buf, sizeof buf, &req, false),
                     -EOVERFLOW);
    ck_assert_int_eq(proto_encode_request(buf, sizeof buf, &req, true),
                     PROTO_EXTENDED_REQUEST_SIZE);
    req.length = 0xffffffff;
    ck_assert_int_eq(proto_encode_request(buf, sizeof buf, &req, false),
                     PROTO_REQUEST_SIZE);
}
END_TEST

START_TEST(test_proto_request_payload_len)
{
    struct proto_request req = {0, PROTO_CMD_READ, 1, 0, 4096};

    ck_assert_uint_eq(proto_request_payload_len(&req, false), 0);
    ck_assert_uint_eq(proto_request_payload_len(&req, true), 0);
    req.type = PROTO_CMD_WRITE;
    ck_assert_uint_eq(proto_request_payload_len(&req, false), 4096);
    /* Extended WRITE without PAYLOAD_LEN: its length is no payload. */
    ck_assert_uint_eq(proto_request_payload_len(&req, true), 0);
    req.flags = PROTO_CMD_FLAG_PAYLOAD_LEN;
    ck_assert_uint_eq(proto_request_payload_len(&req, true), 4096);
    req.flags = 0;
    req.type = PROTO_CMD_BLOCK_STATUS;
    req.flags = PROTO_CMD_FLAG_PAYLOAD_LEN;
    ck_assert_uint_eq(proto_request_payload_len(&req, true), 4096);
    ck_assert_uint_eq(proto_request_payload_len(&req, false), 0);
}
END_TEST

/* ------------------------------------------------------------------ */
/* Replies                                                             */
/* ------------------------------------------------------------------ */

START_TEST(test_proto_reply_decode_known_bytes)
{
    struct proto_reply rep;

    ck_assert_int_eq(
        run_exact(w_reply, simple_reply_bytes, sizeof simple_reply_bytes), 0);
    ck_assert_int_eq(proto_decode_reply(simple_reply_bytes,
                                        sizeof simple_reply_bytes, false, &rep),
                     0);
    ck_assert_int_eq(rep.kind, PROTO_REPLY_SIMPLE);
    ck_assert_uint_eq(rep.error, PROTO_EINVAL);
    ck_assert_uint_eq(rep.cookie, COOKIE);

    ck_assert_int_eq(proto_decode_reply(structured_reply_bytes,
                                        sizeof structured_reply_bytes, false,
                                        &rep),
                     0);
    ck_assert_int_eq(rep.kind, PROTO_REPLY_STRUCTURED);
    ck_assert_uint_eq(rep.flags, PROTO_REPLY_FLAG_DONE);
    ck_assert_uint_eq(rep.type, PROTO_REPLY_TYPE_OFFSET_HOLE);
    ck_assert_uint_eq(rep.cookie, COOKIE);
    ck_assert_uint_eq(rep.length, 12);

    ck_assert_int_eq(proto_decode_reply(extended_reply_bytes,
                                        sizeof extended_reply_bytes, true,
                                        &rep),
                     0);
    ck_assert_int_eq(rep.kind, PROTO_REPLY_EXTENDED);
    ck_assert_uint_eq(rep.flags, PROTO_REPLY_FLAG_DONE);
    ck_assert_uint_eq(rep.type, PROTO_REPLY_TYPE_NONE);
    ck_assert_uint_eq(rep.offset, 65536);
    ck_assert_uint_eq(rep.length, 0);
}
END_TEST

static const struct proto_reply reply_cases[] = {
    {.kind = PROTO_REPLY_SIMPLE, .error = 0, .cookie = 1},
    {.kind = PROTO_REPLY_SIMPLE, .error = PROTO_ESHUTDOWN, .cookie = ~0ull},
    {.kind = PROTO_REPLY_STRUCTURED,
     .flags = 1,
     .type = PROTO_REPLY_TYPE_OFFSET_DATA,
     .cookie = COOKIE,
     .length = 0xffffffff},
    {.kind = PROTO_REPLY_STRUCTURED,
     .flags = 0xfffe, /* unknown flags are kept */
     .type = 0x8123,
     .cookie = 0,
     .length = 0},
    {.kind = PROTO_REPLY_EXTENDED,
     .flags = 0,
     .type = PROTO_REPLY_TYPE_BLOCK_STATUS_EXT,
     .cookie = COOKIE,
     .offset = ~0ull,
     .length = 1ull << 40},
};

START_TEST(test_proto_reply_round_trip)
{
    const struct proto_reply *in = &reply_cases[_i];
    bool extended = in->kind == PROTO_REPLY_EXTENDED;
    size_t size = proto_reply_header_size(in->kind);
    uint8_t buf[PROTO_REPLY_HEADER_MAX];
    struct proto_reply out;
    uint8_t *exact;

    ck_assert_int_eq(proto_encode_reply(buf, sizeof buf, in), (ssize_t)size);
    exact = dup_exact(buf, size);
    ck_assert_int_eq(proto_peek_reply_kind(exact, 4, extended), in->kind);
    ck_assert_int_eq(proto_decode_reply(exact, size, extended, &out), 0);
    ck_assert_int_eq(out.kind, in->kind);
    ck_assert_uint_eq(out.cookie, in->cookie);
    ck_assert_uint_eq(out.error, in->error);
    ck_assert_uint_eq(out.flags, in->flags);
    ck_assert_uint_eq(out.type, in->type);
    ck_assert_uint_eq(out.offset, in->offset);
    ck_assert_uint_eq(out.length, in->length);
    /* A header of one mode is a framing error in the other. */
    ck_assert_int_eq(proto_decode_reply(exact, size, !extended, &out),
                     -EBADMSG);
    free(exact);
    for (size_t cap = 0; cap < size; cap++) {
        ck_assert_int_eq(proto_encode_reply(buf, cap, in), -ENOBUFS);
    }
}
END_TEST

START_TEST(test_proto_reply_bad_magic)
{
    uint8_t buf[PROTO_REPLY_HEADER_MAX];
    struct proto_reply rep;

    memcpy(buf, structured_reply_bytes, sizeof structured_reply_bytes);
    buf[3] ^= 0x10;
    ck_assert_int_eq(proto_decode_reply(buf, 20, false, &rep), -EBADMSG);
    ck_assert_int_eq(proto_peek_reply_kind(buf, 4, false), -EBADMSG);
    /* The historic reply magic and the request magic are refused. */
    memcpy(buf, "\x96\x74\x46\x68", 4);
    ck_assert_int_eq(proto_decode_reply(buf, 16, false, &rep), -EBADMSG);
    memcpy(buf, request_bytes, 4);
    ck_assert_int_eq(proto_decode_reply(buf, 20, false, &rep), -EBADMSG);
    ck_assert_int_eq(proto_peek_reply_kind(buf, 3, false), -EBADMSG);
}
END_TEST

START_TEST(test_proto_reply_encode_limits)
{
    struct proto_reply rep = {
        .kind = PROTO_REPLY_STRUCTURED,
        .type = PROTO_REPLY_TYPE_OFFSET_DATA,
        .length = 1ull << 32,
    };
    uint8_t buf[PROTO_REPLY_HEADER_MAX];

    ck_assert_int_eq(proto_encode_reply(buf, sizeof buf, &rep), -EOVERFLOW);
    rep.kind = PROTO_REPLY_EXTENDED;
    ck_assert_int_eq(proto_encode_reply(buf, sizeof buf, &rep),
                     PROTO_EXTENDED_REPLY_SIZE);
    rep.kind = (enum proto_reply_kind)7;
    ck_assert_int_eq(proto_encode_reply(buf, sizeof buf, &rep), -EINVAL);
    ck_assert_int_eq(
        proto_encode_simple_reply(buf, sizeof buf, COOKIE, PROTO_EINVAL),
        PROTO_SIMPLE_REPLY_SIZE);
    ck_assert_mem_eq(buf, simple_reply_bytes, sizeof simple_reply_bytes);
}
END_TEST

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

START_TEST(test_proto_chunk_length_checked)
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

START_TEST(test_proto_chunk_none_and_data)
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

START_TEST(test_proto_chunk_offset_data_too_long_for_compact)
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

START_TEST(test_proto_chunk_offset_hole)
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

START_TEST(test_proto_chunk_block_status)
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

START_TEST(test_proto_chunk_block_status_bad_extents)
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

START_TEST(test_proto_chunk_block_status_ext)
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

START_TEST(test_proto_chunk_block_status_malformed)
{
    const struct bs_case *c = &block_status_cases[_i];
    decode_fn *fn = c->extended ? w_block_status_ext : w_block_status;

    ck_assert_msg(run_exact(fn, c->bytes, c->len) == c->expect,
                  "%s: expected %d", c->what, c->expect);
}
END_TEST

START_TEST(test_proto_chunk_offset_hole_malformed)
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

START_TEST(test_proto_chunk_error_round_trip)
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

START_TEST(test_proto_chunk_error_build_limits)
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

START_TEST(test_proto_chunk_builder_needs_chunk_header)
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

START_TEST(test_proto_chunk_error_malformed)
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

START_TEST(test_proto_chunk_error_message_over_limit)
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

START_TEST(test_proto_chunk_offset_data_decode)
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

/* ------------------------------------------------------------------ */
/* Robustness: random input through every decoder                      */
/* ------------------------------------------------------------------ */

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;

static uint64_t rng(void)
{
    /* xorshift64*: deterministic, so a failure reproduces. */
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return rng_state * 0x2545f4914f6cdd1dull;
}

static decode_fn *const all_decoders[] = {
    w_greeting,
    w_client_flags,
    w_option_header,
    w_opt_info,
    w_opt_meta,
    w_option_reply,
    w_rep_server,
    w_rep_info,
    w_rep_meta_context,
    w_export_name_reply,
    w_request,
    w_request_ext,
    w_reply,
    w_reply_ext,
    w_offset_data,
    w_offset_hole,
    w_block_status,
    w_block_status_ext,
    w_chunk_error,
    w_chunk_error_offset,
};

/*
 * Random bytes, often starting from a valid frame with a few bytes
 * flipped so that the decoders get past their first checks.  The only
 * assertion is that nothing crashes or reads out of bounds (ASan).
 */
START_TEST(test_proto_random_input_never_crashes)
{
    for (int round = 0; round < 20000; round++) {
        const struct frame *f = &frames[rng() % ARRAY_SIZE(frames)];
        size_t len = rng() % 64;
        uint8_t *p = malloc(len > 0 ? len : 1);

        ck_assert_ptr_nonnull(p);
        for (size_t i = 0; i < len; i++) {
            p[i] = i < f->len && rng() % 4 != 0 ? f->bytes[i] : (uint8_t)rng();
        }
        for (size_t d = 0; d < ARRAY_SIZE(all_decoders); d++) {
            (void)all_decoders[d](p, len);
        }
        free(p);
    }
}
END_TEST

/* ------------------------------------------------------------------ */
/* Errors and names                                                    */
/* ------------------------------------------------------------------ */

struct errno_case {
    int errnum;
    uint32_t nbd;
};

static const struct errno_case errno_cases[] = {
    {0, 0},
    {EPERM, PROTO_EPERM},
    {EACCES, PROTO_EPERM},
    {EROFS, PROTO_EPERM},
    {EIO, PROTO_EIO},
    {ENOMEM, PROTO_ENOMEM},
    {EINVAL, PROTO_EINVAL},
    {ENOSPC, PROTO_ENOSPC},
    {EDQUOT, PROTO_ENOSPC},
    {EFBIG, PROTO_ENOSPC},
    {EOVERFLOW, PROTO_EOVERFLOW},
    {ENOTSUP, PROTO_ENOTSUP},
    {EOPNOTSUPP, PROTO_ENOTSUP},
    {ESHUTDOWN, PROTO_ESHUTDOWN},
    {-EIO, PROTO_EIO}, /* our negative-errno convention */
    {-EFBIG, PROTO_ENOSPC},
    {EBADF, PROTO_EINVAL},
    {ENOENT, PROTO_EINVAL},
    {EAGAIN, PROTO_EINVAL},
    {12345, PROTO_EINVAL},
    {-2147483647 - 1, PROTO_EINVAL}, /* INT_MIN cannot be negated */
};

START_TEST(test_proto_errno_to_nbd_mapping)
{
    const struct errno_case *c = &errno_cases[_i];

    ck_assert_msg(proto_errno_to_nbd(c->errnum) == c->nbd,
                  "errno %d: expected %u", c->errnum, c->nbd);
}
END_TEST

START_TEST(test_proto_nbd_to_errno_mapping)
{
    static const struct errno_case back[] = {
        {0, 0},
        {EPERM, PROTO_EPERM},
        {EIO, PROTO_EIO},
        {ENOMEM, PROTO_ENOMEM},
        {EINVAL, PROTO_EINVAL},
        {ENOSPC, PROTO_ENOSPC},
        {EOVERFLOW, PROTO_EOVERFLOW},
        {ENOTSUP, PROTO_ENOTSUP},
        {ESHUTDOWN, PROTO_ESHUTDOWN},
        {EINVAL, 2},          /* ENOENT is not an NBD error value */
        {EINVAL, 0xffffffff}, /* unknown values read as EINVAL */
    };

    for (size_t i = 0; i < ARRAY_SIZE(back); i++) {
        ck_assert_int_eq(proto_nbd_to_errno(back[i].nbd), back[i].errnum);
        /* Every NBD value maps back to itself through errno. */
        if (i < 9) {
            ck_assert_uint_eq(proto_errno_to_nbd(back[i].errnum), back[i].nbd);
        }
    }
}
END_TEST

struct name_case {
    const char *(*fn)(uint32_t);
    uint32_t value;
    const char *name;
};

static const struct name_case name_cases[] = {
    {proto_cmd_name, PROTO_CMD_READ, "NBD_CMD_READ"},
    {proto_cmd_name, PROTO_CMD_WRITE_ZEROES, "NBD_CMD_WRITE_ZEROES"},
    {proto_cmd_name, PROTO_CMD_BLOCK_STATUS, "NBD_CMD_BLOCK_STATUS"},
    {proto_cmd_name, 99, "unknown"},
    {proto_opt_name, PROTO_OPT_GO, "NBD_OPT_GO"},
    {proto_opt_name, PROTO_OPT_EXTENDED_HEADERS, "NBD_OPT_EXTENDED_HEADERS"},
    {proto_opt_name, 0, "unknown"},
    {proto_rep_name, PROTO_REP_ACK, "NBD_REP_ACK"},
    {proto_rep_name, PROTO_REP_ERR_UNSUP, "NBD_REP_ERR_UNSUP"},
    {proto_rep_name, PROTO_REP_ERR_EXT_HEADER_REQD,
     "NBD_REP_ERR_EXT_HEADER_REQD"},
    {proto_rep_name, 0x80000000, "unknown"},
    {proto_info_name, PROTO_INFO_BLOCK_SIZE, "NBD_INFO_BLOCK_SIZE"},
    {proto_reply_type_name, PROTO_REPLY_TYPE_ERROR_OFFSET,
     "NBD_REPLY_TYPE_ERROR_OFFSET"},
    {proto_reply_type_name, PROTO_REPLY_TYPE_BLOCK_STATUS_EXT,
     "NBD_REPLY_TYPE_BLOCK_STATUS_EXT"},
    {proto_reply_type_name, 3, "unknown"},
    {proto_err_name, PROTO_ENOTSUP, "NBD_ENOTSUP"},
    {proto_err_name, PROTO_ESHUTDOWN, "NBD_ESHUTDOWN"},
    {proto_err_name, 0, "0"},
    {proto_err_name, 2, "unknown"},
};

START_TEST(test_proto_names)
{
    const struct name_case *c = &name_cases[_i];

    ck_assert_str_eq(c->fn(c->value), c->name);
}
END_TEST

START_TEST(test_proto_format_flags)
{
    char buf[64];

    ck_assert_uint_eq(
        proto_format_flags(PROTO_FIELD_TX, 0x0103, buf, sizeof buf),
        strlen("HAS_FLAGS|READ_ONLY|CAN_MULTI_CONN"));
    ck_assert_str_eq(buf, "HAS_FLAGS|READ_ONLY|CAN_MULTI_CONN");
    proto_format_flags(PROTO_FIELD_CMD, 0x8001, buf, sizeof buf);
    ck_assert_str_eq(buf, "FUA|0x8000");
    proto_format_flags(PROTO_FIELD_CLIENT, 0, buf, sizeof buf);
    ck_assert_str_eq(buf, "0");
    proto_format_flags(PROTO_FIELD_HS, 3, buf, sizeof buf);
    ck_assert_str_eq(buf, "FIXED_NEWSTYLE|NO_ZEROES");
    proto_format_flags(PROTO_FIELD_REPLY, 1, buf, sizeof buf);
    ck_assert_str_eq(buf, "DONE");
    /* Truncated output stays NUL-terminated and reports the full size. */
    ck_assert_uint_eq(proto_format_flags(PROTO_FIELD_TX, 0x0003, buf, 5),
                      strlen("HAS_FLAGS|READ_ONLY"));
    ck_assert_str_eq(buf, "HAS_");
    ck_assert_uint_eq(proto_format_flags(PROTO_FIELD_TX, 0x0003, NULL, 0),
                      strlen("HAS_FLAGS|READ_ONLY"));
}
END_TEST

START_TEST(test_proto_table_masks)
{
    ck_assert_uint_eq(PROTO_CMD_FLAGS_ALL, 0x3f);
    ck_assert_uint_eq(PROTO_CMD_FLAGS_COMPACT, 0x1f);
    ck_assert_uint_eq(PROTO_TX_FLAGS_ALL, 0x1fff);
    ck_assert_uint_eq(PROTO_HS_FLAGS_ALL, 3);
    ck_assert_uint_eq(PROTO_CLIENT_FLAGS_ALL, 3);
    ck_assert_uint_eq(PROTO_REP_ERR_TOO_BIG, 0x80000009u);
    ck_assert_uint_eq(PROTO_REPLY_TYPE_ERROR, 0x8001);
    ck_assert_uint_eq(PROTO_FLAG_SEND_FAST_ZERO, 1u << 11);
}
END_TEST

/* ------------------------------------------------------------------ */

static TCase *tcase(Suite *s, const char *name)
{
    TCase *tc = tcase_create(name);

    tcase_set_timeout(tc, TIMEOUT);
    suite_add_tcase(s, tc);
    return tc;
}

Suite *unit_suite(void)
{
    Suite *s = suite_create("proto");
    TCase *tc;

    tc = tcase(s, "truncation");
    tcase_add_loop_test(tc, test_proto_truncated_frames_fail, 0,
                        ARRAY_SIZE(frames));
    tcase_add_test(tc, test_proto_random_input_never_crashes);

    tc = tcase(s, "handshake");
    tcase_add_test(tc, test_proto_greeting_round_trip);
    tcase_add_test(tc, test_proto_greeting_bad_magic);
    tcase_add_test(tc, test_proto_greeting_oldstyle_refused);
    tcase_add_loop_test(tc, test_proto_client_flags_unknown_rejected, 0,
                        ARRAY_SIZE(client_flags_cases));
    tcase_add_test(tc, test_proto_export_name_reply);

    tc = tcase(s, "option");
    tcase_add_test(tc, test_proto_option_header_round_trip);
    tcase_add_test(tc, test_proto_option_header_bad_magic);
    tcase_add_test(tc, test_proto_option_length_over_limit);
    tcase_add_test(tc, test_proto_build_option_raw);
    tcase_add_test(tc, test_proto_export_name_limits);
    tcase_add_test(tc, test_proto_export_name_build);
    tcase_add_test(tc, test_proto_opt_info_round_trip);
    tcase_add_loop_test(tc, test_proto_opt_info_malformed, 0,
                        ARRAY_SIZE(opt_info_cases));
    tcase_add_test(tc, test_proto_opt_info_name_over_limit);
    tcase_add_test(tc, test_proto_opt_meta_round_trip);
    tcase_add_loop_test(tc, test_proto_opt_meta_malformed, 0,
                        ARRAY_SIZE(opt_meta_cases));
    tcase_add_test(tc, test_proto_opt_meta_query_over_limit);
    tcase_add_test(tc, test_proto_opt_meta_build_limits);

    tc = tcase(s, "option-reply");
    tcase_add_test(tc, test_proto_rep_ack_bytes);
    tcase_add_test(tc, test_proto_option_reply_malformed);
    tcase_add_loop_test(tc, test_proto_rep_builders_bytes, 0,
                        ARRAY_SIZE(rep_cases));
    tcase_add_test(tc, test_proto_rep_builders_bad_args);
    tcase_add_test(tc, test_proto_rep_server_parse);
    tcase_add_loop_test(tc, test_proto_rep_info_parse, 0,
                        ARRAY_SIZE(rep_info_cases));
    tcase_add_test(tc, test_proto_rep_info_round_trip);
    tcase_add_test(tc, test_proto_rep_meta_context_and_error_parse);

    tc = tcase(s, "request");
    tcase_add_test(tc, test_proto_request_decode_known_bytes);
    tcase_add_loop_test(tc, test_proto_request_round_trip, 0,
                        ARRAY_SIZE(request_cases));
    tcase_add_test(tc, test_proto_request_bad_magic);
    tcase_add_loop_test(tc, test_proto_request_unknown_flags, 0,
                        ARRAY_SIZE(request_flag_cases));
    tcase_add_test(tc, test_proto_request_length_overflow);
    tcase_add_test(tc, test_proto_request_payload_len);

    tc = tcase(s, "reply");
    tcase_add_test(tc, test_proto_reply_decode_known_bytes);
    tcase_add_loop_test(tc, test_proto_reply_round_trip, 0,
                        ARRAY_SIZE(reply_cases));
    tcase_add_test(tc, test_proto_reply_bad_magic);
    tcase_add_test(tc, test_proto_reply_encode_limits);

    tc = tcase(s, "chunk");
    tcase_add_loop_test(tc, test_proto_chunk_length_checked, 0,
                        ARRAY_SIZE(chunk_check_cases));
    /* Loop index 0: structured header, 1: extended header. */
    tcase_add_loop_test(tc, test_proto_chunk_none_and_data, 0, 2);
    tcase_add_test(tc, test_proto_chunk_offset_data_too_long_for_compact);
    tcase_add_test(tc, test_proto_chunk_offset_data_decode);
    tcase_add_loop_test(tc, test_proto_chunk_offset_hole, 0, 2);
    tcase_add_test(tc, test_proto_chunk_offset_hole_malformed);
    tcase_add_loop_test(tc, test_proto_chunk_block_status, 0, 2);
    tcase_add_test(tc, test_proto_chunk_block_status_bad_extents);
    tcase_add_test(tc, test_proto_chunk_block_status_ext);
    tcase_add_loop_test(tc, test_proto_chunk_block_status_malformed, 0,
                        ARRAY_SIZE(block_status_cases));
    tcase_add_loop_test(tc, test_proto_chunk_error_round_trip, 0, 2);
    tcase_add_test(tc, test_proto_chunk_error_build_limits);
    tcase_add_test(tc, test_proto_chunk_builder_needs_chunk_header);
    tcase_add_loop_test(tc, test_proto_chunk_error_malformed, 0,
                        ARRAY_SIZE(chunk_error_cases));
    tcase_add_test(tc, test_proto_chunk_error_message_over_limit);

    tc = tcase(s, "errors-and-names");
    tcase_add_loop_test(tc, test_proto_errno_to_nbd_mapping, 0,
                        ARRAY_SIZE(errno_cases));
    tcase_add_test(tc, test_proto_nbd_to_errno_mapping);
    tcase_add_loop_test(tc, test_proto_names, 0, ARRAY_SIZE(name_cases));
    tcase_add_test(tc, test_proto_format_flags);
    tcase_add_test(tc, test_proto_table_masks);

    return s;
}
