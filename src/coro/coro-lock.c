/* SPDX-License-Identifier: MIT */
/*
 * co_mutex and co_queue.
 *
 * A waiter is queued under the internal lock and then yields; the waker
 * pops it under the same lock and calls coro_wake after dropping it.  The
 * wake may run before the waiter has finished yielding, but it only posts
 * the coroutine to its own loop, and that loop's thread is the one busy
 * yielding it, so the coroutine is entered again only after it left.
 */
#include "nbdsrv/coro-lock.h"

#include "nbdsrv/coro.h"
#include "nbdsrv/log.h"

void co_mutex_init(struct co_mutex *m)
{
    pthread_mutex_init(&m->lock, NULL);
    m->locked = false;
    m->holder = NULL;
    m->head = NULL;
    m->tail = &m->head;
}

void co_mutex_fini(struct co_mutex *m)
{
    if (m->locked || m->head != NULL) {
        BUG("co_mutex_fini of a held mutex");
    }
    pthread_mutex_destroy(&m->lock);
}

void co_mutex_lock(struct co_mutex *m)
{
    struct co_waiter w = {.next = NULL, .co = coro_self()};
    if (w.co == NULL) {
        BUG("co_mutex_lock outside a coroutine");
    }
    pthread_mutex_lock(&m->lock);
    if (!m->locked) {
        m->locked = true;
        m->holder = w.co;
        pthread_mutex_unlock(&m->lock);
        return;
    }
    if (m->holder == w.co) {
        BUG("co_mutex_lock: recursive lock");
    }
    *m->tail = &w;
    m->tail = &w.next;
    pthread_mutex_unlock(&m->lock);
    /* co_mutex_unlock hands the mutex over before waking us. */
    coro_yield();
}

void co_mutex_unlock(struct co_mutex *m)
{
    pthread_mutex_lock(&m->lock);
    if (!m->locked) {
        BUG("co_mutex_unlock of an unlocked mutex");
    }
    struct co_waiter *w = m->head;
    struct coro *next = NULL;
    if (w != NULL) {
        m->head = w->next;
        if (m->head == NULL) {
            m->tail = &m->head;
        }
        next = w->co;
        m->holder = next;
    } else {
        m->locked = false;
        m->holder = NULL;
    }
    pthread_mutex_unlock(&m->lock);
    if (next != NULL) {
        coro_wake(next);
    }
}

void co_queue_init(struct co_queue *q)
{
    pthread_mutex_init(&q->lock, NULL);
    q->head = NULL;
    q->tail = &q->head;
}

void co_queue_fini(struct co_queue *q)
{
    if (q->head != NULL) {
        BUG("co_queue_fini with waiters");
    }
    pthread_mutex_destroy(&q->lock);
}

void co_queue_wait(struct co_queue *q, struct co_mutex *m)
{
    struct co_waiter w = {.next = NULL, .co = coro_self()};
    if (w.co == NULL) {
        BUG("co_queue_wait outside a coroutine");
    }
    pthread_mutex_lock(&q->lock);
    *q->tail = &w;
    q->tail = &w.next;
    pthread_mutex_unlock(&q->lock);
    if (m != NULL) {
        co_mutex_unlock(m);
    }
    coro_yield();
    if (m != NULL) {
        co_mutex_lock(m);
    }
}

static struct co_waiter *pop_locked(struct co_queue *q)
{
    struct co_waiter *w = q->head;
    if (w != NULL) {
        q->head = w->next;
        if (q->head == NULL) {
            q->tail = &q->head;
        }
    }
    return w;
}

bool co_queue_next(struct co_queue *q)
{
    pthread_mutex_lock(&q->lock);
    struct co_waiter *w = pop_locked(q);
    /* Read co before unlocking: once unlocked, w's frame may be gone. */
    struct coro *co = w != NULL ? w->co : NULL;
    pthread_mutex_unlock(&q->lock);
    if (co != NULL) {
        coro_wake(co);
    }
    return co != NULL;
}

unsigned co_queue_restart_all(struct co_queue *q)
{
    pthread_mutex_lock(&q->lock);
    struct co_waiter *list = q->head;
    q->head = NULL;
    q->tail = &q->head;
    /* Waiters stay parked until woken, so their frames outlive the walk. */
    unsigned n = 0;
    while (list != NULL) {
        struct co_waiter *next = list->next;
        struct coro *co = list->co;
        coro_wake(co);
        list = next;
        n++;
    }
    pthread_mutex_unlock(&q->lock);
    return n;
}

bool co_queue_empty(struct co_queue *q)
{
    pthread_mutex_lock(&q->lock);
    bool empty = q->head == NULL;
    pthread_mutex_unlock(&q->lock);
    return empty;
}
