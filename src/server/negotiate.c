/* SPDX-License-Identifier: MIT */
/*
 * Option haggling: the fixed newstyle handshake, from the greeting to the
 * start of the transmission phase (NBD protocol, "Newstyle negotiation"
 * and "Option types").
 *
 * Runs in the connection's receive coroutine on its home loop, before any
 * request coroutine exists, so it writes the negotiated fields of the
 * connection without locks.  Option data is read into a buffer of at most
 * PROTO_OPTION_MAX_LEN bytes; a longer option is drained in small pieces
 * and refused with NBD_REP_ERR_TOO_BIG (after the TLS policy has had its
 * say; EXPORT_NAME, which has no error reply, ends the connection, and
 * ABORT is acknowledged), or, past OPTION_DRAIN_MAX, ends the connection.
 * The handshake deadline (session.c) bounds the whole exchange, the TLS
 * handshake included.  refuse() is where every error reply goes out, and
 * it refuses EXPORT_NAME by disconnecting.  Log lines the client causes go
 * through conn_log, rate-limited per connection.
 *
 * STARTTLS ("TLS support" in the spec): with --tls=off it is unsupported;
 * otherwise the server ACKs, runs the TLS handshake on this coroutine
 * (no request coroutine exists yet, so both directions are idle), and
 * makes the TLS channel the connection's channel for the rest of the
 * haggling and for transmission.  Options agreed before STARTTLS are
 * forgotten, as the spec requires.  With --tls=require, every option but
 * STARTTLS and ABORT sent before TLS is refused with NBD_REP_ERR_TLS_REQD,
 * and EXPORT_NAME, which has no error reply, ends the connection.
 *
 * Server stop: an option that arrives once the server is stopping (within
 * the shutdown window, see conn.c) is refused with NBD_REP_ERR_SHUTDOWN
 * and the connection ends; NBD_OPT_ABORT is still acknowledged.  The
 * wake-up of server_stop interrupts only a wait for the next option
 * header, so an option is never cut in two.
 */
#include "nbdsrv/bufpool.h"
#include "nbdsrv/chan-tls.h"
#include "nbdsrv/log.h"
#include "server-int.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

/* Oversized options up to this size are read and discarded. */
#define OPTION_DRAIN_MAX (1u * 1024 * 1024)
/* Room for one option reply with a name or message. */
#define REPLY_BUF_SIZE (PROTO_OPTION_REPLY_SIZE + 8 + 2 * PROTO_STRING_MAX)

/* Result of one option: go on haggling, enter transmission, or close. */
enum opt_result {
    OPT_CONTINUE,
    OPT_TRANSMISSION,
    OPT_CLOSE,
};

struct haggle {
    struct conn *conn;
    uint8_t *data;  /* option data, PROTO_OPTION_MAX_LEN bytes */
    uint8_t *reply; /* REPLY_BUF_SIZE bytes */
};

static int send_reply(struct haggle *h, ssize_t len)
{
    if (len < 0) {
        BUG("option reply did not fit its buffer");
    }
    return chan_write_all(h->conn->ch, h->reply, (size_t)len);
}

static int reply_ack(struct haggle *h, uint32_t option)
{
    return send_reply(h, proto_build_rep_ack(h->reply, REPLY_BUF_SIZE, option));
}

static int reply_error(struct haggle *h, uint32_t option, uint32_t type,
                       const char *msg)
{
    log_debug("%s: %s: %s: %s", h->conn->peer, proto_opt_name(option),
              proto_rep_name(type), msg);
    return send_reply(h, proto_build_rep_error(h->reply, REPLY_BUF_SIZE, option,
                                               type, msg, strlen(msg)));
}

/*
 * Refuses an option with an error reply; haggling goes on if it was sent.
 * NBD_OPT_EXPORT_NAME has no error reply (its only reply is the export's
 * size and flags, which a client would read an option reply as): it is
 * refused by ending the connection, as the spec asks.
 */
static enum opt_result refuse(struct haggle *h, uint32_t option, uint32_t type,
                              const char *msg)
{
    if (option == PROTO_OPT_EXPORT_NAME) {
        conn_log(h->conn, LOG_LEVEL_INFO,
                 "NBD_OPT_EXPORT_NAME refused (%s: %s), disconnecting",
                 proto_rep_name(type), msg);
        return OPT_CLOSE;
    }
    return reply_error(h, option, type, msg) < 0 ? OPT_CLOSE : OPT_CONTINUE;
}

/* The maximum payload we advertise: 32 MiB unless max-payload is less. */
static uint32_t advertised_max(const struct conn *conn)
{
    uint32_t max = conn->limits.max_payload;
    return max < SERVER_ADVERTISED_MAX_PAYLOAD ? max
                                               : SERVER_ADVERTISED_MAX_PAYLOAD;
}

/* Whether the client asked for NBD_INFO_BLOCK_SIZE. */
static bool asks_block_size(const struct proto_opt_info *info)
{
    for (size_t i = 0; i < info->nr_requests; i++) {
        if (proto_opt_info_request(info, i) == PROTO_INFO_BLOCK_SIZE) {
            return true;
        }
    }
    return false;
}

/*
 * The export an option names, as this client may see it (NULL: unknown
 * to it).  A hidden one (allow list, TLS identities) is logged, within
 * the connection's log budget: a client may ask for it in a loop.
 */
static struct export *find_export(struct haggle *h, struct proto_string name)
{
    struct conn *conn = h->conn;
    bool hidden = false;
    struct export *exp = conn_find_export(conn, name.ptr, name.len, &hidden);
    conn->hs_failure = exp != NULL ? STATS_HS_OTHER
                       : hidden    ? STATS_HS_ALLOW
                                   : STATS_HS_UNKNOWN_EXPORT;
    if (hidden) {
        conn_log(conn, LOG_LEVEL_INFO,
                 "export '%.*s'%s is not allowed to this client%s%s",
                 (int)name.len, name.ptr, name.len == 0 ? " (the default)" : "",
                 conn->tls_identity[0] != '\0' ? ", TLS identity " : "",
                 conn->tls_identity);
    }
    return exp;
}

/*
 * The transmission flags `conn` is told.  A daemon serving one
 * connection (--inetd, Accept=yes) does not advertise multi-conn: a
 * client's other connections reach other processes (a memory export is
 * then another disk), whose writes a flush here does not cover.
 */
static uint16_t conn_tx_flags(const struct conn *conn, const struct export *exp)
{
    uint16_t flags = export_tx_flags(exp, conn->structured);
    if (conn->srv->done_fd >= 0) {
        flags &= (uint16_t)~PROTO_FLAG_CAN_MULTI_CONN;
    }
    return flags;
}

static int send_info(struct haggle *h, uint32_t option,
                     const struct export *exp,
                     const struct proto_opt_info *info)
{
    struct conn *conn = h->conn;
    uint16_t flags = conn_tx_flags(conn, exp);
    int r = send_reply(
        h, proto_build_rep_info_export(h->reply, REPLY_BUF_SIZE, option,
                                       backend_size(exp->be), flags));
    bool sent_name = false, sent_desc = false;
    for (size_t i = 0; r == 0 && i < info->nr_requests; i++) {
        uint16_t what = proto_opt_info_request(info, i);
        if (what == PROTO_INFO_NAME && !sent_name) {
            sent_name = true;
            r = send_reply(
                h, proto_build_rep_info_name(h->reply, REPLY_BUF_SIZE, option,
                                             exp->name, strlen(exp->name)));
        } else if (what == PROTO_INFO_DESCRIPTION && !sent_desc &&
                   exp->description != NULL) {
            sent_desc = true;
            r = send_reply(h, proto_build_rep_info_description(
                                  h->reply, REPLY_BUF_SIZE, option,
                                  exp->description, strlen(exp->description)));
        }
    }
    /* Block sizes are sent whether asked for or not: they only relax. */
    if (r == 0) {
        r = send_reply(h,
                       proto_build_rep_info_block_size(
                           h->reply, REPLY_BUF_SIZE, option, SERVER_BLOCK_MIN,
                           SERVER_BLOCK_PREFERRED, advertised_max(conn)));
    }
    return r;
}

/*
 * A client that asked for block sizes is held to the maximum it was
 * told; others (EXPORT_NAME, or GO without asking, such as the reference
 * implementation's test client) may send up to max-payload.
 */
static void enter_transmission(struct conn *conn, struct export *exp,
                               bool block_size_asked)
{
    conn->exp = export_ref(exp);
    conn->tx_flags = conn_tx_flags(conn, exp);
    conn->max_payload =
        block_size_asked ? advertised_max(conn) : conn->limits.max_payload;
    /* Contexts chosen for another export do not carry over. */
    if (conn->meta_export != NULL &&
        strcmp(conn->meta_export, exp->name) != 0 &&
        !(conn->meta_export[0] == '\0' && exp == conn->table->exps[0])) {
        conn->meta = 0;
    }
    /* The bitmaps stay those SET saw, whatever changed since. */
    conn->meta &= server_meta_offered(exp, conn->meta_dirty);
}

static enum opt_result opt_info_go(struct haggle *h, uint32_t option,
                                   uint32_t len)
{
    struct proto_opt_info info;
    int r = proto_parse_opt_info(h->data, len, &info);
    if (r < 0) {
        return refuse(h, option, PROTO_REP_ERR_INVALID,
                      "malformed INFO/GO request");
    }
    struct export *exp = find_export(h, info.name);
    if (exp == NULL) {
        return refuse(h, option, PROTO_REP_ERR_UNKNOWN, "no such export");
    }
    r = send_info(h, option, exp, &info);
    if (r == 0) {
        r = reply_ack(h, option);
    }
    if (r < 0) {
        return OPT_CLOSE;
    }
    if (option == PROTO_OPT_GO) {
        enter_transmission(h->conn, exp, asks_block_size(&info));
        return OPT_TRANSMISSION;
    }
    return OPT_CONTINUE;
}

static enum opt_result opt_export_name(struct haggle *h, uint32_t len)
{
    struct conn *conn = h->conn;
    struct proto_string name;
    if (proto_parse_opt_export_name(h->data, len, &name) < 0) {
        conn_log(conn, LOG_LEVEL_INFO, "malformed export name, disconnecting");
        return OPT_CLOSE;
    }
    struct export *exp = find_export(h, name);
    if (exp == NULL) {
        /* EXPORT_NAME has no error reply: the spec says disconnect. */
        conn_log(conn, LOG_LEVEL_INFO, "unknown export '%.*s', disconnecting",
                 (int)name.len, name.ptr);
        return OPT_CLOSE;
    }
    ssize_t n = proto_encode_export_name_reply(
        h->reply, REPLY_BUF_SIZE, backend_size(exp->be),
        conn_tx_flags(conn, exp), conn->no_zeroes);
    if (send_reply(h, n) < 0) {
        return OPT_CLOSE;
    }
    enter_transmission(conn, exp, false);
    return OPT_TRANSMISSION;
}

static enum opt_result opt_list(struct haggle *h, uint32_t len)
{
    int r;
    if (len != 0) {
        return refuse(h, PROTO_OPT_LIST, PROTO_REP_ERR_INVALID,
                      "LIST takes no data");
    }
    const struct export_table *t = h->conn->table;
    for (unsigned i = 0; i < t->nr; i++) {
        const struct export *exp = t->exps[i];
        if (!conn_may_use_export(h->conn, exp)) {
            continue;
        }
        const char *desc = exp->description;
        r = send_reply(
            h, proto_build_rep_server(h->reply, REPLY_BUF_SIZE, PROTO_OPT_LIST,
                                      exp->name, strlen(exp->name), desc,
                                      desc != NULL ? strlen(desc) : 0));
        if (r < 0) {
            return OPT_CLOSE;
        }
    }
    return reply_ack(h, PROTO_OPT_LIST) < 0 ? OPT_CLOSE : OPT_CONTINUE;
}

static enum opt_result opt_flag(struct haggle *h, uint32_t option, uint32_t len,
                                bool *flag, const char *what)
{
    if (len != 0) {
        return refuse(h, option, PROTO_REP_ERR_INVALID, "option takes no data");
    }
    if (*flag) {
        return refuse(h, option, PROTO_REP_ERR_INVALID, what);
    }
    *flag = true;
    return reply_ack(h, option) < 0 ? OPT_CLOSE : OPT_CONTINUE;
}

/* No meta context is selected any more. */
static void meta_select_none(struct conn *conn)
{
    conn->meta = 0;
    free(conn->meta_export);
    conn->meta_export = NULL;
}

/*
 * LIST_META_CONTEXT and SET_META_CONTEXT ("Metadata querying").  SET
 * replaces the selection whatever its outcome: "Issuing this command
 * replaces all previously-set metadata contexts (including when this
 * command fails)", so the old selection is dropped before anything can
 * fail, and a failed SET leaves none.
 */
static enum opt_result opt_meta(struct haggle *h, uint32_t option, uint32_t len)
{
    struct conn *conn = h->conn;
    bool set = option == PROTO_OPT_SET_META_CONTEXT;
    int r;
    if (set) {
        meta_select_none(conn);
    }
    if (!conn->structured) {
        return refuse(h, option, PROTO_REP_ERR_INVALID,
                      "structured replies must be negotiated first");
    }
    struct proto_opt_meta meta;
    if (proto_parse_opt_meta(h->data, len, &meta) < 0) {
        return refuse(h, option, PROTO_REP_ERR_INVALID,
                      "malformed meta context request");
    }
    struct export *exp = find_export(h, meta.export_name);
    if (exp == NULL) {
        return refuse(h, option, PROTO_REP_ERR_UNKNOWN, "no such export");
    }
    /* LIST with no query lists everything; SET with none selects none. */
    struct dirty_list *dl =
        exp->dirty != NULL ? dirty_set_list(exp->dirty) : NULL;
    unsigned offered = server_meta_offered(exp, dl);
    unsigned named = meta.nr_queries == 0 && !set ? offered : 0;
    size_t pos = 0;
    struct proto_string q;
    while (proto_opt_meta_next(&meta, &pos, &q)) {
        named |= server_meta_match(dl, offered, q, set);
    }
    enum opt_result result = OPT_CONTINUE;
    if (set && named != 0) {
        conn->meta_export = strndup(meta.export_name.ptr, meta.export_name.len);
        if (conn->meta_export == NULL) {
            result = OPT_CLOSE;
            goto out;
        }
        conn->meta = named;
        conn->meta_dirty = dl != NULL ? dirty_list_ref(dl) : NULL;
    }
    char buf[SERVER_META_NAME_MAX];
    for (unsigned m = 0; m < server_meta_count(dl); m++) {
        if (!(named & SERVER_META_BIT(m))) {
            continue;
        }
        /* In LIST replies "the metadata context ID ... is reserved and
         * SHOULD be set to zero": ids exist only for a selection. */
        uint32_t id = set ? server_meta_id(m) : 0;
        const char *name = server_meta_name(dl, m, buf);
        r = send_reply(h, proto_build_rep_meta_context(h->reply, REPLY_BUF_SIZE,
                                                       option, id, name,
                                                       strlen(name)));
        if (r < 0) {
            result = OPT_CLOSE;
            goto out;
        }
    }
out:
    dirty_list_unref(dl);
    if (result == OPT_CLOSE) {
        return OPT_CLOSE;
    }
    return reply_ack(h, option) < 0 ? OPT_CLOSE : OPT_CONTINUE;
}

/* Reads and throws away `len` bytes of an option we will not process. */
/*
 * chan_read_all that a server-stop wake interrupts only at an option
 * boundary (`boundary` and nothing read yet): -ECANCELED then.  No read
 * ahead: bytes after STARTTLS must reach the TLS layer untouched.
 */
static int haggle_read(struct conn *conn, void *buf, size_t len, bool boundary)
{
    uint8_t *out = buf;
    size_t done = 0;
    while (done < len) {
        ssize_t n = chan_read_some(conn->ch, out + done, len - done);
        if (n == -ECANCELED && !(boundary && done == 0)) {
            continue;
        }
        if (n < 0) {
            return (int)n;
        }
        if (n == 0) {
            /* Between two options: the client just went away. */
            conn->clean_end = boundary && done == 0;
            return -ECONNRESET;
        }
        done += (size_t)n;
    }
    return 0;
}

static int drain(struct haggle *h, uint64_t len)
{
    while (len > 0) {
        size_t n =
            len < PROTO_OPTION_MAX_LEN ? (size_t)len : PROTO_OPTION_MAX_LEN;
        int r = haggle_read(h->conn, h->data, n, false);
        if (r < 0) {
            return r;
        }
        len -= n;
    }
    return 0;
}

/* Once per connection: what TLS the handshake agreed, and with whom;
 * the version and cipher are kept for the control socket. */
static void log_tls_established(struct conn *conn)
{
    struct chan_tls_info ti;
    chan_tls_get_info(conn->ch, &ti);
    conn->tls_version = ti.version;
    conn->tls_cipher = ti.cipher;
    const char *who = conn->tls_identity[0] == '\0' ? "no client certificate"
                      : ti.psk                      ? "PSK identity "
                                                    : "client certificate ";
    log_info("%s: TLS established: %s %s, %s%s, %s%s", conn->peer, ti.version,
             ti.cipher, ti.group != NULL ? "group " : "no DH group",
             ti.group != NULL ? ti.group : "", who, conn->tls_identity);
}

static enum opt_result opt_starttls(struct haggle *h, uint32_t len)
{
    struct conn *conn = h->conn;
    uint32_t option = PROTO_OPT_STARTTLS;
    if (conn->tls_mode == TLS_MODE_OFF) {
        return refuse(h, option, PROTO_REP_ERR_UNSUP,
                      "TLS is not configured on this server");
    }
    if (len != 0) {
        return refuse(h, option, PROTO_REP_ERR_INVALID,
                      "STARTTLS takes no data");
    }
    if (conn->tls) {
        return refuse(h, option, PROTO_REP_ERR_INVALID,
                      "TLS is already negotiated");
    }
    if (reply_ack(h, option) < 0) {
        return OPT_CLOSE;
    }
    struct err err;
    err_clear(&err);
    struct chan *tls = chan_tls_new(chan_ref(conn->ch), conn->tls_creds, &err);
    if (tls == NULL) {
        log_error("%s: cannot start TLS: %s", conn->peer, err.msg);
        return OPT_CLOSE;
    }
    if (chan_tls_handshake(tls, &err) < 0) {
        conn->hs_failure = STATS_HS_TLS;
        conn_log(conn, LOG_LEVEL_INFO, "TLS handshake failed: %s", err.msg);
        chan_unref(tls);
        return OPT_CLOSE;
    }
    conn_set_chan_take(conn, tls);
    conn->tls = true;
    if (chan_tls_peer_identity(conn->ch, conn->tls_identity,
                               sizeof conn->tls_identity) < 0) {
        conn->tls_identity[0] = '\0';
    }
    /* State negotiated in plain text does not survive STARTTLS. */
    conn->structured = false;
    conn->extended = false;
    meta_select_none(conn);
    log_tls_established(conn);
    return OPT_CONTINUE;
}

/* In require mode before TLS: may this option go ahead? */
static bool tls_allows(struct haggle *h, uint32_t option)
{
    struct conn *conn = h->conn;
    if (conn->tls_mode != TLS_MODE_REQUIRE || conn->tls ||
        option == PROTO_OPT_STARTTLS || option == PROTO_OPT_ABORT) {
        return true;
    }
    conn->hs_failure = STATS_HS_TLS;
    if (!conn->tls_reqd_logged) {
        conn->tls_reqd_logged = true;
        conn_log(conn, LOG_LEVEL_INFO, "plain-text %s refused: TLS is required",
                 proto_opt_name(option));
    }
    return false;
}

/*
 * An option whose data was over PROTO_OPTION_MAX_LEN (read and thrown
 * away).  ABORT's data is to be ignored ("a server SHOULD ignore any data
 * sent by the client"), so it is acknowledged; EXPORT_NAME cannot be
 * answered with an error and ends the connection (refuse); anything else
 * gets NBD_REP_ERR_TOO_BIG.
 */
static enum opt_result opt_too_big(struct haggle *h, uint32_t option)
{
    if (option == PROTO_OPT_ABORT) {
        reply_ack(h, option);
        h->conn->clean_end = true;
        return OPT_CLOSE;
    }
    return refuse(h, option, PROTO_REP_ERR_TOO_BIG, "option data too large");
}

/*
 * One option whose data is in h->data, or, when `too_big`, was over the
 * size limit and has been thrown away.  The TLS policy comes first, so
 * that in require mode every option but STARTTLS and ABORT gets
 * NBD_REP_ERR_TLS_REQD whatever its size.
 */
static enum opt_result handle_option(struct haggle *h,
                                     const struct proto_option_header *opt,
                                     bool too_big)
{
    struct conn *conn = h->conn;
    uint32_t option = opt->option;
    uint32_t len = opt->length;
    log_debug("%s: option %s, %u bytes", conn->peer, proto_opt_name(option),
              len);
    if (!tls_allows(h, option)) {
        if (option == PROTO_OPT_EXPORT_NAME) {
            /* No error reply exists for EXPORT_NAME: disconnect (the
             * refusal was logged by tls_allows). */
            return OPT_CLOSE;
        }
        return refuse(h, option, PROTO_REP_ERR_TLS_REQD,
                      "TLS is required on this server: use STARTTLS");
    }
    if (too_big) {
        return opt_too_big(h, option);
    }
    switch (option) {
    case PROTO_OPT_EXPORT_NAME:
        return opt_export_name(h, len);
    case PROTO_OPT_ABORT:
        /* The spec asks for an ACK; the client may have hung up already. */
        reply_ack(h, option);
        conn->clean_end = true;
        return OPT_CLOSE;
    case PROTO_OPT_LIST:
        return opt_list(h, len);
    case PROTO_OPT_INFO:
    case PROTO_OPT_GO:
        return opt_info_go(h, option, len);
    case PROTO_OPT_STRUCTURED_REPLY:
        if (len == 0 && conn->extended) {
            /* The extended-headers text names this error: the client
             * "has already successfully negotiated extended headers,
             * which takes precedence over this option". */
            return refuse(h, option, PROTO_REP_ERR_EXT_HEADER_REQD,
                          "extended headers are negotiated already and "
                          "take precedence");
        }
        return opt_flag(h, option, len, &conn->structured,
                        "structured replies already negotiated");
    case PROTO_OPT_EXTENDED_HEADERS: {
        enum opt_result res = opt_flag(h, option, len, &conn->extended,
                                       "extended headers already negotiated");
        /* Extended headers imply structured replies. */
        if (conn->extended) {
            conn->structured = true;
        }
        return res;
    }
    case PROTO_OPT_LIST_META_CONTEXT:
    case PROTO_OPT_SET_META_CONTEXT:
        return opt_meta(h, option, len);
    case PROTO_OPT_STARTTLS:
        return opt_starttls(h, len);
    default:
        return refuse(h, option, PROTO_REP_ERR_UNSUP, "unknown option");
    }
}

int negotiate(struct conn *conn)
{
    struct haggle h = {.conn = conn};
    struct shutdown_window window = {0};
    int r = -ENOMEM;
    h.data = bufpool_get(PROTO_OPTION_MAX_LEN);
    h.reply = bufpool_get(REPLY_BUF_SIZE);
    if (h.data == NULL || h.reply == NULL) {
        goto out;
    }

    uint16_t hs_flags = PROTO_FLAG_FIXED_NEWSTYLE | PROTO_FLAG_NO_ZEROES;
    r = send_reply(&h,
                   proto_encode_greeting(h.reply, REPLY_BUF_SIZE, hs_flags));
    if (r < 0) {
        goto out;
    }
    uint8_t cflags_buf[PROTO_CLIENT_FLAGS_SIZE];
    r = chan_read_all(conn->ch, cflags_buf, sizeof cflags_buf);
    if (r < 0) {
        goto out;
    }
    uint32_t cflags;
    r = proto_decode_client_flags(cflags_buf, sizeof cflags_buf, hs_flags,
                                  &cflags);
    if (r < 0) {
        conn_log(conn, LOG_LEVEL_INFO, "bad client flags 0x%x, disconnecting",
                 cflags);
        goto out;
    }
    if (!(cflags & PROTO_FLAG_C_FIXED_NEWSTYLE)) {
        conn_log(conn, LOG_LEVEL_INFO, "client does not speak fixed newstyle");
        r = -EPROTO;
        goto out;
    }
    conn->no_zeroes = (cflags & PROTO_FLAG_C_NO_ZEROES) != 0;

    for (;;) {
        if (atomic_load(&conn->srv->stopping)) {
            conn_shutdown_window_start(conn, &window);
        }
        uint8_t hdr_buf[PROTO_OPTION_HEADER_SIZE];
        r = haggle_read(conn, hdr_buf, sizeof hdr_buf, true);
        if (r == -ECANCELED) {
            continue; /* stopping: wait for the next option in the window */
        }
        if (r < 0) {
            goto out;
        }
        struct proto_option_header opt;
        r = proto_decode_option_header(hdr_buf, sizeof hdr_buf, &opt);
        bool too_big = r == -E2BIG;
        if (r < 0 && !too_big) {
            conn_log(conn, LOG_LEVEL_INFO, "bad option magic, disconnecting");
            goto out;
        }
        if (too_big && opt.length > OPTION_DRAIN_MAX) {
            conn_log(conn, LOG_LEVEL_INFO,
                     "%s with %u bytes of data, disconnecting",
                     proto_opt_name(opt.option), opt.length);
            r = -E2BIG;
            goto out;
        }
        r = too_big ? drain(&h, opt.length)
                    : haggle_read(conn, h.data, opt.length, false);
        if (r < 0) {
            goto out;
        }
        if (atomic_load(&conn->srv->stopping) &&
            opt.option != PROTO_OPT_ABORT) {
            log_debug("%s: %s while stopping: NBD_REP_ERR_SHUTDOWN", conn->peer,
                      proto_opt_name(opt.option));
            refuse(&h, opt.option, PROTO_REP_ERR_SHUTDOWN,
                   "the server is shutting down");
            r = -ESHUTDOWN;
            goto out;
        }
        switch (handle_option(&h, &opt, too_big)) {
        case OPT_CONTINUE:
            continue;
        case OPT_TRANSMISSION:
            r = 0;
            goto out;
        case OPT_CLOSE:
            r = -ECONNABORTED;
            goto out;
        }
    }

out:
    conn_log_flush(conn);
    conn_shutdown_window_stop(&window);
    bufpool_put(h.reply, REPLY_BUF_SIZE);
    bufpool_put(h.data, PROTO_OPTION_MAX_LEN);
    return r;
}
