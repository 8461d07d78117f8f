/* SPDX-License-Identifier: MIT */
/*
 * Unit tests of the NBD protocol codec (include/nbdsrv/proto.h):
 * errors and names.
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

UNIT_LOOP_TEST("errors-and-names", test_proto_errno_to_nbd_mapping, 0,
               ARRAY_SIZE(errno_cases))
{
    const struct errno_case *c = &errno_cases[_i];

    ck_assert_msg(proto_errno_to_nbd(c->errnum) == c->nbd,
                  "errno %d: expected %u", c->errnum, c->nbd);
}
END_TEST

UNIT_TEST("errors-and-names", test_proto_nbd_to_errno_mapping)
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

UNIT_LOOP_TEST("errors-and-names", test_proto_names, 0, ARRAY_SIZE(name_cases))
{
    const struct name_case *c = &name_cases[_i];

    ck_assert_str_eq(c->fn(c->value), c->name);
}
END_TEST

UNIT_TEST("errors-and-names", test_proto_format_flags)
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

UNIT_TEST("errors-and-names", test_proto_table_masks)
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

UNIT_SUITE("proto");
UNIT_TCASE("errors-and-names", 30, NULL, NULL);
