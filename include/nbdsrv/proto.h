/* SPDX-License-Identifier: MIT */
/*
 * NBD protocol codec: pure functions that build and parse the wire
 * messages of the fixed newstyle handshake and of the transmission phase
 * (compact and extended headers, simple and structured replies).
 *
 * Nothing here does I/O, allocates, logs or keeps state, so every
 * function is ANY_THREAD and safe on the hot path.  Encoders write into a
 * caller-supplied buffer; decoders read a caller-supplied buffer and never
 * look past the length they are given.  Strings that a decoder returns
 * (struct proto_string) point into the input buffer and are not
 * NUL-terminated; they stay valid as long as that buffer does.
 *
 * Return convention:
 *   - encoders ("proto_encode_*", "proto_build_*") return the number of
 *     bytes written, or a negative errno;
 *   - decoders ("proto_decode_*", "proto_parse_*") return 0 or a
 *     negative errno.
 * The negative errnos mean, everywhere in this module:
 *   -EBADMSG  the bytes are not a well-formed message: wrong magic,
 *             truncated, lengths that do not add up, a NUL inside a
 *             string, a zero where the spec requires non-zero.  In the
 *             transmission phase this is a framing error: disconnect.
 *             For an option payload, reply NBD_REP_ERR_INVALID.
 *   -E2BIG    a declared length is above a cap (PROTO_OPTION_MAX_LEN,
 *             PROTO_STRING_MAX) although the framing itself is sound.
 *   -EINVAL   decoders: a well-formed message with flag bits we do not
 *             know (the output struct is still filled in, so the caller
 *             can answer with NBD_EINVAL); encoders: an argument that the
 *             spec forbids (for instance a zero hole size).
 *   -EOVERFLOW a value does not fit its wire field (a 64-bit length in a
 *             compact header).
 *   -ENOBUFS  the output buffer is too small.
 *   -EPROTONOSUPPORT the server speaks oldstyle negotiation.
 *
 * Spec: doc/proto.md of the NetworkBlockDevice/nbd repository, with the
 * extended-headers extension.  Wire constants come from nbdsrv/proto.def
 * with the spec's "NBD_" replaced by "PROTO_" (NBD_CMD_READ is
 * PROTO_CMD_READ), so this header can coexist with <linux/nbd.h>.
 */
#ifndef NBDSRV_PROTO_H
#define NBDSRV_PROTO_H

#include "nbdsrv/affinity.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/* Enumerations generated from the table. */

enum proto_cmd {
#define PROTO_CMD(name, value) PROTO_CMD_##name = (value),
#include "nbdsrv/proto.def"
};

enum proto_opt {
#define PROTO_OPT(name, value) PROTO_OPT_##name = (value),
#include "nbdsrv/proto.def"
};

enum proto_rep {
#define PROTO_REP(name, value) PROTO_REP_##name = (value),
#include "nbdsrv/proto.def"
};

enum proto_info {
#define PROTO_INFO(name, value) PROTO_INFO_##name = (value),
#include "nbdsrv/proto.def"
};

enum proto_reply_type {
#define PROTO_REPLY_TYPE(name, value) PROTO_REPLY_TYPE_##name = (value),
#include "nbdsrv/proto.def"
};

enum proto_err {
#define PROTO_ERR(name, value) PROTO_##name = (value),
#include "nbdsrv/proto.def"
};

enum proto_hs_flag {
#define PROTO_HS_FLAG(name, bit) PROTO_FLAG_##name = (1u << (bit)),
#include "nbdsrv/proto.def"
};

enum proto_client_flag {
#define PROTO_CLIENT_FLAG(name, bit) PROTO_FLAG_##name = (1u << (bit)),
#include "nbdsrv/proto.def"
};

enum proto_tx_flag {
#define PROTO_TX_FLAG(name, bit) PROTO_FLAG_##name = (1u << (bit)),
#include "nbdsrv/proto.def"
};

enum proto_cmd_flag {
#define PROTO_CMD_FLAG(name, bit) PROTO_CMD_FLAG_##name = (1u << (bit)),
#include "nbdsrv/proto.def"
};

enum proto_reply_flag {
#define PROTO_REPLY_FLAG(name, bit) PROTO_REPLY_FLAG_##name = (1u << (bit)),
#include "nbdsrv/proto.def"
};

enum proto_state_flag {
#define PROTO_STATE_FLAG(name, bit) PROTO_STATE_##name = (1u << (bit)),
#include "nbdsrv/proto.def"
};

/* Every bit the table defines, per flag field. */
enum {
    PROTO_HS_FLAGS_ALL = 0
#define PROTO_HS_FLAG(name, bit) | (1u << (bit))
#include "nbdsrv/proto.def"
    ,
    PROTO_CLIENT_FLAGS_ALL = 0
#define PROTO_CLIENT_FLAG(name, bit) | (1u << (bit))
#include "nbdsrv/proto.def"
    ,
    PROTO_TX_FLAGS_ALL = 0
#define PROTO_TX_FLAG(name, bit) | (1u << (bit))
#include "nbdsrv/proto.def"
    ,
    PROTO_CMD_FLAGS_ALL = 0
#define PROTO_CMD_FLAG(name, bit) | (1u << (bit))
#include "nbdsrv/proto.def"
    ,
};

/* Command flags valid in a compact (28-byte) request: all but PAYLOAD_LEN. */
#define PROTO_CMD_FLAGS_COMPACT                                                \
    (PROTO_CMD_FLAGS_ALL & ~(unsigned)PROTO_CMD_FLAG_PAYLOAD_LEN)

/* Bit 31 marks an option error reply, bit 15 an error chunk. */
#define PROTO_REP_ERR_BIT 0x80000000u
#define PROTO_REPLY_TYPE_ERR_BIT 0x8000u

/* Magic numbers (doc/proto.md). */
#define PROTO_NBDMAGIC UINT64_C(0x4e42444d41474943)
#define PROTO_IHAVEOPT UINT64_C(0x49484156454f5054)
#define PROTO_CLISERV_MAGIC UINT64_C(0x00420281861253) /* oldstyle */
#define PROTO_REP_MAGIC UINT64_C(0x3e889045565a9)      /* option reply */
#define PROTO_REQUEST_MAGIC UINT32_C(0x25609513)
#define PROTO_EXTENDED_REQUEST_MAGIC UINT32_C(0x21e41c71)
#define PROTO_SIMPLE_REPLY_MAGIC UINT32_C(0x67446698)
#define PROTO_STRUCTURED_REPLY_MAGIC UINT32_C(0x668e33ef)
#define PROTO_EXTENDED_REPLY_MAGIC UINT32_C(0x6e8a278c)

/* Wire sizes of the fixed parts, in bytes. */
#define PROTO_GREETING_SIZE 18 /* NBDMAGIC, IHAVEOPT, u16 flags */
#define PROTO_CLIENT_FLAGS_SIZE 4
#define PROTO_OPTION_HEADER_SIZE 16      /* IHAVEOPT, option, length */
#define PROTO_OPTION_REPLY_SIZE 20       /* magic, option, type, length */
#define PROTO_EXPORT_NAME_REPLY_SIZE 134 /* size, flags, 124 zeroes */
#define PROTO_EXPORT_NAME_REPLY_SHORT 10 /* the same with NO_ZEROES */
#define PROTO_REQUEST_SIZE 28
#define PROTO_EXTENDED_REQUEST_SIZE 32
#define PROTO_SIMPLE_REPLY_SIZE 16
#define PROTO_STRUCTURED_REPLY_SIZE 20
#define PROTO_EXTENDED_REPLY_SIZE 32
#define PROTO_REPLY_HEADER_MAX 32 /* the largest of the three replies */

/* Limits. */
#define PROTO_STRING_MAX 4096             /* any string on the wire */
#define PROTO_OPTION_MAX_LEN (64u * 1024) /* option data we accept */

/*
 * Buffer sizes of whole structured reply chunks (header plus fixed
 * payload) as the proto_build_chunk_* functions write them.  `hdr` is
 * the header size: PROTO_STRUCTURED_REPLY_SIZE or
 * PROTO_EXTENDED_REPLY_SIZE.
 */
#define PROTO_CHUNK_BLOCK_STATUS_SIZE(hdr, n) ((hdr) + 4 + 8 * (size_t)(n))
#define PROTO_CHUNK_BLOCK_STATUS_EXT_SIZE(hdr, n) ((hdr) + 8 + 16 * (size_t)(n))
#define PROTO_CHUNK_ERROR_SIZE(hdr, msglen) ((hdr) + 6 + (size_t)(msglen))
#define PROTO_CHUNK_ERROR_OFFSET_SIZE(hdr, msglen)                             \
    ((hdr) + 14 + (size_t)(msglen))

/*
 * A string on the wire: UTF-8 bytes, not NUL-terminated.  Borrowed: it
 * points into a buffer owned by the caller of the decoder.
 */
struct proto_string {
    const char *ptr;
    size_t len;
};

/*
 * Checks a string against the spec's rules: at most PROTO_STRING_MAX
 * bytes and no NUL.  Returns 0, -E2BIG or -EBADMSG.  ANY_THREAD.
 */
ANY_THREAD int proto_check_string(const char *s, size_t len);

/* ---- Handshake: greeting and client flags ---- */

/*
 * Writes the newstyle greeting: NBDMAGIC, IHAVEOPT, handshake flags
 * (PROTO_FLAG_FIXED_NEWSTYLE, PROTO_FLAG_NO_ZEROES).  Returns
 * PROTO_GREETING_SIZE or -ENOBUFS.  ANY_THREAD.
 */
ANY_THREAD ssize_t proto_encode_greeting(void *buf, size_t cap,
                                         uint16_t hs_flags);

/*
 * Parses the server greeting (client side).  Unknown handshake flags are
 * passed through: the client ignores them.  Returns 0, -EBADMSG (bad
 * magic or short), or -EPROTONOSUPPORT for an oldstyle server.
 * ANY_THREAD.
 */
ANY_THREAD int proto_decode_greeting(const void *buf, size_t len,
                                     uint16_t *hs_flags);

/* Writes the 4-byte client flags.  Returns 4 or -ENOBUFS.  ANY_THREAD. */
ANY_THREAD ssize_t proto_encode_client_flags(void *buf, size_t cap,
                                             uint32_t flags);

/*
 * Parses the client flags (server side).  `hs_flags` is what the server
 * advertised: a client flag that is unknown, or that answers a handshake
 * flag the server did not send (C_NO_ZEROES without NO_ZEROES), gives
 * -EINVAL, and the server must then drop the connection.  *flags is set
 * in that case too, for the log.  Returns 0, -EINVAL or -EBADMSG (short).
 * ANY_THREAD.
 */
ANY_THREAD int proto_decode_client_flags(const void *buf, size_t len,
                                         uint16_t hs_flags, uint32_t *flags);

/* ---- Option requests ---- */

/* The fixed part of a client option (IHAVEOPT, option, length). */
struct proto_option_header {
    uint32_t option; /* enum proto_opt, or an unknown value */
    uint32_t length; /* bytes of option data that follow */
};

/*
 * Writes an option header.  The length is not capped, so tests can send
 * oversized options.  Returns PROTO_OPTION_HEADER_SIZE or -ENOBUFS.
 * ANY_THREAD.
 */
ANY_THREAD ssize_t proto_encode_option_header(void *buf, size_t cap,
                                              uint32_t option, uint32_t length);

/*
 * Parses an option header (server side).  Returns 0; -EBADMSG for a bad
 * magic or short input; -E2BIG when length exceeds PROTO_OPTION_MAX_LEN
 * (*hdr is filled in; the server may skip the data or disconnect).
 * ANY_THREAD.
 */
ANY_THREAD int proto_decode_option_header(const void *buf, size_t len,
                                          struct proto_option_header *hdr);

/*
 * Writes a whole option: header plus `len` bytes of `data` (which may be
 * NULL when len is 0), for options whose data is opaque to the codec
 * (ABORT, LIST, STARTTLS, STRUCTURED_REPLY, EXTENDED_HEADERS).  Returns
 * the size, -E2BIG above PROTO_OPTION_MAX_LEN, or -ENOBUFS.  ANY_THREAD.
 */
ANY_THREAD ssize_t proto_build_option(void *buf, size_t cap, uint32_t option,
                                      const void *data, size_t len);

/*
 * Writes NBD_OPT_EXPORT_NAME with `name`.  Returns the size, -EINVAL for
 * a name that breaks proto_check_string, or -ENOBUFS.  ANY_THREAD.
 */
ANY_THREAD ssize_t proto_build_opt_export_name(void *buf, size_t cap,
                                               const char *name, size_t len);

/*
 * Parses the data of NBD_OPT_EXPORT_NAME (the whole data is the name).
 * Returns 0, -E2BIG or -EBADMSG (see proto_check_string).  ANY_THREAD.
 */
ANY_THREAD int proto_parse_opt_export_name(const void *data, size_t len,
                                           struct proto_string *name);

/* Parsed data of NBD_OPT_INFO or NBD_OPT_GO; borrows the input buffer. */
struct proto_opt_info {
    struct proto_string name; /* export name, may be empty */
    uint16_t nr_requests;     /* NBD_INFO_* requests that follow */
    const uint8_t *requests;  /* nr_requests big-endian u16; use the getter */
};

/*
 * Writes NBD_OPT_INFO or NBD_OPT_GO (`option`) for export `name` with
 * `nr` information requests.  Returns the size, -EINVAL for a bad name or
 * more than 65535 requests, -E2BIG above PROTO_OPTION_MAX_LEN, or
 * -ENOBUFS.  ANY_THREAD.
 */
ANY_THREAD ssize_t proto_build_opt_info(void *buf, size_t cap, uint32_t option,
                                        const char *name, size_t name_len,
                                        const uint16_t *requests, size_t nr);

/*
 * Parses the data of NBD_OPT_INFO or NBD_OPT_GO: u32 name length, name,
 * u16 count, count u16 requests, with nothing left over.  Returns 0,
 * -EBADMSG (lengths that do not add up, NUL in the name) or -E2BIG (name
 * above PROTO_STRING_MAX).  ANY_THREAD.
 */
ANY_THREAD int proto_parse_opt_info(const void *data, size_t len,
                                    struct proto_opt_info *info);

/* The i-th information request (i < nr_requests).  ANY_THREAD. */
ANY_THREAD uint16_t proto_opt_info_request(const struct proto_opt_info *info,
                                           size_t i);

/*
 * Parsed data of NBD_OPT_LIST_META_CONTEXT or NBD_OPT_SET_META_CONTEXT;
 * borrows the input buffer.  Walk the queries with proto_opt_meta_next.
 */
struct proto_opt_meta {
    struct proto_string export_name;
    uint32_t nr_queries;
    const uint8_t *queries; /* the validated query list */
    size_t queries_len;     /* its size in bytes */
};

/*
 * Writes NBD_OPT_LIST_META_CONTEXT or NBD_OPT_SET_META_CONTEXT for
 * `export_name` with `nr` queries.  Returns the size, -EINVAL for a
 * string that breaks proto_check_string, -E2BIG above
 * PROTO_OPTION_MAX_LEN, or -ENOBUFS.  ANY_THREAD.
 */
ANY_THREAD ssize_t proto_build_opt_meta(void *buf, size_t cap, uint32_t option,
                                        const char *export_name,
                                        size_t name_len,
                                        const struct proto_string *queries,
                                        size_t nr);

/*
 * Parses the data of NBD_OPT_LIST_META_CONTEXT or SET_META_CONTEXT: u32
 * export name length, name, u32 query count, then per query a u32 length
 * and the string, with nothing left over.  Every string is checked.
 * Returns 0, -EBADMSG or -E2BIG.  ANY_THREAD.
 */
ANY_THREAD int proto_parse_opt_meta(const void *data, size_t len,
                                    struct proto_opt_meta *meta);

/*
 * Iterates over the queries of a parsed meta-context option.  Start with
 * *pos = 0; each call stores the next query and returns true, and returns
 * false after the last one.  ANY_THREAD.
 */
ANY_THREAD bool proto_opt_meta_next(const struct proto_opt_meta *meta,
                                    size_t *pos, struct proto_string *query);

/* ---- Option replies ---- */

/* The fixed part of an option reply. */
struct proto_option_reply {
    uint32_t option; /* the option being answered */
    uint32_t type;   /* enum proto_rep */
    uint32_t length; /* bytes of reply data that follow */
};

/*
 * Writes an option reply header.  Returns PROTO_OPTION_REPLY_SIZE or
 * -ENOBUFS.  ANY_THREAD.
 */
ANY_THREAD ssize_t proto_encode_option_reply(void *buf, size_t cap,
                                             uint32_t option, uint32_t type,
                                             uint32_t length);

/*
 * Parses an option reply header (client side).  Returns 0, -EBADMSG (bad
 * magic, short) or -E2BIG when the length exceeds PROTO_OPTION_MAX_LEN
 * (*rep is filled in).  ANY_THREAD.
 */
ANY_THREAD int proto_decode_option_reply(const void *buf, size_t len,
                                         struct proto_option_reply *rep);

/*
 * The proto_build_rep_* functions write a whole option reply (header and
 * data) answering `option`.  Each returns the size written, -EINVAL for a
 * string that breaks proto_check_string, or -ENOBUFS.  ANY_THREAD.
 */

/* NBD_REP_ACK, no data. */
ANY_THREAD ssize_t proto_build_rep_ack(void *buf, size_t cap, uint32_t option);

/* NBD_REP_SERVER: name, then an optional description (desc may be NULL). */
ANY_THREAD ssize_t proto_build_rep_server(void *buf, size_t cap,
                                          uint32_t option, const char *name,
                                          size_t name_len, const char *desc,
                                          size_t desc_len);

/* NBD_REP_INFO with NBD_INFO_EXPORT: export size and transmission flags. */
ANY_THREAD ssize_t proto_build_rep_info_export(void *buf, size_t cap,
                                               uint32_t option, uint64_t size,
                                               uint16_t tx_flags);

/* NBD_REP_INFO with NBD_INFO_NAME (the canonical export name). */
ANY_THREAD ssize_t proto_build_rep_info_name(void *buf, size_t cap,
                                             uint32_t option, const char *name,
                                             size_t len);

/* NBD_REP_INFO with NBD_INFO_DESCRIPTION. */
ANY_THREAD ssize_t proto_build_rep_info_description(void *buf, size_t cap,
                                                    uint32_t option,
                                                    const char *desc,
                                                    size_t len);

/*
 * NBD_REP_INFO with NBD_INFO_BLOCK_SIZE.  The values are written as
 * given; checking that they obey the spec's block size rules is the
 * caller's job.
 */
ANY_THREAD ssize_t proto_build_rep_info_block_size(void *buf, size_t cap,
                                                   uint32_t option,
                                                   uint32_t min, uint32_t pref,
                                                   uint32_t max);

/* NBD_REP_META_CONTEXT: context id and name. */
ANY_THREAD ssize_t proto_build_rep_meta_context(void *buf, size_t cap,
                                                uint32_t option, uint32_t id,
                                                const char *name, size_t len);

/*
 * An error reply: `type` must have PROTO_REP_ERR_BIT set (-EINVAL
 * otherwise); `msg` is an optional message (NULL or len 0 for none).
 */
ANY_THREAD ssize_t proto_build_rep_error(void *buf, size_t cap, uint32_t option,
                                         uint32_t type, const char *msg,
                                         size_t len);

/*
 * Parses the data of NBD_REP_SERVER (client side): name, then the rest
 * as the description (empty if none).  Returns 0, -EBADMSG or -E2BIG.
 * ANY_THREAD.
 */
ANY_THREAD int proto_parse_rep_server(const void *data, size_t len,
                                      struct proto_string *name,
                                      struct proto_string *desc);

/* Parsed data of NBD_REP_INFO; which member is valid depends on type. */
struct proto_info_reply {
    uint16_t type; /* enum proto_info, or an unknown type to ignore */
    union {
        struct {
            uint64_t size;
            uint16_t tx_flags;
        } export_info;                   /* PROTO_INFO_EXPORT */
        struct proto_string name;        /* PROTO_INFO_NAME */
        struct proto_string description; /* PROTO_INFO_DESCRIPTION */
        struct {
            uint32_t min;
            uint32_t pref;
            uint32_t max;
        } block_size; /* PROTO_INFO_BLOCK_SIZE */
    } u;
};

/*
 * Parses the data of NBD_REP_INFO (client side).  The lengths of known
 * types are checked exactly; an unknown type is accepted with only
 * `type` set, since the client must ignore it.  Returns 0, -EBADMSG or
 * -E2BIG.  ANY_THREAD.
 */
ANY_THREAD int proto_parse_rep_info(const void *data, size_t len,
                                    struct proto_info_reply *info);

/*
 * Parses the data of NBD_REP_META_CONTEXT (client side).  Returns 0,
 * -EBADMSG or -E2BIG.  ANY_THREAD.
 */
ANY_THREAD int proto_parse_rep_meta_context(const void *data, size_t len,
                                            uint32_t *id,
                                            struct proto_string *name);

/*
 * Parses the data of an option error reply: an optional message.
 * Returns 0, -EBADMSG or -E2BIG.  ANY_THREAD.
 */
ANY_THREAD int proto_parse_rep_error(const void *data, size_t len,
                                     struct proto_string *msg);

/* ---- End of the handshake by NBD_OPT_EXPORT_NAME ---- */

/*
 * Writes the answer to NBD_OPT_EXPORT_NAME: export size, transmission
 * flags and, unless `no_zeroes` (the client sent C_NO_ZEROES), 124 zero
 * bytes.  Returns 134 or 10, or -ENOBUFS.  ANY_THREAD.
 */
ANY_THREAD ssize_t proto_encode_export_name_reply(void *buf, size_t cap,
                                                  uint64_t size,
                                                  uint16_t tx_flags,
                                                  bool no_zeroes);

/*
 * Parses the first 10 bytes of that answer (client side; the zero bytes,
 * if any, are the caller's to skip).  Returns 0 or -EBADMSG.  ANY_THREAD.
 */
ANY_THREAD int proto_decode_export_name_reply(const void *buf, size_t len,
                                              uint64_t *size,
                                              uint16_t *tx_flags);

/* ---- Transmission: requests ---- */

/*
 * A request, compact or extended.  A compact request carries a 32-bit
 * length; the struct always holds 64 bits.
 */
struct proto_request {
    uint16_t flags;  /* PROTO_CMD_FLAG_* */
    uint16_t type;   /* enum proto_cmd, or an unknown command */
    uint64_t cookie; /* opaque, echoed in the reply (the spec's handle) */
    uint64_t offset;
    uint64_t length; /* effect length, or payload length (see below) */
};

/*
 * Writes a request: PROTO_REQUEST_SIZE bytes with the compact magic, or
 * PROTO_EXTENDED_REQUEST_SIZE with the extended one.  Flags and type are
 * written as given (tests send invalid ones on purpose).  Returns the
 * size, -EOVERFLOW for a compact request longer than 32 bits, or
 * -ENOBUFS.  ANY_THREAD.
 */
ANY_THREAD ssize_t proto_encode_request(void *buf, size_t cap,
                                        const struct proto_request *req,
                                        bool extended);

/*
 * Parses a request header (server side).  `extended` says whether
 * extended headers were negotiated: then only the extended magic is
 * valid, otherwise only the compact one.
 *   0        *req holds a request with known flags; the command type
 *            is not checked (an unknown command gets NBD_EINVAL).
 *   -EINVAL  well-framed, but with command flags this header form does
 *            not define (PAYLOAD_LEN is extended-only).  *req is filled
 *            in: reply NBD_EINVAL to req->cookie after skipping
 *            proto_request_payload_len() bytes.
 *   -EBADMSG wrong magic or short input: framing is lost, disconnect.
 * ANY_THREAD.
 */
ANY_THREAD int proto_decode_request(const void *buf, size_t len, bool extended,
                                    struct proto_request *req);

/*
 * Bytes of payload that follow the request header on the wire: the
 * length of NBD_CMD_WRITE (in extended form with or without
 * PAYLOAD_LEN, which qemu 10 does not set), or of any extended request
 * with PAYLOAD_LEN; 0 otherwise.  ANY_THREAD.
 */
ANY_THREAD uint64_t proto_request_payload_len(const struct proto_request *req,
                                              bool extended);

/* ---- Transmission: replies ---- */

enum proto_reply_kind {
    PROTO_REPLY_SIMPLE,     /* 16 bytes: error, cookie */
    PROTO_REPLY_STRUCTURED, /* 20 bytes: flags, type, cookie, u32 length */
    PROTO_REPLY_EXTENDED,   /* 32 bytes: ... cookie, offset, u64 length */
};

/*
 * A reply header of any of the three kinds.  Fields a kind does not carry
 * are ignored by the encoders and set to 0 by the decoders.
 */
struct proto_reply {
    enum proto_reply_kind kind;
    uint16_t flags;  /* structured/extended: PROTO_REPLY_FLAG_* */
    uint16_t type;   /* structured/extended: enum proto_reply_type */
    uint32_t error;  /* simple: NBD error value (enum proto_err), 0 = ok */
    uint64_t cookie; /* the request's cookie */
    uint64_t offset; /* extended: the request's offset, echoed */
    uint64_t length; /* structured/extended: payload bytes that follow */
};

/* Header size of a reply kind: 16, 20 or 32.  ANY_THREAD. */
ANY_THREAD size_t proto_reply_header_size(enum proto_reply_kind kind);

/*
 * Writes the header of `rep` according to rep->kind.  Returns the header
 * size, -EOVERFLOW if a structured reply's length needs more than 32 bits,
 * -EINVAL for an unknown kind, or -ENOBUFS.  ANY_THREAD.
 */
ANY_THREAD ssize_t proto_encode_reply(void *buf, size_t cap,
                                      const struct proto_reply *rep);

/*
 * Convenience for the simple reply: Returns PROTO_SIMPLE_REPLY_SIZE or
 * -ENOBUFS.  ANY_THREAD.
 */
ANY_THREAD ssize_t proto_encode_simple_reply(void *buf, size_t cap,
                                             uint64_t cookie, uint32_t error);

/*
 * Tells the kind of a reply from its first 4 bytes (client side), so the
 * client knows how much more to read.  With `extended` only the extended
 * magic is valid; without it, the simple and structured ones.  Returns
 * the kind (>= 0) or -EBADMSG.  ANY_THREAD.
 */
ANY_THREAD int proto_peek_reply_kind(const void *buf, size_t len,
                                     bool extended);

/*
 * Parses a reply header of the kind given by its magic, with the same
 * `extended` rule as proto_peek_reply_kind; `len` must cover the whole
 * header.  Unknown reply flags are kept (clients ignore them).  Returns 0
 * or -EBADMSG.  ANY_THREAD.
 */
ANY_THREAD int proto_decode_reply(const void *buf, size_t len, bool extended,
                                  struct proto_reply *rep);

/*
 * Checks a structured or extended chunk header before its payload is
 * read: the payload length must suit the chunk type (NONE: 0 and DONE
 * set; OFFSET_DATA: >= 9; OFFSET_HOLE: 12; BLOCK_STATUS: 4 + 8n, n >= 1;
 * BLOCK_STATUS_EXT: 8 + 16n, n >= 1, extended headers only; ERROR: >= 6;
 * ERROR_OFFSET: >= 14; unknown error types: >= 6).  An unknown non-error
 * type is -EBADMSG too: the client must hard-disconnect.  Returns 0 or
 * -EBADMSG.  ANY_THREAD.
 */
ANY_THREAD int proto_check_chunk(const struct proto_reply *rep);

/* One extent of a block status chunk. */
struct proto_extent {
    uint64_t length; /* non-zero; < 2^32 in a compact BLOCK_STATUS */
    uint64_t status; /* PROTO_STATE_* for base:allocation */
};

/*
 * The proto_build_chunk_* functions write a whole structured reply chunk:
 * the header (kind, flags, cookie and, for an extended header, offset
 * taken from `hdr`; type and length set by the builder) and the fixed
 * part of the payload.  hdr->kind must be PROTO_REPLY_STRUCTURED or
 * PROTO_REPLY_EXTENDED (-EINVAL otherwise).  Each returns the bytes
 * written, -EINVAL for arguments the spec forbids, -EOVERFLOW when a
 * length does not fit a compact header, or -ENOBUFS.  ANY_THREAD.
 */

/* NBD_REPLY_TYPE_NONE; PROTO_REPLY_FLAG_DONE is always set. */
ANY_THREAD ssize_t proto_build_chunk_none(void *buf, size_t cap,
                                          const struct proto_reply *hdr);

/*
 * The header and the 8-byte offset of NBD_REPLY_TYPE_OFFSET_DATA; the
 * caller sends the `data_len` (>= 1) data bytes right after.
 */
ANY_THREAD ssize_t proto_build_chunk_offset_data(void *buf, size_t cap,
                                                 const struct proto_reply *hdr,
                                                 uint64_t offset,
                                                 uint64_t data_len);

/* NBD_REPLY_TYPE_OFFSET_HOLE; `size` must be non-zero. */
ANY_THREAD ssize_t proto_build_chunk_offset_hole(void *buf, size_t cap,
                                                 const struct proto_reply *hdr,
                                                 uint64_t offset,
                                                 uint32_t size);

/*
 * NBD_REPLY_TYPE_BLOCK_STATUS with `n` >= 1 extents, each with a non-zero
 * length and length and status below 2^32.
 */
ANY_THREAD ssize_t proto_build_chunk_block_status(
    void *buf, size_t cap, const struct proto_reply *hdr, uint32_t context_id,
    const struct proto_extent *ext, size_t n);

/*
 * NBD_REPLY_TYPE_BLOCK_STATUS_EXT with `n` >= 1 extents of non-zero
 * length; only with an extended header.  The descriptor count is set.
 */
ANY_THREAD ssize_t proto_build_chunk_block_status_ext(
    void *buf, size_t cap, const struct proto_reply *hdr, uint32_t context_id,
    const struct proto_extent *ext, size_t n);

/*
 * NBD_REPLY_TYPE_ERROR: a non-zero NBD error value (see
 * proto_errno_to_nbd) and an optional message (NULL or len 0).
 */
ANY_THREAD ssize_t proto_build_chunk_error(void *buf, size_t cap,
                                           const struct proto_reply *hdr,
                                           uint32_t nbd_error, const char *msg,
                                           size_t len);

/* NBD_REPLY_TYPE_ERROR_OFFSET: as above, plus the failing offset. */
ANY_THREAD ssize_t proto_build_chunk_error_offset(void *buf, size_t cap,
                                                  const struct proto_reply *hdr,
                                                  uint32_t nbd_error,
                                                  const char *msg, size_t len,
                                                  uint64_t offset);

/*
 * Chunk payload decoders (client side).  `payload` holds the chunk's
 * payload and `len` is its length (rep->length).  Each returns 0 or
 * -EBADMSG (or -E2BIG for an over-long message).
 */

/*
 * NBD_REPLY_TYPE_OFFSET_DATA: reads the offset from the first 8 bytes
 * (`len` >= 8 bytes available) and computes the data length from
 * `chunk_len`, which must be >= 9.  ANY_THREAD.
 */
ANY_THREAD int proto_decode_chunk_offset_data(const void *payload, size_t len,
                                              uint64_t chunk_len,
                                              uint64_t *offset,
                                              uint64_t *data_len);

/* NBD_REPLY_TYPE_OFFSET_HOLE: exactly 12 bytes, size != 0.  ANY_THREAD. */
ANY_THREAD int proto_decode_chunk_offset_hole(const void *payload, size_t len,
                                              uint64_t *offset, uint32_t *size);

/* A validated block status payload; borrows the input buffer. */
struct proto_block_status {
    uint32_t context_id;
    uint32_t count;     /* number of extents, >= 1 */
    bool extended;      /* BLOCK_STATUS_EXT layout */
    const uint8_t *ext; /* the descriptors; use proto_block_status_extent */
};

/*
 * NBD_REPLY_TYPE_BLOCK_STATUS (`extended` false: 4 + 8n bytes) or
 * BLOCK_STATUS_EXT (true: 8 + 16n bytes, descriptor count 0 or n); n >= 1
 * and every extent length non-zero.  ANY_THREAD.
 */
ANY_THREAD int proto_decode_chunk_block_status(const void *payload, size_t len,
                                               bool extended,
                                               struct proto_block_status *bs);

/* The i-th extent (i < bs->count) of a validated payload.  ANY_THREAD. */
ANY_THREAD void proto_block_status_extent(const struct proto_block_status *bs,
                                          size_t i, struct proto_extent *out);

/* A decoded error chunk. */
struct proto_chunk_error {
    uint32_t error;          /* NBD error value, non-zero */
    struct proto_string msg; /* may be empty; borrows the payload */
    bool has_offset;         /* ERROR_OFFSET */
    uint64_t offset;
};

/*
 * An error chunk of type `type` (any type with PROTO_REPLY_TYPE_ERR_BIT).
 * ERROR must be exactly 6 + message length bytes and ERROR_OFFSET 14 +
 * message length; an unknown error type needs at least 6 + message
 * length (the client still learns the error).  The error value must be
 * non-zero.  A `type` without the error bit is a caller bug: -EINVAL.
 * ANY_THREAD.
 */
ANY_THREAD int proto_decode_chunk_error(const void *payload, size_t len,
                                        uint16_t type,
                                        struct proto_chunk_error *err);

/* ---- Errors ---- */

/*
 * Maps an errno (positive, or negative as returned by our I/O paths) to
 * the NBD error value to put on the wire.  0 maps to 0.  EDQUOT and EFBIG
 * become NBD_ENOSPC, EOPNOTSUPP NBD_ENOTSUP, EROFS and EACCES NBD_EPERM;
 * an errno the spec does not name becomes NBD_EINVAL.  This is the only
 * errno-to-NBD mapping in the tree.  ANY_THREAD.
 */
ANY_THREAD uint32_t proto_errno_to_nbd(int errnum);

/*
 * Maps an NBD error value from the wire to a positive errno; 0 maps to 0
 * and an unknown value to EINVAL, as the spec asks of clients.
 * ANY_THREAD.
 */
ANY_THREAD int proto_nbd_to_errno(uint32_t nbd_error);

/* ---- Names for logs (proto-names.c) ---- */

/*
 * The spec's name of a value ("NBD_CMD_READ", "NBD_REP_ERR_UNSUP", ...),
 * or "unknown" for a value the table lacks.  The strings are static.
 * ANY_THREAD.
 */
ANY_THREAD const char *proto_cmd_name(uint32_t cmd);
ANY_THREAD const char *proto_opt_name(uint32_t opt);
ANY_THREAD const char *proto_rep_name(uint32_t rep);
ANY_THREAD const char *proto_info_name(uint32_t info);
ANY_THREAD const char *proto_reply_type_name(uint32_t type);
ANY_THREAD const char *proto_err_name(uint32_t err);

/* Which flag field proto_format_flags decodes. */
enum proto_flag_field {
    PROTO_FIELD_HS,     /* handshake flags */
    PROTO_FIELD_CLIENT, /* client flags */
    PROTO_FIELD_TX,     /* transmission flags */
    PROTO_FIELD_CMD,    /* command flags */
    PROTO_FIELD_REPLY,  /* reply chunk flags */
};

/*
 * Writes the names of the set bits of `flags`, joined by '|', into buf
 * (always NUL-terminated when cap > 0; unknown bits appear as a hex
 * number, no bits as "0"), e.g. "HAS_FLAGS|READ_ONLY|0x8000".  Returns
 * the length the full text needs, like snprintf.  ANY_THREAD.
 */
ANY_THREAD size_t proto_format_flags(enum proto_flag_field field,
                                     uint32_t flags, char *buf, size_t cap);

#endif
