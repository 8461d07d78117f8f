/* SPDX-License-Identifier: MIT */
/* Test fixture: N running loops, and helpers to run and wait on them. */
#include "fixture-loops.h"

#include <check.h>
#include <time.h>

static struct loop_group group;

void fixture_loops_start_config(unsigned n, const struct loop_config *config)
{
    struct err err;
    err_clear(&err);
    int r = loop_group_start(&group, n, config, &err);
    ck_assert_msg(r == 0, "loop_group_start: %s", err.msg);
}

void fixture_loops_start(unsigned n, unsigned ring_entries)
{
    struct loop_config config = {.ring_entries = ring_entries};
    fixture_loops_start_config(n, &config);
}

void fixture_loops_stop(void)
{
    loop_group_stop(&group);
}

struct loop *fixture_loop(unsigned i)
{
    ck_assert_uint_lt(i, group.count);
    return group.loops[i];
}

void fixture_run_on(unsigned i, coro_entry_fn *fn, void *arg)
{
    ck_assert_int_eq(coro_run_sync(fixture_loop(i), fn, arg), 0);
}

void fixture_spawn_on(unsigned i, coro_entry_fn *fn, void *arg)
{
    struct coro *co = coro_new(fn, arg, fixture_loop(i));
    ck_assert_ptr_nonnull(co);
    coro_schedule(fixture_loop(i), co);
}

bool fixture_wait_until(bool (*cond)(void *arg), void *arg, unsigned ms)
{
    for (unsigned waited = 0; waited < ms * 10; waited++) {
        if (cond(arg)) {
            return true;
        }
        struct timespec ts = {.tv_sec = 0, .tv_nsec = 100000};
        nanosleep(&ts, NULL);
    }
    return cond(arg);
}

void fixture_yield_now(void)
{
    coro_wake(coro_self());
    coro_yield();
}
