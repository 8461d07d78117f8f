/* SPDX-License-Identifier: MIT */
/*
 * Stackful coroutines.
 *
 * A coroutine runs its entry function on its own mmap'd stack (with a
 * PROT_NONE guard page below it).  It is entered from a non-coroutine
 * context (a loop's task runner, or a plain thread in tests), runs until
 * it yields or its entry function returns, and then control goes back to
 * whoever entered it.  Finished coroutines keep their stack and context
 * and go back to a pool, so creating one is usually a list pop.
 *
 * A switch is sigsetjmp/siglongjmp without the signal mask: no system
 * call.  ucontext is used once per stack, to start the trampoline.  Every
 * switch is announced to ASan, TSan and Valgrind.
 *
 * A coroutine is on one loop at a time (coro_loop).  It is woken on that
 * loop with coro_wake, from any thread, and moves with coro_move_to.
 */
#ifndef NBDSRV_CORO_H
#define NBDSRV_CORO_H

#include "nbdsrv/affinity.h"
#include "nbdsrv/loop.h"

#include <stdbool.h>
#include <stddef.h>

struct coro;
typedef void coro_entry_fn(void *arg);

/* Smallest stack accepted by coro_set_stack_size: 16 KiB. */
#define CORO_STACK_MIN (16u * 1024)
/* Default usable stack size: 256 KiB (guard page not included). */
#define CORO_STACK_DEFAULT (256u * 1024)

/*
 * Sets the usable stack size of coroutines created from now on, rounded
 * up to whole pages.  Returns 0 or -EINVAL below CORO_STACK_MIN.
 * ANY_THREAD.
 */
ANY_THREAD int coro_set_stack_size(size_t size);
ANY_THREAD size_t coro_stack_size(void);

/*
 * Creates a coroutine that will run fn(arg) on `loop` (which may be NULL
 * for a coroutine entered by hand).  It does not start it: enter it with
 * coro_enter, or queue it with coro_wake / coro_schedule.  Returns NULL
 * with errno set when no stack can be had.  ANY_THREAD.
 */
ANY_THREAD struct coro *coro_new(coro_entry_fn *fn, void *arg,
                                 struct loop *loop);

/*
 * Frees a coroutine that was created but never entered.  (A coroutine
 * that ran frees itself when its entry function returns.)  ANY_THREAD.
 */
ANY_THREAD void coro_free(struct coro *co);

enum coro_status {
    CORO_YIELDED,
    CORO_TERMINATED, /* entry returned; the coroutine went back to the pool */
};

/*
 * Runs `co` until it yields or terminates.  Only from non-coroutine
 * context: coroutines do not nest.  After CORO_TERMINATED `co` is gone.
 */
LOOP_FN enum coro_status coro_enter(struct coro *co);

/* Gives control back to whoever entered the current coroutine.  CORO_FN. */
CORO_FN void coro_yield(void);

/* The running coroutine, or NULL outside coroutine context.  ANY_THREAD. */
ANY_THREAD struct coro *coro_self(void);

/* True inside a coroutine.  ANY_THREAD. */
ANY_THREAD bool coro_in_coroutine(void);

/* The loop the coroutine is on now.  ANY_THREAD. */
ANY_THREAD struct loop *coro_loop(const struct coro *co);

/*
 * Makes a parked (yielded, not yet queued) coroutine runnable on its own
 * loop.  Each park must be matched by exactly one wake.  ANY_THREAD.
 */
ANY_THREAD void coro_wake(struct coro *co);

/*
 * Puts a not-running coroutine on `loop` and queues it there: for a new
 * coroutine or a parked one.  ANY_THREAD.
 */
ANY_THREAD void coro_schedule(struct loop *loop, struct coro *co);

/*
 * Moves the calling coroutine to `loop`: it yields and resumes on that
 * loop's thread.  No io_uring operation of the coroutine may be pending.
 * CORO_FN.
 */
CORO_FN void coro_move_to(struct loop *loop);

/*
 * Runs fn(arg) in a new coroutine on `loop` and waits, blocking the
 * calling thread, until it returns.  For tests and start-up code on
 * non-loop threads.  Returns 0 or -errno.  ANY_THREAD but never from a
 * loop thread.
 */
ANY_THREAD int coro_run_sync(struct loop *loop, coro_entry_fn *fn, void *arg);

/*
 * Pool statistics, for tests: how many coroutines ever got a fresh stack
 * in this process.
 */
ANY_THREAD unsigned long coro_stacks_created(void);

/* Lowest usable address of the coroutine's stack (above the guard page). */
ANY_THREAD void *coro_stack_base(const struct coro *co);

#ifdef NDEBUG
#define coro_assert_in_coroutine() ((void)0)
#else
#define coro_assert_in_coroutine() assert(coro_in_coroutine())
#include <assert.h>
#endif

#endif
