/* SPDX-License-Identifier: MIT */
/* The storage layer's common code: references, facts, and the checks and
 * serialisation every layer gets at its entry. */

/*
 * Design.  Every public backend_* I/O call lands here first, checks what
 * the contract in backend.h says is checked once for all layers (range,
 * read-only, empty requests, capabilities), takes the layer's co_mutex
 * when its concurrency class is not BACKEND_PARALLEL, and calls the
 * layer's operation.  A filter calls these same functions on the layer
 * below, so each layer of a chain is checked and serialised on its own
 * terms, and a PARALLEL filter over a SERIAL backend serialises only the
 * backend.  On the hot path (a PARALLEL layer) this adds a few compares
 * and one indirect call to each request; nothing is allocated.
 *
 * An operation a filter leaves NULL passes to the layer below, after
 * this layer's checks and under its mutex, as if the filter had called
 * the public function on be->lower itself; so a filter writes only what
 * it changes.  A bottom layer (no lower) has no one to pass to: there
 * NULL keeps the meaning backend.h gives it.
 */
#include "nbdsrv/backend.h"

#include "nbdsrv/coro.h"

#include <errno.h>
#include <stddef.h>

void backend_init(struct backend *be, const struct backend_ops *ops,
                  struct backend *lower_take, uint64_t size, unsigned caps,
                  enum backend_concurrency concurrency)
{
    be->ops = ops;
    refcount_init(&be->refs);
    be->lower = lower_take;
    be->size = size;
    be->caps = caps;
    be->concurrency = concurrency;
    be->chain = concurrency;
    if (lower_take != NULL && lower_take->chain < be->chain) {
        be->chain = lower_take->chain;
    }
    if (concurrency != BACKEND_PARALLEL) {
        co_mutex_init(&be->serial);
    }
}

struct backend *backend_ref(struct backend *be)
{
    refcount_get(&be->refs);
    return be;
}

void backend_unref(struct backend *be)
{
    while (be != NULL) {
        if (!refcount_put(&be->refs)) {
            return;
        }
        struct backend *lower = be->lower;
        be->lower = NULL;
        if (be->concurrency != BACKEND_PARALLEL) {
            co_mutex_fini(&be->serial);
        }
        be->ops->close(be);
        /* The layer below loses the reference the closed filter held. */
        be = lower;
    }
}

uint64_t backend_size(const struct backend *be)
{
    return be->size;
}

unsigned backend_caps(const struct backend *be)
{
    return be->caps;
}

static bool has_cap(const struct backend *be, unsigned cap)
{
    return (be->caps & cap) != 0;
}

/* clang-format off */
bool backend_read_only(const struct backend *be) { return has_cap(be, BACKEND_CAP_READ_ONLY); }
bool backend_can_trim(const struct backend *be) { return has_cap(be, BACKEND_CAP_TRIM); }
bool backend_can_zero(const struct backend *be) { return has_cap(be, BACKEND_CAP_ZERO); }
bool backend_can_fast_zero(const struct backend *be) { return has_cap(be, BACKEND_CAP_FAST_ZERO); }
bool backend_can_cache(const struct backend *be) { return has_cap(be, BACKEND_CAP_CACHE); }
bool backend_can_extents(const struct backend *be) { return has_cap(be, BACKEND_CAP_EXTENTS); }
bool backend_can_multi_conn(const struct backend *be) { return has_cap(be, BACKEND_CAP_MULTI_CONN); }
bool backend_is_rotational(const struct backend *be) { return has_cap(be, BACKEND_CAP_ROTATIONAL); }
/* clang-format on */

enum backend_concurrency backend_concurrency(const struct backend *be)
{
    return be->chain;
}

const char *backend_name(const struct backend *be)
{
    return be->ops->name;
}

bool backend_same_file(const struct backend *be, const char *path)
{
    while (be->lower != NULL) {
        be = be->lower;
    }
    return be->ops->same_file != NULL && be->ops->same_file(be, path);
}

/* Whether [offset, offset+len) lies inside the export. */
static bool in_range(const struct backend *be, uint64_t offset, uint64_t len)
{
    return offset <= be->size && len <= be->size - offset;
}

/* Whether a request that changes [offset, offset+len) goes down: 1, or
 * 0 when it is empty (it succeeds there), -EPERM on a read-only layer,
 * -EINVAL past the end. */
static int check_change(const struct backend *be, uint64_t offset, uint64_t len)
{
    if (be->caps & BACKEND_CAP_READ_ONLY) {
        return -EPERM;
    }
    if (!in_range(be, offset, len)) {
        return -EINVAL;
    }
    return len > 0;
}

/* Takes the layer's mutex unless it may be entered in parallel. */
static inline void enter(struct backend *be)
{
    if (be->concurrency != BACKEND_PARALLEL) {
        co_mutex_lock(&be->serial);
    }
}

static inline void leave(struct backend *be)
{
    if (be->concurrency != BACKEND_PARALLEL) {
        co_mutex_unlock(&be->serial);
    }
}

int backend_pread(struct backend *be, void *buf, uint32_t len, uint64_t offset)
{
    coro_assert_in_coroutine();
    if (!in_range(be, offset, len)) {
        return -EINVAL;
    }
    if (len == 0) {
        return 0;
    }
    enter(be);
    int r = be->ops->pread != NULL ? be->ops->pread(be, buf, len, offset)
                                   : backend_pread(be->lower, buf, len, offset);
    leave(be);
    return r;
}

int backend_pwrite(struct backend *be, const void *buf, uint32_t len,
                   uint64_t offset, bool fua)
{
    coro_assert_in_coroutine();
    int go = check_change(be, offset, len);
    if (go <= 0) {
        return go;
    }
    enter(be);
    int r = be->ops->pwrite != NULL
                ? be->ops->pwrite(be, buf, len, offset, fua)
                : backend_pwrite(be->lower, buf, len, offset, fua);
    leave(be);
    return r;
}

int backend_flush(struct backend *be)
{
    coro_assert_in_coroutine();
    enter(be);
    int r =
        be->ops->flush != NULL ? be->ops->flush(be) : backend_flush(be->lower);
    leave(be);
    return r;
}

int backend_trim(struct backend *be, uint64_t offset, uint64_t len, bool fua)
{
    coro_assert_in_coroutine();
    int go = check_change(be, offset, len);
    if (go <= 0) {
        return go;
    }
    if (!(be->caps & BACKEND_CAP_TRIM) ||
        (be->ops->trim == NULL && be->lower == NULL)) {
        return 0;
    }
    enter(be);
    int r = be->ops->trim != NULL ? be->ops->trim(be, offset, len, fua)
                                  : backend_trim(be->lower, offset, len, fua);
    leave(be);
    return r;
}

int backend_zero(struct backend *be, uint64_t offset, uint64_t len,
                 unsigned flags, bool fua)
{
    coro_assert_in_coroutine();
    int go = check_change(be, offset, len);
    if (go <= 0) {
        return go;
    }
    if (!(be->caps & BACKEND_CAP_ZERO)) {
        return -ENOTSUP;
    }
    enter(be);
    int r = be->ops->zero != NULL
                ? be->ops->zero(be, offset, len, flags, fua)
                : backend_zero(be->lower, offset, len, flags, fua);
    leave(be);
    return r;
}

int backend_cache(struct backend *be, uint64_t offset, uint64_t len)
{
    coro_assert_in_coroutine();
    if (!in_range(be, offset, len)) {
        return -EINVAL;
    }
    if (len == 0 || (be->ops->cache == NULL && be->lower == NULL)) {
        return 0;
    }
    enter(be);
    int r = be->ops->cache != NULL ? be->ops->cache(be, offset, len)
                                   : backend_cache(be->lower, offset, len);
    leave(be);
    return r;
}

int backend_extents_meta(struct backend *be, enum backend_meta meta,
                         uint64_t offset, uint64_t len,
                         struct backend_extent *out, unsigned max)
{
    coro_assert_in_coroutine();
    if (max == 0 || len == 0 || offset >= be->size) {
        return -EINVAL;
    }
    if (len > be->size - offset) {
        len = be->size - offset;
    }
    /* A bottom layer holds all of its data itself. */
    if (meta == BACKEND_META_DEPTH && be->lower == NULL) {
        out[0] = (struct backend_extent){.length = len, .depth = 1};
        return 1;
    }
    if (!(be->caps & BACKEND_CAP_EXTENTS) ||
        (be->ops->extents == NULL && be->lower == NULL)) {
        if (meta != BACKEND_META_ALLOCATION) {
            return -ENOTSUP;
        }
        out[0] = (struct backend_extent){.length = len, .hole = false};
        return 1;
    }
    enter(be);
    int r = be->ops->extents != NULL
                ? be->ops->extents(be, meta, offset, len, out, max)
                : backend_extents_meta(be->lower, meta, offset, len, out, max);
    leave(be);
    return r;
}

int backend_extents(struct backend *be, uint64_t offset, uint64_t len,
                    struct backend_extent *out, unsigned max)
{
    return backend_extents_meta(be, BACKEND_META_ALLOCATION, offset, len, out,
                                max);
}

int backend_range_is_hole(struct backend *be, uint64_t offset, uint64_t len)
{
    coro_assert_in_coroutine();
    if (len == 0 || offset >= be->size || len > be->size - offset) {
        return -EINVAL;
    }
    if (!(be->caps & BACKEND_CAP_EXTENTS)) {
        return 0;
    }
    int r;
    enter(be);
    if (be->ops->range_is_hole != NULL) {
        r = be->ops->range_is_hole(be, offset, len);
    } else if (be->ops->extents != NULL) {
        struct backend_extent ext;
        r = be->ops->extents(be, BACKEND_META_ALLOCATION, offset, len, &ext, 1);
        if (r > 0) {
            r = ext.hole && ext.length >= len;
        }
    } else if (be->lower != NULL) {
        r = backend_range_is_hole(be->lower, offset, len);
    } else {
        r = 0;
    }
    leave(be);
    return r;
}
