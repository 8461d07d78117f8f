/* SPDX-License-Identifier: MIT */
/* Handshake-phase codec: greeting, client flags, options, option replies. */
/*
 * Covers doc/proto.md "Newstyle negotiation", "Fixed newstyle
 * negotiation", "Option types" and "Option reply types".  Every parser
 * first checks that the declared lengths add up to exactly the bytes it
 * was given (a mismatch is -EBADMSG, which the server answers with
 * NBD_REP_ERR_INVALID) and only then looks at string contents (NUL bytes
 * are -EBADMSG, over-long strings -E2BIG), so a framing error always wins
 * over a content error.  All length arithmetic is done on values already
 * known to fit in the input, or in 64 bits, so a length field of
 * 0xffffffff cannot wrap around.
 */
#include "nbdsrv/proto.h"
#include "proto-int.h"

#include <errno.h>
#include <string.h>

ssize_t proto_encode_greeting(void *buf, size_t cap, uint16_t hs_flags)
{
    uint8_t *p = buf;

    if (cap < PROTO_GREETING_SIZE) {
        return -ENOBUFS;
    }
    put_u64(p, PROTO_NBDMAGIC);
    put_u64(p + 8, PROTO_IHAVEOPT);
    put_u16(p + 16, hs_flags);
    return PROTO_GREETING_SIZE;
}

int proto_decode_greeting(const void *buf, size_t len, uint16_t *hs_flags)
{
    const uint8_t *p = buf;

    if (len < PROTO_GREETING_SIZE || get_u64(p) != PROTO_NBDMAGIC) {
        return -EBADMSG;
    }
    if (get_u64(p + 8) == PROTO_CLISERV_MAGIC) {
        return -EPROTONOSUPPORT;
    }
    if (get_u64(p + 8) != PROTO_IHAVEOPT) {
        return -EBADMSG;
    }
    *hs_flags = get_u16(p + 16);
    return 0;
}

ssize_t proto_encode_client_flags(void *buf, size_t cap, uint32_t flags)
{
    if (cap < PROTO_CLIENT_FLAGS_SIZE) {
        return -ENOBUFS;
    }
    put_u32(buf, flags);
    return PROTO_CLIENT_FLAGS_SIZE;
}

int proto_decode_client_flags(const void *buf, size_t len, uint16_t hs_flags,
                              uint32_t *flags)
{
    uint32_t allowed = 0;

    if (len < PROTO_CLIENT_FLAGS_SIZE) {
        return -EBADMSG;
    }
    *flags = get_u32(buf);
    /* A client flag is only valid as the answer to its handshake flag. */
    if (hs_flags & PROTO_FLAG_FIXED_NEWSTYLE) {
        allowed |= PROTO_FLAG_C_FIXED_NEWSTYLE;
    }
    if (hs_flags & PROTO_FLAG_NO_ZEROES) {
        allowed |= PROTO_FLAG_C_NO_ZEROES;
    }
    if (*flags & ~allowed) {
        return -EINVAL;
    }
    return 0;
}

/* ---- Option requests ---- */

ssize_t proto_encode_option_header(void *buf, size_t cap, uint32_t option,
                                   uint32_t length)
{
    uint8_t *p = buf;

    if (cap < PROTO_OPTION_HEADER_SIZE) {
        return -ENOBUFS;
    }
    put_u64(p, PROTO_IHAVEOPT);
    put_u32(p + 8, option);
    put_u32(p + 12, length);
    return PROTO_OPTION_HEADER_SIZE;
}

int proto_decode_option_header(const void *buf, size_t len,
                               struct proto_option_header *hdr)
{
    const uint8_t *p = buf;

    if (len < PROTO_OPTION_HEADER_SIZE || get_u64(p) != PROTO_IHAVEOPT) {
        return -EBADMSG;
    }
    hdr->option = get_u32(p + 8);
    hdr->length = get_u32(p + 12);
    if (hdr->length > PROTO_OPTION_MAX_LEN) {
        return -E2BIG;
    }
    return 0;
}

/*
 * Writes an option header for `data_len` bytes of data and returns where
 * the data goes, after checking the cap and the room in the buffer.
 */
static ssize_t option_start(uint8_t *p, size_t cap, uint32_t option,
                            size_t data_len)
{
    if (data_len > PROTO_OPTION_MAX_LEN) {
        return -E2BIG;
    }
    if (cap < PROTO_OPTION_HEADER_SIZE + data_len) {
        return -ENOBUFS;
    }
    return proto_encode_option_header(p, cap, option, (uint32_t)data_len);
}

ssize_t proto_build_option(void *buf, size_t cap, uint32_t option,
                           const void *data, size_t len)
{
    uint8_t *p = buf;
    ssize_t r = option_start(p, cap, option, len);

    if (r < 0) {
        return r;
    }
    put_bytes(p + r, data, len);
    return r + (ssize_t)len;
}

ssize_t proto_build_opt_export_name(void *buf, size_t cap, const char *name,
                                    size_t len)
{
    if (proto_check_string(name, len) < 0) {
        return -EINVAL;
    }
    return proto_build_option(buf, cap, PROTO_OPT_EXPORT_NAME, name, len);
}

int proto_parse_opt_export_name(const void *data, size_t len,
                                struct proto_string *name)
{
    int r = proto_check_string(data, len);

    if (r < 0) {
        return r;
    }
    name->ptr = data;
    name->len = len;
    return 0;
}

ssize_t proto_build_opt_info(void *buf, size_t cap, uint32_t option,
                             const char *name, size_t name_len,
                             const uint16_t *requests, size_t nr)
{
    uint8_t *p = buf;
    size_t data_len;
    ssize_t r;

    if (proto_check_string(name, name_len) < 0 || nr > UINT16_MAX) {
        return -EINVAL;
    }
    data_len = 4 + name_len + 2 + 2 * nr;
    r = option_start(p, cap, option, data_len);
    if (r < 0) {
        return r;
    }
    p += r;
    put_u32(p, (uint32_t)name_len);
    put_bytes(p + 4, name, name_len);
    p += 4 + name_len;
    put_u16(p, (uint16_t)nr);
    p += 2;
    for (size_t i = 0; i < nr; i++) {
        put_u16(p + 2 * i, requests[i]);
    }
    return r + (ssize_t)data_len;
}

int proto_parse_opt_info(const void *data, size_t len,
                         struct proto_opt_info *info)
{
    const uint8_t *p = data;
    uint32_t name_len;
    uint16_t nr;

    /* u32 name length, name, u16 count: at least 6 bytes. */
    if (len < 6) {
        return -EBADMSG;
    }
    name_len = get_u32(p);
    if (name_len > len - 6) {
        return -EBADMSG;
    }
    nr = get_u16(p + 4 + name_len);
    if (len - 6 - name_len != 2 * (size_t)nr) {
        return -EBADMSG;
    }
    int r = proto_check_string((const char *)p + 4, name_len);
    if (r < 0) {
        return r;
    }
    info->name.ptr = (const char *)p + 4;
    info->name.len = name_len;
    info->nr_requests = nr;
    info->requests = p + 6 + name_len;
    return 0;
}

uint16_t proto_opt_info_request(const struct proto_opt_info *info, size_t i)
{
    return get_u16(info->requests + 2 * i);
}

ssize_t proto_build_opt_meta(void *buf, size_t cap, uint32_t option,
                             const char *export_name, size_t name_len,
                             const struct proto_string *queries, size_t nr)
{
    uint8_t *p = buf;
    size_t data_len;
    ssize_t r;

    if (proto_check_string(export_name, name_len) < 0 || nr > UINT32_MAX) {
        return -EINVAL;
    }
    /* Sum with a cap check per step so that no addition can wrap. */
    data_len = 4 + name_len + 4;
    for (size_t i = 0; i < nr; i++) {
        if (proto_check_string(queries[i].ptr, queries[i].len) < 0) {
            return -EINVAL;
        }
        data_len += 4 + queries[i].len;
        if (data_len > PROTO_OPTION_MAX_LEN) {
            return -E2BIG;
        }
    }
    r = option_start(p, cap, option, data_len);
    if (r < 0) {
        return r;
    }
    p += r;
    put_u32(p, (uint32_t)name_len);
    put_bytes(p + 4, export_name, name_len);
    p += 4 + name_len;
    put_u32(p, (uint32_t)nr);
    p += 4;
    for (size_t i = 0; i < nr; i++) {
        put_u32(p, (uint32_t)queries[i].len);
        put_bytes(p + 4, queries[i].ptr, queries[i].len);
        p += 4 + queries[i].len;
    }
    return r + (ssize_t)data_len;
}

int proto_parse_opt_meta(const void *data, size_t len,
                         struct proto_opt_meta *meta)
{
    const uint8_t *p = data;
    uint32_t name_len, nr;
    size_t pos, queries_at;
    int content_err = 0;
    int r;

    /* u32 export name length, name, u32 query count: at least 8 bytes. */
    if (len < 8) {
        return -EBADMSG;
    }
    name_len = get_u32(p);
    if (name_len > len - 8) {
        return -EBADMSG;
    }
    content_err = proto_check_string((const char *)p + 4, name_len);
    pos = 4 + (size_t)name_len;
    nr = get_u32(p + pos);
    pos += 4;
    queries_at = pos;
    /*
     * Each query needs at least its 4-byte length, so the loop ends after
     * at most len / 4 rounds whatever the count claims.
     */
    for (uint32_t i = 0; i < nr; i++) {
        uint32_t qlen;

        if (len - pos < 4) {
            return -EBADMSG;
        }
        qlen = get_u32(p + pos);
        pos += 4;
        if (qlen > len - pos) {
            return -EBADMSG;
        }
        r = proto_check_string((const char *)p + pos, qlen);
        if (r < 0 && content_err == 0) {
            content_err = r;
        }
        pos += qlen;
    }
    if (pos != len) {
        return -EBADMSG;
    }
    if (content_err < 0) {
        return content_err;
    }
    meta->export_name.ptr = (const char *)p + 4;
    meta->export_name.len = name_len;
    meta->nr_queries = nr;
    meta->queries = p + queries_at;
    meta->queries_len = len - queries_at;
    return 0;
}

bool proto_opt_meta_next(const struct proto_opt_meta *meta, size_t *pos,
                         struct proto_string *query)
{
    size_t left;
    uint32_t qlen;

    /* The list was validated; the checks only guard against misuse. */
    if (*pos >= meta->queries_len || meta->queries_len - *pos < 4) {
        return false;
    }
    qlen = get_u32(meta->queries + *pos);
    left = meta->queries_len - *pos - 4;
    if (qlen > left) {
        return false;
    }
    query->ptr = (const char *)meta->queries + *pos + 4;
    query->len = qlen;
    *pos += 4 + (size_t)qlen;
    return true;
}

/* ---- Option replies ---- */

ssize_t proto_encode_option_reply(void *buf, size_t cap, uint32_t option,
                                  uint32_t type, uint32_t length)
{
    uint8_t *p = buf;

    if (cap < PROTO_OPTION_REPLY_SIZE) {
        return -ENOBUFS;
    }
    put_u64(p, PROTO_REP_MAGIC);
    put_u32(p + 8, option);
    put_u32(p + 12, type);
    put_u32(p + 16, length);
    return PROTO_OPTION_REPLY_SIZE;
}

int proto_decode_option_reply(const void *buf, size_t len,
                              struct proto_option_reply *rep)
{
    const uint8_t *p = buf;

    if (len < PROTO_OPTION_REPLY_SIZE || get_u64(p) != PROTO_REP_MAGIC) {
        return -EBADMSG;
    }
    rep->option = get_u32(p + 8);
    rep->type = get_u32(p + 12);
    rep->length = get_u32(p + 16);
    if (rep->length > PROTO_OPTION_MAX_LEN) {
        return -E2BIG;
    }
    return 0;
}

/*
 * Writes an option reply header for `data_len` bytes of data after
 * checking the room; returns the header size or -ENOBUFS.  Data lengths
 * here are bounded by a few strings of PROTO_STRING_MAX, far below 2^32.
 */
static ssize_t rep_start(uint8_t *p, size_t cap, uint32_t option, uint32_t type,
                         size_t data_len)
{
    if (cap < PROTO_OPTION_REPLY_SIZE + data_len) {
        return -ENOBUFS;
    }
    return proto_encode_option_reply(p, cap, option, type, (uint32_t)data_len);
}

ssize_t proto_build_rep_ack(void *buf, size_t cap, uint32_t option)
{
    return rep_start(buf, cap, option, PROTO_REP_ACK, 0);
}

ssize_t proto_build_rep_server(void *buf, size_t cap, uint32_t option,
                               const char *name, size_t name_len,
                               const char *desc, size_t desc_len)
{
    uint8_t *p = buf;
    size_t data_len = 4 + name_len + desc_len;
    ssize_t r;

    if (proto_check_string(name, name_len) < 0 ||
        proto_check_string(desc, desc_len) < 0) {
        return -EINVAL;
    }
    r = rep_start(p, cap, option, PROTO_REP_SERVER, data_len);
    if (r < 0) {
        return r;
    }
    put_u32(p + r, (uint32_t)name_len);
    put_bytes(p + r + 4, name, name_len);
    put_bytes(p + r + 4 + name_len, desc, desc_len);
    return r + (ssize_t)data_len;
}

ssize_t proto_build_rep_info_export(void *buf, size_t cap, uint32_t option,
                                    uint64_t size, uint16_t tx_flags)
{
    uint8_t *p = buf;
    ssize_t r = rep_start(p, cap, option, PROTO_REP_INFO, 12);

    if (r < 0) {
        return r;
    }
    put_u16(p + r, PROTO_INFO_EXPORT);
    put_u64(p + r + 2, size);
    put_u16(p + r + 10, tx_flags);
    return r + 12;
}

/* NBD_REP_INFO whose payload is a u16 type and one string. */
static ssize_t rep_info_string(uint8_t *p, size_t cap, uint32_t option,
                               uint16_t info, const char *s, size_t len)
{
    ssize_t r;

    if (proto_check_string(s, len) < 0) {
        return -EINVAL;
    }
    r = rep_start(p, cap, option, PROTO_REP_INFO, 2 + len);
    if (r < 0) {
        return r;
    }
    put_u16(p + r, info);
    put_bytes(p + r + 2, s, len);
    return r + 2 + (ssize_t)len;
}

ssize_t proto_build_rep_info_name(void *buf, size_t cap, uint32_t option,
                                  const char *name, size_t len)
{
    return rep_info_string(buf, cap, option, PROTO_INFO_NAME, name, len);
}

ssize_t proto_build_rep_info_description(void *buf, size_t cap, uint32_t option,
                                         const char *desc, size_t len)
{
    return rep_info_string(buf, cap, option, PROTO_INFO_DESCRIPTION, desc, len);
}

ssize_t proto_build_rep_info_block_size(void *buf, size_t cap, uint32_t option,
                                        uint32_t min, uint32_t pref,
                                        uint32_t max)
{
    uint8_t *p = buf;
    ssize_t r = rep_start(p, cap, option, PROTO_REP_INFO, 14);

    if (r < 0) {
        return r;
    }
    put_u16(p + r, PROTO_INFO_BLOCK_SIZE);
    put_u32(p + r + 2, min);
    put_u32(p + r + 6, pref);
    put_u32(p + r + 10, max);
    return r + 14;
}

ssize_t proto_build_rep_meta_context(void *buf, size_t cap, uint32_t option,
                                     uint32_t id, const char *name, size_t len)
{
    uint8_t *p = buf;
    ssize_t r;

    if (proto_check_string(name, len) < 0) {
        return -EINVAL;
    }
    r = rep_start(p, cap, option, PROTO_REP_META_CONTEXT, 4 + len);
    if (r < 0) {
        return r;
    }
    put_u32(p + r, id);
    put_bytes(p + r + 4, name, len);
    return r + 4 + (ssize_t)len;
}

ssize_t proto_build_rep_error(void *buf, size_t cap, uint32_t option,
                              uint32_t type, const char *msg, size_t len)
{
    uint8_t *p = buf;
    ssize_t r;

    if (!(type & PROTO_REP_ERR_BIT) || proto_check_string(msg, len) < 0) {
        return -EINVAL;
    }
    r = rep_start(p, cap, option, type, len);
    if (r < 0) {
        return r;
    }
    put_bytes(p + r, msg, len);
    return r + (ssize_t)len;
}

int proto_parse_rep_server(const void *data, size_t len,
                           struct proto_string *name, struct proto_string *desc)
{
    const uint8_t *p = data;
    uint32_t name_len;
    int r;

    if (len < 4) {
        return -EBADMSG;
    }
    name_len = get_u32(p);
    if (name_len > len - 4) {
        return -EBADMSG;
    }
    r = proto_check_string((const char *)p + 4, name_len);
    if (r == 0) {
        r = proto_check_string((const char *)p + 4 + name_len,
                               len - 4 - name_len);
    }
    if (r < 0) {
        return r;
    }
    name->ptr = (const char *)p + 4;
    name->len = name_len;
    desc->ptr = (const char *)p + 4 + name_len;
    desc->len = len - 4 - name_len;
    return 0;
}

int proto_parse_rep_info(const void *data, size_t len,
                         struct proto_info_reply *info)
{
    const uint8_t *p = data;
    int r;

    if (len < 2) {
        return -EBADMSG;
    }
    memset(info, 0, sizeof *info);
    info->type = get_u16(p);
    switch (info->type) {
    case PROTO_INFO_EXPORT:
        if (len != 12) {
            return -EBADMSG;
        }
        info->u.export_info.size = get_u64(p + 2);
        info->u.export_info.tx_flags = get_u16(p + 10);
        return 0;
    case PROTO_INFO_NAME:
    case PROTO_INFO_DESCRIPTION:
        r = proto_check_string((const char *)p + 2, len - 2);
        if (r < 0) {
            return r;
        }
        if (info->type == PROTO_INFO_NAME) {
            info->u.name.ptr = (const char *)p + 2;
            info->u.name.len = len - 2;
        } else {
            info->u.description.ptr = (const char *)p + 2;
            info->u.description.len = len - 2;
        }
        return 0;
    case PROTO_INFO_BLOCK_SIZE:
        if (len != 14) {
            return -EBADMSG;
        }
        info->u.block_size.min = get_u32(p + 2);
        info->u.block_size.pref = get_u32(p + 6);
        info->u.block_size.max = get_u32(p + 10);
        return 0;
    default:
        return 0;
    }
}

int proto_parse_rep_meta_context(const void *data, size_t len, uint32_t *id,
                                 struct proto_string *name)
{
    const uint8_t *p = data;
    int r;

    if (len < 4) {
        return -EBADMSG;
    }
    r = proto_check_string((const char *)p + 4, len - 4);
    if (r < 0) {
        return r;
    }
    *id = get_u32(p);
    name->ptr = (const char *)p + 4;
    name->len = len - 4;
    return 0;
}

int proto_parse_rep_error(const void *data, size_t len,
                          struct proto_string *msg)
{
    int r = proto_check_string(data, len);

    if (r < 0) {
        return r;
    }
    msg->ptr = data;
    msg->len = len;
    return 0;
}

/* ---- NBD_OPT_EXPORT_NAME answer ---- */

ssize_t proto_encode_export_name_reply(void *buf, size_t cap, uint64_t size,
                                       uint16_t tx_flags, bool no_zeroes)
{
    uint8_t *p = buf;
    size_t n = no_zeroes ? PROTO_EXPORT_NAME_REPLY_SHORT
                         : PROTO_EXPORT_NAME_REPLY_SIZE;

    if (cap < n) {
        return -ENOBUFS;
    }
    put_u64(p, size);
    put_u16(p + 8, tx_flags);
    memset(p + PROTO_EXPORT_NAME_REPLY_SHORT, 0,
           n - PROTO_EXPORT_NAME_REPLY_SHORT);
    return (ssize_t)n;
}

int proto_decode_export_name_reply(const void *buf, size_t len, uint64_t *size,
                                   uint16_t *tx_flags)
{
    const uint8_t *p = buf;

    if (len < PROTO_EXPORT_NAME_REPLY_SHORT) {
        return -EBADMSG;
    }
    *size = get_u64(p);
    *tx_flags = get_u16(p + 8);
    return 0;
}
