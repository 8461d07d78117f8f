/* SPDX-License-Identifier: MIT */
/* Test fixture: the NBD frames and decoder wrappers of the test-proto-*.c
 * suites (fixture-proto.h). */
#include "fixture-proto.h"

#include "nbdsrv/proto.h"

#include <check.h>
#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* A heap copy of exactly `len` bytes (at least one byte allocated). */
uint8_t *dup_exact(const void *src, size_t len)
{
    uint8_t *p = malloc(len > 0 ? len : 1);

    ck_assert_ptr_nonnull(p);
    if (len > 0) {
        memcpy(p, src, len);
    }
    return p;
}

/* A heap buffer of `len` bytes of `c`, for long strings. */
char *filled(size_t len, char c)
{
    char *p = malloc(len > 0 ? len : 1);

    ck_assert_ptr_nonnull(p);
    memset(p, c, len);
    return p;
}

/* ------------------------------------------------------------------ */
/* Uniform wrappers: each decodes one message kind and returns 0/-errno */
/* ------------------------------------------------------------------ */

int w_greeting(const void *buf, size_t len)
{
    uint16_t f;
    return proto_decode_greeting(buf, len, &f);
}

int w_client_flags(const void *buf, size_t len)
{
    uint32_t f;
    return proto_decode_client_flags(buf, len, PROTO_HS_FLAGS_ALL, &f);
}

int w_option_header(const void *buf, size_t len)
{
    struct proto_option_header h;
    return proto_decode_option_header(buf, len, &h);
}

int w_opt_info(const void *buf, size_t len)
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

int w_opt_meta(const void *buf, size_t len)
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

int w_option_reply(const void *buf, size_t len)
{
    struct proto_option_reply rep;
    return proto_decode_option_reply(buf, len, &rep);
}

int w_rep_server(const void *buf, size_t len)
{
    struct proto_string name, desc;
    return proto_parse_rep_server(buf, len, &name, &desc);
}

int w_rep_info(const void *buf, size_t len)
{
    struct proto_info_reply info;
    return proto_parse_rep_info(buf, len, &info);
}

int w_rep_meta_context(const void *buf, size_t len)
{
    struct proto_string name;
    uint32_t id;
    return proto_parse_rep_meta_context(buf, len, &id, &name);
}

int w_export_name_reply(const void *buf, size_t len)
{
    uint64_t size;
    uint16_t flags;
    return proto_decode_export_name_reply(buf, len, &size, &flags);
}

int w_request(const void *buf, size_t len)
{
    struct proto_request req;
    return proto_decode_request(buf, len, false, &req);
}

int w_request_ext(const void *buf, size_t len)
{
    struct proto_request req;
    return proto_decode_request(buf, len, true, &req);
}

int w_reply(const void *buf, size_t len)
{
    struct proto_reply rep;
    return proto_decode_reply(buf, len, false, &rep);
}

int w_reply_ext(const void *buf, size_t len)
{
    struct proto_reply rep;
    return proto_decode_reply(buf, len, true, &rep);
}

int w_offset_data(const void *buf, size_t len)
{
    uint64_t off, n;
    /* The chunk length claims just the prefix plus one data byte. */
    return proto_decode_chunk_offset_data(buf, len, 9, &off, &n);
}

int w_offset_hole(const void *buf, size_t len)
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

int w_block_status(const void *buf, size_t len)
{
    return block_status_common(buf, len, false);
}

int w_block_status_ext(const void *buf, size_t len)
{
    return block_status_common(buf, len, true);
}

int w_chunk_error(const void *buf, size_t len)
{
    struct proto_chunk_error err;
    return proto_decode_chunk_error(buf, len, PROTO_REPLY_TYPE_ERROR, &err);
}

int w_chunk_error_offset(const void *buf, size_t len)
{
    struct proto_chunk_error err;
    return proto_decode_chunk_error(buf, len, PROTO_REPLY_TYPE_ERROR_OFFSET,
                                    &err);
}

/* Runs `fn` on an exact heap copy of the bytes. */
int run_exact(decode_fn *fn, const uint8_t *bytes, size_t len)
{
    uint8_t *copy = dup_exact(bytes, len);
    int r = fn(copy, len);

    free(copy);
    return r;
}

/* ------------------------------------------------------------------ */
/* Known-good frames, used by the round-trip and truncation tests      */
/* ------------------------------------------------------------------ */

const uint8_t greeting_bytes[] = {
    'N',  'B',  'D', 'M', 'A', 'G', 'I', 'C', /* NBDMAGIC */
    'I',  'H',  'A', 'V', 'E', 'O', 'P', 'T', /* IHAVEOPT */
    0x00, 0x03,                               /* FIXED_NEWSTYLE|NO_ZEROES */
};

const uint8_t client_flags_bytes[] = {0x00, 0x00, 0x00, 0x03};

const uint8_t option_header_bytes[] = {
    'I',  'H',  'A',  'V',  'E', 'O', 'P', 'T', /* magic */
    0x00, 0x00, 0x00, 0x07,                     /* NBD_OPT_GO */
    0x00, 0x00, 0x00, 0x0e,                     /* 14 bytes follow */
};

const uint8_t opt_go_bytes[] = {
    0x00, 0x00, 0x00, 0x04, 'd', 'i', 's', 'k', /* name */
    0x00, 0x02,                                 /* two requests */
    0x00, 0x03, 0x00, 0x01,                     /* BLOCK_SIZE, NAME */
};

const uint8_t opt_meta_bytes[] = {
    0x00, 0x00, 0x00, 0x04, 'd', 'i', 's', 'k', /* export name */
    0x00, 0x00, 0x00, 0x02,                     /* two queries */
    0x00, 0x00, 0x00, 0x0f, 'b', 'a', 's', 'e', ':', 'a',
    'l',  'l',  'o',  'c',  'a', 't', 'i', 'o', 'n', /* query 1 */
    0x00, 0x00, 0x00, 0x05, 'q', 'e', 'm', 'u', ':', /* query 2 */
};

const uint8_t option_reply_ack_bytes[] = {
    0x00, 0x03, 0xe8, 0x89, 0x04, 0x55, 0x65, 0xa9, /* reply magic */
    0x00, 0x00, 0x00, 0x08,                         /* STRUCTURED_REPLY */
    0x00, 0x00, 0x00, 0x01,                         /* NBD_REP_ACK */
    0x00, 0x00, 0x00, 0x00,                         /* no data */
};

const uint8_t rep_info_export_data[] = {
    0x00, 0x00,                                     /* NBD_INFO_EXPORT */
    0x00, 0x00, 0x00, 0x00, 0x40, 0x00, 0x00, 0x00, /* 1 GiB */
    0x01, 0x0d, /* HAS_FLAGS|SEND_FLUSH|SEND_FUA|CAN_MULTI_CONN */
};

const uint8_t rep_info_block_size_data[] = {
    0x00, 0x03,                                     /* BLOCK_SIZE */
    0x00, 0x00, 0x02, 0x00, 0x00, 0x00, 0x10, 0x00, /* 512, 4096 */
    0x02, 0x00, 0x00, 0x00,                         /* 32 MiB */
};

const uint8_t export_name_reply_short[] = {
    0x00, 0x00, 0x00, 0x00, 0x00, 0x10, 0x00, 0x00, /* 1 MiB */
    0x00, 0x03,                                     /* HAS_FLAGS|READ_ONLY */
};

const uint8_t request_bytes[] = {
    0x25, 0x60, 0x95, 0x13,                         /* compact magic */
    0x00, 0x01,                                     /* FUA */
    0x00, 0x01,                                     /* NBD_CMD_WRITE */
    0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, /* cookie */
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x10, 0x00, /* offset 4096 */
    0x00, 0x00, 0x02, 0x00,                         /* length 512 */
};

const uint8_t request_ext_bytes[] = {
    0x21, 0xe4, 0x1c, 0x71,                         /* extended magic */
    0x00, 0x08,                                     /* REQ_ONE */
    0x00, 0x07,                                     /* BLOCK_STATUS */
    0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, /* cookie */
    0x00, 0x00, 0x00, 0x02, 0x00, 0x00, 0x00, 0x00, /* offset 8 GiB */
    0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, /* length 4 GiB */
};

const uint8_t simple_reply_bytes[] = {
    0x67, 0x44, 0x66, 0x98,                         /* simple reply magic */
    0x00, 0x00, 0x00, 0x16,                         /* NBD_EINVAL */
    0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, /* cookie */
};

const uint8_t structured_reply_bytes[] = {
    0x66, 0x8e, 0x33, 0xef,                         /* structured reply magic */
    0x00, 0x01,                                     /* DONE */
    0x00, 0x02,                                     /* OFFSET_HOLE */
    0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, /* cookie */
    0x00, 0x00, 0x00, 0x0c,                         /* 12 bytes */
};

const uint8_t extended_reply_bytes[] = {
    0x6e, 0x8a, 0x27, 0x8c,                         /* extended magic */
    0x00, 0x01,                                     /* DONE */
    0x00, 0x00,                                     /* NONE */
    0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, /* cookie */
    0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, /* offset 64 KiB */
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, /* length 0 */
};

const uint8_t offset_data_prefix[] = {
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x02, 0x00, /* offset 512 */
};

const uint8_t offset_hole_bytes[] = {
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x10, 0x00, /* offset 4096 */
    0x00, 0x00, 0x20, 0x00,                         /* size 8192 */
};

const uint8_t block_status_bytes[] = {
    0x00, 0x00, 0x00, 0x01,                         /* context 1 */
    0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, /* 64 KiB data */
    0x00, 0x10, 0x00, 0x00, 0x00, 0x00, 0x00, 0x03, /* 1 MiB hole+zero */
};

/* One extent only: every prefix of a longer list would be a valid list. */
const uint8_t block_status_one_bytes[] = {
    0x00, 0x00, 0x00, 0x02,                         /* context 2 */
    0x00, 0x00, 0x10, 0x00, 0x00, 0x00, 0x00, 0x02, /* 4 KiB zero */
};

const uint8_t block_status_ext_bytes[] = {
    0x00, 0x00, 0x00, 0x01,                         /* context 1 */
    0x00, 0x00, 0x00, 0x01,                         /* one descriptor */
    0x00, 0x00, 0x00, 0x02, 0x00, 0x00, 0x00, 0x00, /* 8 GiB */
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, /* hole */
};

const uint8_t chunk_error_bytes[] = {
    0x00, 0x00, 0x00, 0x05, /* NBD_EIO */
    0x00, 0x03, 'b',  'a',  'd',
};

const uint8_t chunk_error_offset_bytes[] = {
    0x00, 0x00, 0x00, 0x1c, /* NBD_ENOSPC */
    0x00, 0x02, 'n',  'o',  0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x40, 0x00, /* offset 16 KiB */
};

#define FRAME(what, fn, arr)                                                   \
    {                                                                          \
        what, fn, arr, sizeof(arr)                                             \
    }

const struct frame frames[] = {
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

/* ------------------------------------------------------------------ */
