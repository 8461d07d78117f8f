/* SPDX-License-Identifier: MIT */
/* Private to the dirty-bitmap files: the set (dirty-bitmap.c) and its
 * sidecar file (dirty-sidecar.c). */
#ifndef NBDSRV_DIRTY_INT_H
#define NBDSRV_DIRTY_INT_H

#include "nbdsrv/dirty-bitmap.h"
#include "nbdsrv/mutex.h"
#include "nbdsrv/refcount.h"

#include <stdatomic.h>
#include <stddef.h>

/*
 * One bitmap: bit b of words[b / 64] covers bytes [b << shift, ...).
 * Reference counted (atomic): each list that holds it has one.  The name
 * is immutable; the words are atomics (see dirty-bitmap.h).
 */
struct dirty_bitmap {
    struct refcount refs;
    char name[DIRTY_NAME_MAX + 1];
    uint64_t nwords;
    atomic_uint_least64_t words[];
};

/*
 * The bitmaps of a set at one time, in the order they are served.
 * Immutable once published; reference counted (atomic): the set holds
 * one on its current list, and each reader that keeps it (a connection's
 * selection) one.  `frozen` bitmaps are served but no longer marked.
 * `next` links the lists the set retired (under the set's lock).
 */
struct dirty_list {
    struct refcount refs;
    uint64_t size;  /* the set's, for maps */
    unsigned shift; /* the set's log2(granularity) */
    unsigned nr;
    uint32_t frozen;                              /* mask of maps[] */
    struct dirty_bitmap *maps[DIRTY_MAX_BITMAPS]; /* each a reference */
    struct dirty_list *next;
};

/*
 * size, granularity, file and the geometry are immutable after
 * dirty_set_open.  `list` is replaced (release) under `lock`, and read
 * (acquire) by anyone; `gen` counts the replacements.  fd is the sidecar
 * file, open and flock()ed until the last unref (-1: in memory).
 */
struct dirty_set {
    struct refcount refs;
    uint64_t size, granularity;
    unsigned shift; /* log2(granularity) */
    uint64_t nbits, nwords;
    char *file; /* owned; NULL: in memory */
    int fd;     /* under lock after open */
    struct mutex lock;
    _Atomic(struct dirty_list *) list;
    atomic_uint_least64_t gen;
    struct dirty_list *retired; /* under lock */
};

/* A new bitmap for `ds` with all bits clear (or all set when `dirty`);
 * NULL when out of memory. */
struct dirty_bitmap *dirty_bitmap_new(const struct dirty_set *ds,
                                      const char *name, size_t len, bool dirty);

/*
 * dirty-sidecar.c.  Loads the bitmaps of ds->fd (an open, locked file of
 * ds->file) into `list` (empty, unpublished) and marks the file in use;
 * an empty file is new, and gets the (empty) list written.  0, or -errno
 * with err naming the file.
 */
int dirty_sidecar_load(struct dirty_set *ds, struct dirty_list *list,
                       struct err *err);
/* Writes `list` to a new file renamed over ds->file, marked clean (or in
 * use, `in_use`), synced with its directory.  0 or -errno with err. */
int dirty_sidecar_save(const struct dirty_set *ds,
                       const struct dirty_list *list, bool in_use,
                       struct err *err);

#endif
