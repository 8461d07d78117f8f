/* SPDX-License-Identifier: MIT */
/*
 * The dirty-tracking filter: passes every call down, and first marks
 * what a write, trim or zero touches in the export's dirty bitmaps
 * (dirty-bitmap.h).  The mark comes before the call goes down, so a
 * change is recorded before it is acknowledged, also when it fails
 * half-way (a block marked dirty that did not change costs a backup
 * only a few bytes more).  When the bitmaps changed while the call was
 * down (a checkpoint), it marks again in the new ones once the call is
 * back.  Reads, flushes, caches and maps it leaves NULL, so they pass
 * through (backend.c).
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

/*
 * A change goes down between two marks: marked() takes the generation
 * the first mark returned and marks again where the bitmaps changed
 * while the call was down, then passes the call's result on.
 */
static uint64_t mark(struct backend *b, uint64_t offset, uint64_t len)
{
    return dirty_set_mark(to_dirty(b)->set, offset, len);
}

static int marked(struct backend *b, uint64_t gen, uint64_t offset,
                  uint64_t len, int r)
{
    dirty_set_mark_again(to_dirty(b)->set, gen, offset, len);
    return r;
}

static int dirty_pwrite(struct backend *b, const void *buf, uint32_t len,
                        uint64_t offset, bool fua)
{
    uint64_t gen = mark(b, offset, len);
    return marked(b, gen, offset, len,
                  backend_pwrite(b->lower, buf, len, offset, fua));
}

static int dirty_trim(struct backend *b, uint64_t offset, uint64_t len,
                      bool fua)
{
    uint64_t gen = mark(b, offset, len);
    return marked(b, gen, offset, len,
                  backend_trim(b->lower, offset, len, fua));
}

static int dirty_zero(struct backend *b, uint64_t offset, uint64_t len,
                      unsigned flags, bool fua)
{
    uint64_t gen = mark(b, offset, len);
    return marked(b, gen, offset, len,
                  backend_zero(b->lower, offset, len, flags, fua));
}

static const struct backend_ops dirty_ops = {
    .name = "dirty",
    .close = dirty_close,
    .pwrite = dirty_pwrite,
    .trim = dirty_trim,
    .zero = dirty_zero,
};
