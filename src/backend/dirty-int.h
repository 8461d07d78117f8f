/* SPDX-License-Identifier: MIT */
/* Private to the dirty-bitmap files: the set (dirty-bitmap.c) and its
 * sidecar file (dirty-sidecar.c). */
#ifndef NBDSRV_DIRTY_INT_H
#define NBDSRV_DIRTY_INT_H

#include "nbdsrv/dirty-bitmap.h"
#include "nbdsrv/refcount.h"

#include <stdatomic.h>
#include <stddef.h>

/* One bitmap: bit b of words[b / 64] covers bytes [b << shift, ...). */
struct dirty_bitmap {
    char name[DIRTY_NAME_MAX + 1]; /* immutable */
    atomic_uint_least64_t *words;  /* nwords of the set; see the header */
};

/*
 * Everything but the words is immutable after dirty_set_open.  fd is the
 * sidecar file, open and flock()ed until the last unref (-1: in memory).
 */
struct dirty_set {
    struct refcount refs;
    uint64_t size, granularity;
    unsigned shift; /* log2(granularity) */
    uint64_t nbits, nwords;
    unsigned nr;
    struct dirty_bitmap maps[DIRTY_MAX_BITMAPS];
    char *file; /* owned; NULL: in memory */
    int fd;
};

/* Adds bitmap `name` with all bits clear (or all set when `dirty`):
 * 0, or -ENOMEM, -ENOSPC (DIRTY_MAX_BITMAPS).  Before the set is shared. */
int dirty_set_add(struct dirty_set *ds, const char *name, size_t len,
                  bool dirty);

/*
 * dirty-sidecar.c.  Loads the bitmaps of ds->fd (an open, locked file of
 * ds->file) into ds and marks the file in use; an empty file is new, and
 * gets the set's bitmaps written.  0, or -errno with err naming the file.
 */
int dirty_sidecar_load(struct dirty_set *ds, struct err *err);
/* Writes the set to a new file renamed over ds->file, marked clean (or
 * in use, `in_use`), synced with its directory.  0 or -errno with err. */
int dirty_sidecar_save(const struct dirty_set *ds, bool in_use,
                       struct err *err);

#endif
