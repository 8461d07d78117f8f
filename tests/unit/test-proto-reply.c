/* SPDX-License-Identifier: MIT */
/*
 * Unit tests of the NBD protocol codec (include/nbdsrv/proto.h):
 * reply headers.
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
/* Replies                                                             */
/* ------------------------------------------------------------------ */

UNIT_TEST("reply", test_proto_reply_decode_known_bytes)
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

UNIT_LOOP_TEST("reply", test_proto_reply_round_trip, 0, ARRAY_SIZE(reply_cases))
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

UNIT_TEST("reply", test_proto_reply_bad_magic)
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

UNIT_TEST("reply", test_proto_reply_encode_limits)
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

UNIT_SUITE("proto");
UNIT_TCASE("reply", 30, NULL, NULL);
