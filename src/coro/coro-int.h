/* SPDX-License-Identifier: MIT */
/* Private to src/coro: the coroutine object and the switch primitives. */
#ifndef NBDSRV_CORO_INT_H
#define NBDSRV_CORO_INT_H

#include "nbdsrv/coro.h"

#include <setjmp.h>
#include <stddef.h>

/*
 * A coroutine.  Owned by itself while it exists: it is created by
 * coro_new, and when its entry function returns, the context that entered
 * it hands it back to the pool.  Only one thread touches the fields below
 * at a time: the thread running it, or the thread that holds it parked
 * (a lock's waiter queue, a channel waiter slot, an inbox); the hand-over
 * between them is a mutex or an acquire/release pair, and each field says
 * which.
 */
struct coro {
    struct loop_task task; /* link in its loop's ready queue or inbox */
    coro_entry_fn *entry;  /* set while idle in the pool or not started */
    void *arg;
    struct loop *loop;    /* the loop it runs on; changes only while it
                             is not running (coro_schedule, coro_move_to) */
    struct loop *move_to; /* set by coro_move_to before it yields; read by
                             the task runner on the same thread */

    sigjmp_buf env;         /* its own context, saved when it switches out */
    sigjmp_buf *caller_env; /* the context of whoever entered it this time */
    int running;            /* debug: 1 while entered */

    char *map; /* mmap'd region: guard page then stack */
    size_t map_size;
    char *stack; /* lowest usable byte, above the guard page */
    size_t stack_size;

    struct coro *pool_next; /* link in a pool list */

    /* Sanitizer and Valgrind bookkeeping, used by coro-switch.c only. */
    void *asan_fake_stack;    /* its own fake stack while switched out */
    const void *caller_stack; /* stack of the context that entered it */
    size_t caller_stack_size;
    void *tsan_fiber;        /* its TSan fiber */
    void *tsan_caller_fiber; /* the TSan fiber of whoever entered it */
    unsigned valgrind_stack_id;
};

/*
 * Prepares the machine context of a coroutine whose stack fields are set:
 * starts the trampoline on the new stack and comes back, so that the
 * first coro_enter is a plain longjmp.  Returns 0 or -errno.
 */
int coro_switch_init(struct coro *co);

/* Releases what coro_switch_init registered (fibers, Valgrind stack). */
void coro_switch_fini(struct coro *co);

/* Hands a coroutine whose entry returned back to the pool. */
void coro_release(struct coro *co);

#endif
