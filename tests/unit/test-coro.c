/* SPDX-License-Identifier: MIT */
/* Unit tests of coroutines: switching, the pool, stacks, loop moves. */
#include "fixture-loops.h"
#include "fixture-main.h"
#include "nbdsrv/coro-io.h"

#include <check.h>
#include <errno.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

struct steps {
    int count;
    struct coro *seen_self;
};

static void step_entry(void *arg)
{
    struct steps *s = arg;
    s->seen_self = coro_self();
    s->count = 1;
    coro_yield();
    s->count = 2;
    coro_yield();
    s->count = 3;
}

UNIT_TEST("switch", test_coro_enter_yield_terminate)
{
    struct steps s = {0};
    ck_assert_ptr_null(coro_self());
    struct coro *co = coro_new(step_entry, &s, NULL);
    ck_assert_ptr_nonnull(co);
    ck_assert_int_eq(s.count, 0);
    ck_assert_int_eq(coro_enter(co), CORO_YIELDED);
    ck_assert_int_eq(s.count, 1);
    ck_assert_ptr_eq(s.seen_self, co);
    ck_assert_ptr_null(coro_self());
    ck_assert_int_eq(coro_enter(co), CORO_YIELDED);
    ck_assert_int_eq(s.count, 2);
    ck_assert_int_eq(coro_enter(co), CORO_TERMINATED);
    ck_assert_int_eq(s.count, 3);
}
END_TEST

static void noop_entry(void *arg)
{
    *(void **)arg = coro_stack_base(coro_self());
}

UNIT_TEST("stack", test_coro_stack_reused_from_pool)
{
    void *first = NULL;
    void *second = NULL;
    struct coro *co = coro_new(noop_entry, &first, NULL);
    ck_assert_int_eq(coro_enter(co), CORO_TERMINATED);
    unsigned long created = coro_stacks_created();
    co = coro_new(noop_entry, &second, NULL);
    ck_assert_int_eq(coro_enter(co), CORO_TERMINATED);
    ck_assert_ptr_nonnull(first);
    ck_assert_ptr_eq(first, second);
    ck_assert_uint_eq(coro_stacks_created(), created);
}
END_TEST

UNIT_TEST("stack", test_coro_never_entered_is_freed)
{
    void *base = NULL;
    struct coro *co = coro_new(noop_entry, &base, NULL);
    void *stack = coro_stack_base(co);
    coro_free(co);
    unsigned long created = coro_stacks_created();
    co = coro_new(noop_entry, &base, NULL);
    ck_assert_ptr_eq(coro_stack_base(co), stack);
    ck_assert_uint_eq(coro_stacks_created(), created);
    coro_free(co);
}
END_TEST

static void touch_stack_entry(void *arg)
{
    size_t len = *(size_t *)arg;
    volatile char *buf = __builtin_alloca(len);
    for (size_t i = 0; i < len; i += 512) {
        buf[i] = (char)i;
    }
    *(size_t *)arg = 0;
}

UNIT_TEST("stack", test_coro_stack_size_configurable)
{
    ck_assert_int_eq(coro_set_stack_size(1024), -EINVAL);
    ck_assert_int_eq(coro_set_stack_size(1024 * 1024), 0);
    ck_assert_uint_eq(coro_stack_size(), 1024 * 1024);
    /* 700 KiB of locals fit in a 1 MiB stack; the default is 256 KiB. */
    size_t len = 700 * 1024;
    struct coro *co = coro_new(touch_stack_entry, &len, NULL);
    ck_assert_int_eq(coro_enter(co), CORO_TERMINATED);
    ck_assert_uint_eq(len, 0);
    ck_assert_int_eq(coro_set_stack_size(CORO_STACK_DEFAULT), 0);
}
END_TEST

/* Bounded so the compiler accepts it; 1 GiB of frames never fits. */
static NOINLINE unsigned recurse(unsigned depth)
{
    volatile char frame[1024];
    frame[0] = (char)depth;
    if (depth > 1024u * 1024u) {
        return frame[0];
    }
    return recurse(depth + 1) + frame[0];
}

static void overflow_entry(void *arg)
{
    (void)arg;
    recurse(0);
}

UNIT_TEST("stack", test_coro_guard_page_stops_overflow)
{
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        struct sigaction sa = {.sa_handler = SIG_DFL};
        sigaction(SIGSEGV, &sa, NULL);
        sigaction(SIGBUS, &sa, NULL);
        struct coro *co = coro_new(overflow_entry, NULL, NULL);
        coro_enter(co);
        _exit(0); /* not reached if the guard page works */
    }
    int status;
    ck_assert_int_eq(waitpid(pid, &status, 0), pid);
    ck_assert_msg(WIFSIGNALED(status), "child exited with status %d",
                  WEXITSTATUS(status));
    ck_assert_int_eq(WTERMSIG(status), SIGSEGV);
}
END_TEST

struct move_trace {
    struct loop *seen[4];
    struct loop *coro_loop_seen[4];
};

static void move_entry(void *arg)
{
    struct move_trace *t = arg;
    t->seen[0] = loop_current();
    coro_move_to(fixture_loop(1));
    t->seen[1] = loop_current();
    t->coro_loop_seen[1] = coro_loop(coro_self());
    coro_move_to(fixture_loop(0));
    t->seen[2] = loop_current();
    t->coro_loop_seen[2] = coro_loop(coro_self());
}

UNIT_TEST("switch", test_coro_move_between_loops)
{
    fixture_loops_start(2, 0);
    struct move_trace t = {{0}, {0}};
    fixture_run_on(0, move_entry, &t);
    ck_assert_ptr_eq(t.seen[0], fixture_loop(0));
    ck_assert_ptr_eq(t.seen[1], fixture_loop(1));
    ck_assert_ptr_eq(t.coro_loop_seen[1], fixture_loop(1));
    ck_assert_ptr_eq(t.seen[2], fixture_loop(0));
    ck_assert_ptr_eq(t.coro_loop_seen[2], fixture_loop(0));
    fixture_loops_stop();
}
END_TEST

UNIT_SUITE("coro");
UNIT_TCASE("switch", 30, NULL, NULL);
UNIT_TCASE("stack", 30, NULL, NULL);
