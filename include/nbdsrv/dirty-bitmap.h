/* SPDX-License-Identifier: MIT */
/*
 * Dirty-block bitmaps: for each named bitmap of an export, one bit per
 * `granularity` bytes of the image, set when a write, trim or zero
 * touches that block.  A backup tool reads a bitmap (the server serves it
 * as the metadata context qemu:dirty-bitmap:NAME) to copy only what
 * changed since the bitmap began.
 *
 * A set holds the bitmaps of one image and, unless it lives in memory
 * only, the sidecar file that keeps them across restarts (its format is
 * in dirty-sidecar.c and man/nbd-serverd.conf.5, DIRTY BITMAP FILES).
 * While a set is open its file says "in use"; dirty_set_unref's last
 * reference writes the bits back and marks the file clean.  A file found
 * "in use" at open belongs to a daemon that died: every bitmap in it is
 * then loaded as all dirty (a change may have gone unrecorded), and the
 * log says so.
 *
 * Threads.  The set is reference counted (atomically): the tracking
 * filter (backend-dirty.c) holds one, the export that serves it another.
 * The bitmaps' names, count and granularity are immutable after open.
 * dirty_set_mark may run on any thread at once with any other call but
 * open and the last unref: each bit word is an atomic, set with a relaxed
 * fetch-or, read with relaxed loads.  A reader racing a writer sees the
 * bit either way; the writer sets it before the write goes down, so a
 * write is never acknowledged before its block reads as dirty.
 */
#ifndef NBDSRV_DIRTY_BITMAP_H
#define NBDSRV_DIRTY_BITMAP_H

#include "nbdsrv/affinity.h"
#include "nbdsrv/err.h"

#include <stdbool.h>
#include <stdint.h>

/* Bitmaps one export may carry: qemu:dirty-bitmap contexts are selected
 * by bits of a connection's mask, beside the fixed contexts. */
#define DIRTY_MAX_BITMAPS 16u
/* A bitmap's name: 1 to 64 of [A-Za-z0-9._-]. */
#define DIRTY_NAME_MAX 64u
#define DIRTY_DEFAULT_GRANULARITY (64u * 1024)
#define DIRTY_MIN_GRANULARITY 4096u
#define DIRTY_MAX_GRANULARITY (1u << 30)

struct dirty_set;

/* One run of a bitmap's map: `length` bytes all dirty or all clean. */
struct dirty_run {
    uint64_t length;
    bool dirty;
};

/* Whether `name` may name a bitmap.  ANY_THREAD. */
ANY_THREAD bool dirty_name_valid(const char *name);

/*
 * Opens the bitmaps of an image of `size` bytes at `granularity` (a power
 * of two, DIRTY_MIN_ to DIRTY_MAX_GRANULARITY) from the sidecar `file`
 * (NULL: in memory only), creating the file if it does not exist, and
 * adds an empty bitmap for each of `names` the file does not hold yet.
 * A file that was not closed cleanly, or whose image size or granularity
 * differs, is loaded all dirty, with a warning naming the file and why.
 * The file is locked (flock): a second open of it fails.  Marks it in
 * use (written and synced) before returning.  NULL with err naming the
 * file and the cause.  ANY_THREAD; blocks on the file.
 */
ANY_THREAD struct dirty_set *dirty_set_open(const char *file, uint64_t size,
                                            uint64_t granularity,
                                            const char *const *names,
                                            unsigned nr, struct err *err);

ANY_THREAD struct dirty_set *dirty_set_ref(struct dirty_set *ds);
/*
 * Drops a reference; the last writes the bitmaps to the sidecar file
 * (a new file renamed over the old, synced) marked clean, logging a
 * failure, and frees the set.  NULL is allowed.  ANY_THREAD; the last
 * reference blocks on the file.
 */
ANY_THREAD void dirty_set_unref(struct dirty_set *ds);

/* Immutable facts.  ANY_THREAD. */
ANY_THREAD unsigned dirty_set_count(const struct dirty_set *ds);
ANY_THREAD const char *dirty_set_name(const struct dirty_set *ds, unsigned i);
ANY_THREAD uint64_t dirty_set_granularity(const struct dirty_set *ds);
ANY_THREAD uint64_t dirty_set_size(const struct dirty_set *ds);
/* The index of bitmap `name` (len bytes, not NUL-terminated), or -1. */
ANY_THREAD int dirty_set_find(const struct dirty_set *ds, const char *name,
                              size_t len);
/* Whether the sidecar file is the one at `path` (NULL: in memory). */
ANY_THREAD bool dirty_set_same_file(const struct dirty_set *ds,
                                    const char *path);

/* Marks every block that [offset, offset+len) touches dirty in every
 * bitmap.  The range lies inside the image.  ANY_THREAD, lock-free. */
ANY_THREAD void dirty_set_mark(struct dirty_set *ds, uint64_t offset,
                               uint64_t len);

/*
 * The map of bitmap `i` from `offset` (inside the image) for at most
 * `len` bytes (> 0): up to `max` (> 0) runs, the first starting at
 * offset, the last clipped to offset+len and the image's end.  Returns
 * the count.  ANY_THREAD.
 */
ANY_THREAD unsigned dirty_set_map(const struct dirty_set *ds, unsigned i,
                                  uint64_t offset, uint64_t len,
                                  struct dirty_run *out, unsigned max);

/* Bytes of bitmap `i` that are dirty (whole blocks, the last clipped to
 * the image's end).  ANY_THREAD. */
ANY_THREAD uint64_t dirty_set_dirty_bytes(const struct dirty_set *ds,
                                          unsigned i);

#endif
