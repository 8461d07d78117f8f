/* SPDX-License-Identifier: MIT */
/*
 * Unit tests of channels: waits that follow the coroutine's loop, reads
 * and writes of one channel from different loops, errors reaching both
 * parked sides, cancellation, pinned mode, and address parsing.
 */
#include "fixture-loops.h"
#include "fixture-main.h"
#include "nbdsrv/chan-sock.h"

#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

struct pair {
    struct chan *ch; /* our end, a channel */
    int peer;        /* the other end, a plain blocking fd */
};

static void pair_open(struct pair *p)
{
    int sv[2];
    ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
    p->ch = chan_sock_new_take(sv[0]);
    ck_assert_ptr_nonnull(p->ch);
    p->peer = sv[1];
}

static void pair_close(struct pair *p)
{
    chan_unref(p->ch);
    if (p->peer >= 0) {
        close(p->peer);
    }
}

static struct loop *armed_on(struct chan *ch, enum chan_dir dir)
{
    return atomic_load(&ch->waiters[dir].armed_on);
}

struct side {
    struct pair *p;
    atomic_int done;
    int result;
    char buf[16];
    struct loop *finished_on;
    struct loop *polled_on[2];
};

static void reader_entry(void *arg)
{
    struct side *s = arg;
    s->result = chan_read_all(s->p->ch, s->buf, 4);
    s->finished_on = loop_current();
    atomic_store(&s->done, 1);
}

static void writer_entry(void *arg)
{
    struct side *s = arg;
    s->result = chan_write_all(s->p->ch, "ping", 4);
    s->finished_on = loop_current();
    atomic_store(&s->done, 1);
}

static bool side_done(void *arg)
{
    return atomic_load(&((struct side *)arg)->done) == 1;
}

struct armed_query {
    struct chan *ch;
    enum chan_dir dir;
    struct loop *loop;
};

static bool is_armed(void *arg)
{
    struct armed_query *q = arg;
    return armed_on(q->ch, q->dir) == q->loop;
}

static void wait_armed(struct chan *ch, enum chan_dir dir, struct loop *loop)
{
    struct armed_query q = {ch, dir, loop};
    ck_assert_msg(fixture_wait_until(is_armed, &q, 5000),
                  "wait not registered on loop %u", loop_index(loop));
}

/*
 * The seed's scenario: a reader parked on loop 0 does not stop a writer
 * on loop 1 from using the same channel; then the reader finishes on 0.
 */
UNIT_TEST("follow", test_chan_reader_and_writer_on_different_loops)
{
    fixture_loops_start(2, 0);
    struct pair p;
    pair_open(&p);
    struct side reader = {.p = &p, .done = 0};
    struct side writer = {.p = &p, .done = 0};

    fixture_spawn_on(0, reader_entry, &reader);
    wait_armed(p.ch, CHAN_IN, fixture_loop(0));

    fixture_spawn_on(1, writer_entry, &writer);
    ck_assert(fixture_wait_until(side_done, &writer, 5000));
    ck_assert_int_eq(writer.result, 0);
    ck_assert_ptr_eq(writer.finished_on, fixture_loop(1));
    char got[4];
    ck_assert_int_eq(read(p.peer, got, 4), 4);
    ck_assert_mem_eq(got, "ping", 4);

    ck_assert_int_eq(atomic_load(&reader.done), 0);
    ck_assert_ptr_eq(armed_on(p.ch, CHAN_IN), fixture_loop(0));
    ck_assert_int_eq(write(p.peer, "pong", 4), 4);
    ck_assert(fixture_wait_until(side_done, &reader, 5000));
    ck_assert_int_eq(reader.result, 0);
    ck_assert_mem_eq(reader.buf, "pong", 4);
    ck_assert_ptr_eq(reader.finished_on, fixture_loop(0));

    pair_close(&p);
    fixture_loops_stop();
}
END_TEST

static void hopping_reader_entry(void *arg)
{
    struct side *s = arg;
    int r = chan_read_all(s->p->ch, s->buf, 2);
    s->polled_on[0] = loop_current();
    coro_move_to(fixture_loop(1));
    r = r < 0 ? r : chan_read_all(s->p->ch, s->buf + 2, 2);
    s->polled_on[1] = loop_current();
    coro_move_to(fixture_loop(0));
    r = r < 0 ? r : chan_read_all(s->p->ch, s->buf + 4, 2);
    s->result = r;
    s->finished_on = loop_current();
    atomic_store(&s->done, 1);
}

UNIT_TEST("follow", test_chan_wait_follows_coroutine_between_loops)
{
    fixture_loops_start(2, 0);
    struct pair p;
    pair_open(&p);
    struct side s = {.p = &p, .done = 0};
    fixture_spawn_on(0, hopping_reader_entry, &s);

    wait_armed(p.ch, CHAN_IN, fixture_loop(0));
    ck_assert_int_eq(write(p.peer, "ab", 2), 2);
    wait_armed(p.ch, CHAN_IN, fixture_loop(1));
    ck_assert_ptr_eq(atomic_load(&p.ch->waiters[CHAN_IN].poll_loop),
                     fixture_loop(1));
    ck_assert_int_eq(write(p.peer, "cd", 2), 2);
    wait_armed(p.ch, CHAN_IN, fixture_loop(0));
    ck_assert_int_eq(write(p.peer, "ef", 2), 2);

    ck_assert(fixture_wait_until(side_done, &s, 5000));
    ck_assert_int_eq(s.result, 0);
    ck_assert_mem_eq(s.buf, "abcdef", 6);
    ck_assert_ptr_eq(s.polled_on[0], fixture_loop(0));
    ck_assert_ptr_eq(s.polled_on[1], fixture_loop(1));
    ck_assert_ptr_eq(s.finished_on, fixture_loop(0));
    pair_close(&p);
    fixture_loops_stop();
}
END_TEST

#define BIG_WRITE (8u * 1024 * 1024)

static void big_writer_entry(void *arg)
{
    struct side *s = arg;
    char *big = calloc(1, BIG_WRITE);
    s->result = chan_write_all(s->p->ch, big, BIG_WRITE);
    free(big);
    atomic_store(&s->done, 1);
}

UNIT_TEST("errors", test_chan_peer_close_fails_parked_reader_and_writer)
{
    fixture_loops_start(2, 0);
    struct pair p;
    pair_open(&p);
    struct side reader = {.p = &p, .done = 0};
    struct side writer = {.p = &p, .done = 0};
    fixture_spawn_on(0, reader_entry, &reader);
    fixture_spawn_on(1, big_writer_entry, &writer);
    wait_armed(p.ch, CHAN_IN, fixture_loop(0));
    wait_armed(p.ch, CHAN_OUT, fixture_loop(1));

    close(p.peer);
    p.peer = -1;
    ck_assert(fixture_wait_until(side_done, &reader, 5000));
    ck_assert(fixture_wait_until(side_done, &writer, 5000));
    ck_assert_int_eq(reader.result, -ECONNRESET);
    ck_assert_msg(writer.result == -EPIPE || writer.result == -ECONNRESET,
                  "writer got %d", writer.result);
    pair_close(&p);
    fixture_loops_stop();
}
END_TEST

UNIT_TEST("errors", test_chan_wake_cancels_parked_reader)
{
    fixture_loops_start(2, 0);
    struct pair p;
    pair_open(&p);
    struct side reader = {.p = &p, .done = 0};
    fixture_spawn_on(1, reader_entry, &reader);
    wait_armed(p.ch, CHAN_IN, fixture_loop(1));
    chan_wake(p.ch, CHAN_IN); /* from the test thread, not a loop */
    ck_assert(fixture_wait_until(side_done, &reader, 5000));
    ck_assert_int_eq(reader.result, -ECANCELED);
    ck_assert_ptr_eq(reader.finished_on, fixture_loop(1));

    /* The channel is still usable afterwards. */
    struct side again = {.p = &p, .done = 0};
    fixture_spawn_on(0, reader_entry, &again);
    wait_armed(p.ch, CHAN_IN, fixture_loop(0));
    ck_assert_int_eq(write(p.peer, "more", 4), 4);
    ck_assert(fixture_wait_until(side_done, &again, 5000));
    ck_assert_int_eq(again.result, 0);
    ck_assert_mem_eq(again.buf, "more", 4);
    pair_close(&p);
    fixture_loops_stop();
}
END_TEST

UNIT_TEST("errors", test_chan_wake_before_wait_is_not_lost)
{
    fixture_loops_start(1, 0);
    struct pair p;
    pair_open(&p);
    struct side reader = {.p = &p, .done = 0};
    chan_wake(p.ch, CHAN_IN);
    fixture_run_on(0, reader_entry, &reader);
    ck_assert_int_eq(reader.result, -ECANCELED);
    pair_close(&p);
    fixture_loops_stop();
}
END_TEST

UNIT_TEST("follow", test_chan_pinned_mode_waits_on_main_loop)
{
    fixture_loops_start(2, 0);
    struct pair p;
    pair_open(&p);
    chan_set_follow(p.ch, false);
    struct side reader = {.p = &p, .done = 0};
    fixture_spawn_on(1, reader_entry, &reader);
    wait_armed(p.ch, CHAN_IN, fixture_loop(0)); /* the main loop */
    ck_assert_int_eq(write(p.peer, "pins", 4), 4);
    ck_assert(fixture_wait_until(side_done, &reader, 5000));
    ck_assert_int_eq(reader.result, 0);
    ck_assert_mem_eq(reader.buf, "pins", 4);
    ck_assert_ptr_eq(reader.finished_on, fixture_loop(1));

    /* chan_wake reaches a wait pinned to another loop, too. */
    struct side r2 = {.p = &p, .done = 0};
    fixture_spawn_on(1, reader_entry, &r2);
    wait_armed(p.ch, CHAN_IN, fixture_loop(0));
    chan_wake(p.ch, CHAN_IN);
    ck_assert(fixture_wait_until(side_done, &r2, 5000));
    ck_assert_int_eq(r2.result, -ECANCELED);
    ck_assert_ptr_eq(r2.finished_on, fixture_loop(1));
    pair_close(&p);
    fixture_loops_stop();
}
END_TEST

UNIT_TEST("errors", test_chan_read_all_eof_distinguishes_clean_eof)
{
    fixture_loops_start(1, 0);
    struct pair p;
    pair_open(&p);
    ck_assert_int_eq(write(p.peer, "xy", 2), 2);
    shutdown(p.peer, SHUT_WR);
    struct side s = {.p = &p, .done = 0};
    /* 2 bytes then EOF in the middle of a 4-byte read: an error. */
    fixture_run_on(0, reader_entry, &s);
    ck_assert_int_eq(s.result, -ECONNRESET);
    pair_close(&p);

    pair_open(&p);
    shutdown(p.peer, SHUT_WR);
    struct side t = {.p = &p, .done = 0};
    fixture_run_on(0, reader_entry, &t);
    ck_assert_int_eq(t.result, -ECONNRESET);
    pair_close(&p);
    fixture_loops_stop();
}
END_TEST

struct some_probe {
    struct chan *ch;
    ssize_t first, second, third;
    char buf[64];
};

static void read_some_entry(void *arg)
{
    struct some_probe *p = arg;
    p->first = chan_read_some(p->ch, p->buf, sizeof p->buf);
    p->second = chan_read_some(p->ch, p->buf + 10, 3);
    p->third = chan_read_some(p->ch, p->buf + 13, sizeof p->buf - 13);
}

UNIT_TEST("errors", test_chan_read_some_returns_what_is_there)
{
    fixture_loops_start(1, 0);
    struct pair p;
    pair_open(&p);
    /* 10 bytes waiting: a 64-byte read_some returns those 10, not 64. */
    ck_assert_int_eq(write(p.peer, "0123456789", 10), 10);
    ck_assert_int_eq(write(p.peer, "abcdef", 6), 6);
    shutdown(p.peer, SHUT_WR);
    struct some_probe probe = {.ch = p.ch};
    fixture_run_on(0, read_some_entry, &probe);
    ck_assert_int_ge(probe.first, 10);
    /* Whether the two writes merged or not, all 16 bytes arrive in order
     * and then end of file reads as 0. */
    ssize_t total = probe.first;
    if (probe.first == 10) {
        ck_assert_int_eq(probe.second, 3);
        ck_assert_int_eq(probe.third, 3);
        total += probe.second + probe.third;
        ck_assert_mem_eq(probe.buf, "0123456789abcdef", 16);
    } else {
        ck_assert_int_eq(probe.first, 16);
        ck_assert_int_eq(probe.second, 0);
    }
    ck_assert_int_eq(total, 16);
    pair_close(&p);
    fixture_loops_stop();
}
END_TEST

struct eof_probe {
    struct chan *ch;
    int result;
};

static void eof_probe_entry(void *arg)
{
    struct eof_probe *e = arg;
    char buf[4];
    e->result = chan_read_all_eof(e->ch, buf, sizeof buf);
}

UNIT_TEST("errors", test_chan_read_all_eof_returns_zero_at_boundary)
{
    fixture_loops_start(1, 0);
    struct pair p;
    pair_open(&p);
    ck_assert_int_eq(write(p.peer, "abcd", 4), 4);
    shutdown(p.peer, SHUT_WR);
    struct eof_probe e = {.ch = p.ch};
    fixture_run_on(0, eof_probe_entry, &e);
    ck_assert_int_eq(e.result, 1);
    fixture_run_on(0, eof_probe_entry, &e);
    ck_assert_int_eq(e.result, 0);
    pair_close(&p);
    fixture_loops_stop();
}
END_TEST

#ifndef NDEBUG
/* Only debug builds assert that a direction has one waiter. */
static void second_reader_entry(void *arg)
{
    struct side *s = arg;
    /* The first reader is parked: a second one is a bug in the caller. */
    char c;
    s->result = chan_read_all(s->p->ch, &c, 1);
}

UNIT_SIGNAL_TEST("errors", test_chan_two_readers_abort_in_debug_builds, SIGABRT)
{
    fixture_loops_start(2, 0);
    struct pair p;
    pair_open(&p);
    struct side first = {.p = &p, .done = 0};
    struct side second = {.p = &p, .done = 0};
    fixture_spawn_on(0, reader_entry, &first);
    wait_armed(p.ch, CHAN_IN, fixture_loop(0));
    fixture_run_on(1, second_reader_entry, &second);
}
END_TEST
#endif

UNIT_TEST("sock", test_chan_tcp_connect_and_transfer)
{
    fixture_loops_start(2, 0);
    const char *addrs[] = {"127.0.0.1:0", "[::1]:0", "localhost:0"};
    for (size_t i = 0; i < ARRAY_SIZE(addrs); i++) {
        struct sock_addr addr;
        struct err err;
        ck_assert_msg(sock_addr_parse(addrs[i], &addr, &err) == 0, "%s",
                      err.msg);
        int lfd = sock_listen(&addr, 4, &err);
        ck_assert_msg(lfd >= 0, "%s", err.msg);
        addr.len = sizeof addr.ss;
        getsockname(lfd, (struct sockaddr *)&addr.ss, &addr.len);

        struct pair p = {.peer = -1};
        struct side s = {.p = &p, .done = 0};
        /* The channel end writes from loop 1. */
        int cfd = socket(addr.ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
        ck_assert_int_eq(connect(cfd, (struct sockaddr *)&addr.ss, addr.len),
                         0);
        int afd = accept(lfd, NULL, NULL);
        ck_assert_int_ge(afd, 0);
        p.ch = chan_sock_new_take(cfd);
        p.peer = afd;
        fixture_run_on(1, writer_entry, &s);
        ck_assert_int_eq(s.result, 0);
        char got[4];
        ck_assert_int_eq(recv(afd, got, 4, MSG_WAITALL), 4);
        ck_assert_mem_eq(got, "ping", 4);
        pair_close(&p);
        close(lfd);
    }
    fixture_loops_stop();
}
END_TEST

struct more_probe {
    struct chan *ch;
    int r1, r2, r3;
};

static void write_more_entry(void *arg)
{
    struct more_probe *m = arg;
    struct iovec a = {(void *)"held", 4};
    struct iovec b = {(void *)"back", 4};
    m->r1 = chan_writev_all_flags(m->ch, &a, 1, CHAN_WRITE_MORE);
    m->r2 = chan_writev_all_flags(m->ch, &b, 1, CHAN_WRITE_MORE);
    m->r3 = chan_push(m->ch);
}

UNIT_TEST("sock", test_chan_write_more_then_push_delivers)
{
    fixture_loops_start(1, 0);
    struct sock_addr addr;
    struct err err;
    ck_assert_int_eq(sock_addr_parse("127.0.0.1:0", &addr, &err), 0);
    int lfd = sock_listen(&addr, 1, &err);
    ck_assert_int_ge(lfd, 0);
    addr.len = sizeof addr.ss;
    getsockname(lfd, (struct sockaddr *)&addr.ss, &addr.len);
    int cfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    ck_assert_int_eq(connect(cfd, (struct sockaddr *)&addr.ss, addr.len), 0);
    int afd = accept(lfd, NULL, NULL);
    struct more_probe m = {.ch = chan_sock_new_take(cfd)};
    fixture_run_on(0, write_more_entry, &m);
    ck_assert_int_eq(m.r1, 0);
    ck_assert_int_eq(m.r2, 0);
    ck_assert_int_eq(m.r3, 0);
    /* Pushed: both pieces arrive without waiting for the cork timer. */
    struct timeval tv = {.tv_sec = 0, .tv_usec = 150000};
    setsockopt(afd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    char got[8];
    ck_assert_int_eq(recv(afd, got, 8, MSG_WAITALL), 8);
    ck_assert_mem_eq(got, "heldback", 8);
    chan_unref(m.ch);
    close(afd);
    close(lfd);
    fixture_loops_stop();
}
END_TEST

struct connect_probe {
    struct sock_addr addr;
    struct chan *ch;
    struct err err;
};

static void connect_entry(void *arg)
{
    struct connect_probe *c = arg;
    c->ch = chan_sock_connect(&c->addr, &c->err);
}

UNIT_TEST("sock", test_chan_sock_connect_refused_names_address)
{
    fixture_loops_start(1, 0);
    struct connect_probe c;
    struct err err;
    /* Bind a port, close it: nobody listens there now. */
    ck_assert_int_eq(sock_addr_parse("127.0.0.1:0", &c.addr, &err), 0);
    int lfd = sock_listen(&c.addr, 1, &err);
    c.addr.len = sizeof c.addr.ss;
    getsockname(lfd, (struct sockaddr *)&c.addr.ss, &c.addr.len);
    close(lfd);
    err_clear(&c.err);
    fixture_run_on(0, connect_entry, &c);
    ck_assert_ptr_null(c.ch);
    ck_assert_int_eq(c.err.errnum, ECONNREFUSED);
    ck_assert_ptr_nonnull(strstr(c.err.msg, "127.0.0.1:"));
    fixture_loops_stop();
}
END_TEST

UNIT_TEST("sock", test_chan_listen_replaces_stale_unix_socket)
{
    char dir[] = "/tmp/test-chan-XXXXXX";
    ck_assert_ptr_nonnull(mkdtemp(dir));
    char spec[128];
    snprintf(spec, sizeof spec, "unix:%s/s.sock", dir);
    struct sock_addr addr;
    struct err err;
    ck_assert_int_eq(sock_addr_parse(spec, &addr, &err), 0);

    /* A listener that died: its file stays, nobody accepts. */
    int dead = sock_listen(&addr, 1, &err);
    ck_assert_int_ge(dead, 0);
    close(dead);
    int fd = sock_listen(&addr, 1, &err);
    ck_assert_msg(fd >= 0, "stale socket not replaced: %s", err.msg);

    /* A live listener is left alone. */
    err_clear(&err);
    ck_assert_int_eq(sock_listen(&addr, 1, &err), -EADDRINUSE);
    ck_assert_ptr_nonnull(strstr(err.msg, "another server is listening"));
    close(fd);

    /* A file that is not a socket is never removed. */
    char path[128];
    snprintf(path, sizeof path, "%s/s.sock", dir);
    unlink(path);
    int plain = open(path, O_WRONLY | O_CREAT | O_EXCL, 0600);
    ck_assert_int_ge(plain, 0);
    close(plain);
    ck_assert_int_eq(sock_listen(&addr, 1, &err), -EADDRINUSE);
    ck_assert_ptr_nonnull(strstr(err.msg, "not a socket"));
    struct stat st;
    ck_assert_int_eq(stat(path, &st), 0);
    ck_assert(S_ISREG(st.st_mode));
    unlink(path);
    rmdir(dir);
}
END_TEST

UNIT_TEST("sock", test_chan_addr_parse_good_and_bad)
{
    struct sock_addr a;
    struct err err;
    char text[128];
    ck_assert_int_eq(sock_addr_parse("127.0.0.1:10809", &a, &err), 0);
    sock_addr_format((struct sockaddr *)&a.ss, a.len, text, sizeof text);
    ck_assert_str_eq(text, "127.0.0.1:10809");
    ck_assert_int_eq(sock_addr_parse("[::1]:99", &a, &err), 0);
    sock_addr_format((struct sockaddr *)&a.ss, a.len, text, sizeof text);
    ck_assert_str_eq(text, "[::1]:99");
    ck_assert_int_eq(sock_addr_parse("unix:/run/x.sock", &a, &err), 0);
    sock_addr_format((struct sockaddr *)&a.ss, a.len, text, sizeof text);
    ck_assert_str_eq(text, "unix:/run/x.sock");

    static const struct {
        const char *text;
        const char *why;
    } bad[] = {
        {"127.0.0.1", "expected HOST:PORT"},
        {"127.0.0.1:", "bad port"},
        {"127.0.0.1:65536", "bad port"},
        {"127.0.0.1:12x", "bad port"},
        {":10809", "missing host"},
        {"::1:10809", "[ADDR]:PORT"},
        {"[::1]10809", "missing ':PORT'"},
        {"[::1:10809", "missing ']'"},
        {"[zz::1]:1", "bad IPv6 address"},
        {"unix:", "empty unix socket path"},
        {"no.such.host.invalid:1", "cannot resolve"},
    };
    for (size_t i = 0; i < ARRAY_SIZE(bad); i++) {
        err_clear(&err);
        ck_assert_int_lt(sock_addr_parse(bad[i].text, &a, &err), 0);
        ck_assert_msg(strstr(err.msg, bad[i].why) != NULL, "%s: got '%s'",
                      bad[i].text, err.msg);
        ck_assert_msg(strstr(err.msg, bad[i].text) != NULL,
                      "%s: message does not name the input: '%s'", bad[i].text,
                      err.msg);
    }
    char longpath[200] = "unix:";
    memset(longpath + 5, 'p', 150);
    longpath[155] = '\0';
    ck_assert_int_eq(sock_addr_parse(longpath, &a, &err), -ENAMETOOLONG);
    ck_assert_ptr_nonnull(strstr(err.msg, "limit is 107"));
}
END_TEST

UNIT_SUITE("chan");
UNIT_TCASE("follow", 60, NULL, NULL);
UNIT_TCASE("errors", 60, NULL, NULL);
UNIT_TCASE("sock", 60, NULL, NULL);
