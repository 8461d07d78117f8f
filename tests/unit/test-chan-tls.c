/* SPDX-License-Identifier: MIT */
/*
 * Unit tests of TLS channels: a server-mode and a client-mode channel
 * over a socketpair (PSK credentials written by the test), the handshake
 * of both running at once on two loops, full-duplex transfers with each
 * channel's reader on one loop and its writer on the other, small reads
 * that must be served from a record GnuTLS has already decrypted (the
 * socket holds nothing more, so polling it would hang), close_notify
 * seen as end of file, chan_wake of a parked TLS reader, and a wrong key
 * failing both handshakes with a reason.  X.509 (certificates made with
 * certtool): client-mode verification of the server's name, and a
 * server that requires a client certificate.  Priorities: the cipher
 * that the default strings for a CPU with and without AES-GCM
 * instructions (simulated) negotiate, with each other and with a peer
 * using GnuTLS's NORMAL, and a string given explicitly winning over the
 * CPU.
 */
#include "fixture-files.h"
#include "fixture-loops.h"
#include "fixture-main.h"
#include "nbdsrv/chan-sock.h"
#include "nbdsrv/chan-tls.h"
#include "nbdsrv/tls-priority.h"

#include <check.h>
#include <errno.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static char tmpdir[64];
static char psk_path[128];
static char wrong_path[128];

static void setup(void)
{
    snprintf(tmpdir, sizeof tmpdir, "/tmp/nbdsrv-test-chan-tls.XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(tmpdir));
    snprintf(psk_path, sizeof psk_path, "%s/keys.psk", tmpdir);
    snprintf(wrong_path, sizeof wrong_path, "%s/wrong.psk", tmpdir);
    fixture_write_text(psk_path, "alice:000102030405060708090a0b0c0d0e0f"
                                 "101112131415161718191a1b1c1d1e1f\n");
    fixture_write_text(wrong_path, "alice:ff0102030405060708090a0b0c0d0e0f"
                                   "101112131415161718191a1b1c1d1e1f\n");
}

static void teardown(void)
{
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
    ck_assert_int_eq(system(cmd), 0);
}

/* Two TLS channels joined by a socketpair. */
struct tls_pair {
    struct chan *srv;
    struct chan *cli;
};

/* Joins a server and a client channel made from these credentials. */
static void tls_pair_open_creds(struct tls_pair *p, struct tls_creds *sc,
                                struct tls_creds *cc)
{
    struct err err;
    err_clear(&err);

    int sv[2];
    ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
    struct chan *a = chan_sock_new_take(sv[0]);
    struct chan *b = chan_sock_new_take(sv[1]);
    ck_assert(a != NULL && b != NULL);
    p->srv = chan_tls_new(a, sc, &err);
    ck_assert_msg(p->srv != NULL, "%s", err.msg);
    p->cli = chan_tls_new(b, cc, &err);
    ck_assert_msg(p->cli != NULL, "%s", err.msg);
    ck_assert(chan_is_tls(p->srv) && chan_is_tls(p->cli));
    ck_assert(!chan_is_tls(a));
    /* The channels hold their own references to the credentials. */
    tls_creds_unref(sc);
    tls_creds_unref(cc);
}

static void tls_pair_open(struct tls_pair *p, const char *client_psk)
{
    struct err err;
    err_clear(&err);
    struct tls_config scfg = {.mode = TLS_MODE_REQUIRE, .psk_file = psk_path};
    struct tls_creds *sc = tls_creds_new_server(&scfg, &err);
    ck_assert_msg(sc != NULL, "%s", err.msg);
    struct tls_client_config ccfg = {.psk_file = client_psk,
                                     .psk_identity = "alice"};
    struct tls_creds *cc = tls_creds_new_client(&ccfg, &err);
    ck_assert_msg(cc != NULL, "%s", err.msg);
    tls_pair_open_creds(p, sc, cc);
}

static void tls_pair_close(struct tls_pair *p)
{
    chan_unref(p->srv);
    chan_unref(p->cli);
}

struct job {
    struct chan *ch;
    atomic_int done;
    int result;
    struct err err;
    struct loop *ran_on;
    size_t len;    /* bytes to move */
    unsigned seed; /* pattern */
    size_t piece;  /* read or write size */
};

static bool job_done(void *arg)
{
    return atomic_load(&((struct job *)arg)->done) == 1;
}

static void wait_job(struct job *j)
{
    ck_assert_msg(fixture_wait_until(job_done, j, 20000), "job hangs");
}

static void handshake_entry(void *arg)
{
    struct job *j = arg;
    err_clear(&j->err);
    j->result = chan_tls_handshake(j->ch, &j->err);
    j->ran_on = loop_current();
    atomic_store(&j->done, 1);
}

/* Runs both handshakes at once: server on loop 0, client on loop 1. */
static void handshake_both(struct tls_pair *p, struct job *s, struct job *c)
{
    *s = (struct job){.ch = p->srv};
    *c = (struct job){.ch = p->cli};
    atomic_init(&s->done, 0);
    atomic_init(&c->done, 0);
    fixture_spawn_on(0, handshake_entry, s);
    fixture_spawn_on(1, handshake_entry, c);
    wait_job(s);
    wait_job(c);
}

static unsigned char pattern_byte(unsigned seed, size_t i)
{
    return (unsigned char)(seed * 131 + i * 7 + (i >> 9));
}

/* Writes len pattern bytes in pieces of varying size, as two-element
 * vectors, some with CHAN_WRITE_MORE. */
static void writer_entry(void *arg)
{
    struct job *j = arg;
    unsigned char *buf = malloc(j->len);
    for (size_t i = 0; i < j->len; i++) {
        buf[i] = pattern_byte(j->seed, i);
    }
    size_t off = 0;
    unsigned k = 0;
    int r = 0;
    while (r == 0 && off < j->len) {
        size_t n = j->piece + (k * 977) % (j->piece + 1);
        if (n > j->len - off) {
            n = j->len - off;
        }
        size_t head = n < 16 ? n : 16;
        struct iovec iov[2] = {{buf + off, head}, {buf + off + head, n - head}};
        r = chan_writev_all_flags(j->ch, iov, 2,
                                  (k % 3 == 0) ? CHAN_WRITE_MORE : 0);
        if (k % 3 == 0 && r == 0) {
            r = chan_push(j->ch);
        }
        off += n;
        k++;
    }
    free(buf);
    j->result = r;
    j->ran_on = loop_current();
    atomic_store(&j->done, 1);
}

/* Reads len bytes in pieces of j->piece and checks the pattern. */
static void reader_entry(void *arg)
{
    struct job *j = arg;
    unsigned char *buf = malloc(j->piece);
    size_t off = 0;
    int r = 0;
    while (r == 0 && off < j->len) {
        size_t n = j->piece < j->len - off ? j->piece : j->len - off;
        r = chan_read_all(j->ch, buf, n);
        for (size_t i = 0; r == 0 && i < n; i++) {
            if (buf[i] != pattern_byte(j->seed, off + i)) {
                r = -EILSEQ;
            }
        }
        off += n;
    }
    free(buf);
    j->result = r;
    j->ran_on = loop_current();
    atomic_store(&j->done, 1);
}

static void job_init(struct job *j, struct chan *ch, size_t len, unsigned seed,
                     size_t piece)
{
    *j = (struct job){.ch = ch, .len = len, .seed = seed, .piece = piece};
    atomic_init(&j->done, 0);
}

/* Two loops and a PSK pair with the right key, handshaken on both
 * sides. */
static void psk_pair_ready(struct tls_pair *p)
{
    fixture_loops_start(2, 0);
    tls_pair_open(p, psk_path);
    struct job s, c;
    handshake_both(p, &s, &c);
    ck_assert(s.result == 0 && c.result == 0);
}

static void psk_pair_done(struct tls_pair *p)
{
    tls_pair_close(p);
    fixture_loops_stop();
}

/* writer (an entry that takes a struct job) on loop 1 writes len pattern
 * bytes of seed in pieces of wpiece to the client's channel; then a
 * reader on loop 0 reads them from the server's in pieces of rpiece and
 * checks them. */
static void client_to_server(struct tls_pair *p, coro_entry_fn *writer,
                             size_t len, unsigned seed, size_t wpiece,
                             size_t rpiece)
{
    struct job w, r;
    job_init(&w, p->cli, len, seed, wpiece);
    fixture_run_on(1, writer, &w);
    ck_assert_int_eq(w.result, 0);
    job_init(&r, p->srv, len, seed, rpiece);
    fixture_run_on(0, reader_entry, &r);
    ck_assert_int_eq(r.result, 0);
}

UNIT_TEST("tls", test_chan_tls_handshake_on_two_loops)
{
    fixture_loops_start(2, 0);
    struct tls_pair p;
    tls_pair_open(&p, psk_path);
    struct job s, c;
    handshake_both(&p, &s, &c);
    ck_assert_msg(s.result == 0, "server: %s", s.err.msg);
    ck_assert_msg(c.result == 0, "client: %s", c.err.msg);
    ck_assert_ptr_eq(s.ran_on, fixture_loop(0));
    ck_assert_ptr_eq(c.ran_on, fixture_loop(1));
    char desc[256];
    chan_tls_describe(p.srv, desc, sizeof desc);
    ck_assert_msg(strstr(desc, "PSK identity alice") != NULL, "%s", desc);
    tls_pair_close(&p);
    fixture_loops_stop();
}
END_TEST

/*
 * Both directions of both channels at once: the server reads on loop 0
 * and writes on loop 1, the client the other way round.  8 MiB each way
 * is far more than the socket buffers hold, so every side waits.
 */
UNIT_TEST("tls", test_chan_tls_reader_and_writer_on_different_loops)
{
    fixture_loops_start(2, 0);
    struct tls_pair p;
    tls_pair_open(&p, psk_path);
    struct job s, c;
    handshake_both(&p, &s, &c);
    ck_assert_msg(s.result == 0 && c.result == 0, "%s %s", s.err.msg,
                  c.err.msg);

    const size_t len = 8u * 1024 * 1024;
    struct job srv_read, srv_write, cli_read, cli_write;
    job_init(&srv_read, p.srv, len, 1, 1000);
    job_init(&srv_write, p.srv, len, 2, 40000);
    job_init(&cli_read, p.cli, len, 2, 333);
    job_init(&cli_write, p.cli, len, 1, 70000);
    fixture_spawn_on(0, reader_entry, &srv_read);
    fixture_spawn_on(1, writer_entry, &srv_write);
    fixture_spawn_on(1, reader_entry, &cli_read);
    fixture_spawn_on(0, writer_entry, &cli_write);
    wait_job(&srv_read);
    wait_job(&srv_write);
    wait_job(&cli_read);
    wait_job(&cli_write);
    ck_assert_int_eq(srv_write.result, 0);
    ck_assert_int_eq(cli_write.result, 0);
    ck_assert_int_eq(srv_read.result, 0);
    ck_assert_int_eq(cli_read.result, 0);
    ck_assert_ptr_eq(srv_read.ran_on, fixture_loop(0));
    ck_assert_ptr_eq(srv_write.ran_on, fixture_loop(1));
    ck_assert_ptr_eq(cli_read.ran_on, fixture_loop(1));
    ck_assert_ptr_eq(cli_write.ran_on, fixture_loop(0));
    tls_pair_close(&p);
    fixture_loops_stop();
}
END_TEST

struct bye_job {
    struct chan *ch;
    atomic_int done;
    int result;
};

static void bye_entry(void *arg)
{
    struct bye_job *b = arg;
    b->result = chan_tls_bye(b->ch, true);
    atomic_store(&b->done, 1);
}

static bool bye_done(void *arg)
{
    return atomic_load(&((struct bye_job *)arg)->done) == 1;
}

static void eof_entry(void *arg)
{
    struct job *j = arg;
    char c;
    j->result = chan_read_all_eof(j->ch, &c, 1);
    atomic_store(&j->done, 1);
}

/*
 * One 16 KiB record, then nothing: 100-byte reads must all come from
 * the record GnuTLS decrypted first.  Then close_notify is end of file.
 */
UNIT_TEST("tls", test_chan_tls_small_reads_drain_decrypted_record)
{
    struct tls_pair p;
    psk_pair_ready(&p);
    client_to_server(&p, writer_entry, 16384, 9, 16384, 100);

    struct bye_job b = {.ch = p.cli};
    atomic_init(&b.done, 0);
    fixture_spawn_on(1, bye_entry, &b);
    ck_assert(fixture_wait_until(bye_done, &b, 20000));
    ck_assert_int_eq(b.result, 0);
    struct job e;
    job_init(&e, p.srv, 1, 0, 1);
    fixture_run_on(0, eof_entry, &e);
    ck_assert_int_eq(e.result, 0);
    psk_pair_done(&p);
}
END_TEST

/* Writes len pattern bytes as {16 bytes, NULL/0, the rest}, the shape of
 * a client request without payload next to one with. */
static void empty_iov_writer_entry(void *arg)
{
    struct job *j = arg;
    unsigned char *buf = malloc(j->len);
    for (size_t i = 0; i < j->len; i++) {
        buf[i] = pattern_byte(j->seed, i);
    }
    struct iovec iov[3] = {{buf, 16}, {NULL, 0}, {buf + 16, j->len - 16}};
    j->result = chan_writev_all(j->ch, iov, 3);
    struct iovec tail[2] = {{NULL, 0}, {NULL, 0}};
    if (j->result == 0) {
        j->result = chan_writev_all(j->ch, tail, 2);
    }
    free(buf);
    atomic_store(&j->done, 1);
}

/*
 * An empty iovec with a NULL base is skipped when small pieces are
 * gathered into one record (UBSan flags memcpy from NULL, even of 0).
 */
UNIT_TEST("tls", test_chan_tls_writev_skips_empty_iovecs)
{
    struct tls_pair p;
    psk_pair_ready(&p);
    client_to_server(&p, empty_iov_writer_entry, 100, 5, 100, 100);
    psk_pair_done(&p);
}
END_TEST

UNIT_TEST("tls", test_chan_tls_wake_cancels_parked_reader)
{
    struct tls_pair p;
    psk_pair_ready(&p);
    struct job r;
    job_init(&r, p.srv, 10, 1, 10);
    fixture_spawn_on(1, reader_entry, &r);
    ck_assert(!fixture_wait_until(job_done, &r, 50));
    chan_wake(p.srv, CHAN_IN);
    wait_job(&r);
    ck_assert_int_eq(r.result, -ECANCELED);
    psk_pair_done(&p);
}
END_TEST

UNIT_TEST("tls", test_chan_tls_wrong_key_fails_both_sides)
{
    fixture_loops_start(2, 0);
    struct tls_pair p;
    tls_pair_open(&p, wrong_path);
    struct job s, c;
    handshake_both(&p, &s, &c);
    ck_assert_int_lt(s.result, 0);
    ck_assert_int_lt(c.result, 0);
    ck_assert_msg(s.err.msg[0] != '\0', "no reason given");
    tls_pair_close(&p);
    fixture_loops_stop();
}
END_TEST

/*
 * A CA, a server certificate for localhost and 127.0.0.1 in tmpdir/srv,
 * a client certificate in tmpdir/cli and the CA alone in tmpdir/nocert.
 */
static void make_x509(void)
{
    char cmd[4096];
    snprintf(
        cmd, sizeof cmd,
        "set -e; cd '%s'; mkdir srv cli nocert;"
        "q() { certtool \"$@\" >/dev/null 2>&1; };"
        "q --generate-privkey --key-type=ecdsa --outfile ca-key.pem;"
        "printf 'cn=ca\\nca\\ncert_signing_key\\nexpiration_days=2\\n'"
        " >ca.t;"
        "q --generate-self-signed --load-privkey ca-key.pem --template ca.t"
        " --outfile srv/ca-cert.pem;"
        "cp srv/ca-cert.pem cli/; cp srv/ca-cert.pem nocert/;"
        "printf 'cn=localhost\\ndns_name=localhost\\nip_address=127.0.0.1"
        "\\ntls_www_server\\nsigning_key\\nexpiration_days=2\\n' >srv.t;"
        "printf 'cn=client\\ntls_www_client\\nsigning_key\\n"
        "expiration_days=2\\n' >cli.t;"
        "for w in srv cli; do n=server; [ $w = cli ] && n=client;"
        " q --generate-privkey --key-type=ecdsa --outfile $w/$n-key.pem;"
        " q --generate-certificate --load-privkey $w/$n-key.pem"
        " --load-ca-certificate srv/ca-cert.pem --load-ca-privkey ca-key.pem"
        " --template $w.t --outfile $w/$n-cert.pem; done",
        tmpdir);
    ck_assert_msg(system(cmd) == 0, "certtool failed (is gnutls-bin "
                                    "installed?)");
}

static void x509_pair_open(struct tls_pair *p, const char *client_dir,
                           const char *hostname)
{
    struct err err;
    err_clear(&err);
    char srv_dir[128], cli_dir[128];
    snprintf(srv_dir, sizeof srv_dir, "%s/srv", tmpdir);
    snprintf(cli_dir, sizeof cli_dir, "%s/%s", tmpdir, client_dir);
    struct tls_config scfg = {
        .mode = TLS_MODE_REQUIRE, .certs_dir = srv_dir, .verify_peer = true};
    struct tls_creds *sc = tls_creds_new_server(&scfg, &err);
    ck_assert_msg(sc != NULL, "%s", err.msg);
    struct tls_client_config ccfg = {
        .ca_dir = cli_dir, .hostname = hostname, .verify_peer = true};
    struct tls_creds *cc = tls_creds_new_client(&ccfg, &err);
    ck_assert_msg(cc != NULL, "%s", err.msg);
    tls_pair_open_creds(p, sc, cc);
}

UNIT_TEST("x509", test_chan_tls_x509_client_verifies_server_name)
{
    make_x509();
    fixture_loops_start(2, 0);
    const char *good[] = {"localhost", "127.0.0.1", NULL};
    for (size_t i = 0; i < 3; i++) {
        struct tls_pair p;
        x509_pair_open(&p, "cli", good[i]);
        struct job s, c;
        handshake_both(&p, &s, &c);
        ck_assert_msg(s.result == 0, "server: %s", s.err.msg);
        ck_assert_msg(c.result == 0, "client (%s): %s", good[i], c.err.msg);
        struct job w, r;
        job_init(&w, p.srv, 100000, 3, 5000);
        job_init(&r, p.cli, 100000, 3, 777);
        fixture_spawn_on(1, writer_entry, &w);
        fixture_spawn_on(0, reader_entry, &r);
        wait_job(&w);
        wait_job(&r);
        ck_assert_int_eq(w.result, 0);
        ck_assert_int_eq(r.result, 0);
        tls_pair_close(&p);
    }

    struct tls_pair p;
    x509_pair_open(&p, "cli", "example.com");
    struct job s, c;
    handshake_both(&p, &s, &c);
    ck_assert_int_lt(c.result, 0);
    ck_assert_msg(strstr(c.err.msg, "not trusted") != NULL, "client: %s",
                  c.err.msg);
    tls_pair_close(&p);
    fixture_loops_stop();
}
END_TEST

UNIT_TEST("x509", test_chan_tls_x509_server_requires_client_certificate)
{
    make_x509();
    fixture_loops_start(2, 0);
    struct tls_pair p;
    x509_pair_open(&p, "nocert", "localhost");
    struct job s, c;
    handshake_both(&p, &s, &c);
    ck_assert_int_lt(s.result, 0);
    ck_assert_msg(strstr(s.err.msg, "ertificate") != NULL, "server: %s",
                  s.err.msg);
    if (c.result == 0) {
        /* TLS 1.3: the client finishes before the server has judged its
         * (missing) certificate; the server's alert ends its first read
         * (without the alert this read would hang). */
        struct job r;
        job_init(&r, p.cli, 1, 0, 1);
        fixture_spawn_on(0, reader_entry, &r);
        wait_job(&r);
        ck_assert_int_lt(r.result, 0);
    }
    tls_pair_close(&p);
    fixture_loops_stop();
}
END_TEST

/*
 * PSK handshake between a server using priority string `sp` and a client
 * using `cp`; returns the cipher both sides agree on (static string) and
 * checks that both report the same version and cipher.
 */
static const char *negotiated_cipher(const char *sp, const char *cp)
{
    struct err err;
    err_clear(&err);
    struct tls_config scfg = {
        .mode = TLS_MODE_REQUIRE, .psk_file = psk_path, .priority = sp};
    struct tls_creds *sc = tls_creds_new_server(&scfg, &err);
    ck_assert_msg(sc != NULL, "%s", err.msg);
    struct tls_client_config ccfg = {
        .psk_file = psk_path, .psk_identity = "alice", .priority = cp};
    struct tls_creds *cc = tls_creds_new_client(&ccfg, &err);
    ck_assert_msg(cc != NULL, "%s", err.msg);
    struct tls_pair p;
    tls_pair_open_creds(&p, sc, cc);
    struct job s, c;
    handshake_both(&p, &s, &c);
    ck_assert_msg(s.result == 0, "server: %s", s.err.msg);
    ck_assert_msg(c.result == 0, "client: %s", c.err.msg);
    struct chan_tls_info si, ci;
    chan_tls_get_info(p.srv, &si);
    chan_tls_get_info(p.cli, &ci);
    ck_assert_str_eq(si.version, ci.version);
    ck_assert_str_eq(si.cipher, ci.cipher);
    ck_assert(si.psk && ci.psk);
    tls_pair_close(&p);
    return si.cipher;
}

/*
 * A CPU with AES-GCM instructions: our server and our client agree on
 * AES-GCM, and so does either of them with a GnuTLS peer that keeps
 * NORMAL (which, left to itself, picks ChaCha20 for TLS 1.3 PSK): our
 * server by its own precedence, our client by its order.
 */
UNIT_TEST("priority", test_chan_tls_default_with_aes_negotiates_aes_gcm)
{
    fixture_loops_start(2, 0);
    const char *srv = tls_priority_default(TLS_SIDE_SERVER, true);
    const char *cli = tls_priority_default(TLS_SIDE_CLIENT, true);
    ck_assert_str_eq(negotiated_cipher("NORMAL", "NORMAL"),
                     "CHACHA20-POLY1305");
    ck_assert_str_eq(negotiated_cipher(srv, cli), "AES-128-GCM");
    ck_assert_str_eq(negotiated_cipher(srv, "NORMAL"), "AES-128-GCM");
    ck_assert_str_eq(negotiated_cipher("NORMAL", cli), "AES-128-GCM");
    /* A client that insists on ChaCha20 first still gets AES-GCM. */
    ck_assert_str_eq(negotiated_cipher(srv, "NORMAL:-AES-128-GCM:-AES-256-GCM:"
                                            "+AES-256-GCM:+AES-128-GCM"),
                     "AES-128-GCM");
    fixture_loops_stop();
}
END_TEST

/* Without them: GnuTLS's own choice, ChaCha20 here, on both sides. */
UNIT_TEST("priority", test_chan_tls_default_without_aes_keeps_gnutls_choice)
{
    fixture_loops_start(2, 0);
    const char *srv = tls_priority_default(TLS_SIDE_SERVER, false);
    const char *cli = tls_priority_default(TLS_SIDE_CLIENT, false);
    ck_assert_str_eq(negotiated_cipher(srv, cli), "CHACHA20-POLY1305");
    ck_assert_str_eq(negotiated_cipher(srv, "NORMAL"), "CHACHA20-POLY1305");
    ck_assert_str_eq(negotiated_cipher("NORMAL", cli), "CHACHA20-POLY1305");
    fixture_loops_stop();
}
END_TEST

/*
 * A priority string given to the server is used as given: ChaCha20 only
 * negotiates ChaCha20 with our default client on any CPU, and a server
 * string without precedence lets the client's order win.
 */
UNIT_TEST("priority", test_chan_tls_given_priority_is_honoured)
{
    fixture_loops_start(2, 0);
    const char *cli = tls_priority_choose(TLS_SIDE_CLIENT, NULL);
    ck_assert_str_eq(
        negotiated_cipher("NORMAL:-CIPHER-ALL:+CHACHA20-POLY1305", cli),
        "CHACHA20-POLY1305");
    ck_assert_str_eq(
        negotiated_cipher("NORMAL", "NORMAL:-CIPHER-ALL:+AES-128-CCM"),
        "AES-128-CCM");
    fixture_loops_stop();
}
END_TEST

UNIT_SUITE("chan-tls");
UNIT_TCASE("tls", 120, setup, teardown);
UNIT_TCASE("x509", 120, setup, teardown);
UNIT_TCASE("priority", 120, setup, teardown);
