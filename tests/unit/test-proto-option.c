/* SPDX-License-Identifier: MIT */
/*
 * Unit tests of the NBD protocol codec (include/nbdsrv/proto.h):
 * option requests.
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
/* Option requests                                                     */
/* ------------------------------------------------------------------ */

UNIT_TEST("option", test_proto_option_header_round_trip)
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

UNIT_TEST("option", test_proto_option_header_bad_magic)
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

UNIT_TEST("option", test_proto_option_length_over_limit)
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

UNIT_TEST("option", test_proto_export_name_limits)
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

UNIT_TEST("option", test_proto_export_name_build)
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

UNIT_TEST("option", test_proto_opt_info_round_trip)
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

UNIT_LOOP_TEST("option", test_proto_opt_info_malformed, 0,
               ARRAY_SIZE(opt_info_cases))
{
    const struct payload_case *c = &opt_info_cases[_i];

    ck_assert_msg(run_exact(w_opt_info, c->bytes, c->len) == c->expect,
                  "%s: expected %d", c->what, c->expect);
}
END_TEST

UNIT_TEST("option", test_proto_opt_info_name_over_limit)
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

UNIT_TEST("option", test_proto_opt_meta_round_trip)
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

UNIT_LOOP_TEST("option", test_proto_opt_meta_malformed, 0,
               ARRAY_SIZE(opt_meta_cases))
{
    const struct payload_case *c = &opt_meta_cases[_i];

    ck_assert_msg(run_exact(w_opt_meta, c->bytes, c->len) == c->expect,
                  "%s: expected %d", c->what, c->expect);
}
END_TEST

UNIT_TEST("option", test_proto_opt_meta_query_over_limit)
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

UNIT_TEST("option", test_proto_opt_meta_build_limits)
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

UNIT_TEST("option", test_proto_build_option_raw)
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

UNIT_SUITE("proto");
UNIT_TCASE("option", 30, NULL, NULL);
