/* SPDX-License-Identifier: MIT */
/*
 * A pthread mutex that clang's thread-safety analysis knows: fields
 * marked GUARDED_BY(a struct mutex) may be touched only with it held, and
 * `make check-clang` fails where they are not.  For threads, never held
 * across a coroutine yield (coroutines have co_mutex, coro-lock.h).
 * ANY_THREAD.
 */
#ifndef NBDSRV_MUTEX_H
#define NBDSRV_MUTEX_H

#include "nbdsrv/compiler.h"

#include <pthread.h>
#include <time.h>

struct CAPABILITY("mutex") mutex {
    pthread_mutex_t m;
};

static inline void mutex_init(struct mutex *mu)
{
    pthread_mutex_init(&mu->m, NULL);
}

static inline void mutex_destroy(struct mutex *mu)
{
    pthread_mutex_destroy(&mu->m);
}

static inline void mutex_lock(struct mutex *mu)
    ACQUIRE(mu) NO_THREAD_SAFETY_ANALYSIS
{
    pthread_mutex_lock(&mu->m);
}

static inline void mutex_unlock(struct mutex *mu)
    RELEASE(mu) NO_THREAD_SAFETY_ANALYSIS
{
    pthread_mutex_unlock(&mu->m);
}

/* pthread_cond_wait: mu is dropped while waiting and held again after. */
static inline void mutex_cond_wait(pthread_cond_t *cond, struct mutex *mu)
    REQUIRES(mu)
{
    pthread_cond_wait(cond, &mu->m);
}

/* pthread_cond_timedwait; returns its result (0 or ETIMEDOUT). */
static inline int mutex_cond_timedwait(pthread_cond_t *cond, struct mutex *mu,
                                       const struct timespec *deadline)
    REQUIRES(mu)
{
    return pthread_cond_timedwait(cond, &mu->m, deadline);
}

#endif
