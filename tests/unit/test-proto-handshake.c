/* SPDX-License-Identifier: MIT */
/*
 * Unit tests of the NBD protocol codec (include/nbdsrv/proto.h):
 * the greeting, the client flags and the NBD_OPT_EXPORT_NAME reply.
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
/* Handshake                                                           */
/* ------------------------------------------------------------------ */

UNIT_TEST("handshake", test_proto_greeting_round_trip)
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

UNIT_TEST("handshake", test_proto_greeting_bad_magic)
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

UNIT_TEST("handshake", test_proto_greeting_oldstyle_refused)
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

UNIT_LOOP_TEST("handshake", test_proto_client_flags_unknown_rejected, 0,
               ARRAY_SIZE(client_flags_cases))
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

UNIT_TEST("handshake", test_proto_export_name_reply)
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

UNIT_SUITE("proto");
UNIT_TCASE("handshake", 30, NULL, NULL);
