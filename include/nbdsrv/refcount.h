/* SPDX-License-Identifier: MIT */
/*
 * An atomic reference count, the one way every shared object here counts
 * its holders.  ANY_THREAD.
 *
 * Taking a reference is relaxed: the taker already holds one (or the
 * lock that keeps the object alive), so nothing needs ordering.  Dropping
 * one is acq_rel: the release half orders this holder's use of the object
 * before the decrement, and on the last decrement the acquire half makes
 * every other holder's release visible before the object is freed.  (A
 * fence would do the same, but ThreadSanitizer does not model fences.)
 */
#ifndef NBDSRV_REFCOUNT_H
#define NBDSRV_REFCOUNT_H

#include "nbdsrv/log.h"

#include <stdatomic.h>
#include <stdbool.h>

struct refcount {
    atomic_uint n;
};

/* One reference, the creator's. */
static inline void refcount_init(struct refcount *r)
{
    atomic_init(&r->n, 1);
}

static inline void refcount_get(struct refcount *r)
{
    atomic_fetch_add_explicit(&r->n, 1, memory_order_relaxed);
}

/* Drops one; true when it was the last, and the caller frees the object. */
static inline bool refcount_put(struct refcount *r)
{
    unsigned old = atomic_fetch_sub_explicit(&r->n, 1, memory_order_acq_rel);
    if (old == 0) {
        BUG("refcount_put of an object with no reference");
    }
    return old == 1;
}

/* The count now, for tests and assertions only. */
static inline unsigned refcount_read(struct refcount *r)
{
    return atomic_load_explicit(&r->n, memory_order_relaxed);
}

#endif
