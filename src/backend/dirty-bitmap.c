/* SPDX-License-Identifier: MIT */
/* Dirty-block bitmaps in memory: marking, maps, the set's life (see
 * dirty-bitmap.h); the sidecar file is dirty-sidecar.c's. */
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

int dirty_set_add(struct dirty_set *ds, const char *name, size_t len,
                  bool dirty)
{
    if (ds->nr == DIRTY_MAX_BITMAPS) {
        return -ENOSPC;
    }
    struct dirty_bitmap *bm = &ds->maps[ds->nr];
    bm->words = calloc(ds->nwords > 0 ? ds->nwords : 1, sizeof *bm->words);
    if (bm->words == NULL) {
        return -ENOMEM;
    }
    memcpy(bm->name, name, len);
    bm->name[len] = '\0';
    if (dirty) {
        for (uint64_t w = 0; w < ds->nwords; w++) {
            atomic_init(&bm->words[w], ~(uint64_t)0);
        }
    }
    ds->nr++;
    return 0;
}

static void set_free(struct dirty_set *ds)
{
    for (unsigned i = 0; i < ds->nr; i++) {
        free(ds->maps[i].words);
    }
    if (ds->fd >= 0) {
        close(ds->fd); /* drops the flock */
    }
    free(ds->file);
    free(ds);
}

/* Opens and locks the sidecar file; 0 or -errno with err set. */
static int open_file(struct dirty_set *ds, const char *file, struct err *err)
{
    if (ds->file == NULL && (ds->file = strdup(file)) == NULL) {
        return err_set(err, ENOMEM, "out of memory");
    }
    ds->fd = open(file, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (ds->fd < 0) {
        return err_set_errno(err, errno, "dirty bitmap file %s", file);
    }
    struct stat st;
    if (fstat(ds->fd, &st) < 0) {
        return err_set_errno(err, errno, "dirty bitmap file %s", file);
    }
    if (!S_ISREG(st.st_mode)) {
        return err_set(err, EINVAL, "dirty bitmap file %s: not a regular file",
                       file);
    }
    if (flock(ds->fd, LOCK_EX | LOCK_NB) < 0) {
        int e = errno;
        return err_set(err, e, "dirty bitmap file %s: %s", file,
                       e == EWOULDBLOCK ? "in use by another export or "
                                          "process (it is locked)"
                                        : strerror(e));
    }
    return 0;
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
    struct dirty_set *ds = calloc(1, sizeof *ds);
    if (ds == NULL) {
        err_set(err, ENOMEM, "out of memory");
        return NULL;
    }
    refcount_init(&ds->refs);
    ds->fd = -1;
    ds->size = size;
    ds->granularity = granularity;
    ds->shift = (unsigned)__builtin_ctzll(granularity);
    ds->nbits = (size + granularity - 1) >> ds->shift;
    ds->nwords = (ds->nbits + 63) / 64;
    if (file != NULL &&
        (open_file(ds, file, err) < 0 || dirty_sidecar_load(ds, err) < 0)) {
        goto fail;
    }
    bool added = false;
    for (unsigned i = 0; i < nr; i++) {
        if (dirty_set_find(ds, names[i], strlen(names[i])) >= 0) {
            continue;
        }
        int r = dirty_set_add(ds, names[i], strlen(names[i]), false);
        if (r < 0) {
            err_set(err, -r, "dirty bitmap %s: %s", names[i],
                    r == -ENOSPC ? "an export has at most 16 bitmaps"
                                 : strerror(-r));
            goto fail;
        }
        added = true;
    }
    if (added && file != NULL) {
        /* The new file replaces the locked one: lock it in its place.
         * Another opener that slipped in between holds it now, and wins. */
        int old_fd = ds->fd;
        ds->fd = -1;
        if (dirty_sidecar_save(ds, true, err) < 0 ||
            open_file(ds, file, err) < 0) {
            close(old_fd);
            goto fail;
        }
        close(old_fd);
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
        if (dirty_sidecar_save(ds, false, &err) < 0) {
            log_error("%s: the next start finds the bitmaps in use and "
                      "takes them as all dirty",
                      err.msg);
        }
    }
    set_free(ds);
}

unsigned dirty_set_count(const struct dirty_set *ds)
{
    return ds->nr;
}

const char *dirty_set_name(const struct dirty_set *ds, unsigned i)
{
    return ds->maps[i].name;
}

uint64_t dirty_set_granularity(const struct dirty_set *ds)
{
    return ds->granularity;
}

uint64_t dirty_set_size(const struct dirty_set *ds)
{
    return ds->size;
}

int dirty_set_find(const struct dirty_set *ds, const char *name, size_t len)
{
    for (unsigned i = 0; i < ds->nr; i++) {
        if (strlen(ds->maps[i].name) == len &&
            memcmp(ds->maps[i].name, name, len) == 0) {
            return (int)i;
        }
    }
    return -1;
}

bool dirty_set_same_file(const struct dirty_set *ds, const char *path)
{
    if (ds->file == NULL || path == NULL) {
        return ds->file == NULL && path == NULL;
    }
    return strcmp(ds->file, path) == 0;
}

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

void dirty_set_mark(struct dirty_set *ds, uint64_t offset, uint64_t len)
{
    if (len == 0) {
        return;
    }
    uint64_t first = offset >> ds->shift;
    uint64_t last = (offset + len - 1) >> ds->shift;
    for (unsigned i = 0; i < ds->nr; i++) {
        set_bits(ds->maps[i].words, first, last);
    }
}

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

unsigned dirty_set_map(const struct dirty_set *ds, unsigned i, uint64_t offset,
                       uint64_t len, struct dirty_run *out, unsigned max)
{
    const struct dirty_bitmap *bm = &ds->maps[i];
    uint64_t end = len < ds->size - offset ? offset + len : ds->size;
    uint64_t limit = ((end - 1) >> ds->shift) + 1; /* bits to look at */
    unsigned n = 0;
    while (offset < end && n < max) {
        uint64_t b = offset >> ds->shift;
        bool dirty = bit(bm, b);
        uint64_t next = run_end_bit(bm, b, dirty, limit) << ds->shift;
        if (next > end) {
            next = end;
        }
        out[n++] = (struct dirty_run){.length = next - offset, .dirty = dirty};
        offset = next;
    }
    return n;
}

uint64_t dirty_set_dirty_bytes(const struct dirty_set *ds, unsigned i)
{
    uint64_t bytes = 0;
    struct dirty_run runs[64];
    uint64_t offset = 0;
    while (offset < ds->size) {
        unsigned n = dirty_set_map(ds, i, offset, ds->size - offset, runs, 64);
        for (unsigned k = 0; k < n; k++) {
            bytes += runs[k].dirty ? runs[k].length : 0;
            offset += runs[k].length;
        }
    }
    return bytes;
}
