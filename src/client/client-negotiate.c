/* SPDX-License-Identifier: MIT */
/*
 * Client side of the fixed newstyle handshake, as explicit steps:
 * greeting and client flags; STARTTLS for nbds URIs (client-tls.c);
 * EXTENDED_HEADERS,
 * or STRUCTURED_REPLY when the server refuses those; SET_META_CONTEXT
 * for base:allocation; GO with requests for the name, description and
 * block sizes, falling back to EXPORT_NAME when the server does not know
 * GO (NBD_REP_ERR_UNSUP).  Also NBD_OPT_LIST for `nbdc info --list`.
 *
 * Every reply is checked with the proto codec; an option reply that does
 * not answer the option we sent, or an unexpected reply type, ends the
 * handshake with an error that names the option.
 */
#include "client-int.h"
#include "nbdsrv/chan-sock.h"
#include "nbdsrv/coro-io.h"
#include "nbdsrv/coro.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

/* One option reply: header and data (heap, NUL-terminated for messages). */
struct opt_reply {
    struct proto_option_reply hdr;
    uint8_t *data;
};

static int send_option(struct chan *ch, const void *buf, ssize_t len,
                       uint32_t option, struct err *err)
{
    if (len < 0) {
        return err_set(err, (int)-len, "cannot encode %s",
                       proto_opt_name(option));
    }
    int r = chan_write_all(ch, buf, (size_t)len);
    if (r < 0) {
        return err_set_errno(err, -r, "sending %s", proto_opt_name(option));
    }
    return 0;
}

static int read_reply(struct chan *ch, uint32_t option, struct opt_reply *rep,
                      struct err *err)
{
    uint8_t hdr[PROTO_OPTION_REPLY_SIZE];
    rep->data = NULL;
    int r = chan_read_all(ch, hdr, sizeof hdr);
    if (r < 0) {
        if (r == -ECONNRESET) {
            return err_set(err, ECONNRESET,
                           "the server closed the connection after %s",
                           proto_opt_name(option));
        }
        return err_set_errno(err, -r, "reading the reply to %s",
                             proto_opt_name(option));
    }
    r = proto_decode_option_reply(hdr, sizeof hdr, &rep->hdr);
    if (r < 0) {
        return err_set(err, EPROTO, "bad reply to %s (%s)",
                       proto_opt_name(option),
                       r == -E2BIG ? "too long" : "bad magic");
    }
    if (rep->hdr.option != option) {
        return err_set(err, EPROTO, "reply to %s answers %s",
                       proto_opt_name(option), proto_opt_name(rep->hdr.option));
    }
    rep->data = malloc(rep->hdr.length + 1);
    if (rep->data == NULL) {
        return err_set(err, ENOMEM, "out of memory");
    }
    r = chan_read_all(ch, rep->data, rep->hdr.length);
    if (r < 0) {
        free(rep->data);
        rep->data = NULL;
        return err_set_errno(err, -r, "reading the reply to %s",
                             proto_opt_name(option));
    }
    rep->data[rep->hdr.length] = '\0';
    return 0;
}

static bool is_error(const struct opt_reply *rep)
{
    return (rep->hdr.type & PROTO_REP_ERR_BIT) != 0;
}

/* An error reply as an err: its name and the server's message. */
static int reply_error(const struct opt_reply *rep, const char *what,
                       struct err *err)
{
    struct proto_string msg = {.ptr = "", .len = 0};
    proto_parse_rep_error(rep->data, rep->hdr.length, &msg);
    int e = EPROTO;
    switch (rep->hdr.type) {
    case PROTO_REP_ERR_UNSUP:
        e = ENOTSUP;
        break;
    case PROTO_REP_ERR_POLICY:
        e = EPERM;
        break;
    case PROTO_REP_ERR_UNKNOWN:
        e = ENOENT;
        break;
    case PROTO_REP_ERR_TLS_REQD:
        e = EACCES;
        break;
    case PROTO_REP_ERR_SHUTDOWN:
        e = ESHUTDOWN;
        break;
    default:
        e = EINVAL;
        break;
    }
    if (msg.len > 0) {
        return err_set(err, e, "%s: the server answered %s: %.*s", what,
                       proto_rep_name(rep->hdr.type), (int)msg.len, msg.ptr);
    }
    return err_set(err, e, "%s: the server answered %s", what,
                   proto_rep_name(rep->hdr.type));
}

int client_greet(struct chan *ch, uint16_t *hs_flags, struct err *err)
{
    uint8_t buf[PROTO_GREETING_SIZE];
    int r = chan_read_all(ch, buf, sizeof buf);
    if (r < 0) {
        return err_set_errno(err, -r, "reading the server greeting");
    }
    r = proto_decode_greeting(buf, sizeof buf, hs_flags);
    if (r == -EPROTONOSUPPORT) {
        return err_set(err, EPROTONOSUPPORT,
                       "the server speaks oldstyle negotiation, which is "
                       "not supported");
    }
    if (r < 0) {
        return err_set(err, EPROTO,
                       "the peer is not an NBD server (bad "
                       "greeting)");
    }
    if (!(*hs_flags & PROTO_FLAG_FIXED_NEWSTYLE)) {
        return err_set(err, EPROTO,
                       "the server does not speak fixed newstyle "
                       "negotiation");
    }
    uint32_t cflags = PROTO_FLAG_C_FIXED_NEWSTYLE;
    if (*hs_flags & PROTO_FLAG_NO_ZEROES) {
        cflags |= PROTO_FLAG_C_NO_ZEROES;
    }
    uint8_t out[PROTO_CLIENT_FLAGS_SIZE];
    proto_encode_client_flags(out, sizeof out, cflags);
    r = chan_write_all(ch, out, sizeof out);
    if (r < 0) {
        return err_set_errno(err, -r, "sending the client flags");
    }
    return 0;
}

int client_start(struct chan **ch, const struct client_uri *uri,
                 struct tls_creds *creds, uint16_t *hs_flags, struct err *err)
{
    int r = client_greet(*ch, hs_flags, err);
    if (r == 0 && uri->tls) {
        r = client_tls_upgrade(ch, uri, creds, err);
    }
    return r;
}

/* Asks for a feature option with no data; *ok says whether it was ACKed. */
static int ask_feature(struct chan *ch, uint32_t option, bool *ok,
                       struct err *err)
{
    uint8_t buf[PROTO_OPTION_HEADER_SIZE];
    *ok = false;
    int r = send_option(ch, buf,
                        proto_build_option(buf, sizeof buf, option, NULL, 0),
                        option, err);
    if (r < 0) {
        return r;
    }
    struct opt_reply rep;
    r = read_reply(ch, option, &rep, err);
    if (r < 0) {
        return r;
    }
    if (rep.hdr.type == PROTO_REP_ACK) {
        *ok = true;
    } else if (!is_error(&rep)) {
        r = err_set(err, EPROTO, "unexpected %s reply to %s",
                    proto_rep_name(rep.hdr.type), proto_opt_name(option));
    }
    free(rep.data);
    return r;
}

static bool same_string(struct proto_string a, struct proto_string b)
{
    return a.len == b.len && memcmp(a.ptr, b.ptr, a.len) == 0;
}

/* SET_META_CONTEXT for base:allocation and `extra` (NULL: none). */
static int set_meta(struct client_conn *conn, const char *name,
                    const char *extra, struct err *err)
{
    uint8_t buf[PROTO_OPTION_HEADER_SIZE + 2 * 4096 + 64];
    struct proto_string q[2] = {
        {.ptr = "base:allocation", .len = 15},
        {.ptr = extra, .len = extra != NULL ? strlen(extra) : 0}};
    if (q[1].len > 4096) {
        return err_set(err, EINVAL, "metadata context name too long");
    }
    int r = send_option(
        conn->ch, buf,
        proto_build_opt_meta(buf, sizeof buf, PROTO_OPT_SET_META_CONTEXT, name,
                             strlen(name), q, extra != NULL ? 2 : 1),
        PROTO_OPT_SET_META_CONTEXT, err);
    if (r < 0) {
        return r;
    }
    for (;;) {
        struct opt_reply rep;
        r = read_reply(conn->ch, PROTO_OPT_SET_META_CONTEXT, &rep, err);
        if (r < 0) {
            return r;
        }
        uint32_t type = rep.hdr.type;
        if (type == PROTO_REP_META_CONTEXT) {
            uint32_t id;
            struct proto_string n;
            r = proto_parse_rep_meta_context(rep.data, rep.hdr.length, &id, &n);
            if (r < 0) {
                r = err_set(err, EPROTO, "bad NBD_REP_META_CONTEXT");
            } else if (same_string(n, q[0])) {
                conn->info.has_alloc = true;
                conn->info.alloc_id = id;
            } else if (extra != NULL && same_string(n, q[1])) {
                conn->info.has_extra = true;
                conn->info.extra_id = id;
            }
        } else if (type != PROTO_REP_ACK && !is_error(&rep)) {
            r = err_set(err, EPROTO, "unexpected %s reply to %s",
                        proto_rep_name(type),
                        proto_opt_name(PROTO_OPT_SET_META_CONTEXT));
        }
        free(rep.data);
        if (r < 0) {
            return r;
        }
        if (type == PROTO_REP_ACK || (type & PROTO_REP_ERR_BIT)) {
            return 0; /* an error just means no context */
        }
    }
}

static int store_string(char **slot, struct proto_string s, struct err *err)
{
    free(*slot);
    *slot = strndup(s.ptr, s.len);
    return *slot == NULL ? err_set(err, ENOMEM, "out of memory") : 0;
}

/* NBD_OPT_GO.  *unsupported is set when the server does not know GO. */
static int go(struct client_conn *conn, const char *name, bool *unsupported,
              struct err *err)
{
    static const uint16_t requests[] = {PROTO_INFO_NAME, PROTO_INFO_DESCRIPTION,
                                        PROTO_INFO_BLOCK_SIZE};
    uint8_t buf[PROTO_OPTION_HEADER_SIZE + 4096 + 64];
    struct client_info *info = &conn->info;
    bool have_export = false;
    *unsupported = false;
    int r = send_option(conn->ch, buf,
                        proto_build_opt_info(buf, sizeof buf, PROTO_OPT_GO,
                                             name, strlen(name), requests,
                                             ARRAY_SIZE(requests)),
                        PROTO_OPT_GO, err);
    if (r < 0) {
        return r;
    }
    for (;;) {
        struct opt_reply rep;
        r = read_reply(conn->ch, PROTO_OPT_GO, &rep, err);
        if (r < 0) {
            return r;
        }
        uint32_t type = rep.hdr.type;
        if (type == PROTO_REP_INFO) {
            struct proto_info_reply ir;
            r = proto_parse_rep_info(rep.data, rep.hdr.length, &ir);
            if (r < 0) {
                r = err_set(err, EPROTO, "bad NBD_REP_INFO in reply to GO");
            } else if (ir.type == PROTO_INFO_EXPORT) {
                info->size = ir.u.export_info.size;
                info->tx_flags = ir.u.export_info.tx_flags;
                have_export = true;
            } else if (ir.type == PROTO_INFO_NAME) {
                r = store_string(&info->name, ir.u.name, err);
            } else if (ir.type == PROTO_INFO_DESCRIPTION) {
                r = store_string(&info->description, ir.u.description, err);
            } else if (ir.type == PROTO_INFO_BLOCK_SIZE) {
                info->block_min = ir.u.block_size.min;
                info->block_pref = ir.u.block_size.pref;
                info->block_max = ir.u.block_size.max;
                info->has_block_size = true;
            }
        } else if (type == PROTO_REP_ACK) {
            if (!have_export) {
                r = err_set(err, EPROTO,
                            "the server ended GO without NBD_INFO_EXPORT");
            }
        } else if (type == PROTO_REP_ERR_UNSUP) {
            *unsupported = true;
        } else if (is_error(&rep)) {
            char what[128 + 4096];
            snprintf(what, sizeof what, "export '%s'", name);
            r = reply_error(&rep, what, err);
        } else {
            r = err_set(err, EPROTO, "unexpected %s reply to GO",
                        proto_rep_name(type));
        }
        free(rep.data);
        if (r < 0 || *unsupported || type == PROTO_REP_ACK) {
            return r;
        }
    }
}

static int export_name(struct client_conn *conn, const char *name,
                       struct err *err)
{
    uint8_t buf[PROTO_OPTION_HEADER_SIZE + 4096];
    int r = send_option(
        conn->ch, buf,
        proto_build_opt_export_name(buf, sizeof buf, name, strlen(name)),
        PROTO_OPT_EXPORT_NAME, err);
    if (r < 0) {
        return r;
    }
    uint8_t rep[PROTO_EXPORT_NAME_REPLY_SIZE];
    size_t n = (conn->info.hs_flags & PROTO_FLAG_NO_ZEROES)
                   ? PROTO_EXPORT_NAME_REPLY_SHORT
                   : PROTO_EXPORT_NAME_REPLY_SIZE;
    r = chan_read_all(conn->ch, rep, n);
    if (r == -ECONNRESET) {
        return err_set(err, ENOENT,
                       "export '%s': the server closed the connection "
                       "(unknown export?)",
                       name);
    }
    if (r < 0) {
        return err_set_errno(err, -r, "reading the reply to EXPORT_NAME");
    }
    proto_decode_export_name_reply(rep, n, &conn->info.size,
                                   &conn->info.tx_flags);
    return 0;
}

int client_negotiate(struct client_conn *conn, const struct client_uri *uri,
                     const struct client_opts *opts, struct err *err)
{
    struct client_info *info = &conn->info;
    const char *name = uri->export_name != NULL ? uri->export_name : "";
    int r;
    bool ok;

    info->block_min = 1;
    info->block_pref = 4096;
    info->block_max = 32u * 1024 * 1024;
    if (!opts->no_extended && !opts->no_structured) {
        r = ask_feature(conn->ch, PROTO_OPT_EXTENDED_HEADERS, &ok, err);
        if (r < 0) {
            return r;
        }
        info->extended = ok;
        info->structured = ok;
    }
    if (!info->extended && !opts->no_structured) {
        r = ask_feature(conn->ch, PROTO_OPT_STRUCTURED_REPLY, &ok, err);
        if (r < 0) {
            return r;
        }
        info->structured = ok;
    }
    if (info->structured && !opts->no_meta) {
        r = set_meta(conn, name, opts->meta_context, err);
        if (r < 0) {
            return r;
        }
    }
    bool unsupported = true;
    if (!opts->force_export_name) {
        r = go(conn, name, &unsupported, err);
        if (r < 0) {
            return r;
        }
    }
    if (unsupported) {
        r = export_name(conn, name, err);
        if (r < 0) {
            return r;
        }
    } else {
        info->used_go = true;
    }
    if (info->name == NULL) {
        info->name = strdup(name);
        if (info->name == NULL) {
            return err_set(err, ENOMEM, "out of memory");
        }
    }
    if (info->block_min == 0 || info->block_max == 0) {
        return err_set(err, EPROTO, "the server sent zero block sizes");
    }
    return 0;
}

void client_free_list(char **names, char **descs, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (names != NULL) {
            free(names[i]);
        }
        if (descs != NULL) {
            free(descs[i]);
        }
    }
    free(names);
    free(descs);
}

int client_list_exports(const struct client_uri *uri,
                        const struct client_opts *opts, char ***names_out,
                        char ***descs_out, size_t *n_out, struct err *err)
{
    static const struct client_opts defaults;
    if (opts == NULL) {
        opts = &defaults;
    }
    struct sock_addr addr;
    int r = client_uri_address(uri, &addr.ss, &addr.len, err);
    if (r < 0) {
        return r;
    }
    struct chan *ch = chan_sock_connect(&addr, err);
    if (ch == NULL) {
        return -(err != NULL && err->errnum ? err->errnum : EIO);
    }
    struct client_deadline deadline;
    client_deadline_start(&deadline, ch, opts->handshake_timeout_ns);
    char **names = NULL;
    char **descs = NULL;
    size_t n = 0;
    uint8_t buf[PROTO_OPTION_HEADER_SIZE];
    uint16_t hs;
    r = client_start(&ch, uri, opts->tls_creds, &hs, err);
    if (r == 0) {
        r = send_option(
            ch, buf,
            proto_build_option(buf, sizeof buf, PROTO_OPT_LIST, NULL, 0),
            PROTO_OPT_LIST, err);
    }
    while (r == 0) {
        struct opt_reply rep;
        r = read_reply(ch, PROTO_OPT_LIST, &rep, err);
        if (r < 0) {
            break;
        }
        if (rep.hdr.type == PROTO_REP_SERVER) {
            struct proto_string nm, ds;
            if (proto_parse_rep_server(rep.data, rep.hdr.length, &nm, &ds) <
                0) {
                r = err_set(err, EPROTO, "bad NBD_REP_SERVER");
            } else {
                char **new_names = realloc(names, (n + 1) * sizeof *names);
                char **new_descs =
                    new_names ? realloc(descs, (n + 1) * sizeof *descs) : NULL;
                if (new_names != NULL) {
                    names = new_names;
                }
                if (new_descs != NULL) {
                    descs = new_descs;
                }
                if (new_names == NULL || new_descs == NULL) {
                    r = err_set(err, ENOMEM, "out of memory");
                } else {
                    names[n] = strndup(nm.ptr, nm.len);
                    descs[n] = strndup(ds.ptr, ds.len);
                    n++;
                }
            }
        } else if (rep.hdr.type == PROTO_REP_ACK) {
            free(rep.data);
            break;
        } else if (is_error(&rep)) {
            r = reply_error(&rep, "NBD_OPT_LIST", err);
        } else {
            r = err_set(err, EPROTO, "unexpected %s reply to LIST",
                        proto_rep_name(rep.hdr.type));
        }
        free(rep.data);
    }
    if (r == 0) {
        /* End politely; the server's answer to ABORT is optional. */
        ssize_t len =
            proto_build_option(buf, sizeof buf, PROTO_OPT_ABORT, NULL, 0);
        chan_write_all(ch, buf, (size_t)len);
        chan_shutdown(ch, SHUT_WR);
        uint8_t ignore[PROTO_OPTION_REPLY_SIZE];
        chan_read_all(ch, ignore, sizeof ignore);
    }
    int late = client_deadline_stop(&deadline, err);
    if (late < 0) {
        r = late;
    }
    chan_unref(ch);
    if (r < 0) {
        client_free_list(names, descs, n);
        return r;
    }
    *names_out = names;
    *descs_out = descs;
    *n_out = n;
    return 0;
}
