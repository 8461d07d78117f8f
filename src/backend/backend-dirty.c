/* SPDX-License-Identifier: MIT */
/*
 * The dirty-tracking filter: passes every call down, and first marks
 * what a write, trim or zero touches in the export's dirty bitmaps
 * (dirty-bitmap.h).  The mark comes before the call goes down, so a
 * change is recorded before it is acknowledged, also when it fails
 * half-way (a block marked dirty that did not change costs a backup
 * only a few bytes more).  When the bitmaps changed while the call was
 * down (a checkpoint), it marks again in the new ones once the call is
 * back.  Reads, flushes and maps pass through.
 *
 * BACKEND_PARALLEL: marking is lock-free.  The filter owns one
 * reference to its set; the export serving the set takes its own
 * (backend_dirty_set).
 */
#include "nbdsrv/backends.h"
#include "nbdsrv/compiler.h"

#include <errno.h>
#include <stdlib.h>

/* Freed by dirty_close with the last reference; immutable after init. */
struct dirty_backend {
    struct backend be; /* be.lower: the tracked layer */
    struct dirty_set *set;
};

static const struct backend_ops dirty_ops;

static struct dirty_backend *to_dirty(struct backend *b)
{
    return container_of(b, struct dirty_backend, be);
}

struct backend *backend_dirty_new(struct backend *lower_take,
                                  struct dirty_set *set_take, struct err *err)
{
    struct dirty_backend *d = calloc(1, sizeof *d);
    if (d == NULL) {
        dirty_set_unref(set_take);
        backend_unref(lower_take);
        err_set(err, ENOMEM, "dirty bitmaps: out of memory");
        return NULL;
    }
    d->set = set_take;
    backend_init(&d->be, &dirty_ops, lower_take, backend_size(lower_take),
                 backend_caps(lower_take), BACKEND_PARALLEL);
    return &d->be;
}

struct dirty_set *backend_dirty_set(struct backend *be)
{
    for (; be != NULL; be = be->lower) {
        if (be->ops == &dirty_ops) {
            return to_dirty(be)->set;
        }
    }
    return NULL;
}

static void dirty_close(struct backend *b)
{
    struct dirty_backend *d = to_dirty(b);
    dirty_set_unref(d->set);
    free(d);
}

static int dirty_pread(struct backend *b, void *buf, uint32_t len,
                       uint64_t offset)
{
    return backend_pread(b->lower, buf, len, offset);
}

static int dirty_pwrite(struct backend *b, const void *buf, uint32_t len,
                        uint64_t offset, bool fua)
{
    struct dirty_set *set = to_dirty(b)->set;
    uint64_t gen = dirty_set_mark(set, offset, len);
    int r = backend_pwrite(b->lower, buf, len, offset, fua);
    dirty_set_mark_again(set, gen, offset, len);
    return r;
}

static int dirty_flush(struct backend *b)
{
    return backend_flush(b->lower);
}

static int dirty_trim(struct backend *b, uint64_t offset, uint64_t len,
                      bool fua)
{
    struct dirty_set *set = to_dirty(b)->set;
    uint64_t gen = dirty_set_mark(set, offset, len);
    int r = backend_trim(b->lower, offset, len, fua);
    dirty_set_mark_again(set, gen, offset, len);
    return r;
}

static int dirty_zero(struct backend *b, uint64_t offset, uint64_t len,
                      unsigned flags, bool fua)
{
    struct dirty_set *set = to_dirty(b)->set;
    uint64_t gen = dirty_set_mark(set, offset, len);
    int r = backend_zero(b->lower, offset, len, flags, fua);
    dirty_set_mark_again(set, gen, offset, len);
    return r;
}

static int dirty_cache(struct backend *b, uint64_t offset, uint64_t len)
{
    return backend_cache(b->lower, offset, len);
}

static int dirty_extents(struct backend *b, enum backend_meta meta,
                         uint64_t offset, uint64_t len,
                         struct backend_extent *out, unsigned max)
{
    return backend_extents_meta(b->lower, meta, offset, len, out, max);
}

static int dirty_range_is_hole(struct backend *b, uint64_t offset, uint64_t len)
{
    return backend_range_is_hole(b->lower, offset, len);
}

static const struct backend_ops dirty_ops = {
    .name = "dirty",
    .close = dirty_close,
    .pread = dirty_pread,
    .pwrite = dirty_pwrite,
    .flush = dirty_flush,
    .trim = dirty_trim,
    .zero = dirty_zero,
    .cache = dirty_cache,
    .extents = dirty_extents,
    .range_is_hole = dirty_range_is_hole,
};
