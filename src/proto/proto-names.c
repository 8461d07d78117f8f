/* SPDX-License-Identifier: MIT */
/* Names of NBD wire values and flags, for logs, generated from proto.def. */
/*
 * Every function maps a value to the spec's own spelling (NBD_CMD_READ
 * rather than our PROTO_CMD_READ) so that a log line can be looked up in
 * doc/proto.md directly.  The strings are literals: nothing here
 * allocates or keeps state.
 */
#include "nbdsrv/compiler.h"
#include "nbdsrv/proto.h"

#include <stdio.h>
#include <string.h>

#define UNKNOWN_NAME "unknown"

const char *proto_cmd_name(uint32_t cmd)
{
    switch (cmd) {
#define PROTO_CMD(name, value)                                                 \
    case (value):                                                              \
        return "NBD_CMD_" #name;
#include "nbdsrv/proto.def"
    }
    return UNKNOWN_NAME;
}

const char *proto_opt_name(uint32_t opt)
{
    switch (opt) {
#define PROTO_OPT(name, value)                                                 \
    case (value):                                                              \
        return "NBD_OPT_" #name;
#include "nbdsrv/proto.def"
    }
    return UNKNOWN_NAME;
}

const char *proto_rep_name(uint32_t rep)
{
    switch (rep) {
#define PROTO_REP(name, value)                                                 \
    case (value):                                                              \
        return "NBD_REP_" #name;
#include "nbdsrv/proto.def"
    }
    return UNKNOWN_NAME;
}

const char *proto_info_name(uint32_t info)
{
    switch (info) {
#define PROTO_INFO(name, value)                                                \
    case (value):                                                              \
        return "NBD_INFO_" #name;
#include "nbdsrv/proto.def"
    }
    return UNKNOWN_NAME;
}

const char *proto_reply_type_name(uint32_t type)
{
    switch (type) {
#define PROTO_REPLY_TYPE(name, value)                                          \
    case (value):                                                              \
        return "NBD_REPLY_TYPE_" #name;
#include "nbdsrv/proto.def"
    }
    return UNKNOWN_NAME;
}

const char *proto_err_name(uint32_t err)
{
    switch (err) {
    case 0:
        return "0";
#define PROTO_ERR(name, value)                                                 \
    case (value):                                                              \
        return "NBD_" #name;
#include "nbdsrv/proto.def"
    }
    return UNKNOWN_NAME;
}

/* One named bit of a flag field. */
struct flag_name {
    uint32_t bit;
    const char *name;
};

static const struct flag_name hs_flags[] = {
#define PROTO_HS_FLAG(name, bit) {1u << (bit), #name},
#include "nbdsrv/proto.def"
};

static const struct flag_name client_flags[] = {
#define PROTO_CLIENT_FLAG(name, bit) {1u << (bit), #name},
#include "nbdsrv/proto.def"
};

static const struct flag_name tx_flags[] = {
#define PROTO_TX_FLAG(name, bit) {1u << (bit), #name},
#include "nbdsrv/proto.def"
};

static const struct flag_name cmd_flags[] = {
#define PROTO_CMD_FLAG(name, bit) {1u << (bit), #name},
#include "nbdsrv/proto.def"
};

static const struct flag_name reply_flags[] = {
#define PROTO_REPLY_FLAG(name, bit) {1u << (bit), #name},
#include "nbdsrv/proto.def"
};

/* Appends s to buf like a growing snprintf; *used counts the full text. */
static void append(char *buf, size_t cap, size_t *used, const char *s)
{
    size_t len = strlen(s);

    if (*used < cap) {
        size_t room = cap - *used - 1;
        size_t n = len < room ? len : room;
        memcpy(buf + *used, s, n);
        buf[*used + n] = '\0';
    }
    *used += len;
}

size_t proto_format_flags(enum proto_flag_field field, uint32_t flags,
                          char *buf, size_t cap)
{
    const struct flag_name *names;
    size_t nr, used = 0;
    uint32_t rest = flags;

    switch (field) {
    case PROTO_FIELD_HS:
        names = hs_flags;
        nr = ARRAY_SIZE(hs_flags);
        break;
    case PROTO_FIELD_CLIENT:
        names = client_flags;
        nr = ARRAY_SIZE(client_flags);
        break;
    case PROTO_FIELD_TX:
        names = tx_flags;
        nr = ARRAY_SIZE(tx_flags);
        break;
    case PROTO_FIELD_CMD:
        names = cmd_flags;
        nr = ARRAY_SIZE(cmd_flags);
        break;
    case PROTO_FIELD_REPLY:
        names = reply_flags;
        nr = ARRAY_SIZE(reply_flags);
        break;
    default:
        names = NULL;
        nr = 0;
        break;
    }
    if (cap > 0) {
        buf[0] = '\0';
    }
    if (flags == 0) {
        append(buf, cap, &used, "0");
        return used;
    }
    for (size_t i = 0; i < nr; i++) {
        if (rest & names[i].bit) {
            if (used > 0) {
                append(buf, cap, &used, "|");
            }
            append(buf, cap, &used, names[i].name);
            rest &= ~names[i].bit;
        }
    }
    if (rest != 0) {
        char hex[16];

        snprintf(hex, sizeof hex, "0x%x", (unsigned)rest);
        if (used > 0) {
            append(buf, cap, &used, "|");
        }
        append(buf, cap, &used, hex);
    }
    return used;
}
