/* SPDX-License-Identifier: MIT */
/*
 * Unit tests of the server's TLS policy: STARTTLS from a client built on
 * our own TLS channel, and server_set_tls replacing the credentials while
 * serving (a configuration reload): new connections get the new keys,
 * a connection that started before keeps its session, a failed reload
 * changes nothing, and mode off answers STARTTLS with NBD_REP_ERR_UNSUP;
 * a server_update is all or nothing (credentials staged with exports
 * that fail are never used).
 */
#include "fixture-files.h"
#include "fixture-main.h"
#include "nbdsrv/chan-sock.h"
#include "nbdsrv/chan-tls.h"
#include "nbdsrv/coro.h"
#include "nbdsrv/proto.h"
#include "nbdsrv/server.h"

#include <check.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static char tmpdir[64];
static char key_a[128], key_b[128], image[128];
static struct loop_group loops;
static struct server *srv;
static struct sock_addr addr;

static void setup(void)
{
    snprintf(tmpdir, sizeof tmpdir, "/tmp/nbdsrv-test-server-tls.XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(tmpdir));
    snprintf(key_a, sizeof key_a, "%s/a.psk", tmpdir);
    snprintf(key_b, sizeof key_b, "%s/b.psk", tmpdir);
    snprintf(image, sizeof image, "%s/disk.img", tmpdir);
    fixture_write_text(key_a, "alice:00112233445566778899aabbccddeeff\n");
    fixture_write_text(key_b, "alice:ffeeddccbbaa99887766554433221100\n");
    fixture_write_text(image, "");
    ck_assert_int_eq(truncate(image, 1 << 20), 0);

    struct err err;
    err_clear(&err);
    struct loop_config lc = {0};
    ck_assert_msg(loop_group_start(&loops, 2, &lc, &err) == 0, "%s", err.msg);
    struct server_limits limits = {.handshake_timeout_ns =
                                       SERVER_DEFAULT_HANDSHAKE_TIMEOUT_NS};
    srv = server_new(&limits);
    ck_assert_ptr_nonnull(srv);
    struct export_config exp = {.name = "disk", .path = image};
    ck_assert_msg(server_add_export(srv, &exp, &err) == 0, "%s", err.msg);
    struct tls_config tls = {.mode = TLS_MODE_REQUIRE, .psk_file = key_a};
    ck_assert_msg(server_set_tls(srv, &tls, &err) == 0, "%s", err.msg);

    ck_assert_int_eq(sock_addr_parse("127.0.0.1:0", &addr, &err), 0);
    int fd = sock_listen(&addr, 16, &err);
    ck_assert_msg(fd >= 0, "%s", err.msg);
    addr.len = sizeof addr.ss;
    ck_assert_int_eq(getsockname(fd, (struct sockaddr *)&addr.ss, &addr.len),
                     0);
    ck_assert_msg(server_start(srv, &loops, &fd, 1, &err) == 0, "%s", err.msg);
}

static void teardown(void)
{
    ck_assert_int_eq(server_stop(srv), 0);
    loop_group_stop(&loops);
    server_free(srv);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
    ck_assert_int_eq(system(cmd), 0);
}

/* One client connection, driven from a coroutine on loop 1. */
struct client {
    const char *psk;    /* key file for the handshake */
    uint32_t rep_type;  /* the server's answer to STARTTLS */
    int handshake;      /* chan_tls_handshake's result */
    struct err err;     /* its reason */
    struct chan *tls;   /* the TLS channel after success */
    uint32_t abort_rep; /* answer to NBD_OPT_ABORT over TLS */
};

/* Reads an option reply and skips its data; returns its type or 0. */
static uint32_t read_reply(struct chan *ch, uint32_t option)
{
    uint8_t hdr[PROTO_OPTION_REPLY_SIZE], data[512];
    struct proto_option_reply rep;
    if (chan_read_all(ch, hdr, sizeof hdr) < 0 ||
        proto_decode_option_reply(hdr, sizeof hdr, &rep) < 0 ||
        rep.option != option || rep.length > sizeof data ||
        chan_read_all(ch, data, rep.length) < 0) {
        return 0;
    }
    return rep.type;
}

static void starttls_entry(void *arg)
{
    struct client *c = arg;
    struct err err;
    err_clear(&c->err);
    struct chan *ch = chan_sock_connect(&addr, &err);
    ck_assert_msg(ch != NULL, "%s", err.msg);
    uint8_t buf[64];
    uint16_t hs_flags;
    ck_assert_int_eq(chan_read_all(ch, buf, PROTO_GREETING_SIZE), 0);
    ck_assert_int_eq(proto_decode_greeting(buf, PROTO_GREETING_SIZE, &hs_flags),
                     0);
    ssize_t n = proto_encode_client_flags(
        buf, sizeof buf, PROTO_FLAG_C_FIXED_NEWSTYLE | PROTO_FLAG_C_NO_ZEROES);
    ck_assert_int_eq(chan_write_all(ch, buf, (size_t)n), 0);
    n = proto_build_option(buf, sizeof buf, PROTO_OPT_STARTTLS, NULL, 0);
    ck_assert_int_eq(chan_write_all(ch, buf, (size_t)n), 0);
    c->rep_type = read_reply(ch, PROTO_OPT_STARTTLS);
    if (c->rep_type != PROTO_REP_ACK) {
        chan_unref(ch);
        return;
    }
    struct tls_client_config cfg = {.psk_file = c->psk,
                                    .psk_identity = "alice"};
    struct tls_creds *creds = tls_creds_new_client(&cfg, &err);
    ck_assert_msg(creds != NULL, "%s", err.msg);
    struct chan *tls = chan_tls_new(ch, creds, &err);
    tls_creds_unref(creds);
    ck_assert_msg(tls != NULL, "%s", err.msg);
    c->handshake = chan_tls_handshake(tls, &c->err);
    if (c->handshake < 0) {
        chan_unref(tls);
        return;
    }
    c->tls = tls;
}

/* Ends the haggling politely over TLS: NBD_OPT_ABORT, then the ACK. */
static void abort_entry(void *arg)
{
    struct client *c = arg;
    uint8_t buf[PROTO_OPTION_HEADER_SIZE];
    ssize_t n = proto_build_option(buf, sizeof buf, PROTO_OPT_ABORT, NULL, 0);
    c->abort_rep = 0;
    if (chan_write_all(c->tls, buf, (size_t)n) == 0) {
        c->abort_rep = read_reply(c->tls, PROTO_OPT_ABORT);
    }
    chan_unref(c->tls);
    c->tls = NULL;
}

static void client_run(struct client *c, const char *psk)
{
    *c = (struct client){.psk = psk};
    ck_assert_int_eq(coro_run_sync(loops.loops[1], starttls_entry, c), 0);
}

UNIT_TEST("reload", test_server_tls_reload_keeps_old_sessions)
{
    struct client old, stale, fresh, later;
    client_run(&old, key_a);
    ck_assert_uint_eq(old.rep_type, PROTO_REP_ACK);
    ck_assert_msg(old.handshake == 0, "%s", old.err.msg);

    /* Reload: key B from now on. */
    struct err err;
    err_clear(&err);
    struct tls_config tls = {.mode = TLS_MODE_REQUIRE, .psk_file = key_b};
    ck_assert_msg(server_set_tls(srv, &tls, &err) == 0, "%s", err.msg);

    client_run(&stale, key_a);
    ck_assert_uint_eq(stale.rep_type, PROTO_REP_ACK);
    ck_assert_int_lt(stale.handshake, 0);
    ck_assert_msg(stale.err.msg[0] != '\0', "no reason given");

    client_run(&fresh, key_b);
    ck_assert_msg(fresh.handshake == 0, "%s", fresh.err.msg);
    ck_assert_int_eq(coro_run_sync(loops.loops[0], abort_entry, &fresh), 0);
    ck_assert_uint_eq(fresh.abort_rep, PROTO_REP_ACK);

    /* The connection from before the reload still talks TLS. */
    ck_assert_int_eq(coro_run_sync(loops.loops[0], abort_entry, &old), 0);
    ck_assert_uint_eq(old.abort_rep, PROTO_REP_ACK);

    /* A reload that fails names the file and changes nothing. */
    char missing[160];
    snprintf(missing, sizeof missing, "%s/nosuch.psk", tmpdir);
    struct tls_config bad = {.mode = TLS_MODE_REQUIRE, .psk_file = missing};
    ck_assert_int_eq(server_set_tls(srv, &bad, &err), -ENOENT);
    ck_assert_ptr_nonnull(strstr(err.msg, missing));
    client_run(&later, key_b);
    ck_assert_msg(later.handshake == 0, "%s", later.err.msg);
    ck_assert_int_eq(coro_run_sync(loops.loops[1], abort_entry, &later), 0);
    ck_assert_uint_eq(later.abort_rep, PROTO_REP_ACK);
}
END_TEST

/* Connects with `psk` and ends politely; whether the handshake worked. */
static bool client_works(const char *psk)
{
    struct client c;
    client_run(&c, psk);
    if (c.rep_type != PROTO_REP_ACK || c.handshake != 0) {
        return false;
    }
    ck_assert_int_eq(coro_run_sync(loops.loops[0], abort_entry, &c), 0);
    return c.abort_rep == PROTO_REP_ACK;
}

UNIT_TEST("reload", test_server_update_is_all_or_nothing)
{
    struct err err;
    err_clear(&err);
    char missing[160];
    snprintf(missing, sizeof missing, "%s/nosuch.img", tmpdir);
    struct export_config bad = {.name = "disk", .path = missing};
    struct export_config good = {.name = "disk", .path = image};
    struct tls_config tls_b = {.mode = TLS_MODE_REQUIRE, .psk_file = key_b};

    /* New credentials staged, then exports that fail: nothing changes. */
    struct server_update up = {0};
    ck_assert_msg(server_update_tls(&up, &tls_b, &err) == 0, "%s", err.msg);
    ck_assert_int_eq(server_update_exports(srv, &up, &bad, 1, &err), -ENOENT);
    ck_assert_ptr_nonnull(strstr(err.msg, "export 'disk'"));
    server_update_fini(&up);
    ck_assert(client_works(key_a));
    ck_assert(!client_works(key_b));

    /* Staged but not committed: still nothing. */
    ck_assert_msg(server_update_tls(&up, &tls_b, &err) == 0, "%s", err.msg);
    ck_assert_msg(server_update_exports(srv, &up, &good, 1, &err) == 0, "%s",
                  err.msg);
    ck_assert(client_works(key_a));

    /* The commit puts both parts in force. */
    server_update_commit(srv, &up);
    server_update_fini(&up);
    ck_assert(client_works(key_b));
    ck_assert(!client_works(key_a));
}
END_TEST

UNIT_TEST("reload", test_server_tls_off_answers_starttls_unsup)
{
    struct err err;
    struct tls_config off = {.mode = TLS_MODE_OFF};
    ck_assert_int_eq(server_set_tls(srv, &off, &err), 0);
    struct client c;
    client_run(&c, key_a);
    ck_assert_uint_eq(c.rep_type, PROTO_REP_ERR_UNSUP);
    ck_assert_ptr_null(c.tls);
}
END_TEST

UNIT_SUITE("server-tls");
UNIT_TCASE("reload", 60, setup, teardown);
