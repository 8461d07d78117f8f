/* SPDX-License-Identifier: MIT */
/*
 * TLS credentials: X.509 certificates and pre-shared keys loaded once,
 * then shared read-only by every loop, and the GnuTLS sessions made from
 * them.
 *
 * A struct tls_creds is immutable after tls_creds_new_server or
 * tls_creds_new_client returns, and reference-counted (atomically): a
 * configuration reload builds a new one and swaps the pointer, while the
 * sessions made from the old one keep it alive until they end.  GnuTLS
 * allows read-only credential structures to be used by many sessions on
 * many threads at once.
 *
 * Files (server, --tls-certs DIR): DIR/ca-cert.pem (trust anchors, used
 * to verify client certificates), DIR/server-cert.pem,
 * DIR/server-key.pem (must match the certificate), DIR/ca-crl.pem when
 * present.  PSK file (--tls-psk FILE): psktool format, one
 * "identity:hexkey" a line; blank lines and lines starting with '#' are
 * ignored.  Every error names the file, and for a PSK file the line.
 */
#ifndef NBDSRV_TLS_CREDS_H
#define NBDSRV_TLS_CREDS_H

#include "nbdsrv/affinity.h"
#include "nbdsrv/err.h"
#include "nbdsrv/tls-config.h"

#include <gnutls/gnutls.h>
#include <stdbool.h>
#include <stddef.h>

struct tls_creds;

/* A parsed PSK file.  Owned by its creator; immutable after loading. */
struct tls_psk;

/*
 * Settings of the client side (the nbdc client, tests).  Strings are
 * borrowed for the duration of tls_creds_new_client.
 *
 * X.509: ca_dir holds ca-cert.pem (the CA the server's certificate must
 * chain to), and optionally client-cert.pem with client-key.pem, sent
 * when the server asks for a certificate.  `hostname` is checked against
 * the server's certificate (DNS name or IP address); NULL skips that
 * check (the chain is still verified unless verify_peer is false).
 *
 * PSK: psk_file in psktool format and psk_identity, the line whose key
 * is used (NULL: the first line).
 *
 * Exactly one of ca_dir and psk_file must be given.
 */
struct tls_client_config {
    const char *ca_dir;
    const char *hostname;
    bool verify_peer;
    const char *psk_file;
    const char *psk_identity;
    const char *priority; /* NULL: the default (tls-priority.h) */
};

/*
 * Loads the server credentials `config` names (certs_dir and/or
 * psk_file; at least one is required) and builds the priority cache.
 * Returns a new reference, or NULL with err naming the file (and line)
 * or the bad priority string.  ANY_THREAD (start-up, reload).
 */
ANY_THREAD struct tls_creds *tls_creds_new_server(const struct tls_config *cfg,
                                                  struct err *err);

/* Loads client credentials; see struct tls_client_config.  ANY_THREAD. */
ANY_THREAD struct tls_creds *
tls_creds_new_client(const struct tls_client_config *cfg, struct err *err);

/* Takes a reference.  ANY_THREAD. */
ANY_THREAD struct tls_creds *tls_creds_ref(struct tls_creds *creds);

/* Drops a reference; the last one frees.  NULL is allowed.  ANY_THREAD. */
ANY_THREAD void tls_creds_unref(struct tls_creds *creds);

/* True for server credentials.  ANY_THREAD. */
ANY_THREAD bool tls_creds_is_server(const struct tls_creds *creds);

/*
 * Creates a non-blocking GnuTLS session using `creds` (server or client
 * side as the credentials are), with their priorities, no false start,
 * no session tickets and no automatic TLS 1.3 rekeying, so that one
 * thread may send while another receives.  The session's user pointer
 * (gnutls_session_set_ptr) belongs to this module.  The session holds no
 * reference: the caller keeps `creds` alive until gnutls_deinit.
 * Returns 0 or -errno with err set.  ANY_THREAD.
 */
ANY_THREAD int tls_creds_session_new(struct tls_creds *creds,
                                     gnutls_session_t *session,
                                     struct err *err);

/*
 * Reads a PSK file.  Returns 0 and *out, or -errno with err as
 * "FILE:LINE: what is wrong" (or "FILE: strerror").  ANY_THREAD.
 */
ANY_THREAD int tls_psk_load(const char *path, struct tls_psk **out,
                            struct err *err);

/* Number of keys.  ANY_THREAD. */
ANY_THREAD size_t tls_psk_count(const struct tls_psk *psk);

/*
 * Finds the key of `identity` (len bytes).  Returns the key and sets
 * *key_len, or NULL when the identity is unknown.  ANY_THREAD.
 */
ANY_THREAD const unsigned char *tls_psk_find(const struct tls_psk *psk,
                                             const char *identity, size_t len,
                                             size_t *key_len);

/* Frees a PSK table (keys are wiped).  NULL is allowed.  ANY_THREAD. */
ANY_THREAD void tls_psk_free(struct tls_psk *psk);

#endif
