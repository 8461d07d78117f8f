/* SPDX-License-Identifier: MIT */
/*
 * TLS credentials: loading X.509 files and PSK files, and making GnuTLS
 * sessions from them.
 *
 * Files are read into memory here (not by GnuTLS) so that a missing or
 * unreadable file is reported with its errno, and each GnuTLS error with
 * the name of the file that caused it.  The credentials are immutable once
 * built; the only mutable field is the reference count.  The PSK server
 * callback finds the credentials through the session's user pointer,
 * which tls_creds_session_new sets.
 */
#include "nbdsrv/tls-creds.h"

#include "nbdsrv/fdio.h"
#include "nbdsrv/refcount.h"
#include "nbdsrv/tls-priority.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* Longest identity psktool accepts, and a generous longest key. */
#define PSK_IDENTITY_MAX 255
#define PSK_KEY_MAX 512
/* PEM files and PSK files larger than this are refused. */
#define TLS_FILE_MAX (16u * 1024 * 1024)

/* TLS 1.2 needs the PSK key exchanges named; TLS 1.3 needs nothing. */
#define TLS_PSK_PRIORITY ":+ECDHE-PSK:+DHE-PSK:+PSK"

struct psk_entry {
    char *identity;
    size_t identity_len;
    unsigned char *key;
    size_t key_len;
};

/* Owned by its creator; immutable after tls_psk_load. */
struct tls_psk {
    struct psk_entry *entries;
    size_t count;
};

/* Owned by its references; every field immutable after creation. */
struct tls_creds {
    struct refcount refs;
    bool server;
    bool verify_peer;
    gnutls_certificate_credentials_t x509;   /* NULL without X.509 */
    gnutls_psk_server_credentials_t psk_srv; /* server with PSK */
    gnutls_psk_client_credentials_t psk_cli; /* client with PSK */
    struct tls_psk *psk;                     /* server with PSK */
    gnutls_priority_t priority;
    char *hostname; /* client: name to check, or NULL */
};

/* Reads a whole file into a NUL-terminated buffer. */
static int read_file(const char *path, gnutls_datum_t *out, struct err *err)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        return err_set_errno(err, errno, "%s", path);
    }
    int r = 0;
    struct stat st;
    if (fstat(fd, &st) < 0) {
        r = err_set_errno(err, errno, "%s", path);
        goto out_close;
    }
    if (!S_ISREG(st.st_mode)) {
        r = err_set(err, EINVAL, "%s: not a regular file", path);
        goto out_close;
    }
    if ((uint64_t)st.st_size > TLS_FILE_MAX) {
        r = err_set(err, EFBIG, "%s: file too large", path);
        goto out_close;
    }
    size_t size = (size_t)st.st_size;
    unsigned char *buf = malloc(size + 1);
    if (buf == NULL) {
        r = err_set(err, ENOMEM, "%s: out of memory", path);
        goto out_close;
    }
    ssize_t got = fd_read_full(fd, buf, size, FDIO_POS);
    if (got < 0) {
        r = err_set_errno(err, (int)-got, "%s", path);
        free(buf);
        goto out_close;
    }
    buf[got] = '\0';
    out->data = buf;
    out->size = (unsigned)got;
out_close:
    close(fd);
    return r;
}

static void free_datum(gnutls_datum_t *d)
{
    if (d->data != NULL) {
        gnutls_memset(d->data, 0, d->size);
        free(d->data);
        d->data = NULL;
    }
}

/* ------------------------------------------------------------------ */
/* PSK files */

static int hex_value(int c)
{
    if (c >= '0' && c <= '9') {
        return c - '0';
    }
    c = tolower(c);
    if (c >= 'a' && c <= 'f') {
        return c - 'a' + 10;
    }
    return -1;
}

void tls_psk_free(struct tls_psk *psk)
{
    if (psk == NULL) {
        return;
    }
    for (size_t i = 0; i < psk->count; i++) {
        free(psk->entries[i].identity);
        gnutls_memset(psk->entries[i].key, 0, psk->entries[i].key_len);
        free(psk->entries[i].key);
    }
    free(psk->entries);
    free(psk);
}

size_t tls_psk_count(const struct tls_psk *psk)
{
    return psk->count;
}

const unsigned char *tls_psk_find(const struct tls_psk *psk,
                                  const char *identity, size_t len,
                                  size_t *key_len)
{
    for (size_t i = 0; i < psk->count; i++) {
        const struct psk_entry *e = &psk->entries[i];
        if (e->identity_len == len && memcmp(e->identity, identity, len) == 0) {
            *key_len = e->key_len;
            return e->key;
        }
    }
    return NULL;
}

/* Parses one "identity:hexkey" line (without its newline) into e. */
static int parse_psk_line(const char *path, unsigned lineno, const char *line,
                          size_t len, struct tls_psk *psk, struct err *err)
{
    const char *colon = memchr(line, ':', len);
    if (colon == NULL) {
        return err_set(err, EINVAL, "%s:%u: expected identity:hexkey", path,
                       lineno);
    }
    size_t id_len = (size_t)(colon - line);
    const char *hex = colon + 1;
    size_t hex_len = len - id_len - 1;
    if (id_len == 0) {
        return err_set(err, EINVAL, "%s:%u: empty identity", path, lineno);
    }
    if (id_len > PSK_IDENTITY_MAX) {
        return err_set(err, EINVAL, "%s:%u: identity longer than %d bytes",
                       path, lineno, PSK_IDENTITY_MAX);
    }
    for (size_t i = 0; i < id_len; i++) {
        if ((unsigned char)line[i] < 0x20 || line[i] == 0x7f) {
            return err_set(err, EINVAL,
                           "%s:%u: control character in the identity", path,
                           lineno);
        }
    }
    if (hex_len == 0) {
        return err_set(err, EINVAL, "%s:%u: empty key", path, lineno);
    }
    if (hex_len % 2 != 0) {
        return err_set(err, EINVAL,
                       "%s:%u: key has an odd number of hex digits", path,
                       lineno);
    }
    if (hex_len / 2 > PSK_KEY_MAX) {
        return err_set(err, EINVAL, "%s:%u: key longer than %d bytes", path,
                       lineno, PSK_KEY_MAX);
    }
    size_t dummy;
    if (tls_psk_find(psk, line, id_len, &dummy) != NULL) {
        return err_set(err, EINVAL, "%s:%u: identity '%.*s' given twice", path,
                       lineno, (int)id_len, line);
    }
    unsigned char key[PSK_KEY_MAX];
    for (size_t i = 0; i < hex_len / 2; i++) {
        int hi = hex_value((unsigned char)hex[2 * i]);
        int lo = hex_value((unsigned char)hex[2 * i + 1]);
        if (hi < 0 || lo < 0) {
            gnutls_memset(key, 0, sizeof key);
            return err_set(err, EINVAL, "%s:%u: key is not hexadecimal", path,
                           lineno);
        }
        key[i] = (unsigned char)(hi << 4 | lo);
    }
    struct psk_entry *grown =
        realloc(psk->entries, (psk->count + 1) * sizeof *grown);
    if (grown == NULL) {
        gnutls_memset(key, 0, sizeof key);
        return err_set(err, ENOMEM, "%s: out of memory", path);
    }
    psk->entries = grown;
    struct psk_entry *e = &psk->entries[psk->count];
    e->identity = strndup(line, id_len);
    e->identity_len = id_len;
    e->key = malloc(hex_len / 2);
    e->key_len = hex_len / 2;
    if (e->identity == NULL || e->key == NULL) {
        free(e->identity);
        free(e->key);
        gnutls_memset(key, 0, sizeof key);
        return err_set(err, ENOMEM, "%s: out of memory", path);
    }
    memcpy(e->key, key, e->key_len);
    gnutls_memset(key, 0, sizeof key);
    psk->count++;
    return 0;
}

int tls_psk_load(const char *path, struct tls_psk **out, struct err *err)
{
    gnutls_datum_t file = {NULL, 0};
    int r = read_file(path, &file, err);
    if (r < 0) {
        return r;
    }
    struct tls_psk *psk = calloc(1, sizeof *psk);
    if (psk == NULL) {
        r = err_set(err, ENOMEM, "%s: out of memory", path);
        goto out_free_file;
    }
    const char *p = (const char *)file.data;
    const char *end = p + file.size;
    unsigned lineno = 0;
    while (p < end) {
        lineno++;
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        size_t len = nl != NULL ? (size_t)(nl - p) : (size_t)(end - p);
        const char *next = nl != NULL ? nl + 1 : end;
        if (len > 0 && p[len - 1] == '\r') {
            len--;
        }
        if (memchr(p, '\0', len) != NULL) {
            r = err_set(err, EINVAL, "%s:%u: NUL byte in the line", path,
                        lineno);
            goto out_free_psk;
        }
        if (len > 0 && p[0] != '#') {
            r = parse_psk_line(path, lineno, p, len, psk, err);
            if (r < 0) {
                goto out_free_psk;
            }
        }
        p = next;
    }
    if (psk->count == 0) {
        r = err_set(err, EINVAL, "%s: no identity:hexkey line", path);
        goto out_free_psk;
    }
    *out = psk;
    free_datum(&file);
    return 0;

out_free_psk:
    tls_psk_free(psk);
out_free_file:
    free_datum(&file);
    return r;
}

/* ------------------------------------------------------------------ */
/* Credentials */

struct tls_creds *tls_creds_ref(struct tls_creds *creds)
{
    refcount_get(&creds->refs);
    return creds;
}

static void creds_free(struct tls_creds *c)
{
    if (c->x509 != NULL) {
        gnutls_certificate_free_credentials(c->x509);
    }
    if (c->psk_srv != NULL) {
        gnutls_psk_free_server_credentials(c->psk_srv);
    }
    if (c->psk_cli != NULL) {
        gnutls_psk_free_client_credentials(c->psk_cli);
    }
    if (c->priority != NULL) {
        gnutls_priority_deinit(c->priority);
    }
    tls_psk_free(c->psk);
    free(c->hostname);
    free(c);
}

void tls_creds_unref(struct tls_creds *creds)
{
    if (creds == NULL) {
        return;
    }
    if (refcount_put(&creds->refs)) {
        creds_free(creds);
    }
}

bool tls_creds_is_server(const struct tls_creds *creds)
{
    return creds->server;
}

static struct tls_creds *creds_alloc(bool server, struct err *err)
{
    struct tls_creds *c = calloc(1, sizeof *c);
    if (c == NULL) {
        err_set(err, ENOMEM, "out of memory");
        return NULL;
    }
    refcount_init(&c->refs);
    c->server = server;
    return c;
}

static int gnutls_err(struct err *err, int rc, const char *what)
{
    return err_set(err, EINVAL, "%s: %s", what, gnutls_strerror(rc));
}

/* dir/name into buf; fails if it does not fit. */
static int join(char *buf, size_t size, const char *dir, const char *name,
                struct err *err)
{
    if ((size_t)snprintf(buf, size, "%s/%s", dir, name) >= size) {
        return err_set(err, ENAMETOOLONG, "%s/%s: path too long", dir, name);
    }
    return 0;
}

/* Loads the trust anchors (and the CRL if `crl` and present). */
static int load_trust(struct tls_creds *c, const char *dir, bool crl,
                      struct err *err)
{
    char path[4096];
    gnutls_datum_t d = {NULL, 0};
    int r = join(path, sizeof path, dir, "ca-cert.pem", err);
    if (r == 0) {
        r = read_file(path, &d, err);
    }
    if (r < 0) {
        return r;
    }
    int rc =
        gnutls_certificate_set_x509_trust_mem(c->x509, &d, GNUTLS_X509_FMT_PEM);
    free_datum(&d);
    if (rc < 0) {
        return gnutls_err(err, rc, path);
    }
    if (rc == 0) {
        return err_set(err, EINVAL, "%s: no certificate in the file", path);
    }
    if (!crl) {
        return 0;
    }
    r = join(path, sizeof path, dir, "ca-crl.pem", err);
    if (r < 0) {
        return r;
    }
    if (access(path, F_OK) < 0 && errno == ENOENT) {
        return 0;
    }
    r = read_file(path, &d, err);
    if (r < 0) {
        return r;
    }
    rc = gnutls_certificate_set_x509_crl_mem(c->x509, &d, GNUTLS_X509_FMT_PEM);
    free_datum(&d);
    if (rc < 0) {
        return gnutls_err(err, rc, path);
    }
    return 0;
}

/* Loads dir/cert_name with dir/key_name; the key must match. */
static int load_key_pair(struct tls_creds *c, const char *dir,
                         const char *cert_name, const char *key_name,
                         struct err *err)
{
    char cert_path[4096], key_path[4096];
    gnutls_datum_t cert = {NULL, 0}, key = {NULL, 0};
    int r = join(cert_path, sizeof cert_path, dir, cert_name, err);
    if (r == 0) {
        r = join(key_path, sizeof key_path, dir, key_name, err);
    }
    if (r == 0) {
        r = read_file(cert_path, &cert, err);
    }
    if (r < 0) {
        return r;
    }
    r = read_file(key_path, &key, err);
    if (r < 0) {
        goto out;
    }
    int rc = gnutls_certificate_set_x509_key_mem2(c->x509, &cert, &key,
                                                  GNUTLS_X509_FMT_PEM, NULL, 0);
    if (rc == GNUTLS_E_CERTIFICATE_KEY_MISMATCH) {
        r = err_set(err, EINVAL, "%s does not match %s", key_path, cert_path);
    } else if (rc < 0) {
        r = err_set(err, EINVAL, "%s or %s: %s", cert_path, key_path,
                    gnutls_strerror(rc));
    }
out:
    free_datum(&key);
    free_datum(&cert);
    return r;
}

static int set_priority(struct tls_creds *c, const char *prio, bool psk,
                        struct err *err)
{
    char buf[1024];
    const char *base = tls_priority_choose(
        c->server ? TLS_SIDE_SERVER : TLS_SIDE_CLIENT, prio);
    if ((size_t)snprintf(buf, sizeof buf, "%s%s", base,
                         psk ? TLS_PSK_PRIORITY : "") >= sizeof buf) {
        return err_set(err, EINVAL, "TLS priority string too long");
    }
    const char *where = NULL;
    int rc = gnutls_priority_init(&c->priority, buf, &where);
    if (rc < 0) {
        c->priority = NULL;
        if (rc == GNUTLS_E_INVALID_REQUEST && where != NULL) {
            return err_set(err, EINVAL,
                           "TLS priority string '%s': bad syntax at '%s'", buf,
                           where);
        }
        return err_set(err, EINVAL, "TLS priority string '%s': %s", buf,
                       gnutls_strerror(rc));
    }
    return 0;
}

/* GnuTLS asks for the key of `username`; the session leads to us. */
static int psk_server_key(gnutls_session_t session,
                          const gnutls_datum_t *username, gnutls_datum_t *key)
{
    const struct tls_creds *c = gnutls_session_get_ptr(session);
    size_t len;
    const unsigned char *k = tls_psk_find(c->psk, (const char *)username->data,
                                          username->size, &len);
    if (k == NULL) {
        return -1;
    }
    key->data = gnutls_malloc(len);
    if (key->data == NULL) {
        return -1;
    }
    memcpy(key->data, k, len);
    key->size = (unsigned)len;
    return 0;
}

struct tls_creds *tls_creds_new_server(const struct tls_config *cfg,
                                       struct err *err)
{
    if (cfg->certs_dir == NULL && cfg->psk_file == NULL) {
        err_set(err, EINVAL,
                "TLS needs --tls-certs DIR or --tls-psk FILE (or both)");
        return NULL;
    }
    if (cfg->verify_peer && cfg->certs_dir == NULL) {
        err_set(err, EINVAL,
                "--tls-verify-peer needs --tls-certs DIR (the CA that "
                "client certificates must chain to)");
        return NULL;
    }
    struct tls_creds *c = creds_alloc(true, err);
    if (c == NULL) {
        return NULL;
    }
    c->verify_peer = cfg->verify_peer;
    int rc;
    if (cfg->certs_dir != NULL) {
        rc = gnutls_certificate_allocate_credentials(&c->x509);
        if (rc < 0) {
            c->x509 = NULL;
            gnutls_err(err, rc, "X.509 credentials");
            goto out_free;
        }
        if (load_trust(c, cfg->certs_dir, true, err) < 0 ||
            load_key_pair(c, cfg->certs_dir, "server-cert.pem",
                          "server-key.pem", err) < 0) {
            goto out_free;
        }
        gnutls_certificate_set_known_dh_params(c->x509, GNUTLS_SEC_PARAM_HIGH);
    }
    if (cfg->psk_file != NULL) {
        if (tls_psk_load(cfg->psk_file, &c->psk, err) < 0) {
            goto out_free;
        }
        rc = gnutls_psk_allocate_server_credentials(&c->psk_srv);
        if (rc < 0) {
            c->psk_srv = NULL;
            gnutls_err(err, rc, "PSK credentials");
            goto out_free;
        }
        gnutls_psk_set_server_credentials_function2(c->psk_srv, psk_server_key);
        gnutls_psk_set_server_known_dh_params(c->psk_srv,
                                              GNUTLS_SEC_PARAM_HIGH);
    }
    if (set_priority(c, cfg->priority, cfg->psk_file != NULL, err) < 0) {
        goto out_free;
    }
    return c;

out_free:
    creds_free(c);
    return NULL;
}

/* Client PSK: the key of `identity` (or of the first line). */
static int load_client_psk(struct tls_creds *c, const char *path,
                           const char *identity, struct err *err)
{
    struct tls_psk *psk;
    int r = tls_psk_load(path, &psk, err);
    if (r < 0) {
        return r;
    }
    const struct psk_entry *e = &psk->entries[0];
    if (identity != NULL) {
        e = NULL;
        for (size_t i = 0; i < psk->count; i++) {
            if (strcmp(psk->entries[i].identity, identity) == 0) {
                e = &psk->entries[i];
            }
        }
        if (e == NULL) {
            r = err_set(err, ENOENT, "%s: no key for identity '%s'", path,
                        identity);
            goto out;
        }
    }
    int rc = gnutls_psk_allocate_client_credentials(&c->psk_cli);
    if (rc < 0) {
        c->psk_cli = NULL;
        r = gnutls_err(err, rc, "PSK credentials");
        goto out;
    }
    gnutls_datum_t key = {e->key, (unsigned)e->key_len};
    rc = gnutls_psk_set_client_credentials(c->psk_cli, e->identity, &key,
                                           GNUTLS_PSK_KEY_RAW);
    if (rc < 0) {
        r = gnutls_err(err, rc, path);
    }
out:
    tls_psk_free(psk);
    return r;
}

struct tls_creds *tls_creds_new_client(const struct tls_client_config *cfg,
                                       struct err *err)
{
    if ((cfg->ca_dir == NULL) == (cfg->psk_file == NULL)) {
        err_set(err, EINVAL, "TLS client: give a CA directory or a PSK file");
        return NULL;
    }
    struct tls_creds *c = creds_alloc(false, err);
    if (c == NULL) {
        return NULL;
    }
    c->verify_peer = cfg->verify_peer;
    if (cfg->ca_dir != NULL) {
        int rc = gnutls_certificate_allocate_credentials(&c->x509);
        if (rc < 0) {
            c->x509 = NULL;
            gnutls_err(err, rc, "X.509 credentials");
            goto out_free;
        }
        if (load_trust(c, cfg->ca_dir, false, err) < 0) {
            goto out_free;
        }
        char path[4096];
        if (join(path, sizeof path, cfg->ca_dir, "client-cert.pem", err) < 0) {
            goto out_free;
        }
        if (access(path, F_OK) == 0 &&
            load_key_pair(c, cfg->ca_dir, "client-cert.pem", "client-key.pem",
                          err) < 0) {
            goto out_free;
        }
        if (cfg->hostname != NULL) {
            c->hostname = strdup(cfg->hostname);
            if (c->hostname == NULL) {
                err_set(err, ENOMEM, "out of memory");
                goto out_free;
            }
        }
    } else if (load_client_psk(c, cfg->psk_file, cfg->psk_identity, err) < 0) {
        goto out_free;
    }
    if (set_priority(c, cfg->priority, cfg->psk_file != NULL, err) < 0) {
        goto out_free;
    }
    return c;

out_free:
    creds_free(c);
    return NULL;
}

/* True when name is a numeric IPv4 or IPv6 address (no SNI for those). */
static bool is_ip_address(const char *name)
{
    for (const char *p = name; *p != '\0'; p++) {
        if (!isxdigit((unsigned char)*p) && *p != '.' && *p != ':') {
            return false;
        }
    }
    return strchr(name, '.') != NULL || strchr(name, ':') != NULL;
}

int tls_creds_session_new(struct tls_creds *creds, gnutls_session_t *session,
                          struct err *err)
{
    unsigned flags = (creds->server ? GNUTLS_SERVER : GNUTLS_CLIENT) |
                     GNUTLS_NONBLOCK | GNUTLS_NO_TICKETS | GNUTLS_NO_AUTO_REKEY;
    gnutls_session_t s;
    int rc = gnutls_init(&s, flags);
    if (rc < 0) {
        return gnutls_err(err, rc, "TLS session");
    }
    gnutls_session_set_ptr(s, creds);
    rc = gnutls_priority_set(s, creds->priority);
    if (rc < 0) {
        goto out_deinit;
    }
    if (creds->x509 != NULL) {
        rc = gnutls_credentials_set(s, GNUTLS_CRD_CERTIFICATE, creds->x509);
        if (rc < 0) {
            goto out_deinit;
        }
    }
    if (creds->psk_srv != NULL) {
        rc = gnutls_credentials_set(s, GNUTLS_CRD_PSK, creds->psk_srv);
    } else if (creds->psk_cli != NULL) {
        rc = gnutls_credentials_set(s, GNUTLS_CRD_PSK, creds->psk_cli);
    }
    if (rc < 0) {
        goto out_deinit;
    }
    if (creds->server && creds->x509 != NULL) {
        gnutls_certificate_server_set_request(
            s, creds->verify_peer ? GNUTLS_CERT_REQUIRE : GNUTLS_CERT_IGNORE);
        /* Do not name our CAs in the request: a client then sends the
         * certificate it has, and the log says why it is not trusted
         * rather than only that none came. */
        gnutls_certificate_send_x509_rdn_sequence(s, 1);
    }
    if (creds->x509 != NULL && (creds->verify_peer || !creds->server)) {
        if (!creds->server && creds->hostname != NULL &&
            !is_ip_address(creds->hostname)) {
            gnutls_server_name_set(s, GNUTLS_NAME_DNS, creds->hostname,
                                   strlen(creds->hostname));
        }
        if (creds->verify_peer) {
            gnutls_session_set_verify_cert(
                s, creds->server ? NULL : creds->hostname, 0);
        }
    }
    /* Our own deadline bounds the handshake (no select() on the fd). */
    gnutls_handshake_set_timeout(s, 0);
    *session = s;
    return 0;

out_deinit:
    gnutls_deinit(s);
    return gnutls_err(err, rc, "TLS session");
}
