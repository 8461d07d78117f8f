/* SPDX-License-Identifier: MIT */
/*
 * The server-wide budget of buffer memory (max-buffer-memory): every
 * connection's receive side takes what a request will hold before it
 * allocates anything, and waits while the budget is spent.
 *
 * The fast path is one compare-and-swap on `used`.  A receive side that
 * finds the budget spent registers in `waiters` and sleeps on `wait`;
 * a release that sees waiters wakes them all to try again.  No wake is
 * lost: a waiter counts itself (seq_cst) before its last try, under
 * `lock`, and sleeps without letting go of `lock` in between; a release
 * gives its bytes back (seq_cst) before it reads `waiters`, and wakes
 * under `lock`.  So either the last try sees the bytes or the release
 * sees the waiter and its wake comes after the waiter sleeps.
 */
#include "server-int.h"

void buffer_budget_init(struct buffer_budget *b, uint64_t limit)
{
    atomic_init(&b->used, 0);
    atomic_init(&b->limit, limit);
    atomic_init(&b->waiters, 0);
    co_mutex_init(&b->lock);
    co_queue_init(&b->wait);
}

void buffer_budget_fini(struct buffer_budget *b)
{
    co_queue_fini(&b->wait);
    co_mutex_fini(&b->lock);
}

/* Takes `bytes` if they fit, or if nothing is taken at all (one request
 * larger than the budget must still be served). */
static bool try_take(struct buffer_budget *b, uint64_t bytes)
{
    uint64_t limit = atomic_load_explicit(&b->limit, memory_order_relaxed);
    uint64_t used = atomic_load(&b->used);
    do {
        if (used > 0 && used + bytes > limit) {
            return false;
        }
    } while (!atomic_compare_exchange_weak(&b->used, &used, used + bytes));
    return true;
}

void buffer_budget_take(struct buffer_budget *b, uint64_t bytes)
{
    if (bytes == 0 || try_take(b, bytes)) {
        return;
    }
    co_mutex_lock(&b->lock);
    atomic_fetch_add(&b->waiters, 1);
    while (!try_take(b, bytes)) {
        co_queue_wait(&b->wait, &b->lock);
    }
    atomic_fetch_sub(&b->waiters, 1);
    co_mutex_unlock(&b->lock);
}

void buffer_budget_give(struct buffer_budget *b, uint64_t bytes)
{
    if (bytes == 0) {
        return;
    }
    atomic_fetch_sub(&b->used, bytes);
    if (atomic_load(&b->waiters) > 0) {
        co_mutex_lock(&b->lock);
        co_queue_restart_all(&b->wait);
        co_mutex_unlock(&b->lock);
    }
}

void buffer_budget_set_limit(struct buffer_budget *b, uint64_t limit)
{
    atomic_store_explicit(&b->limit, limit, memory_order_relaxed);
    /* A raised limit may let waiters in; they try again. */
    co_queue_restart_all(&b->wait);
}

uint64_t buffer_budget_used(const struct buffer_budget *b)
{
    return atomic_load_explicit(&b->used, memory_order_relaxed);
}
