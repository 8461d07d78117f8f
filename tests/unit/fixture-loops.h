/* SPDX-License-Identifier: MIT */
/* Test fixture: N running loops, and helpers to run and wait on them. */
#ifndef NBDSRV_FIXTURE_LOOPS_H
#define NBDSRV_FIXTURE_LOOPS_H

#include "nbdsrv/coro.h"
#include "nbdsrv/loop.h"

#include <stdbool.h>

/* Starts n loops (ck_abort on failure); ring_entries 0 is the default. */
void fixture_loops_start(unsigned n, unsigned ring_entries);
/* The same with a full configuration (polling window and so on). */
void fixture_loops_start_config(unsigned n, const struct loop_config *config);
void fixture_loops_stop(void);
struct loop *fixture_loop(unsigned i);

/* Runs fn(arg) in a coroutine on loop i and waits for it to return. */
void fixture_run_on(unsigned i, coro_entry_fn *fn, void *arg);

/* Starts fn(arg) in a coroutine on loop i without waiting. */
void fixture_spawn_on(unsigned i, coro_entry_fn *fn, void *arg);

/* Polls cond(arg) every 100 us for up to `ms`; returns its last value. */
bool fixture_wait_until(bool (*cond)(void *arg), void *arg, unsigned ms);

/* From a coroutine: lets every other ready task of its loop run once. */
void fixture_yield_now(void);

#endif
