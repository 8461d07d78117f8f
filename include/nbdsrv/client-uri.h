/* SPDX-License-Identifier: MIT */
/*
 * NBD URIs (doc/uri.md of the NetworkBlockDevice/nbd repository):
 *
 *   nbd[s]://[USER@]HOST[:PORT][/EXPORT][?QUERY]
 *   nbd[s]+unix://[USER@][/EXPORT]?socket=PATH[&QUERY]
 *
 * The "s" schemes require TLS.  The export name is the path without its
 * first '/', percent-decoded.  Query parameters: socket=, tls-type=,
 * tls-hostname=, tls-verify-peer=, tls-certificates=, tls-psk-file=;
 * other names starting with "x-" are ignored, any other name is an error.
 * The user name is the PSK identity.
 */
#ifndef NBDSRV_CLIENT_URI_H
#define NBDSRV_CLIENT_URI_H

#include "nbdsrv/affinity.h"
#include "nbdsrv/err.h"

#include <stdbool.h>
#include <stddef.h>
#include <sys/socket.h>

#define CLIENT_DEFAULT_PORT "10809"

/*
 * A parsed URI.  Owned by whoever declared it; every string is a
 * NUL-terminated heap copy (or NULL when absent), freed by
 * client_uri_fini.
 */
struct client_uri {
    bool tls;               /* nbds schemes: TLS is required */
    bool unix_socket;       /* +unix schemes */
    char *host;             /* TCP: host name or address, no brackets */
    char *port;             /* TCP: port, CLIENT_DEFAULT_PORT if absent */
    char *socket;           /* unix: path (may start with NUL: abstract) */
    size_t socket_len;      /* bytes of socket (it may hold a NUL) */
    char *export_name;      /* never NULL after a successful parse */
    char *user;             /* user name for TLS-PSK, or NULL */
    char *tls_type;         /* "anon", "x509" or "psk", or NULL */
    char *tls_hostname;     /* or NULL */
    char *tls_certificates; /* directory, or NULL */
    char *tls_psk_file;     /* psktool file, or NULL */
    int tls_verify_peer;    /* 1, 0, or -1 when not given */
};

/*
 * Parses `text`.  Returns 0, or -EINVAL with err naming the bad part (the
 * scheme, the port, a query parameter, a percent escape...).  On failure
 * uri holds nothing to free.  ANY_THREAD.
 */
ANY_THREAD int client_uri_parse(const char *text, struct client_uri *uri,
                                struct err *err);

/* Frees the strings of a parsed URI; idempotent.  ANY_THREAD. */
ANY_THREAD void client_uri_fini(struct client_uri *uri);

/* Whether `text` looks like an NBD URI (starts with a known scheme). */
ANY_THREAD bool client_uri_is_uri(const char *text);

/*
 * Resolves the address to connect to: the unix socket, or the first
 * address getaddrinfo gives for HOST:PORT.  Returns 0 or -errno with err
 * set.  ANY_THREAD (it may block in name resolution).
 */
ANY_THREAD int client_uri_address(const struct client_uri *uri,
                                  struct sockaddr_storage *ss, socklen_t *len,
                                  struct err *err);

#endif
