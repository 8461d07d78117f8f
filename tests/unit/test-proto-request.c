/* SPDX-License-Identifier: MIT */
/*
 * Unit tests of the NBD protocol codec (include/nbdsrv/proto.h):
 * requests.
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
/* Requests                                                            */
/* ------------------------------------------------------------------ */

UNIT_TEST("request", test_proto_request_decode_known_bytes)
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

UNIT_LOOP_TEST("request", test_proto_request_round_trip, 0,
               ARRAY_SIZE(request_cases))
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

UNIT_TEST("request", test_proto_request_bad_magic)
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
UNIT_LOOP_TEST("request", test_proto_request_unknown_flags, 0,
               ARRAY_SIZE(request_flag_cases))
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
    /* A WRITE carries its data with or without PAYLOAD_LEN. */
    ck_assert_uint_eq(proto_request_payload_len(&out, c->extended), 1024);
}
END_TEST

UNIT_TEST("request", test_proto_request_length_overflow)
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

UNIT_TEST("request", test_proto_request_payload_len)
{
    struct proto_request req = {0, PROTO_CMD_READ, 1, 0, 4096};

    ck_assert_uint_eq(proto_request_payload_len(&req, false), 0);
    ck_assert_uint_eq(proto_request_payload_len(&req, true), 0);
    req.type = PROTO_CMD_WRITE;
    ck_assert_uint_eq(proto_request_payload_len(&req, false), 4096);
    /* Extended WRITE without PAYLOAD_LEN (as qemu 10 sends it): its
     * data follows all the same. */
    ck_assert_uint_eq(proto_request_payload_len(&req, true), 4096);
    req.flags = PROTO_CMD_FLAG_PAYLOAD_LEN;
    ck_assert_uint_eq(proto_request_payload_len(&req, true), 4096);
    req.flags = 0;
    req.type = PROTO_CMD_BLOCK_STATUS;
    req.flags = PROTO_CMD_FLAG_PAYLOAD_LEN;
    ck_assert_uint_eq(proto_request_payload_len(&req, true), 4096);
    ck_assert_uint_eq(proto_request_payload_len(&req, false), 0);
}
END_TEST

UNIT_SUITE("proto");
UNIT_TCASE("request", 30, NULL, NULL);
