/* SPDX-License-Identifier: MIT */
/* Unit tests of co_mutex and co_queue with waiters on different loops. */
#include "fixture-loops.h"
#include "fixture-main.h"
#include "nbdsrv/coro-lock.h"

#include <check.h>
#include <semaphore.h>
#include <stdatomic.h>
#include <stdlib.h>

#define LOCK_LOOPS 4
#define LOCK_COROS 64
#define LOCK_TOTAL 100000

struct counter {
    struct co_mutex mutex;
    long value;  /* GUARDED_BY(mutex); plain on purpose */
    int holders; /* GUARDED_BY(mutex); must stay 0 or 1 */
    atomic_int bad;
    atomic_int finished;
};

struct worker {
    struct counter *c;
    unsigned id;
    unsigned rounds;
};

static void lock_worker_entry(void *arg)
{
    struct worker *w = arg;
    struct counter *c = w->c;
    for (unsigned i = 0; i < w->rounds; i++) {
        co_mutex_lock(&c->mutex);
        if (++c->holders != 1) {
            atomic_fetch_add(&c->bad, 1);
        }
        long v = c->value;
        if (i % 8 == 0) {
            /* Let others queue up behind us... */
            fixture_yield_now();
        }
        if (i % 32 == 0) {
            /* ...and sometimes hold the lock while changing loops. */
            coro_move_to(fixture_loop((w->id + i) % LOCK_LOOPS));
        }
        c->value = v + 1;
        c->holders--;
        co_mutex_unlock(&c->mutex);
    }
    atomic_fetch_add(&c->finished, 1);
}

static bool workers_finished(void *arg)
{
    return atomic_load(&((struct counter *)arg)->finished) == LOCK_COROS;
}

UNIT_TEST("mutex", test_coro_lock_mutex_counter_exact_across_loops)
{
    fixture_loops_start(LOCK_LOOPS, 0);
    struct counter c = {.value = 0};
    co_mutex_init(&c.mutex);
    static struct worker workers[LOCK_COROS];
    unsigned total = 0;
    for (unsigned i = 0; i < LOCK_COROS; i++) {
        workers[i].c = &c;
        workers[i].id = i;
        workers[i].rounds =
            LOCK_TOTAL / LOCK_COROS + (i < LOCK_TOTAL % LOCK_COROS ? 1 : 0);
        total += workers[i].rounds;
    }
    ck_assert_uint_eq(total, LOCK_TOTAL);
    for (unsigned i = 0; i < LOCK_COROS; i++) {
        fixture_spawn_on(i % LOCK_LOOPS, lock_worker_entry, &workers[i]);
    }
    ck_assert(fixture_wait_until(workers_finished, &c, 60000));
    ck_assert_int_eq(atomic_load(&c.bad), 0);
    ck_assert_int_eq(c.value, LOCK_TOTAL);
    co_mutex_fini(&c.mutex);
    fixture_loops_stop();
}
END_TEST

struct fifo {
    struct co_mutex mutex;
    int order[3]; /* GUARDED_BY(mutex) */
    int n;        /* GUARDED_BY(mutex) */
    atomic_int queued;
    atomic_int finished;
    atomic_int held; /* the holder has the mutex */
};

struct fifo_arg {
    struct fifo *f;
    int id;
};

static void fifo_holder_entry(void *arg)
{
    struct fifo *f = arg;
    co_mutex_lock(&f->mutex);
    atomic_store(&f->held, 1);
    /* Hold until the three waiters queued (they run on other loops). */
    while (atomic_load(&f->queued) < 3) {
        fixture_yield_now();
    }
    co_mutex_unlock(&f->mutex);
}

static void fifo_waiter_entry(void *arg)
{
    struct fifo_arg *a = arg;
    co_mutex_lock(&a->f->mutex);
    a->f->order[a->f->n++] = a->id;
    co_mutex_unlock(&a->f->mutex);
    atomic_fetch_add(&a->f->finished, 1);
}

static bool waiter_queued(void *arg)
{
    struct co_mutex *m = arg;
    pthread_mutex_lock(&m->lock);
    int n = 0;
    for (struct co_waiter *w = m->head; w != NULL; w = w->next) {
        n++;
    }
    pthread_mutex_unlock(&m->lock);
    static int last;
    bool more = n > last;
    if (more) {
        last = n;
    }
    return more;
}

static bool fifo_held(void *arg)
{
    return atomic_load(&((struct fifo *)arg)->held) == 1;
}

static bool fifo_done(void *arg)
{
    return atomic_load(&((struct fifo *)arg)->finished) == 3;
}

UNIT_TEST("mutex", test_coro_lock_mutex_is_fifo)
{
    fixture_loops_start(2, 0);
    struct fifo f = {.n = 0, .queued = 0, .finished = 0, .held = 0};
    co_mutex_init(&f.mutex);
    fixture_spawn_on(0, fifo_holder_entry, &f);
    ck_assert(fixture_wait_until(fifo_held, &f, 5000));
    struct fifo_arg args[3];
    for (int i = 0; i < 3; i++) {
        args[i].f = &f;
        args[i].id = i;
        /* Queue them one at a time, alternating loops. */
        fixture_spawn_on((unsigned)(i + 1) % 2, fifo_waiter_entry, &args[i]);
        ck_assert(fixture_wait_until(waiter_queued, &f.mutex, 5000));
        atomic_fetch_add(&f.queued, 1);
    }
    ck_assert(fixture_wait_until(fifo_done, &f, 5000));
    ck_assert_int_eq(f.order[0], 0);
    ck_assert_int_eq(f.order[1], 1);
    ck_assert_int_eq(f.order[2], 2);
    co_mutex_fini(&f.mutex);
    fixture_loops_stop();
}
END_TEST

struct gate {
    struct co_mutex mutex;
    struct co_queue queue;
    int tickets; /* GUARDED_BY(mutex): waiters allowed through */
    atomic_int passed;
    atomic_int waiting;
};

static void gate_waiter_entry(void *arg)
{
    struct gate *g = arg;
    co_mutex_lock(&g->mutex);
    while (g->tickets == 0) {
        atomic_fetch_add(&g->waiting, 1);
        co_queue_wait(&g->queue, &g->mutex);
    }
    g->tickets--;
    co_mutex_unlock(&g->mutex);
    atomic_fetch_add(&g->passed, 1);
}

static void gate_open_one_entry(void *arg)
{
    struct gate *g = arg;
    co_mutex_lock(&g->mutex);
    g->tickets = 1;
    ck_assert(co_queue_next(&g->queue));
    co_mutex_unlock(&g->mutex);
}

static void gate_open_all_entry(void *arg)
{
    struct gate *g = arg;
    co_mutex_lock(&g->mutex);
    g->tickets = 9;
    ck_assert_uint_eq(co_queue_restart_all(&g->queue), 9);
    co_mutex_unlock(&g->mutex);
}

static bool ten_waiting(void *arg)
{
    return atomic_load(&((struct gate *)arg)->waiting) == 10;
}

static bool one_passed(void *arg)
{
    return atomic_load(&((struct gate *)arg)->passed) >= 1;
}

static bool all_passed(void *arg)
{
    return atomic_load(&((struct gate *)arg)->passed) == 10;
}

UNIT_TEST("queue", test_coro_lock_queue_next_and_restart_all)
{
    fixture_loops_start(3, 0);
    struct gate g = {.tickets = 0, .passed = 0, .waiting = 0};
    co_mutex_init(&g.mutex);
    co_queue_init(&g.queue);
    for (unsigned i = 0; i < 10; i++) {
        fixture_spawn_on(i % 3, gate_waiter_entry, &g);
    }
    ck_assert(fixture_wait_until(ten_waiting, &g, 5000));
    fixture_run_on(1, gate_open_one_entry, &g);
    ck_assert(fixture_wait_until(one_passed, &g, 5000));
    ck_assert_int_eq(atomic_load(&g.passed), 1);
    ck_assert(!co_queue_empty(&g.queue));
    fixture_run_on(2, gate_open_all_entry, &g);
    ck_assert(fixture_wait_until(all_passed, &g, 5000));
    ck_assert(co_queue_empty(&g.queue));
    co_queue_fini(&g.queue);
    co_mutex_fini(&g.mutex);
    fixture_loops_stop();
}
END_TEST

UNIT_SUITE("coro-lock");
UNIT_TCASE("mutex", 120, NULL, NULL);
UNIT_TCASE("queue", 30, NULL, NULL);
