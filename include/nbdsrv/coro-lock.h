/* SPDX-License-Identifier: MIT */
/*
 * Coroutine locks whose waiters may run on different loops.
 *
 * A co_mutex is a FIFO mutex for coroutines: a locked mutex parks the
 * caller; unlock hands the mutex straight to the oldest waiter and wakes
 * it on its own loop.  A co_queue is a list of parked coroutines, woken
 * one at a time or all at once, usually paired with a co_mutex the way a
 * condition variable is.
 *
 * Each keeps its waiter list under an internal pthread mutex that is held
 * only for a few pointer moves and never across a yield (lock order: a
 * co_queue's internal lock before nothing; it is a leaf).
 */
#ifndef NBDSRV_CORO_LOCK_H
#define NBDSRV_CORO_LOCK_H

#include "nbdsrv/affinity.h"

#include <pthread.h>
#include <stdbool.h>

struct coro;

/* One parked coroutine; lives on that coroutine's stack while it waits. */
struct co_waiter {
    struct co_waiter *next;
    struct coro *co;
};

/* Embedded in its owner, which must not free it while it is held. */
struct co_mutex {
    pthread_mutex_t lock;    /* internal; leaf */
    bool locked;             /* GUARDED_BY(lock) */
    struct coro *holder;     /* GUARDED_BY(lock); debug aid */
    struct co_waiter *head;  /* GUARDED_BY(lock): FIFO of waiters */
    struct co_waiter **tail; /* GUARDED_BY(lock) */
};

/* Embedded in its owner. */
struct co_queue {
    pthread_mutex_t lock;    /* internal; leaf */
    struct co_waiter *head;  /* GUARDED_BY(lock) */
    struct co_waiter **tail; /* GUARDED_BY(lock) */
};

ANY_THREAD void co_mutex_init(struct co_mutex *m);
ANY_THREAD void co_mutex_fini(struct co_mutex *m);

/* Takes the mutex, parking the coroutine while another holds it. */
CORO_FN void co_mutex_lock(struct co_mutex *m);

/* Releases the mutex; the oldest waiter, if any, now holds it.  CORO_FN. */
CORO_FN void co_mutex_unlock(struct co_mutex *m);

ANY_THREAD void co_queue_init(struct co_queue *q);
ANY_THREAD void co_queue_fini(struct co_queue *q);

/*
 * Parks the coroutine on the queue.  When `m` is non-NULL it is released
 * after the coroutine is queued and taken again before returning, so a
 * wake sent under `m` cannot be missed.  CORO_FN.
 */
CORO_FN void co_queue_wait(struct co_queue *q, struct co_mutex *m);

/* Wakes the oldest waiter; returns whether there was one.  ANY_THREAD. */
ANY_THREAD bool co_queue_next(struct co_queue *q);

/* Wakes every waiter; returns how many.  ANY_THREAD. */
ANY_THREAD unsigned co_queue_restart_all(struct co_queue *q);

/* True when nobody waits.  ANY_THREAD. */
ANY_THREAD bool co_queue_empty(struct co_queue *q);

#endif
