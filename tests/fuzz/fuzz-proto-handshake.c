/* SPDX-License-Identifier: MIT */
/* libFuzzer target: the fixed newstyle handshake, both directions. */
/*
 * The input goes through every handshake decoder: greeting, client flags
 * (against each handshake flag combination), the answer to
 * NBD_OPT_EXPORT_NAME, an option header and an option reply header.  The
 * bytes after a decoded option header (or the whole input) are parsed as
 * the payload of EXPORT_NAME, INFO/GO and LIST/SET_META_CONTEXT as a
 * server does; the bytes after a decoded option reply header (or the
 * whole input) as the data of REP_SERVER, REP_INFO, REP_META_CONTEXT and
 * an error reply as a client does.  Whatever decodes is rebuilt with the
 * matching encoder or builder and must give the same bytes: the whole
 * frame when the header announced that payload, the payload otherwise.
 */
#include "fuzz.h"
#include "nbdsrv/proto.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

/* A payload, the header it came after (or NULL) and room to rebuild. */
struct payload_in {
    const uint8_t *frame; /* decoded header, or NULL */
    uint32_t option;      /* its option (or a default) */
    uint32_t type;        /* option replies: the reply type */
    uint32_t length;      /* its length field */
    const uint8_t *p;
    size_t len;
    uint8_t *out; /* for FUZZ_BUILD: twice the largest frame */
    size_t cap;
};

/*
 * `n` bytes just built from an option header of `hsize` bytes: the
 * payload must equal the input's, and so must the header when the input
 * header announced the same thing.
 */
static void check_rebuilt(const struct payload_in *in, ssize_t n, size_t hsize,
                          bool same_type)
{
    FUZZ_ASSERT(n == (ssize_t)(hsize + in->len));
    FUZZ_ASSERT(memcmp(in->out + hsize, in->p, in->len) == 0);
    if (in->frame != NULL && same_type && in->length == in->len) {
        FUZZ_ASSERT(memcmp(in->out, in->frame, hsize) == 0);
    }
}

static void fuzz_greeting(const uint8_t *data, size_t size)
{
    uint8_t out[PROTO_GREETING_SIZE];
    uint16_t hs_flags;
    int r = proto_decode_greeting(data, size, &hs_flags);

    if (r < 0) {
        FUZZ_ASSERT(r == -EBADMSG || r == -EPROTONOSUPPORT);
        return;
    }
    FUZZ_ASSERT(proto_encode_greeting(out, sizeof out, hs_flags) ==
                PROTO_GREETING_SIZE);
    FUZZ_ASSERT(memcmp(out, data, PROTO_GREETING_SIZE) == 0);
    fuzz_check_flags(PROTO_FIELD_HS, hs_flags);
}

static void fuzz_client_flags(const uint8_t *data, size_t size)
{
    for (uint16_t hs = 0; hs <= PROTO_HS_FLAGS_ALL; hs++) {
        uint8_t out[PROTO_CLIENT_FLAGS_SIZE];
        uint32_t allowed = 0;
        uint32_t flags;
        int r = proto_decode_client_flags(data, size, hs, &flags);

        if (r == -EBADMSG) {
            FUZZ_ASSERT(size < PROTO_CLIENT_FLAGS_SIZE);
            return;
        }
        if (hs & PROTO_FLAG_FIXED_NEWSTYLE) {
            allowed |= PROTO_FLAG_C_FIXED_NEWSTYLE;
        }
        if (hs & PROTO_FLAG_NO_ZEROES) {
            allowed |= PROTO_FLAG_C_NO_ZEROES;
        }
        FUZZ_ASSERT(r == ((flags & ~allowed) ? -EINVAL : 0));
        FUZZ_ASSERT(proto_encode_client_flags(out, sizeof out, flags) ==
                    PROTO_CLIENT_FLAGS_SIZE);
        FUZZ_ASSERT(memcmp(out, data, PROTO_CLIENT_FLAGS_SIZE) == 0);
        fuzz_check_flags(PROTO_FIELD_CLIENT, flags);
    }
}

static void fuzz_export_name_reply(const uint8_t *data, size_t size)
{
    uint8_t out[PROTO_EXPORT_NAME_REPLY_SIZE];
    uint64_t export_size;
    uint16_t tx_flags;

    if (proto_decode_export_name_reply(data, size, &export_size, &tx_flags) <
        0) {
        FUZZ_ASSERT(size < PROTO_EXPORT_NAME_REPLY_SHORT);
        return;
    }
    FUZZ_ASSERT(proto_encode_export_name_reply(out, sizeof out, export_size,
                                               tx_flags, true) ==
                PROTO_EXPORT_NAME_REPLY_SHORT);
    FUZZ_ASSERT(memcmp(out, data, PROTO_EXPORT_NAME_REPLY_SHORT) == 0);
    FUZZ_ASSERT(proto_encode_export_name_reply(out, sizeof out, export_size,
                                               tx_flags, false) ==
                PROTO_EXPORT_NAME_REPLY_SIZE);
    FUZZ_ASSERT(memcmp(out, data, PROTO_EXPORT_NAME_REPLY_SHORT) == 0);
    for (size_t i = PROTO_EXPORT_NAME_REPLY_SHORT; i < sizeof out; i++) {
        FUZZ_ASSERT(out[i] == 0);
    }
    fuzz_check_flags(PROTO_FIELD_TX, tx_flags);
}

/* ---- Option requests (server side) ---- */

static void fuzz_opt_export_name(const struct payload_in *in)
{
    struct proto_string name;
    int r = proto_parse_opt_export_name(in->p, in->len, &name);

    if (r < 0) {
        FUZZ_ASSERT(r == -EBADMSG || r == -E2BIG);
        return;
    }
    FUZZ_ASSERT(name.ptr == (const char *)in->p && name.len == in->len);
    check_rebuilt(in,
                  FUZZ_BUILD(in->out, in->cap,
                             proto_build_opt_export_name(FUZZ_OUT, FUZZ_CAP,
                                                         name.ptr, name.len)),
                  PROTO_OPTION_HEADER_SIZE,
                  in->option == PROTO_OPT_EXPORT_NAME);
}

static void fuzz_opt_info(const struct payload_in *in)
{
    struct proto_opt_info info;
    uint16_t *requests;
    ssize_t n;
    int r = proto_parse_opt_info(in->p, in->len, &info);

    if (r < 0) {
        FUZZ_ASSERT(r == -EBADMSG || r == -E2BIG);
        return;
    }
    FUZZ_ASSERT(in->len == 6 + info.name.len + 2 * (size_t)info.nr_requests);
    FUZZ_ASSERT(proto_check_string(info.name.ptr, info.name.len) == 0);
    requests = calloc(info.nr_requests + 1, sizeof *requests);
    FUZZ_ASSERT(requests != NULL);
    for (size_t i = 0; i < info.nr_requests; i++) {
        requests[i] = proto_opt_info_request(&info, i);
        FUZZ_ASSERT(proto_info_name(requests[i]) != NULL);
    }
    n = FUZZ_BUILD(in->out, in->cap,
                   proto_build_opt_info(FUZZ_OUT, FUZZ_CAP, in->option,
                                        info.name.ptr, info.name.len, requests,
                                        info.nr_requests));
    free(requests);
    check_rebuilt(in, n, PROTO_OPTION_HEADER_SIZE, true);
}

static void fuzz_opt_meta(const struct payload_in *in)
{
    struct proto_opt_meta meta;
    struct proto_string *queries;
    size_t pos = 0, nr = 0;
    ssize_t n;
    int r = proto_parse_opt_meta(in->p, in->len, &meta);

    if (r < 0) {
        FUZZ_ASSERT(r == -EBADMSG || r == -E2BIG);
        return;
    }
    FUZZ_ASSERT(meta.nr_queries <= in->len / 4);
    FUZZ_ASSERT(meta.queries_len == in->len - 8 - meta.export_name.len);
    queries = calloc(meta.nr_queries + 1, sizeof *queries);
    FUZZ_ASSERT(queries != NULL);
    while (proto_opt_meta_next(&meta, &pos, &queries[nr])) {
        FUZZ_ASSERT(nr < meta.nr_queries);
        FUZZ_ASSERT(proto_check_string(queries[nr].ptr, queries[nr].len) == 0);
        nr++;
    }
    FUZZ_ASSERT(nr == meta.nr_queries && pos == meta.queries_len);
    n = FUZZ_BUILD(in->out, in->cap,
                   proto_build_opt_meta(FUZZ_OUT, FUZZ_CAP, in->option,
                                        meta.export_name.ptr,
                                        meta.export_name.len, queries, nr));
    free(queries);
    check_rebuilt(in, n, PROTO_OPTION_HEADER_SIZE, true);
}

static void fuzz_options(const uint8_t *data, size_t size, uint8_t *out,
                         size_t cap)
{
    struct payload_in in = {
        .option = PROTO_OPT_GO, .p = data, .len = size, .out = out, .cap = cap};
    uint8_t hbuf[PROTO_OPTION_HEADER_SIZE];
    struct proto_option_header hdr;
    int r = proto_decode_option_header(data, size, &hdr);

    if (r == 0 || r == -E2BIG) {
        FUZZ_ASSERT((r == -E2BIG) == (hdr.length > PROTO_OPTION_MAX_LEN));
        FUZZ_ASSERT(proto_encode_option_header(hbuf, sizeof hbuf, hdr.option,
                                               hdr.length) ==
                    PROTO_OPTION_HEADER_SIZE);
        FUZZ_ASSERT(memcmp(hbuf, data, PROTO_OPTION_HEADER_SIZE) == 0);
        FUZZ_ASSERT(proto_opt_name(hdr.option) != NULL);
        in.frame = data;
        in.option = hdr.option;
        in.length = hdr.length;
        in.p = data + PROTO_OPTION_HEADER_SIZE;
        in.len = size - PROTO_OPTION_HEADER_SIZE;
        check_rebuilt(&in,
                      FUZZ_BUILD(out, cap,
                                 proto_build_option(FUZZ_OUT, FUZZ_CAP,
                                                    hdr.option, in.p, in.len)),
                      PROTO_OPTION_HEADER_SIZE, true);
    } else {
        FUZZ_ASSERT(r == -EBADMSG);
    }
    fuzz_opt_export_name(&in);
    fuzz_opt_info(&in);
    fuzz_opt_meta(&in);
}

/* ---- Option replies (client side) ---- */

static void fuzz_rep_server(const struct payload_in *in)
{
    struct proto_string name, desc;
    int r = proto_parse_rep_server(in->p, in->len, &name, &desc);

    if (r < 0) {
        FUZZ_ASSERT(r == -EBADMSG || r == -E2BIG);
        return;
    }
    FUZZ_ASSERT(in->len == 4 + name.len + desc.len);
    check_rebuilt(in,
                  FUZZ_BUILD(in->out, in->cap,
                             proto_build_rep_server(
                                 FUZZ_OUT, FUZZ_CAP, in->option, name.ptr,
                                 name.len, desc.ptr, desc.len)),
                  PROTO_OPTION_REPLY_SIZE, in->type == PROTO_REP_SERVER);
}

static void fuzz_rep_info(const struct payload_in *in)
{
    struct proto_info_reply info;
    ssize_t n;
    int r = proto_parse_rep_info(in->p, in->len, &info);

    if (r < 0) {
        FUZZ_ASSERT(r == -EBADMSG || r == -E2BIG);
        return;
    }
    FUZZ_ASSERT(proto_info_name(info.type) != NULL);
    switch (info.type) {
    case PROTO_INFO_EXPORT:
        n = FUZZ_BUILD(
            in->out, in->cap,
            proto_build_rep_info_export(FUZZ_OUT, FUZZ_CAP, in->option,
                                        info.u.export_info.size,
                                        info.u.export_info.tx_flags));
        fuzz_check_flags(PROTO_FIELD_TX, info.u.export_info.tx_flags);
        break;
    case PROTO_INFO_NAME:
        n = FUZZ_BUILD(in->out, in->cap,
                       proto_build_rep_info_name(FUZZ_OUT, FUZZ_CAP, in->option,
                                                 info.u.name.ptr,
                                                 info.u.name.len));
        break;
    case PROTO_INFO_DESCRIPTION:
        n = FUZZ_BUILD(in->out, in->cap,
                       proto_build_rep_info_description(
                           FUZZ_OUT, FUZZ_CAP, in->option,
                           info.u.description.ptr, info.u.description.len));
        break;
    case PROTO_INFO_BLOCK_SIZE:
        n = FUZZ_BUILD(in->out, in->cap,
                       proto_build_rep_info_block_size(
                           FUZZ_OUT, FUZZ_CAP, in->option,
                           info.u.block_size.min, info.u.block_size.pref,
                           info.u.block_size.max));
        break;
    default:
        return;
    }
    check_rebuilt(in, n, PROTO_OPTION_REPLY_SIZE, in->type == PROTO_REP_INFO);
}

static void fuzz_rep_meta_context(const struct payload_in *in)
{
    struct proto_string name;
    uint32_t id;
    int r = proto_parse_rep_meta_context(in->p, in->len, &id, &name);

    if (r < 0) {
        FUZZ_ASSERT(r == -EBADMSG || r == -E2BIG);
        return;
    }
    FUZZ_ASSERT(name.len == in->len - 4);
    check_rebuilt(
        in,
        FUZZ_BUILD(in->out, in->cap,
                   proto_build_rep_meta_context(FUZZ_OUT, FUZZ_CAP, in->option,
                                                id, name.ptr, name.len)),
        PROTO_OPTION_REPLY_SIZE, in->type == PROTO_REP_META_CONTEXT);
}

static void fuzz_rep_error(const struct payload_in *in)
{
    uint32_t type =
        (in->type & PROTO_REP_ERR_BIT) ? in->type : PROTO_REP_ERR_UNSUP;
    struct proto_string msg;
    int r = proto_parse_rep_error(in->p, in->len, &msg);

    if (r < 0) {
        FUZZ_ASSERT(r == -EBADMSG || r == -E2BIG);
        return;
    }
    FUZZ_ASSERT(msg.len == in->len);
    check_rebuilt(
        in,
        FUZZ_BUILD(in->out, in->cap,
                   proto_build_rep_error(FUZZ_OUT, FUZZ_CAP, in->option, type,
                                         msg.ptr, msg.len)),
        PROTO_OPTION_REPLY_SIZE, type == in->type);
    FUZZ_ASSERT(proto_build_rep_error(in->out, in->cap, in->option,
                                      type & ~PROTO_REP_ERR_BIT, msg.ptr,
                                      msg.len) == -EINVAL);
}

static void fuzz_option_replies(const uint8_t *data, size_t size, uint8_t *out,
                                size_t cap)
{
    struct payload_in in = {.option = PROTO_OPT_GO,
                            .type = PROTO_REP_INFO,
                            .p = data,
                            .len = size,
                            .out = out,
                            .cap = cap};
    uint8_t hbuf[PROTO_OPTION_REPLY_SIZE];
    struct proto_option_reply rep;
    int r = proto_decode_option_reply(data, size, &rep);

    if (r == 0 || r == -E2BIG) {
        FUZZ_ASSERT((r == -E2BIG) == (rep.length > PROTO_OPTION_MAX_LEN));
        FUZZ_ASSERT(proto_encode_option_reply(hbuf, sizeof hbuf, rep.option,
                                              rep.type, rep.length) ==
                    PROTO_OPTION_REPLY_SIZE);
        FUZZ_ASSERT(memcmp(hbuf, data, PROTO_OPTION_REPLY_SIZE) == 0);
        FUZZ_ASSERT(proto_rep_name(rep.type) != NULL);
        in.frame = data;
        in.option = rep.option;
        in.type = rep.type;
        in.length = rep.length;
        in.p = data + PROTO_OPTION_REPLY_SIZE;
        in.len = size - PROTO_OPTION_REPLY_SIZE;
        if (rep.type == PROTO_REP_ACK && in.len == 0) {
            check_rebuilt(
                &in,
                FUZZ_BUILD(out, cap,
                           proto_build_rep_ack(FUZZ_OUT, FUZZ_CAP, rep.option)),
                PROTO_OPTION_REPLY_SIZE, true);
        }
    } else {
        FUZZ_ASSERT(r == -EBADMSG);
    }
    fuzz_rep_server(&in);
    fuzz_rep_info(&in);
    fuzz_rep_meta_context(&in);
    fuzz_rep_error(&in);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    size_t cap = 2 * (PROTO_OPTION_REPLY_SIZE + size + 16);
    uint8_t *out = malloc(cap);

    FUZZ_ASSERT(out != NULL);
    fuzz_greeting(data, size);
    fuzz_client_flags(data, size);
    fuzz_export_name_reply(data, size);
    fuzz_options(data, size, out, cap);
    fuzz_option_replies(data, size, out, cap);
    free(out);
    return 0;
}
