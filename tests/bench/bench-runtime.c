/* SPDX-License-Identifier: MIT */
/*
 * Runtime micro-benchmark (make bench-runtime): the cost of a coroutine
 * switch, of a cross-loop round trip, and the message rate of a
 * ping-pong over one channel whose reader and writer run on different
 * loops.  Not part of `make check`: the figures depend on the machine.
 */
#include "nbdsrv/chan-sock.h"
#include "nbdsrv/coro-lock.h"
#include "nbdsrv/coro.h"
#include "nbdsrv/loop.h"

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static void yield_forever(void *arg)
{
    volatile unsigned long *n = arg;
    for (;;) {
        (*n)++;
        coro_yield();
    }
}

static double bench_switch(unsigned long iters)
{
    static volatile unsigned long count;
    struct coro *co = coro_new(yield_forever, (void *)&count, NULL);
    coro_enter(co); /* first entry, off the clock */
    double t0 = now_s();
    for (unsigned long i = 0; i < iters; i++) {
        coro_enter(co);
    }
    double t1 = now_s();
    /* Each enter is two switches: into the coroutine and back out. */
    return (t1 - t0) * 1e9 / (double)(2 * iters);
}

static void noop(void *arg)
{
    (void)arg;
}

static double bench_create(unsigned long iters)
{
    double t0 = now_s();
    for (unsigned long i = 0; i < iters; i++) {
        coro_enter(coro_new(noop, NULL, NULL));
    }
    return (now_s() - t0) * 1e9 / (double)iters;
}

struct hop {
    struct loop *a, *b;
    unsigned long iters;
    double seconds;
};

static void hop_entry(void *arg)
{
    struct hop *h = arg;
    coro_move_to(h->b);
    coro_move_to(h->a);
    double t0 = now_s();
    for (unsigned long i = 0; i < h->iters; i++) {
        coro_move_to(h->b);
        coro_move_to(h->a);
    }
    h->seconds = now_s() - t0;
}

struct pingpong {
    struct chan *ch;
    int peer;
    unsigned long iters;
    struct co_mutex mutex;
    struct co_queue replied;
    unsigned long received; /* GUARDED_BY(mutex) */
    double seconds;
    atomic_int done;
};

static void pp_writer(void *arg)
{
    struct pingpong *p = arg;
    double t0 = now_s();
    for (unsigned long i = 0; i < p->iters; i++) {
        if (chan_write_all(p->ch, &i, sizeof i) < 0) {
            abort();
        }
        co_mutex_lock(&p->mutex);
        while (p->received <= i) {
            co_queue_wait(&p->replied, &p->mutex);
        }
        co_mutex_unlock(&p->mutex);
    }
    p->seconds = now_s() - t0;
}

static void pp_reader(void *arg)
{
    struct pingpong *p = arg;
    for (unsigned long i = 0; i < p->iters; i++) {
        unsigned long v;
        if (chan_read_all(p->ch, &v, sizeof v) < 0 || v != i) {
            abort();
        }
        co_mutex_lock(&p->mutex);
        p->received++;
        co_queue_next(&p->replied);
        co_mutex_unlock(&p->mutex);
    }
}

/* The far end of the socket pair, echoing from a coroutine on loop 1. */
static void pp_echo(void *arg)
{
    struct pingpong *p = arg;
    struct chan *peer = chan_sock_new_take(p->peer);
    char buf[8];
    for (unsigned long i = 0; i < p->iters; i++) {
        if (chan_read_all(peer, buf, sizeof buf) < 0 ||
            chan_write_all(peer, buf, sizeof buf) < 0) {
            abort();
        }
    }
    chan_unref(peer);
    atomic_store(&p->done, 1);
}

int main(int argc, char **argv)
{
    double scale = argc > 1 ? atof(argv[1]) : 1.0;
    unsigned long switch_iters = (unsigned long)(10e6 * scale);
    unsigned long hop_iters = (unsigned long)(100e3 * scale);
    unsigned long pp_iters = (unsigned long)(100e3 * scale);

    printf("coroutine switch:          %8.1f ns\n", bench_switch(switch_iters));
    printf("coroutine create+finish:   %8.1f ns (pooled)\n",
           bench_create(switch_iters / 10));

    struct loop_group group;
    struct err err;
    if (loop_group_start(&group, 2, NULL, &err) < 0) {
        fprintf(stderr, "bench-runtime: %s\n", err.msg);
        return 1;
    }
    struct hop h = {group.loops[0], group.loops[1], hop_iters, 0};
    coro_run_sync(group.loops[0], hop_entry, &h);
    printf("cross-loop round trip:     %8.2f us (loop 0 -> 1 -> 0)\n",
           h.seconds * 1e6 / (double)h.iters);

    /* The same round trip with polling off: every hop blocks and wakes. */
    struct loop_group blocking;
    struct loop_config no_poll = {.poll_ns = LOOP_POLL_NONE};
    if (loop_group_start(&blocking, 2, &no_poll, &err) < 0) {
        fprintf(stderr, "bench-runtime: %s\n", err.msg);
        return 1;
    }
    struct hop hb = {blocking.loops[0], blocking.loops[1], hop_iters / 10, 0};
    coro_run_sync(blocking.loops[0], hop_entry, &hb);
    printf("cross-loop round trip:     %8.2f us (polling off: eventfd "
           "wake-ups)\n",
           hb.seconds * 1e6 / (double)hb.iters);
    loop_group_stop(&blocking);

    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0) {
        perror("socketpair");
        return 1;
    }
    struct pingpong p = {
        .ch = chan_sock_new_take(sv[0]), .peer = sv[1], .iters = pp_iters};
    co_mutex_init(&p.mutex);
    co_queue_init(&p.replied);
    coro_schedule(group.loops[1], coro_new(pp_echo, &p, group.loops[1]));
    coro_schedule(group.loops[0], coro_new(pp_reader, &p, group.loops[0]));
    coro_run_sync(group.loops[1], pp_writer, &p);
    while (atomic_load(&p.done) == 0) {
        usleep(1000);
    }
    printf("channel ping-pong:         %8.0f msg/s (reader on loop 0, "
           "writer and echo on loop 1, 8-byte messages)\n",
           (double)p.iters / p.seconds);

    loop_group_stop(&group);
    co_queue_fini(&p.replied);
    co_mutex_fini(&p.mutex);
    chan_unref(p.ch);
    return 0;
}
