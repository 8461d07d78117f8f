/* SPDX-License-Identifier: MIT */
/* libFuzzer target: the client's NBD URI parser (client_uri_parse). */
/*
 * The input, cut at its first NUL, is parsed as a URI.  A failure must
 * leave nothing allocated, an errno of EINVAL (or ENOMEM) and a message.
 * A success must give the fields doc/uri.md promises (an export name, a
 * host and a port 1-65535 or a socket path that fits sockaddr_un, a
 * known TLS type) and be recognised by client_uri_is_uri.  The parsed
 * URI is then written back with every byte of every part
 * percent-encoded and parsed again: the two results must be equal.
 * client_uri_fini is called twice to check that it is idempotent.
 */
#include "fuzz.h"
#include "nbdsrv/client-uri.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/un.h>

/* A growable string for the rewritten URI. */
struct text {
    char *s;
    size_t len, cap;
};

static void put(struct text *t, const char *s, size_t len)
{
    if (t->len + len + 1 > t->cap) {
        t->cap = (t->len + len + 1) * 2;
        t->s = realloc(t->s, t->cap);
        FUZZ_ASSERT(t->s != NULL);
    }
    memcpy(t->s + t->len, s, len);
    t->len += len;
    t->s[t->len] = '\0';
}

static void put_str(struct text *t, const char *s)
{
    put(t, s, strlen(s));
}

static void put_encoded(struct text *t, const char *s, size_t len)
{
    for (size_t i = 0; i < len; i++) {
        char esc[4];

        snprintf(esc, sizeof esc, "%%%02X", (unsigned char)s[i]);
        put(t, esc, 3);
    }
}

static void put_param(struct text *t, const char *name, const char *value)
{
    if (value != NULL) {
        put_str(t, "&");
        put_str(t, name);
        put_str(t, "=");
        put_encoded(t, value, strlen(value));
    }
}

static bool same_str(const char *a, const char *b)
{
    return (a == NULL && b == NULL) ||
           (a != NULL && b != NULL && strcmp(a, b) == 0);
}

static bool is_empty(const struct client_uri *uri)
{
    return uri->host == NULL && uri->port == NULL && uri->socket == NULL &&
           uri->export_name == NULL && uri->user == NULL &&
           uri->tls_type == NULL && uri->tls_hostname == NULL &&
           uri->tls_certificates == NULL && uri->tls_psk_file == NULL;
}

static void check_fields(const char *text, const struct client_uri *uri)
{
    FUZZ_ASSERT(client_uri_is_uri(text));
    FUZZ_ASSERT(uri->export_name != NULL && strlen(uri->export_name) <= 4096);
    if (uri->unix_socket) {
        FUZZ_ASSERT(uri->host == NULL && uri->port == NULL);
        FUZZ_ASSERT(uri->socket != NULL && uri->socket_len > 0);
        FUZZ_ASSERT(uri->socket_len <
                    sizeof(((struct sockaddr_un *)0)->sun_path));
    } else {
        char *end;
        unsigned long port;

        FUZZ_ASSERT(uri->socket == NULL && uri->host != NULL);
        FUZZ_ASSERT(uri->host[0] != '\0' && uri->port != NULL);
        port = strtoul(uri->port, &end, 10);
        FUZZ_ASSERT(*end == '\0' && port >= 1 && port <= 65535);
    }
    FUZZ_ASSERT(uri->user == NULL || uri->user[0] != '\0');
    FUZZ_ASSERT(uri->tls_type == NULL || strcmp(uri->tls_type, "anon") == 0 ||
                strcmp(uri->tls_type, "x509") == 0 ||
                strcmp(uri->tls_type, "psk") == 0);
    FUZZ_ASSERT(uri->tls_verify_peer >= -1 && uri->tls_verify_peer <= 1);
}

/* The URI written back with every part percent-encoded. */
static char *rewrite(const struct client_uri *uri)
{
    struct text t = {0};

    put_str(&t, uri->tls ? "nbds" : "nbd");
    put_str(&t, uri->unix_socket ? "+unix://" : "://");
    if (uri->user != NULL) {
        put_encoded(&t, uri->user, strlen(uri->user));
        put_str(&t, "@");
    }
    if (!uri->unix_socket) {
        put_str(&t, "[");
        put_encoded(&t, uri->host, strlen(uri->host));
        put_str(&t, "]:");
        put_str(&t, uri->port);
    }
    put_str(&t, "/");
    put_encoded(&t, uri->export_name, strlen(uri->export_name));
    put_str(&t, "?x-fuzz=1");
    if (uri->socket != NULL) {
        put_str(&t, "&socket=");
        put_encoded(&t, uri->socket, uri->socket_len);
    }
    put_param(&t, "tls-type", uri->tls_type);
    put_param(&t, "tls-hostname", uri->tls_hostname);
    put_param(&t, "tls-certificates", uri->tls_certificates);
    put_param(&t, "tls-psk-file", uri->tls_psk_file);
    if (uri->tls_verify_peer != -1) {
        put_str(&t, uri->tls_verify_peer ? "&tls-verify-peer=true"
                                         : "&tls-verify-peer=0");
    }
    return t.s;
}

static void check_reparse(const struct client_uri *a)
{
    char *text = rewrite(a);
    struct client_uri b;
    struct err err;

    FUZZ_ASSERT(client_uri_parse(text, &b, &err) == 0);
    FUZZ_ASSERT(a->tls == b.tls && a->unix_socket == b.unix_socket);
    FUZZ_ASSERT(same_str(a->host, b.host) && same_str(a->port, b.port));
    FUZZ_ASSERT(a->socket_len == b.socket_len);
    FUZZ_ASSERT(a->socket == NULL ||
                memcmp(a->socket, b.socket, a->socket_len) == 0);
    FUZZ_ASSERT(same_str(a->export_name, b.export_name));
    FUZZ_ASSERT(same_str(a->user, b.user));
    FUZZ_ASSERT(same_str(a->tls_type, b.tls_type));
    FUZZ_ASSERT(same_str(a->tls_hostname, b.tls_hostname));
    FUZZ_ASSERT(same_str(a->tls_certificates, b.tls_certificates));
    FUZZ_ASSERT(same_str(a->tls_psk_file, b.tls_psk_file));
    FUZZ_ASSERT(a->tls_verify_peer == b.tls_verify_peer);
    client_uri_fini(&b);
    free(text);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *text = strndup((const char *)data, size);
    struct client_uri uri;
    struct err err;
    int r;

    FUZZ_ASSERT(text != NULL);
    err_clear(&err);
    r = client_uri_parse(text, &uri, &err);
    if (r < 0) {
        FUZZ_ASSERT(r == -EINVAL || r == -ENOMEM);
        FUZZ_ASSERT(err.errnum == -r && err.msg[0] != '\0');
        FUZZ_ASSERT(is_empty(&uri));
    } else {
        FUZZ_ASSERT(r == 0 && err.errnum == 0);
        check_fields(text, &uri);
        check_reparse(&uri);
    }
    client_uri_fini(&uri);
    client_uri_fini(&uri);
    FUZZ_ASSERT(is_empty(&uri) && uri.tls_verify_peer == -1);
    free(text);
    return 0;
}
