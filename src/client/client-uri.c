/* SPDX-License-Identifier: MIT */
/*
 * NBD URI parser (doc/uri.md): scheme, authority, export name, query.
 *
 * The parser works on one heap copy of the text and never trusts it:
 * every percent escape is checked, the decoded export name may not hold
 * a NUL, the port must be a number from 1 to 65535, and each error names
 * the part of the URI that is wrong.
 */
#include "nbdsrv/client-uri.h"

#include <errno.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/un.h>

struct scheme {
    const char *name;
    bool tls;
    bool unix_socket;
};

static const struct scheme schemes[] = {
    {"nbd", false, false},
    {"nbds", true, false},
    {"nbd+unix", false, true},
    {"nbds+unix", true, true},
};

static int hexval(char c)
{
    if (c >= '0' && c <= '9') {
        return c - '0';
    }
    if (c >= 'a' && c <= 'f') {
        return c - 'a' + 10;
    }
    if (c >= 'A' && c <= 'F') {
        return c - 'A' + 10;
    }
    return -1;
}

/*
 * Percent-decodes s[0..len) into a new NUL-terminated string; *out_len
 * gets the decoded length (the result may hold NULs when allow_nul).
 * `what` names the part for the error message.
 */
static int decode(const char *s, size_t len, const char *what, bool allow_nul,
                  char **out, size_t *out_len, struct err *err)
{
    char *d = malloc(len + 1);
    if (d == NULL) {
        return err_set(err, ENOMEM, "out of memory");
    }
    size_t n = 0;
    for (size_t i = 0; i < len; i++) {
        if (s[i] != '%') {
            d[n++] = s[i];
            continue;
        }
        int hi = i + 1 < len ? hexval(s[i + 1]) : -1;
        int lo = i + 2 < len ? hexval(s[i + 2]) : -1;
        if (hi < 0 || lo < 0) {
            free(d);
            return err_set(err, EINVAL, "%s: bad percent escape '%.*s'", what,
                           (int)(len - i < 3 ? len - i : 3), s + i);
        }
        char c = (char)(hi * 16 + lo);
        if (c == '\0' && !allow_nul) {
            free(d);
            return err_set(err, EINVAL, "%s: must not contain %%00", what);
        }
        d[n++] = c;
        i += 2;
    }
    d[n] = '\0';
    *out = d;
    if (out_len != NULL) {
        *out_len = n;
    }
    return 0;
}

bool client_uri_is_uri(const char *text)
{
    for (size_t i = 0; i < sizeof schemes / sizeof schemes[0]; i++) {
        size_t n = strlen(schemes[i].name);
        if (strncmp(text, schemes[i].name, n) == 0 &&
            strncmp(text + n, "://", 3) == 0) {
            return true;
        }
    }
    return strncmp(text, "nbd", 3) == 0 && strstr(text, "://") != NULL;
}

void client_uri_fini(struct client_uri *uri)
{
    free(uri->host);
    free(uri->port);
    free(uri->socket);
    free(uri->export_name);
    free(uri->user);
    free(uri->tls_type);
    free(uri->tls_hostname);
    free(uri->tls_certificates);
    free(uri->tls_psk_file);
    memset(uri, 0, sizeof *uri);
    uri->tls_verify_peer = -1;
}

static int parse_authority(const char *a, size_t len, struct client_uri *uri,
                           struct err *err)
{
    const char *at = memchr(a, '@', len);
    if (at != NULL) {
        int r = decode(a, (size_t)(at - a), "user name", false, &uri->user,
                       NULL, err);
        if (r < 0) {
            return r;
        }
        if (uri->user[0] == '\0') {
            return err_set(err, EINVAL, "empty user name before '@'");
        }
        len -= (size_t)(at + 1 - a);
        a = at + 1;
    }
    const char *host = a;
    size_t hlen;
    const char *rest;
    if (len > 0 && a[0] == '[') {
        const char *close = memchr(a, ']', len);
        if (close == NULL) {
            return err_set(err, EINVAL,
                           "host '%.*s': missing ']' after the IPv6 address",
                           (int)len, a);
        }
        host = a + 1;
        hlen = (size_t)(close - host);
        if (hlen == 0) {
            return err_set(err, EINVAL, "host: empty IPv6 address '[]'");
        }
        rest = close + 1;
    } else {
        const char *colon = memchr(a, ':', len);
        hlen = colon != NULL ? (size_t)(colon - a) : len;
        rest = a + hlen;
    }
    size_t rlen = len - (size_t)(rest - a);
    if (uri->unix_socket) {
        if (hlen > 0 || rlen > 0) {
            return err_set(err, EINVAL,
                           "host '%.*s': a +unix URI takes no host or port "
                           "(use ?socket=PATH)",
                           (int)len, a);
        }
        return 0;
    }
    if (hlen == 0) {
        return err_set(err, EINVAL, "missing host after '://'");
    }
    int r = decode(host, hlen, "host", false, &uri->host, NULL, err);
    if (r < 0) {
        return r;
    }
    if (rlen == 0) {
        uri->port = strdup(CLIENT_DEFAULT_PORT);
    } else {
        if (rest[0] != ':') {
            return err_set(err, EINVAL, "host: unexpected '%.*s' after ']'",
                           (int)rlen, rest);
        }
        const char *p = rest + 1;
        size_t plen = rlen - 1;
        unsigned long port = 0;
        if (plen == 0 || plen > 5) {
            return err_set(err, EINVAL, "port '%.*s': not a number 1-65535",
                           (int)plen, p);
        }
        for (size_t i = 0; i < plen; i++) {
            if (p[i] < '0' || p[i] > '9') {
                return err_set(err, EINVAL, "port '%.*s': not a number 1-65535",
                               (int)plen, p);
            }
            port = port * 10 + (unsigned long)(p[i] - '0');
        }
        if (port == 0 || port > 65535) {
            return err_set(err, EINVAL, "port '%.*s': not a number 1-65535",
                           (int)plen, p);
        }
        uri->port = strndup(p, plen);
    }
    if (uri->port == NULL) {
        return err_set(err, ENOMEM, "out of memory");
    }
    return 0;
}

/* Stores a decoded query value in *slot, refusing a repeated parameter. */
static int set_param(char **slot, const char *name, const char *v, size_t vlen,
                     struct err *err)
{
    if (*slot != NULL) {
        return err_set(err, EINVAL, "query parameter '%s' given twice", name);
    }
    int r = decode(v, vlen, name, false, slot, NULL, err);
    if (r < 0) {
        return r;
    }
    if ((*slot)[0] == '\0') {
        return err_set(err, EINVAL, "query parameter '%s' is empty", name);
    }
    return 0;
}

static int parse_param(const char *p, size_t len, struct client_uri *uri,
                       struct err *err)
{
    const char *eq = memchr(p, '=', len);
    if (eq == NULL) {
        return err_set(err, EINVAL, "query parameter '%.*s' has no '=VALUE'",
                       (int)len, p);
    }
    size_t nlen = (size_t)(eq - p);
    const char *v = eq + 1;
    size_t vlen = len - nlen - 1;
    char name[64];
    if (nlen == 0 || nlen >= sizeof name) {
        return err_set(err, EINVAL, "query parameter '%.*s': bad name",
                       (int)len, p);
    }
    memcpy(name, p, nlen);
    name[nlen] = '\0';

    if (strcmp(name, "socket") == 0) {
        if (!uri->unix_socket) {
            return err_set(err, EINVAL,
                           "query parameter 'socket': only for the +unix "
                           "schemes");
        }
        if (uri->socket != NULL) {
            return err_set(err, EINVAL, "query parameter 'socket' given twice");
        }
        int r = decode(v, vlen, "socket", true, &uri->socket, &uri->socket_len,
                       err);
        if (r < 0) {
            return r;
        }
        if (uri->socket_len == 0) {
            return err_set(err, EINVAL, "query parameter 'socket' is empty");
        }
        if (uri->socket_len >= sizeof(((struct sockaddr_un *)0)->sun_path)) {
            return err_set(err, EINVAL,
                           "query parameter 'socket': path longer than %zu "
                           "bytes",
                           sizeof(((struct sockaddr_un *)0)->sun_path) - 1);
        }
        return 0;
    }
    if (strcmp(name, "tls-certificates") == 0) {
        return set_param(&uri->tls_certificates, name, v, vlen, err);
    }
    if (strcmp(name, "tls-psk-file") == 0) {
        return set_param(&uri->tls_psk_file, name, v, vlen, err);
    }
    if (strcmp(name, "tls-hostname") == 0) {
        return set_param(&uri->tls_hostname, name, v, vlen, err);
    }
    if (strcmp(name, "tls-type") == 0) {
        int r = set_param(&uri->tls_type, name, v, vlen, err);
        if (r < 0) {
            return r;
        }
        if (strcmp(uri->tls_type, "anon") != 0 &&
            strcmp(uri->tls_type, "x509") != 0 &&
            strcmp(uri->tls_type, "psk") != 0) {
            return err_set(err, EINVAL,
                           "query parameter 'tls-type=%s': expected anon, "
                           "x509 or psk",
                           uri->tls_type);
        }
        return 0;
    }
    if (strcmp(name, "tls-verify-peer") == 0) {
        if (uri->tls_verify_peer != -1) {
            return err_set(err, EINVAL,
                           "query parameter 'tls-verify-peer' given twice");
        }
        if (vlen == 1 && (v[0] == '0' || v[0] == '1')) {
            uri->tls_verify_peer = v[0] - '0';
            return 0;
        }
        if (vlen == 4 && strncmp(v, "true", 4) == 0) {
            uri->tls_verify_peer = 1;
            return 0;
        }
        if (vlen == 5 && strncmp(v, "false", 5) == 0) {
            uri->tls_verify_peer = 0;
            return 0;
        }
        return err_set(err, EINVAL,
                       "query parameter 'tls-verify-peer=%.*s': expected 0 "
                       "or 1",
                       (int)vlen, v);
    }
    if (strncmp(name, "x-", 2) == 0) {
        return 0; /* experimental parameters of other clients */
    }
    return err_set(err, EINVAL, "unknown query parameter '%s'", name);
}

static int parse(const char *text, struct client_uri *uri, struct err *err)
{
    const char *sep = strstr(text, "://");
    if (sep == NULL) {
        return err_set(err, EINVAL,
                       "'%s' is not an NBD URI (expected nbd://, nbds://, "
                       "nbd+unix:// or nbds+unix://)",
                       text);
    }
    size_t slen = (size_t)(sep - text);
    const struct scheme *sc = NULL;
    for (size_t i = 0; i < sizeof schemes / sizeof schemes[0]; i++) {
        if (strlen(schemes[i].name) == slen &&
            strncmp(text, schemes[i].name, slen) == 0) {
            sc = &schemes[i];
        }
    }
    if (sc == NULL) {
        return err_set(err, EINVAL,
                       "scheme '%.*s': expected nbd, nbds, nbd+unix or "
                       "nbds+unix",
                       (int)slen, text);
    }
    uri->tls = sc->tls;
    uri->unix_socket = sc->unix_socket;

    const char *a = sep + 3;
    if (strchr(a, '#') != NULL) {
        return err_set(err, EINVAL, "fragment '%s': not allowed",
                       strchr(a, '#'));
    }
    size_t alen = strcspn(a, "/?");
    int r = parse_authority(a, alen, uri, err);
    if (r < 0) {
        return r;
    }
    const char *p = a + alen;
    size_t plen = strcspn(p, "?");
    if (plen > 0) {
        /* p[0] == '/': the export name is the rest of the path. */
        r = decode(p + 1, plen - 1, "export name", false, &uri->export_name,
                   NULL, err);
    } else {
        r = decode("", 0, "export name", false, &uri->export_name, NULL, err);
    }
    if (r < 0) {
        return r;
    }
    if (strlen(uri->export_name) > 4096) {
        return err_set(err, EINVAL, "export name: longer than 4096 bytes");
    }
    const char *q = p + plen;
    if (*q == '?') {
        q++;
        while (*q != '\0') {
            size_t n = strcspn(q, "&;");
            if (n > 0) {
                r = parse_param(q, n, uri, err);
                if (r < 0) {
                    return r;
                }
            }
            q += n;
            if (*q != '\0') {
                q++;
            }
        }
    }
    if (uri->unix_socket && uri->socket == NULL) {
        return err_set(err, EINVAL,
                       "%.*s URI: missing the ?socket=PATH query parameter",
                       (int)slen, text);
    }
    return 0;
}

int client_uri_parse(const char *text, struct client_uri *uri, struct err *err)
{
    memset(uri, 0, sizeof *uri);
    uri->tls_verify_peer = -1;
    int r = parse(text, uri, err);
    if (r < 0) {
        client_uri_fini(uri);
    }
    return r;
}

int client_uri_address(const struct client_uri *uri,
                       struct sockaddr_storage *ss, socklen_t *len,
                       struct err *err)
{
    memset(ss, 0, sizeof *ss);
    if (uri->unix_socket) {
        struct sockaddr_un *sun = (struct sockaddr_un *)ss;
        sun->sun_family = AF_UNIX;
        memcpy(sun->sun_path, uri->socket, uri->socket_len);
        *len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) +
                           uri->socket_len + (uri->socket[0] != '\0'));
        return 0;
    }
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM,
                             .ai_flags = AI_ADDRCONFIG};
    struct addrinfo *res = NULL;
    int r = getaddrinfo(uri->host, uri->port, &hints, &res);
    if (r != 0) {
        return err_set(err, r == EAI_SYSTEM ? errno : EHOSTUNREACH, "%s:%s: %s",
                       uri->host, uri->port, gai_strerror(r));
    }
    memcpy(ss, res->ai_addr, res->ai_addrlen);
    *len = res->ai_addrlen;
    freeaddrinfo(res);
    return 0;
}
