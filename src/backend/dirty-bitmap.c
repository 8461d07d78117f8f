/* SPDX-License-Identifier: MIT */
/* Dirty-block bitmaps in memory: marking, maps, lists and their changes,
 * the set's life (see dirty-bitmap.h); the sidecar file is
 * dirty-sidecar.c's. */
#include "dirty-int.h"
#include "nbdsrv/log.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

bool dirty_name_valid(const char *name)
{
    size_t len = strlen(name);
    if (len == 0 || len > DIRTY_NAME_MAX) {
        return false;
    }
    for (size_t i = 0; i < len; i++) {
        char c = name[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
              (c >= '0' && c <= '9') || c == '.' || c == '_' || c == '-')) {
            return false;
        }
    }
    return true;
}

/* ---- Bitmaps and lists ---- */

struct dirty_bitmap *dirty_bitmap_new(const struct dirty_set *ds,
                                      const char *name, size_t len, bool dirty)
{
    struct dirty_bitmap *bm =
        calloc(1, sizeof *bm + ds->nwords * sizeof bm->words[0]);
    if (bm == NULL) {
        return NULL;
    }
    refcount_init(&bm->refs);
    memcpy(bm->name, name, len);
    bm->name[len] = '\0';
    bm->nwords = ds->nwords;
    for (uint64_t w = 0; w < ds->nwords; w++) {
        atomic_init(&bm->words[w], dirty ? ~(uint64_t)0 : 0);
    }
    return bm;
}

static void bitmap_unref(struct dirty_bitmap *bm)
{
    if (bm != NULL && refcount_put(&bm->refs)) {
        free(bm);
    }
}

static struct dirty_list *list_new(uint64_t size, unsigned shift)
{
    struct dirty_list *l = calloc(1, sizeof *l);
    if (l != NULL) {
        refcount_init(&l->refs);
        l->size = size;
        l->shift = shift;
    }
    return l;
}

/* A new list holding what `old` holds (each bitmap one more reference). */
static struct dirty_list *list_copy(const struct dirty_list *old)
{
    struct dirty_list *l = list_new(old->size, old->shift);
    if (l == NULL) {
        return NULL;
    }
    l->nr = old->nr;
    l->frozen = old->frozen;
    for (unsigned i = 0; i < old->nr; i++) {
        refcount_get(&old->maps[i]->refs);
        l->maps[i] = old->maps[i];
    }
    return l;
}

struct dirty_list *dirty_list_ref(struct dirty_list *l)
{
    refcount_get(&l->refs);
    return l;
}

void dirty_list_unref(struct dirty_list *l)
{
    if (l == NULL || !refcount_put(&l->refs)) {
        return;
    }
    for (unsigned i = 0; i < l->nr; i++) {
        bitmap_unref(l->maps[i]);
    }
    free(l);
}

uint64_t dirty_list_size(const struct dirty_list *l)
{
    return l->size;
}

unsigned dirty_list_count(const struct dirty_list *l)
{
    return l->nr;
}

const char *dirty_list_name(const struct dirty_list *l, unsigned i)
{
    return l->maps[i]->name;
}

bool dirty_list_frozen(const struct dirty_list *l, unsigned i)
{
    return (l->frozen >> i) & 1;
}

int dirty_list_find(const struct dirty_list *l, const char *name, size_t len)
{
    for (unsigned i = 0; i < l->nr; i++) {
        if (strlen(l->maps[i]->name) == len &&
            memcmp(l->maps[i]->name, name, len) == 0) {
            return (int)i;
        }
    }
    return -1;
}

/* ---- The set ---- */

/* Frees everything; the file is closed without being written. */
static void set_free(struct dirty_set *ds) NO_THREAD_SAFETY_ANALYSIS
{
    dirty_list_unref(atomic_load(&ds->list));
    while (ds->retired != NULL) {
        struct dirty_list *l = ds->retired;
        ds->retired = l->next;
        dirty_list_unref(l);
    }
    if (ds->fd >= 0) {
        close(ds->fd); /* drops the flock */
    }
    mutex_destroy(&ds->lock);
    free(ds->file);
    free(ds);
}

/* Opens and locks the sidecar file as ds->fd (closing the one before);
 * 0 or -errno with err set. */
static int lock_file(struct dirty_set *ds, struct err *err)
{
    int fd = open(ds->file, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (fd < 0) {
        return err_set_errno(err, errno, "dirty bitmap file %s", ds->file);
    }
    struct stat st;
    int e = fstat(fd, &st) < 0 ? errno : !S_ISREG(st.st_mode) ? -1 : 0;
    if (e == 0 && flock(fd, LOCK_EX | LOCK_NB) < 0) {
        e = errno;
    }
    if (e != 0) {
        close(fd);
        return e < 0 ? err_set(err, EINVAL,
                               "dirty bitmap file %s: not a regular file",
                               ds->file)
               : e == EWOULDBLOCK
                   ? err_set(err, e,
                             "dirty bitmap file %s: in use by another export "
                             "or process (it is locked)",
                             ds->file)
                   : err_set_errno(err, e, "dirty bitmap file %s", ds->file);
    }
    if (ds->fd >= 0) {
        close(ds->fd);
    }
    ds->fd = fd;
    return 0;
}

/*
 * Writes `l` to the file (a new file renamed over it, still in use) and
 * locks the new file in the old one's place: another opener that slipped
 * in between holds it now, and wins.  0 when in memory.
 */
static int persist(struct dirty_set *ds, const struct dirty_list *l,
                   struct err *err)
{
    if (ds->file == NULL) {
        return 0;
    }
    int r = dirty_sidecar_save(ds, l, true, err);
    return r < 0 ? r : lock_file(ds, err);
}

struct dirty_set *dirty_set_open(const char *file, uint64_t size,
                                 uint64_t granularity, const char *const *names,
                                 unsigned nr, struct err *err)
{
    if (granularity < DIRTY_MIN_GRANULARITY ||
        granularity > DIRTY_MAX_GRANULARITY ||
        (granularity & (granularity - 1)) != 0) {
        err_set(err, EINVAL,
                "dirty bitmap granularity %llu: a power of two from %u "
                "to %u is needed",
                (unsigned long long)granularity, DIRTY_MIN_GRANULARITY,
                DIRTY_MAX_GRANULARITY);
        return NULL;
    }
    unsigned shift = (unsigned)__builtin_ctzll(granularity);
    struct dirty_set *ds = calloc(1, sizeof *ds);
    struct dirty_list *l = list_new(size, shift);
    if (ds == NULL || l == NULL) {
        free(ds);
        free(l);
        err_set(err, ENOMEM, "out of memory");
        return NULL;
    }
    refcount_init(&ds->refs);
    mutex_init(&ds->lock);
    atomic_init(&ds->list, l);
    atomic_init(&ds->gen, 0);
    ds->fd = -1;
    ds->size = size;
    ds->granularity = granularity;
    ds->shift = shift;
    ds->nbits = (size + granularity - 1) >> ds->shift;
    ds->nwords = (ds->nbits + 63) / 64;
    if (file != NULL) {
        ds->file = strdup(file);
        if (ds->file == NULL) {
            err_set(err, ENOMEM, "out of memory");
            goto fail;
        }
        if (lock_file(ds, err) < 0 || dirty_sidecar_load(ds, l, err) < 0) {
            goto fail;
        }
    }
    bool added = false;
    for (unsigned i = 0; i < nr; i++) {
        size_t len = strlen(names[i]);
        if (dirty_list_find(l, names[i], len) >= 0) {
            continue;
        }
        if (l->nr == DIRTY_MAX_BITMAPS) {
            err_set(err, ENOSPC,
                    "dirty bitmap %s: an export has at most 16 bitmaps",
                    names[i]);
            goto fail;
        }
        l->maps[l->nr] = dirty_bitmap_new(ds, names[i], len, false);
        if (l->maps[l->nr] == NULL) {
            err_set(err, ENOMEM, "out of memory");
            goto fail;
        }
        l->nr++;
        added = true;
    }
    if (added && persist(ds, l, err) < 0) {
        goto fail;
    }
    return ds;

fail:
    set_free(ds);
    return NULL;
}

struct dirty_set *dirty_set_ref(struct dirty_set *ds)
{
    refcount_get(&ds->refs);
    return ds;
}

void dirty_set_unref(struct dirty_set *ds)
{
    if (ds == NULL || !refcount_put(&ds->refs)) {
        return;
    }
    if (ds->file != NULL) {
        struct err err;
        err_clear(&err);
        if (dirty_sidecar_save(ds, atomic_load(&ds->list), false, &err) < 0) {
            log_error("%s: the next start finds the bitmaps in use and "
                      "takes them as all dirty",
                      err.msg);
        }
    }
    set_free(ds);
}

uint64_t dirty_set_granularity(const struct dirty_set *ds)
{
    return ds->granularity;
}

uint64_t dirty_set_size(const struct dirty_set *ds)
{
    return ds->size;
}

bool dirty_set_same_file(const struct dirty_set *ds, const char *path)
{
    if (ds->file == NULL || path == NULL) {
        return ds->file == NULL && path == NULL;
    }
    return strcmp(ds->file, path) == 0;
}

struct dirty_list *dirty_set_list(struct dirty_set *ds)
{
    /* Under the lock: a retired list is freed under it too. */
    mutex_lock(&ds->lock);
    struct dirty_list *l =
        atomic_load_explicit(&ds->list, memory_order_acquire);
    refcount_get(&l->refs);
    mutex_unlock(&ds->lock);
    return l;
}

/* ---- Marking ---- */

/* Sets bits [first, last] of `words`. */
static void set_bits(atomic_uint_least64_t *words, uint64_t first,
                     uint64_t last)
{
    for (uint64_t w = first / 64; w <= last / 64; w++) {
        uint64_t lo = w == first / 64 ? first % 64 : 0;
        uint64_t hi = w == last / 64 ? last % 64 : 63;
        uint64_t mask =
            (hi == 63 ? ~(uint64_t)0 : ((uint64_t)1 << (hi + 1)) - 1) &
            ~(((uint64_t)1 << lo) - 1);
        /* Most writes land on blocks already dirty: a load spares the
         * cache line a locked write. */
        if ((atomic_load_explicit(&words[w], memory_order_relaxed) & mask) !=
            mask) {
            atomic_fetch_or_explicit(&words[w], mask, memory_order_relaxed);
        }
    }
}

static void mark_list(const struct dirty_set *ds, const struct dirty_list *l,
                      uint64_t offset, uint64_t len)
{
    uint64_t first = offset >> ds->shift;
    uint64_t last = (offset + len - 1) >> ds->shift;
    for (unsigned i = 0; i < l->nr; i++) {
        if (!((l->frozen >> i) & 1)) {
            set_bits(l->maps[i]->words, first, last);
        }
    }
}

/*
 * The generation is read before the list, and a change bumps it after
 * publishing its list (both acquire/release): a marker that saw the old
 * generation either marked the new list already or sees the bump in
 * dirty_set_mark_again.
 */
uint64_t dirty_set_mark(struct dirty_set *ds, uint64_t offset, uint64_t len)
{
    uint64_t gen = atomic_load_explicit(&ds->gen, memory_order_acquire);
    if (len > 0) {
        mark_list(ds, atomic_load_explicit(&ds->list, memory_order_acquire),
                  offset, len);
    }
    return gen;
}

void dirty_set_mark_again(struct dirty_set *ds, uint64_t gen, uint64_t offset,
                          uint64_t len)
{
    if (len > 0 &&
        atomic_load_explicit(&ds->gen, memory_order_acquire) != gen) {
        mark_list(ds, atomic_load_explicit(&ds->list, memory_order_acquire),
                  offset, len);
    }
}

/* ---- Maps ---- */

static bool bit(const struct dirty_bitmap *bm, uint64_t b)
{
    uint64_t w = atomic_load_explicit(&bm->words[b / 64], memory_order_relaxed);
    return (w >> (b % 64)) & 1;
}

/* The first bit after b, below `limit`, that is not `dirty`; else limit.
 * Whole words at a time. */
static uint64_t run_end_bit(const struct dirty_bitmap *bm, uint64_t b,
                            bool dirty, uint64_t limit)
{
    uint64_t i = b + 1;
    while (i < limit) {
        uint64_t w =
            atomic_load_explicit(&bm->words[i / 64], memory_order_relaxed);
        uint64_t differs = (dirty ? ~w : w) & ~(((uint64_t)1 << (i % 64)) - 1);
        if (differs != 0) {
            uint64_t at =
                (i & ~(uint64_t)63) + (uint64_t)__builtin_ctzll(differs);
            return at < limit ? at : limit;
        }
        i = (i & ~(uint64_t)63) + 64;
    }
    return limit;
}

unsigned dirty_list_map(const struct dirty_list *l, unsigned i, uint64_t offset,
                        uint64_t len, struct dirty_run *out, unsigned max)
{
    const struct dirty_bitmap *bm = l->maps[i];
    uint64_t end = len < l->size - offset ? offset + len : l->size;
    uint64_t limit = ((end - 1) >> l->shift) + 1; /* bits to look at */
    unsigned n = 0;
    while (offset < end && n < max) {
        uint64_t b = offset >> l->shift;
        bool dirty = bit(bm, b);
        uint64_t next = run_end_bit(bm, b, dirty, limit) << l->shift;
        if (next > end) {
            next = end;
        }
        out[n++] = (struct dirty_run){.length = next - offset, .dirty = dirty};
        offset = next;
    }
    return n;
}

uint64_t dirty_list_dirty_bytes(const struct dirty_list *l, unsigned i)
{
    uint64_t bytes = 0;
    struct dirty_run runs[64];
    uint64_t offset = 0;
    while (offset < l->size) {
        unsigned n = dirty_list_map(l, i, offset, l->size - offset, runs, 64);
        for (unsigned k = 0; k < n; k++) {
            bytes += runs[k].dirty ? runs[k].length : 0;
            offset += runs[k].length;
        }
    }
    return bytes;
}

/* ---- Changes ---- */

/* The bitmap named `name` in `l`, or -1 with err set. */
static int find_or_fail(const struct dirty_list *l, const char *name,
                        struct err *err)
{
    int i = dirty_list_find(l, name, strlen(name));
    if (i < 0) {
        err_set(err, ENOENT, "no dirty bitmap named %s", name);
    }
    return i;
}

/* Appends a new clean bitmap `name` to `l` (unpublished); -errno. */
static int add_new(struct dirty_set *ds, struct dirty_list *l, const char *name,
                   struct err *err)
{
    if (!dirty_name_valid(name)) {
        return err_set(err, EINVAL,
                       "dirty bitmap name '%s': 1 to %u letters, digits, "
                       "'.', '_' or '-' are needed",
                       name, DIRTY_NAME_MAX);
    }
    if (dirty_list_find(l, name, strlen(name)) >= 0) {
        return err_set(err, EEXIST, "a dirty bitmap named %s exists", name);
    }
    if (l->nr == DIRTY_MAX_BITMAPS) {
        return err_set(err, ENOSPC,
                       "dirty bitmap %s: an export has at most %u bitmaps",
                       name, DIRTY_MAX_BITMAPS);
    }
    l->maps[l->nr] = dirty_bitmap_new(ds, name, strlen(name), false);
    if (l->maps[l->nr] == NULL) {
        return err_set(err, ENOMEM, "out of memory");
    }
    l->nr++;
    return 0;
}

/* Writes `next` (made from the current list) to the file, publishes it
 * and retires the current one; on failure frees `next`.  Under lock. */
static int publish(struct dirty_set *ds, struct dirty_list *next,
                   struct err *err) REQUIRES(ds->lock)
{
    int r = persist(ds, next, err);
    if (r < 0) {
        dirty_list_unref(next);
        return r;
    }
    struct dirty_list *old =
        atomic_exchange_explicit(&ds->list, next, memory_order_acq_rel);
    atomic_fetch_add_explicit(&ds->gen, 1, memory_order_acq_rel);
    old->next = ds->retired;
    ds->retired = old;
    return 0;
}

/* What a change does to its copy of the list. */
enum change {
    CHANGE_CREATE,
    CHANGE_CHECKPOINT,
    CHANGE_CLEAR,
    CHANGE_REMOVE,
    CHANGE_MERGE,
};

static int change(struct dirty_set *ds, enum change what, const char *a,
                  const char *b, struct err *err)
{
    mutex_lock(&ds->lock);
    int r = 0;
    struct dirty_list *next = list_copy(atomic_load(&ds->list));
    if (next == NULL) {
        r = err_set(err, ENOMEM, "out of memory");
        goto out;
    }
    int i = what == CHANGE_CREATE ? 0 : find_or_fail(next, a, err);
    int j = what == CHANGE_MERGE ? find_or_fail(next, b, err) : 0;
    if (i < 0 || j < 0) {
        dirty_list_unref(next);
        r = -ENOENT;
        goto out;
    }
    switch (what) {
    case CHANGE_CREATE:
        r = add_new(ds, next, a, err);
        break;
    case CHANGE_CHECKPOINT:
        r = add_new(ds, next, b, err);
        next->frozen |= 1u << i;
        break;
    case CHANGE_CLEAR:
        /* The words are shared with the current list: cleared in place,
         * and the new generation makes changes in flight mark again. */
        for (uint64_t w = 0; w < ds->nwords; w++) {
            atomic_store_explicit(&next->maps[i]->words[w], 0,
                                  memory_order_relaxed);
        }
        break;
    case CHANGE_REMOVE:
        bitmap_unref(next->maps[i]);
        uint32_t low = (1u << i) - 1;
        next->frozen = (next->frozen & low) | ((next->frozen >> 1) & ~low);
        memmove(&next->maps[i], &next->maps[i + 1],
                (next->nr - (unsigned)i - 1) * sizeof next->maps[0]);
        next->nr--;
        break;
    case CHANGE_MERGE:
        for (uint64_t w = 0; w < ds->nwords; w++) {
            uint64_t v = atomic_load_explicit(&next->maps[i]->words[w],
                                              memory_order_relaxed);
            atomic_fetch_or_explicit(&next->maps[j]->words[w], v,
                                     memory_order_relaxed);
        }
        break;
    }
    if (r < 0) {
        dirty_list_unref(next);
        goto out;
    }
    r = publish(ds, next, err);
out:
    mutex_unlock(&ds->lock);
    return r;
}

int dirty_set_create(struct dirty_set *ds, const char *name, struct err *err)
{
    return change(ds, CHANGE_CREATE, name, NULL, err);
}

int dirty_set_checkpoint(struct dirty_set *ds, const char *freeze,
                         const char *name, struct err *err)
{
    return change(ds, CHANGE_CHECKPOINT, freeze, name, err);
}

int dirty_set_clear(struct dirty_set *ds, const char *name, struct err *err)
{
    return change(ds, CHANGE_CLEAR, name, NULL, err);
}

int dirty_set_remove(struct dirty_set *ds, const char *name, struct err *err)
{
    return change(ds, CHANGE_REMOVE, name, NULL, err);
}

int dirty_set_merge(struct dirty_set *ds, const char *from, const char *into,
                    struct err *err)
{
    return change(ds, CHANGE_MERGE, from, into, err);
}

void dirty_set_reclaim(struct dirty_set *ds)
{
    mutex_lock(&ds->lock);
    struct dirty_list *l = ds->retired;
    ds->retired = NULL;
    mutex_unlock(&ds->lock);
    while (l != NULL) {
        struct dirty_list *next = l->next;
        dirty_list_unref(l);
        l = next;
    }
}
