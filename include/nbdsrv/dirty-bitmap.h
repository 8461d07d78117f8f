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
 * The size and granularity are immutable after open.  The bitmaps
 * themselves are published as immutable lists (struct dirty_list)
 * replaced whole by the changes below, under the set's lock.
 * dirty_set_mark runs on the loops, lock-free, at once with anything but
 * open and the last unref: each bit word is an atomic, set with a
 * relaxed fetch-or, read with relaxed loads.  A reader racing a writer
 * sees the bit either way; the writer sets it before the write goes
 * down, so a write is never acknowledged before its block reads as
 * dirty.
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
ANY_THREAD uint64_t dirty_set_granularity(const struct dirty_set *ds);
ANY_THREAD uint64_t dirty_set_size(const struct dirty_set *ds);
/* Whether the sidecar file is the one at `path` (NULL: in memory). */
ANY_THREAD bool dirty_set_same_file(const struct dirty_set *ds,
                                    const char *path);

/*
 * Marks every block that [offset, offset+len) touches dirty in every
 * bitmap that is not frozen, and returns the set's generation for
 * dirty_set_mark_again.  The range lies inside the image.  Lock-free.
 * Called on a loop thread, or on a thread the set's changers wait for
 * (see dirty_set_reclaim).
 */
LOOP_FN uint64_t dirty_set_mark(struct dirty_set *ds, uint64_t offset,
                                uint64_t len);
/* After the change went down: when the bitmaps changed since `gen` (a
 * checkpoint, a clear), marks the range again in the current ones, so a
 * change that finished after the checkpoint is in its new bitmap. */
LOOP_FN void dirty_set_mark_again(struct dirty_set *ds, uint64_t gen,
                                  uint64_t offset, uint64_t len);

/*
 * A list: the set's bitmaps at one time, in the order they are served,
 * immutable, with a reference (dirty_list_unref).  ANY_THREAD.
 */
struct dirty_list;
ANY_THREAD struct dirty_list *dirty_set_list(struct dirty_set *ds);
ANY_THREAD struct dirty_list *dirty_list_ref(struct dirty_list *l);
ANY_THREAD void dirty_list_unref(struct dirty_list *l); /* NULL ok */
ANY_THREAD unsigned dirty_list_count(const struct dirty_list *l);
ANY_THREAD const char *dirty_list_name(const struct dirty_list *l, unsigned i);
/* Whether bitmap i is frozen: served, no longer marked (a checkpoint). */
ANY_THREAD bool dirty_list_frozen(const struct dirty_list *l, unsigned i);
/* The index of bitmap `name` (len bytes, not NUL-terminated), or -1. */
ANY_THREAD int dirty_list_find(const struct dirty_list *l, const char *name,
                               size_t len);
/* The image size the list's bitmaps cover. */
ANY_THREAD uint64_t dirty_list_size(const struct dirty_list *l);
/*
 * The map of bitmap i of `l` from `offset` (inside the image) for at most
 * `len` bytes (> 0): up to `max` (> 0) runs, the first starting at
 * offset, the last clipped to offset+len and the image's end.  Returns
 * the count.  ANY_THREAD.
 */
ANY_THREAD unsigned dirty_list_map(const struct dirty_list *l, unsigned i,
                                   uint64_t offset, uint64_t len,
                                   struct dirty_run *out, unsigned max);
/* Bytes of bitmap i that are dirty (whole blocks, the last clipped to
 * the image's end).  ANY_THREAD. */
ANY_THREAD uint64_t dirty_list_dirty_bytes(const struct dirty_list *l,
                                           unsigned i);

/*
 * Changes, for the operator (the control socket).  Each is all or
 * nothing, writes the sidecar file (still in use) before it returns, and
 * fails with err naming the bitmap and the cause: -ENOENT (no such
 * bitmap), -EEXIST (the name is taken), -ENOSPC (16 bitmaps), -EINVAL (a
 * bad name), or the file's error.  Serialised by the set's lock.
 * ANY_THREAD; block on the file.  The list they replace is retired, and
 * freed by dirty_set_reclaim.
 *
 *  - create: a new bitmap, clean, marked from now on;
 *  - checkpoint: freezes `freeze` and creates `name`, in one step: every
 *    change that finishes after it is in `name`, every change finished
 *    before it in `freeze`, so a backup can read `freeze` while writes
 *    go on;
 *  - clear: `name` becomes all clean (a change in flight is marked again
 *    when it finishes);
 *  - remove: `name` is no longer served or marked;
 *  - merge: the dirty blocks of `from` become dirty in `into` too.
 */
ANY_THREAD int dirty_set_create(struct dirty_set *ds, const char *name,
                                struct err *err);
ANY_THREAD int dirty_set_checkpoint(struct dirty_set *ds, const char *freeze,
                                    const char *name, struct err *err);
ANY_THREAD int dirty_set_clear(struct dirty_set *ds, const char *name,
                               struct err *err);
ANY_THREAD int dirty_set_remove(struct dirty_set *ds, const char *name,
                                struct err *err);
ANY_THREAD int dirty_set_merge(struct dirty_set *ds, const char *from,
                               const char *into, struct err *err);
/*
 * Frees the lists the changes retired.  The caller promises a grace
 * period since the last change: every thread that marks (the loops)
 * has, since then, been at a point where it was not inside
 * dirty_set_mark or dirty_set_mark_again (a marking call never yields,
 * so one task run on each loop is such a point).  ANY_THREAD.
 */
ANY_THREAD void dirty_set_reclaim(struct dirty_set *ds);

#endif
