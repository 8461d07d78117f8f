/* SPDX-License-Identifier: MIT */
/*
 * Client TLS: credentials from an nbds URI, and the STARTTLS upgrade.
 *
 * The credentials follow libnbd's URI conventions.  tls-psk-file=FILE
 * selects TLS-PSK; the identity is the URI's user name, or the login
 * name when the URI has none.  Otherwise tls-certificates=DIR selects
 * X.509: DIR/ca-cert.pem is the CA the server's certificate must chain
 * to, and DIR/client-cert.pem with DIR/client-key.pem, when present, is
 * the certificate sent to servers that ask for one.  The server's
 * certificate must name tls-hostname=, or for TCP the URI's host;
 * tls-verify-peer=false skips the whole check.  Unlike libnbd there is
 * no system-wide default directory: an nbds URI must name one.
 *
 * Credentials are immutable once loaded and may be shared by every
 * connection to the URI (client_pool_connect loads them once).
 *
 * STARTTLS (NBD specification, "NBD_OPT_STARTTLS"): the option is sent
 * right after the client flags; NBD_REP_ACK means the next bytes on the
 * socket are the TLS handshake, which runs before any other option.
 */
#include "client-int.h"
#include "nbdsrv/chan-tls.h"
#include "nbdsrv/tls-creds.h"

#include <errno.h>
#include <pwd.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* The login name as libnbd's default PSK identity: getlogin, else uid. */
static int login_name(char *buf, size_t size, struct err *err)
{
    if (getlogin_r(buf, size) == 0 && buf[0] != '\0') {
        return 0;
    }
    struct passwd pw;
    struct passwd *res = NULL;
    char pwbuf[4096];
    int r = getpwuid_r(geteuid(), &pw, pwbuf, sizeof pwbuf, &res);
    if (r != 0 || res == NULL || strlen(pw.pw_name) >= size) {
        return err_set(err, ENOENT,
                       "nbds URI with tls-psk-file: no user name in the "
                       "URI (USER@HOST) and no login name to use instead");
    }
    strcpy(buf, pw.pw_name);
    return 0;
}

struct tls_creds *client_tls_creds_new(const struct client_uri *uri,
                                       struct err *err)
{
    const char *type = uri->tls_type;
    if (type != NULL && strcmp(type, "anon") == 0) {
        err_set(err, ENOTSUP,
                "tls-type=anon (anonymous TLS) is not supported: use "
                "tls-certificates=DIR or tls-psk-file=FILE");
        return NULL;
    }
    struct tls_client_config cfg = {
        .verify_peer = uri->tls_verify_peer != 0,
    };
    char user[256];
    bool psk = uri->tls_psk_file != NULL;
    if (type != NULL && strcmp(type, "psk") == 0 && !psk) {
        err_set(err, EINVAL, "tls-type=psk needs tls-psk-file=FILE");
        return NULL;
    }
    if (type != NULL && strcmp(type, "x509") == 0 && psk) {
        err_set(err, EINVAL, "tls-type=x509 conflicts with tls-psk-file=");
        return NULL;
    }
    if (psk) {
        cfg.psk_file = uri->tls_psk_file;
        cfg.psk_identity = uri->user;
        if (cfg.psk_identity == NULL) {
            if (login_name(user, sizeof user, err) < 0) {
                return NULL;
            }
            cfg.psk_identity = user;
        }
    } else {
        if (uri->tls_certificates == NULL) {
            err_set(err, EINVAL,
                    "nbds URI: give tls-certificates=DIR (X.509) or "
                    "tls-psk-file=FILE (PSK)");
            return NULL;
        }
        cfg.ca_dir = uri->tls_certificates;
        cfg.hostname = uri->tls_hostname;
        if (cfg.hostname == NULL && !uri->unix_socket) {
            cfg.hostname = uri->host;
        }
    }
    return tls_creds_new_client(&cfg, err);
}

/* NBD_OPT_STARTTLS and its reply: 0 once the server said ACK. */
static int starttls(struct chan *ch, struct err *err)
{
    uint8_t buf[PROTO_OPTION_HEADER_SIZE];
    ssize_t len =
        proto_build_option(buf, sizeof buf, PROTO_OPT_STARTTLS, NULL, 0);
    if (len < 0) {
        return err_set(err, (int)-len, "cannot encode NBD_OPT_STARTTLS");
    }
    int r = chan_write_all(ch, buf, (size_t)len);
    if (r < 0) {
        return err_set_errno(err, -r, "sending NBD_OPT_STARTTLS");
    }
    uint8_t hdr[PROTO_OPTION_REPLY_SIZE];
    r = chan_read_all(ch, hdr, sizeof hdr);
    if (r == -ECONNRESET) {
        return err_set(err, ECONNRESET,
                       "the server closed the connection after "
                       "NBD_OPT_STARTTLS");
    }
    if (r < 0) {
        return err_set_errno(err, -r, "reading the reply to NBD_OPT_STARTTLS");
    }
    struct proto_option_reply rep;
    if (proto_decode_option_reply(hdr, sizeof hdr, &rep) < 0 ||
        rep.option != PROTO_OPT_STARTTLS) {
        return err_set(err, EPROTO, "bad reply to NBD_OPT_STARTTLS");
    }
    /* The payload (an error message, if any) is at most this long. */
    char msg[1024];
    size_t keep = rep.length < sizeof msg ? rep.length : sizeof msg - 1;
    r = chan_read_all(ch, msg, keep);
    for (uint32_t left = rep.length - (uint32_t)keep; r == 0 && left > 0;) {
        char skip[256];
        size_t n = left < sizeof skip ? left : sizeof skip;
        r = chan_read_all(ch, skip, n);
        left -= (uint32_t)n;
    }
    if (r < 0) {
        return err_set_errno(err, -r, "reading the reply to NBD_OPT_STARTTLS");
    }
    msg[keep] = '\0';
    if (rep.type == PROTO_REP_ACK) {
        return 0;
    }
    if (rep.type == PROTO_REP_ERR_UNSUP) {
        return err_set(err, ENOTSUP,
                       "the server does not offer TLS (it answered "
                       "NBD_REP_ERR_UNSUP to NBD_OPT_STARTTLS)");
    }
    if (rep.type & PROTO_REP_ERR_BIT) {
        return err_set(err, EACCES,
                       "the server refused TLS: it answered %s to "
                       "NBD_OPT_STARTTLS%s%s",
                       proto_rep_name(rep.type), keep > 0 ? ": " : "", msg);
    }
    return err_set(err, EPROTO, "unexpected %s reply to NBD_OPT_STARTTLS",
                   proto_rep_name(rep.type));
}

int client_tls_upgrade(struct chan **ch, const struct client_uri *uri,
                       struct tls_creds *creds, struct err *err)
{
    struct tls_creds *own = NULL;
    struct err e = {0};
    int r;
    if (creds == NULL) {
        own = client_tls_creds_new(uri, &e);
        if (own == NULL) {
            return err_set(err, e.errnum, "%s", e.msg);
        }
        creds = own;
    }
    r = starttls(*ch, err);
    if (r < 0) {
        goto out_unref;
    }
    /* The TLS channel takes a reference; ours stays with *ch on failure. */
    struct chan *tls = chan_tls_new(chan_ref(*ch), creds, &e);
    if (tls == NULL) {
        r = err_set(err, e.errnum, "%s", e.msg);
        goto out_unref;
    }
    r = chan_tls_handshake(tls, &e);
    if (r < 0) {
        chan_unref(tls);
        r = err_set(err, -r, "TLS handshake with the server failed: %s", e.msg);
        goto out_unref;
    }
    chan_unref(*ch);
    *ch = tls;
out_unref:
    tls_creds_unref(own);
    return r;
}
