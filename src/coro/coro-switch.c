/* SPDX-License-Identifier: MIT */
/*
 * Switching between a coroutine and the context that entered it.
 *
 * Each stack is started once with makecontext/swapcontext (the only place
 * a signal-mask system call happens); the trampoline immediately saves its
 * context with sigsetjmp and jumps back.  From then on every switch is a
 * sigsetjmp on the way out and a siglongjmp to the other side, with the
 * signal mask neither saved nor restored.
 *
 * Sanitizers: ASan is told about each stack change with
 * __sanitizer_start_switch_fiber before the jump and
 * __sanitizer_finish_switch_fiber after it; TSan gets one fiber per
 * coroutine and __tsan_switch_to_fiber before each jump; Valgrind gets
 * every stack registered.  This file is built without _FORTIFY_SOURCE
 * because the checked longjmp refuses to change stacks.
 *
 * The current coroutine lives in a thread-local variable read and written
 * only through noinline functions: a coroutine can resume on another
 * thread, and the compiler must not keep a thread-local address across a
 * switch.
 */
#include "coro-int.h"
#include "nbdsrv/log.h"
#include "nbdsrv/valgrind.h"

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <ucontext.h>

#if NBDSRV_ASAN
#include <sanitizer/asan_interface.h>
#endif
#if NBDSRV_TSAN
#include <sanitizer/tsan_interface.h>
#endif

enum switch_action {
    SWITCH_ENTER = 1,
    SWITCH_YIELD = 2,
    SWITCH_TERMINATE = 3,
};

static __thread struct coro *current_coro;

NOINLINE struct coro *coro_self(void)
{
    struct coro *co = current_coro;
    __asm__ volatile("" ::: "memory");
    return co;
}

NOINLINE static void set_current(struct coro *co)
{
    __asm__ volatile("" ::: "memory");
    current_coro = co;
}

bool coro_in_coroutine(void)
{
    return coro_self() != NULL;
}

/* Announces a switch away from the running context.  `fake_save` is where
 * ASan keeps the leaving context's fake stack. */
static inline void before_switch(void **fake_save, const void *to_stack,
                                 size_t to_size, void *to_fiber)
{
#if NBDSRV_ASAN
    __sanitizer_start_switch_fiber(fake_save, to_stack, to_size);
#else
    (void)fake_save;
    (void)to_stack;
    (void)to_size;
#endif
#if NBDSRV_TSAN
    __tsan_switch_to_fiber(to_fiber, 0);
#else
    (void)to_fiber;
#endif
}

/* Announces arrival; records the stack we came from. */
static inline void after_switch(void *fake_saved, const void **from_stack,
                                size_t *from_size)
{
#if NBDSRV_ASAN
    __sanitizer_finish_switch_fiber(fake_saved, from_stack, from_size);
#else
    (void)fake_saved;
    (void)from_stack;
    (void)from_size;
#endif
}

/* Leaves the coroutine for its caller; returns when it is entered again. */
static void switch_to_caller(struct coro *co, enum switch_action action)
{
    if (sigsetjmp(co->env, 0) == 0) {
        before_switch(&co->asan_fake_stack, co->caller_stack,
                      co->caller_stack_size, co->tsan_caller_fiber);
        siglongjmp(*co->caller_env, action);
    }
    after_switch(co->asan_fake_stack, &co->caller_stack,
                 &co->caller_stack_size);
}

/* The creating thread parks the new coroutine here for its trampoline. */
static __thread struct coro *starting_coro;

static void trampoline(void)
{
    struct coro *co = starting_coro;
    after_switch(NULL, &co->caller_stack, &co->caller_stack_size);
    switch_to_caller(co, SWITCH_YIELD);
    for (;;) {
        co->entry(co->arg);
        switch_to_caller(co, SWITCH_TERMINATE);
    }
}

int coro_switch_init(struct coro *co)
{
    ucontext_t old_uc, uc;
    if (getcontext(&uc) < 0) {
        return -errno;
    }
    uc.uc_link = NULL;
    uc.uc_stack.ss_sp = co->stack;
    uc.uc_stack.ss_size = co->stack_size;
    uc.uc_stack.ss_flags = 0;
    makecontext(&uc, trampoline, 0);

#if NBDSRV_TSAN
    co->tsan_fiber = __tsan_create_fiber(0);
    co->tsan_caller_fiber = __tsan_get_current_fiber();
#endif
#if NBDSRV_HAVE_VALGRIND
    co->valgrind_stack_id =
        VALGRIND_STACK_REGISTER(co->stack, co->stack + co->stack_size);
#endif

    sigjmp_buf caller;
    void *fake_save = NULL;
    co->caller_env = &caller;
    starting_coro = co;
    if (sigsetjmp(caller, 0) == 0) {
        before_switch(&fake_save, co->stack, co->stack_size, co->tsan_fiber);
        if (swapcontext(&old_uc, &uc) < 0) {
            BUG("swapcontext failed");
        }
    }
    after_switch(fake_save, NULL, NULL);
    starting_coro = NULL;
    co->caller_env = NULL;
    return 0;
}

void coro_switch_fini(struct coro *co)
{
#if NBDSRV_TSAN
    if (co->tsan_fiber != NULL) {
        __tsan_destroy_fiber(co->tsan_fiber);
        co->tsan_fiber = NULL;
    }
#endif
#if NBDSRV_HAVE_VALGRIND
    VALGRIND_STACK_DEREGISTER(co->valgrind_stack_id);
#endif
    (void)co;
}

enum coro_status coro_enter(struct coro *co)
{
    if (coro_self() != NULL) {
        BUG("coro_enter from inside a coroutine");
    }
    if (co->running) {
        BUG("coro_enter of a running coroutine");
    }
    co->running = 1;

    sigjmp_buf caller;
    void *fake_save = NULL;
    co->caller_env = &caller;
#if NBDSRV_TSAN
    co->tsan_caller_fiber = __tsan_get_current_fiber();
#endif
    set_current(co);
    int action = sigsetjmp(caller, 0);
    if (action == 0) {
        before_switch(&fake_save, co->stack, co->stack_size, co->tsan_fiber);
        siglongjmp(co->env, SWITCH_ENTER);
    }
    after_switch(fake_save, NULL, NULL);
    set_current(NULL);
    co->running = 0;
    if (action == SWITCH_TERMINATE) {
        coro_release(co);
        return CORO_TERMINATED;
    }
    return CORO_YIELDED;
}

void coro_yield(void)
{
    struct coro *co = coro_self();
    if (co == NULL) {
        BUG("coro_yield outside a coroutine");
    }
    switch_to_caller(co, SWITCH_YIELD);
}
