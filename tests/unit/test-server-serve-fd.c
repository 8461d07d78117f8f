/* SPDX-License-Identifier: MIT */
/*
 * Unit tests of server_serve_fd: a server started with no listening
 * socket serves one end of a socketpair like an accepted client (the
 * greeting, an option, the close), the connection limits apply to it
 * (one over max-connections is refused with -EBUSY and its fd closed),
 * and server_stop waits for such a connection like any other.
 */
#include "fixture-main.h"
#include "nbdsrv/proto.h"
#include "nbdsrv/server.h"

#include <check.h>
#include <errno.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static struct loop_group loops;
static struct server *srv;

static void start(unsigned max_connections)
{
    struct err err;
    err_clear(&err);
    struct loop_config lc = {0};
    ck_assert_msg(loop_group_start(&loops, 1, &lc, &err) == 0, "%s", err.msg);
    struct server_limits limits = {
        .shutdown_timeout_ns = SERVER_DEFAULT_SHUTDOWN_TIMEOUT_NS,
        .max_connections = max_connections,
    };
    srv = server_new(&limits);
    ck_assert_ptr_nonnull(srv);
    struct export_config exp = {
        .name = "disk", .memory = true, .memory_size = 1 << 20};
    ck_assert_msg(server_add_export(srv, &exp, &err) == 0, "%s", err.msg);
    ck_assert_msg(server_start(srv, &loops, NULL, 0, &err) == 0, "%s", err.msg);
}

static void stop(void)
{
    ck_assert_int_eq(server_stop(srv), 0);
    loop_group_stop(&loops);
    server_free(srv);
}

/* A socketpair whose first end the server serves; returns the other. */
static int serve_pair(int *served)
{
    int sv[2];
    ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
    struct sockaddr_storage peer = {.ss_family = AF_UNIX};
    *served = server_serve_fd(srv, sv[0], &peer, sizeof(sa_family_t));
    return sv[1];
}

static void read_all(int fd, void *buf, size_t len)
{
    size_t done = 0;
    while (done < len) {
        ssize_t n = read(fd, (char *)buf + done, len - done);
        ck_assert_int_gt(n, 0);
        done += (size_t)n;
    }
}

/* Greeting, client flags, NBD_OPT_ABORT, its ACK, then end of file. */
static void haggle_abort(int fd)
{
    uint8_t buf[64];
    uint16_t hs_flags;
    read_all(fd, buf, PROTO_GREETING_SIZE);
    ck_assert_int_eq(proto_decode_greeting(buf, PROTO_GREETING_SIZE, &hs_flags),
                     0);
    ssize_t n =
        proto_encode_client_flags(buf, sizeof buf, PROTO_FLAG_C_FIXED_NEWSTYLE);
    ck_assert_int_eq(write(fd, buf, (size_t)n), n);
    n = proto_build_option(buf, sizeof buf, PROTO_OPT_ABORT, NULL, 0);
    ck_assert_int_eq(write(fd, buf, (size_t)n), n);
    struct proto_option_reply rep;
    read_all(fd, buf, PROTO_OPTION_REPLY_SIZE);
    ck_assert_int_eq(
        proto_decode_option_reply(buf, PROTO_OPTION_REPLY_SIZE, &rep), 0);
    ck_assert_uint_eq(rep.option, PROTO_OPT_ABORT);
    ck_assert_uint_eq(rep.type, PROTO_REP_ACK);
    ck_assert_int_eq(read(fd, buf, 1), 0);
}

UNIT_TEST("serve-fd", test_server_serve_fd_serves_a_socketpair)
{
    start(0);
    int served;
    int fd = serve_pair(&served);
    ck_assert_int_eq(served, 0);
    haggle_abort(fd);
    close(fd);
    stop();
}
END_TEST

UNIT_TEST("serve-fd", test_server_serve_fd_counts_against_the_limits)
{
    start(1);
    int served;
    int first = serve_pair(&served);
    ck_assert_int_eq(served, 0);
    int second = serve_pair(&served);
    ck_assert_int_eq(served, -EBUSY);
    /* Refused: the server closed its end at once. */
    char c;
    ck_assert_int_eq(read(second, &c, 1), 0);
    close(second);
    haggle_abort(first);
    close(first);
    stop();
}
END_TEST

UNIT_SUITE("server-serve-fd");
UNIT_TCASE("serve-fd", 30, NULL, NULL);
