/* SPDX-License-Identifier: MIT */
/*
 * nbd-tls-rekey: an NBD client over TLS 1.3 that sends KeyUpdate
 * messages while the server is busy sending, for the interop tests.
 *
 *   nbd-tls-rekey HOST PORT EXPORT CA-FILE IMAGE [REKEYS]
 *
 * It negotiates fixed newstyle, NBD_OPT_STARTTLS, a TLS 1.3 session
 * (the server's certificate must chain to CA-FILE and name localhost),
 * NBD_OPT_GO, then keeps QD reads of READ_SIZE bytes in flight across
 * the export, checking each against IMAGE (a copy of the export's
 * contents).  Every KEY_UPDATE_EVERY replies, while the other reads are
 * being answered, it sends a KeyUpdate, REKEYS times (default 12),
 * spaced out so as to stay under GnuTLS's limit of 8 received key
 * updates a second: every other one asks the server to update its keys
 * too (GNUTLS_KU_PEER), the others do not (what a GnuTLS client sends
 * by itself after 2^24 records).  A server that changed its send state
 * under a sender sends records twice, or records the client cannot
 * decrypt.
 *
 * Success (exit 0): every read came back with the right data, and the
 * server answered each KeyUpdate request with one of its own (counted
 * by a handshake hook).  Any failure prints one line and exits 1.
 * Blocking sockets, one thread: it is a test tool, not a client.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <gnutls/gnutls.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define READ_SIZE (1024u * 1024)
#define QD 8u
#define KEY_UPDATE_EVERY 16u
/* GnuTLS refuses more than 8 key updates a second from a peer. */
#define KEY_UPDATE_SPACING_NS (200ull * 1000 * 1000)

#define NBDMAGIC 0x4e42444d41474943ull
#define IHAVEOPT 0x49484156454f5054ull
#define OPT_REPLY_MAGIC 0x3e889045565a9ull
#define OPT_STARTTLS 5u
#define OPT_GO 7u
#define REP_ACK 1u
#define REP_INFO 3u
#define REQUEST_MAGIC 0x25609513u
#define SIMPLE_REPLY_MAGIC 0x67446698u
#define CMD_READ 0u
#define CMD_DISC 2u

static gnutls_session_t session;
static gnutls_certificate_credentials_t cred;
static int sock = -1;
static unsigned server_key_updates;

__attribute__((format(printf, 1, 2), noreturn)) static void die(const char *fmt,
                                                                ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("nbd-tls-rekey: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    exit(1);
}

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void put_u16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)(v >> 8);
    p[1] = (uint8_t)v;
}

static void put_u32(uint8_t *p, uint32_t v)
{
    put_u16(p, (uint16_t)(v >> 16));
    put_u16(p + 2, (uint16_t)v);
}

static void put_u64(uint8_t *p, uint64_t v)
{
    put_u32(p, (uint32_t)(v >> 32));
    put_u32(p + 4, (uint32_t)v);
}

static uint32_t get_u32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 |
           p[3];
}

static uint64_t get_u64(const uint8_t *p)
{
    return (uint64_t)get_u32(p) << 32 | get_u32(p + 4);
}

/* Plain-text I/O, before STARTTLS. */
static void plain_read(void *buf, size_t len)
{
    uint8_t *p = buf;
    while (len > 0) {
        ssize_t n = read(sock, p, len);
        if (n <= 0) {
            die("reading the handshake: %s",
                n == 0 ? "end of file" : strerror(errno));
        }
        p += n;
        len -= (size_t)n;
    }
}

static void plain_write(const void *buf, size_t len)
{
    if (write(sock, buf, len) != (ssize_t)len) {
        die("writing the handshake: %s", strerror(errno));
    }
}

/* TLS I/O, after the TLS handshake. */
static void tls_read(void *buf, size_t len, const char *what)
{
    uint8_t *p = buf;
    while (len > 0) {
        ssize_t n = gnutls_record_recv(session, p, len);
        if (n == GNUTLS_E_AGAIN || n == GNUTLS_E_INTERRUPTED) {
            continue;
        }
        if (n <= 0) {
            die("%s: gnutls_record_recv: %s", what,
                n == 0 ? "the server closed the session"
                       : gnutls_strerror((int)n));
        }
        p += n;
        len -= (size_t)n;
    }
}

static void tls_write(const void *buf, size_t len, const char *what)
{
    const uint8_t *p = buf;
    while (len > 0) {
        ssize_t n = gnutls_record_send(session, p, len);
        if (n == GNUTLS_E_AGAIN || n == GNUTLS_E_INTERRUPTED) {
            continue;
        }
        if (n < 0) {
            die("%s: gnutls_record_send: %s", what, gnutls_strerror((int)n));
        }
        p += n;
        len -= (size_t)n;
    }
}

static void option_header(uint8_t *hdr, uint32_t option, uint32_t len)
{
    put_u64(hdr, IHAVEOPT);
    put_u32(hdr + 8, option);
    put_u32(hdr + 12, len);
}

/* Counts the key updates the server sends us. */
static int hook(gnutls_session_t s, unsigned htype, unsigned when,
                unsigned incoming, const gnutls_datum_t *msg)
{
    (void)s;
    (void)when;
    (void)msg;
    if (htype == GNUTLS_HANDSHAKE_KEY_UPDATE && incoming) {
        server_key_updates++;
    }
    return 0;
}

static void connect_tcp(const char *host, const char *port)
{
    struct sockaddr_in sin = {.sin_family = AF_INET,
                              .sin_port = htons((uint16_t)atoi(port))};
    if (inet_pton(AF_INET, host, &sin.sin_addr) != 1) {
        die("%s: not an IPv4 address", host);
    }
    sock = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (sock < 0 || connect(sock, (struct sockaddr *)&sin, sizeof sin) < 0) {
        die("connecting to %s:%s: %s", host, port, strerror(errno));
    }
    int one = 1;
    setsockopt(sock, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
}

static void starttls(const char *ca_file)
{
    uint8_t buf[20];
    plain_read(buf, 18);
    if (get_u64(buf) != NBDMAGIC || get_u64(buf + 8) != IHAVEOPT) {
        die("not a newstyle NBD server");
    }
    put_u32(buf, 3); /* FIXED_NEWSTYLE | NO_ZEROES */
    plain_write(buf, 4);
    option_header(buf, OPT_STARTTLS, 0);
    plain_write(buf, 16);
    plain_read(buf, 20);
    if (get_u64(buf) != OPT_REPLY_MAGIC || get_u32(buf + 12) != REP_ACK) {
        die("NBD_OPT_STARTTLS: reply type 0x%x", get_u32(buf + 12));
    }
    uint32_t skip = get_u32(buf + 16);
    while (skip-- > 0) {
        plain_read(buf, 1);
    }

    int rc = gnutls_certificate_allocate_credentials(&cred);
    if (rc >= 0) {
        rc = gnutls_certificate_set_x509_trust_file(cred, ca_file,
                                                    GNUTLS_X509_FMT_PEM);
    }
    if (rc < 0) {
        die("%s: %s", ca_file, gnutls_strerror(rc));
    }
    rc = gnutls_init(&session, GNUTLS_CLIENT);
    if (rc >= 0) {
        /* KeyUpdate exists in TLS 1.3 only. */
        rc = gnutls_priority_set_direct(session,
                                        "NORMAL:-VERS-ALL:+VERS-TLS1.3", NULL);
    }
    if (rc >= 0) {
        rc = gnutls_credentials_set(session, GNUTLS_CRD_CERTIFICATE, cred);
    }
    if (rc < 0) {
        die("setting up the TLS session: %s", gnutls_strerror(rc));
    }
    gnutls_session_set_verify_cert(session, "localhost", 0);
    gnutls_transport_set_int(session, sock);
    do {
        rc = gnutls_handshake(session);
    } while (rc < 0 && !gnutls_error_is_fatal(rc));
    if (rc < 0) {
        die("TLS handshake: %s", gnutls_strerror(rc));
    }
    if (gnutls_protocol_get_version(session) != GNUTLS_TLS1_3) {
        die("the session is not TLS 1.3");
    }
    gnutls_handshake_set_hook_function(session, GNUTLS_HANDSHAKE_KEY_UPDATE,
                                       GNUTLS_HOOK_POST, hook);
}

/* NBD_OPT_GO over TLS; returns the export's size. */
static uint64_t go(const char *name)
{
    size_t nlen = strlen(name);
    uint8_t buf[64 + 4096];
    if (nlen > 4096) {
        die("export name too long");
    }
    option_header(buf, OPT_GO, (uint32_t)(4 + nlen + 2));
    put_u32(buf + 16, (uint32_t)nlen);
    memcpy(buf + 20, name, nlen);
    put_u16(buf + 20 + nlen, 0);
    tls_write(buf, 22 + nlen, "NBD_OPT_GO");
    uint64_t size = 0;
    for (;;) {
        tls_read(buf, 20, "NBD_OPT_GO");
        uint32_t type = get_u32(buf + 12), len = get_u32(buf + 16);
        if (get_u64(buf) != OPT_REPLY_MAGIC || len > sizeof buf) {
            die("NBD_OPT_GO: bad reply");
        }
        tls_read(buf, len, "NBD_OPT_GO");
        if (type == REP_ACK) {
            break;
        }
        if (type == REP_INFO && len >= 12 && buf[0] == 0 && buf[1] == 0) {
            size = get_u64(buf + 2);
        } else if (type != REP_INFO) {
            die("NBD_OPT_GO: reply type 0x%x", type);
        }
    }
    if (size < READ_SIZE) {
        die("the export is smaller than one read");
    }
    return size;
}

static void send_read(uint64_t cookie, uint64_t offset)
{
    uint8_t req[28];
    put_u32(req, REQUEST_MAGIC);
    put_u16(req + 4, 0);
    put_u16(req + 6, CMD_READ);
    put_u64(req + 8, cookie);
    put_u64(req + 16, offset);
    put_u32(req + 24, READ_SIZE);
    tls_write(req, sizeof req, "sending a READ");
}

static uint8_t *load_image(const char *path, uint64_t size)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    uint8_t *data = malloc(size);
    if (fd < 0 || data == NULL) {
        die("%s: %s", path, strerror(errno));
    }
    for (uint64_t off = 0; off < size;) {
        ssize_t n = pread(fd, data + off, size - off, (off_t)off);
        if (n <= 0) {
            die("%s: shorter than the export", path);
        }
        off += (uint64_t)n;
    }
    close(fd);
    return data;
}

int main(int argc, char **argv)
{
    if (argc < 6 || argc > 7) {
        fprintf(stderr, "usage: nbd-tls-rekey HOST PORT EXPORT CA-FILE "
                        "IMAGE [REKEYS]\n");
        return 2;
    }
    unsigned rekeys = argc == 7 ? (unsigned)atoi(argv[6]) : 12;
    connect_tcp(argv[1], argv[2]);
    starttls(argv[4]);
    uint64_t size = go(argv[3]);
    uint64_t blocks = size / READ_SIZE;
    uint8_t *want = load_image(argv[5], blocks * READ_SIZE);
    uint8_t *got = malloc(READ_SIZE);
    if (got == NULL) {
        die("out of memory");
    }

    uint64_t sent = 0, done = 0;
    unsigned updates = 0, requests = 0;
    uint64_t last_update = 0;
    /* Reads go on for a while after the last update, so that the
     * server has replies to send its own update with. */
    uint64_t stop_after = 0;
    for (; sent < QD; sent++) {
        send_read(sent, (sent % blocks) * READ_SIZE);
    }
    while (done < sent) {
        uint8_t hdr[16];
        tls_read(hdr, sizeof hdr, "reading a reply");
        uint64_t cookie = get_u64(hdr + 8);
        if (get_u32(hdr) != SIMPLE_REPLY_MAGIC || get_u32(hdr + 4) != 0 ||
            cookie >= sent) {
            die("bad reply: magic 0x%x, error %u, cookie %llu", get_u32(hdr),
                get_u32(hdr + 4), (unsigned long long)cookie);
        }
        tls_read(got, READ_SIZE, "reading READ data");
        uint64_t offset = (cookie % blocks) * READ_SIZE;
        if (memcmp(got, want + offset, READ_SIZE) != 0) {
            size_t at = 0;
            while (got[at] == want[offset + at]) {
                at++;
            }
            die("READ at %llu returned the wrong data from byte %zu on "
                "(reply %llu, after %u key updates)",
                (unsigned long long)offset, at, (unsigned long long)done,
                updates);
        }
        done++;
        bool more = updates < rekeys || done < stop_after;
        if (updates < rekeys && done % KEY_UPDATE_EVERY == 0 &&
            now_ns() - last_update >= KEY_UPDATE_SPACING_NS) {
            /* The other reads are being answered right now. */
            unsigned flags = updates % 2 == 0 ? GNUTLS_KU_PEER : 0;
            int rc;
            do {
                rc = gnutls_session_key_update(session, flags);
            } while (rc == GNUTLS_E_AGAIN || rc == GNUTLS_E_INTERRUPTED);
            if (rc < 0) {
                die("gnutls_session_key_update: %s", gnutls_strerror(rc));
            }
            updates++;
            if (flags != 0) {
                requests++;
            }
            last_update = now_ns();
            stop_after = done + 4 * QD;
        }
        if (more) {
            send_read(sent, (sent % blocks) * READ_SIZE);
            sent++;
        }
    }

    uint8_t disc[28] = {0};
    put_u32(disc, REQUEST_MAGIC);
    put_u16(disc + 6, CMD_DISC);
    tls_write(disc, sizeof disc, "sending NBD_CMD_DISC");
    gnutls_bye(session, GNUTLS_SHUT_WR);
    close(sock);
    if (server_key_updates != requests) {
        die("sent %u key updates asking the server to update too; it "
            "updated %u times",
            requests, server_key_updates);
    }
    printf("%llu reads of %u bytes verified; %u key updates sent (%u "
           "asking the server to update too), %u received from the "
           "server\n",
           (unsigned long long)done, READ_SIZE, updates, requests,
           server_key_updates);
    free(got);
    free(want);
    gnutls_deinit(session);
    gnutls_certificate_free_credentials(cred);
    return 0;
}
