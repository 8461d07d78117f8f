/* SPDX-License-Identifier: MIT */
/*
 * Unit tests of the NBD protocol codec (include/nbdsrv/proto.h):
 * option replies.
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
/* Option replies                                                      */
/* ------------------------------------------------------------------ */

UNIT_TEST("option-reply", test_proto_rep_ack_bytes)
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

UNIT_TEST("option-reply", test_proto_option_reply_malformed)
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
UNIT_LOOP_TEST("option-reply", test_proto_rep_builders_bytes, 0,
               ARRAY_SIZE(rep_cases))
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

UNIT_TEST("option-reply", test_proto_rep_builders_bad_args)
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

UNIT_TEST("option-reply", test_proto_rep_server_parse)
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

UNIT_LOOP_TEST("option-reply", test_proto_rep_info_parse, 0,
               ARRAY_SIZE(rep_info_cases))
{
    const struct payload_case *c = &rep_info_cases[_i];

    ck_assert_msg(run_exact(w_rep_info, c->bytes, c->len) == c->expect,
                  "%s: expected %d", c->what, c->expect);
}
END_TEST

UNIT_TEST("option-reply", test_proto_rep_info_round_trip)
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

UNIT_TEST("option-reply", test_proto_rep_meta_context_and_error_parse)
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

UNIT_SUITE("proto");
UNIT_TCASE("option-reply", 30, NULL, NULL);
