/* SPDX-License-Identifier: MIT */
/*
 * The dirty-bitmap sidecar file: the bitmaps of one export between runs.
 * Every integer is little-endian.
 *
 *   header, 64 bytes:
 *     0  magic "NBDSDIRT"
 *     8  u32 version (1)
 *    12  u32 flags: bit 0 "in use" (a daemon has it open)
 *    16  u64 image size in bytes
 *    24  u64 granularity in bytes
 *    32  u32 number of bitmaps
 *    36  u32 zero
 *    40  u64 FNV-1a 64 hash of everything after the header
 *    48  16 zero bytes
 *   then for each bitmap:
 *     u32 name length, u32 flags (bit 0: frozen by a checkpoint, no
 *     longer marked), the name padded with zeroes to a
 *     multiple of 8 bytes, then ceil(ceil(size / granularity) / 64) u64
 *     words: bit b of word w covers the block w * 64 + b.
 *
 * An open writes the in-use flag in place and syncs it; the clean close
 * writes a whole new file beside it (FILE.tmp), syncs it, renames it over
 * FILE and syncs the directory, so a crash leaves either file complete.
 * The flag lies outside the hash for that reason.
 */
#include "dirty-int.h"
#include "nbdsrv/fdio.h"
#include "nbdsrv/log.h"

#include <endian.h>
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define SIDECAR_MAGIC "NBDSDIRT"
#define SIDECAR_VERSION 1u
#define SIDECAR_HEADER 64u
#define SIDECAR_IN_USE 0x1u
#define SIDECAR_FROZEN 0x1u /* a bitmap's flags */
#define FLAGS_OFFSET 12

static uint64_t fnv1a(const uint8_t *p, size_t len)
{
    uint64_t h = 0xcbf29ce484222325ull;
    for (size_t i = 0; i < len; i++) {
        h = (h ^ p[i]) * 0x100000001b3ull;
    }
    return h;
}

static uint32_t get32(const uint8_t *p)
{
    uint32_t v;
    memcpy(&v, p, 4);
    return le32toh(v);
}

static uint64_t get64(const uint8_t *p)
{
    uint64_t v;
    memcpy(&v, p, 8);
    return le64toh(v);
}

static void put32(uint8_t *p, uint32_t v)
{
    v = htole32(v);
    memcpy(p, &v, 4);
}

static void put64(uint8_t *p, uint64_t v)
{
    v = htole64(v);
    memcpy(p, &v, 8);
}

static size_t pad8(size_t n)
{
    return (n + 7) & ~(size_t)7;
}

/* The whole file for `ds` in a new buffer of *len bytes; NULL: no memory. */
static uint8_t *build(const struct dirty_set *ds, const struct dirty_list *l,
                      bool in_use, size_t *len)
{
    size_t body = 0;
    for (unsigned i = 0; i < l->nr; i++) {
        body += 8 + pad8(strlen(l->maps[i]->name)) + ds->nwords * 8;
    }
    uint8_t *buf = calloc(1, SIDECAR_HEADER + body);
    if (buf == NULL) {
        return NULL;
    }
    memcpy(buf, SIDECAR_MAGIC, 8);
    put32(buf + 8, SIDECAR_VERSION);
    put32(buf + FLAGS_OFFSET, in_use ? SIDECAR_IN_USE : 0);
    put64(buf + 16, ds->size);
    put64(buf + 24, ds->granularity);
    put32(buf + 32, l->nr);
    uint8_t *p = buf + SIDECAR_HEADER;
    for (unsigned i = 0; i < l->nr; i++) {
        size_t n = strlen(l->maps[i]->name);
        put32(p, (uint32_t)n);
        put32(p + 4, dirty_list_frozen(l, i) ? SIDECAR_FROZEN : 0);
        memcpy(p + 8, l->maps[i]->name, n);
        p += 8 + pad8(n);
        for (uint64_t w = 0; w < ds->nwords; w++, p += 8) {
            put64(p, atomic_load_explicit(&l->maps[i]->words[w],
                                          memory_order_relaxed));
        }
    }
    put64(buf + 40, fnv1a(buf + SIDECAR_HEADER, body));
    *len = SIDECAR_HEADER + body;
    return buf;
}

/* Reads the whole file into a new buffer; -errno, or -EFBIG when it
 * cannot be a sidecar of a set with `max` bytes at most. */
static int read_file(int fd, size_t max, uint8_t **out, size_t *len)
{
    struct stat st;
    if (fstat(fd, &st) < 0) {
        return -errno;
    }
    if ((uint64_t)st.st_size > max) {
        return -EFBIG;
    }
    uint8_t *buf = malloc(st.st_size > 0 ? (size_t)st.st_size : 1);
    if (buf == NULL) {
        return -ENOMEM;
    }
    ssize_t n = fd_read_full(fd, buf, (size_t)st.st_size, 0);
    if (n < (ssize_t)st.st_size) {
        free(buf);
        return n < 0 ? (int)n : -EIO;
    }
    *out = buf;
    *len = (size_t)n;
    return 0;
}

/*
 * Parses a sidecar into ds: its bitmaps, all dirty unless the file was
 * closed cleanly for the same image size and granularity (*why then says
 * what differs).  -EINVAL with err for a file that is not a valid one.
 */
static int parse(struct dirty_set *ds, struct dirty_list *l, const uint8_t *buf,
                 size_t len, const char **why, struct err *err)
{
    if (len < SIDECAR_HEADER || memcmp(buf, SIDECAR_MAGIC, 8) != 0) {
        return err_set(err, EINVAL,
                       "dirty bitmap file %s: not a dirty bitmap file (bad "
                       "magic)",
                       ds->file);
    }
    if (get32(buf + 8) != SIDECAR_VERSION) {
        return err_set(err, EINVAL,
                       "dirty bitmap file %s: version %u, this build reads "
                       "version %u",
                       ds->file, get32(buf + 8), SIDECAR_VERSION);
    }
    if (get64(buf + 40) != fnv1a(buf + SIDECAR_HEADER, len - SIDECAR_HEADER)) {
        return err_set(err, EINVAL,
                       "dirty bitmap file %s: damaged (its checksum does not "
                       "match); remove it to start the bitmaps afresh",
                       ds->file);
    }
    uint64_t size = get64(buf + 16), gran = get64(buf + 24);
    uint32_t nr = get32(buf + 32);
    if (gran < DIRTY_MIN_GRANULARITY || gran > DIRTY_MAX_GRANULARITY ||
        (gran & (gran - 1)) != 0 || nr > DIRTY_MAX_BITMAPS) {
        return err_set(err, EINVAL,
                       "dirty bitmap file %s: damaged (granularity %llu, %u "
                       "bitmaps)",
                       ds->file, (unsigned long long)gran, nr);
    }
    uint64_t file_words = ((size + gran - 1) / gran + 63) / 64;
    bool same = size == ds->size && gran == ds->granularity;
    *why = NULL;
    if (get32(buf + FLAGS_OFFSET) & SIDECAR_IN_USE) {
        *why = "the daemon that had it open did not stop cleanly";
    } else if (size != ds->size) {
        *why = "the image changed size";
    } else if (gran != ds->granularity) {
        *why = "dirty-bitmap-granularity changed";
    }
    const uint8_t *p = buf + SIDECAR_HEADER, *end = buf + len;
    for (uint32_t i = 0; i < nr; i++) {
        size_t n = (size_t)end - (size_t)p >= 8 ? get32(p) : SIZE_MAX;
        if (n == SIZE_MAX || n == 0 || n > DIRTY_NAME_MAX ||
            (uint64_t)(end - p) < 8 + pad8(n) + file_words * 8) {
            return err_set(err, EINVAL,
                           "dirty bitmap file %s: damaged (bitmap %u)",
                           ds->file, i + 1);
        }
        char name[DIRTY_NAME_MAX + 1];
        memcpy(name, p + 8, n);
        name[n] = '\0';
        if (!dirty_name_valid(name) || dirty_list_find(l, name, n) >= 0 ||
            (get32(p + 4) & ~SIDECAR_FROZEN) != 0) {
            return err_set(err, EINVAL,
                           "dirty bitmap file %s: damaged (bitmap %u's name)",
                           ds->file, i + 1);
        }
        struct dirty_bitmap *bm = dirty_bitmap_new(ds, name, n, *why != NULL);
        if (bm == NULL) {
            return err_set(err, ENOMEM, "out of memory");
        }
        if (get32(p + 4) & SIDECAR_FROZEN) {
            l->frozen |= 1u << l->nr;
        }
        l->maps[l->nr++] = bm;
        p += 8 + pad8(n);
        if (same && *why == NULL) {
            for (uint64_t w = 0; w < ds->nwords; w++) {
                atomic_store_explicit(&bm->words[w], get64(p + w * 8),
                                      memory_order_relaxed);
            }
        }
        p += file_words * 8;
    }
    if (p != end) {
        return err_set(err, EINVAL,
                       "dirty bitmap file %s: damaged (%zu bytes after the "
                       "last bitmap)",
                       ds->file, (size_t)(end - p));
    }
    return 0;
}

int dirty_sidecar_load(struct dirty_set *ds, struct dirty_list *l,
                       struct err *err)
{
    /* 16 bitmaps of an image of up to 2^64 bytes at the finest
     * granularity would not fit memory anyway: SIZE_MAX bounds it. */
    uint8_t *buf = NULL;
    size_t len = 0;
    int r = read_file(ds->fd, SIZE_MAX, &buf, &len);
    if (r < 0) {
        return err_set(err, -r, "dirty bitmap file %s: %s", ds->file,
                       strerror(-r));
    }
    if (len == 0) {
        /* New: write the (empty) set, in use, in place. */
        free(buf);
        buf = build(ds, l, true, &len);
        if (buf == NULL) {
            return err_set(err, ENOMEM, "out of memory");
        }
        r = fd_write_all(ds->fd, buf, len, 0);
    } else {
        const char *why = NULL;
        r = parse(ds, l, buf, len, &why, err);
        if (r < 0) {
            free(buf);
            return r;
        }
        if (why != NULL) {
            log_warning("dirty bitmap file %s: %s: its %u bitmap%s taken as "
                        "all dirty (the next incremental backup copies "
                        "everything)",
                        ds->file, why, l->nr, l->nr == 1 ? " is" : "s are");
        }
        uint8_t flag[4];
        put32(flag, get32(buf + FLAGS_OFFSET) | SIDECAR_IN_USE);
        r = fd_write_all(ds->fd, flag, 4, FLAGS_OFFSET);
    }
    free(buf);
    if (r == 0 && fdatasync(ds->fd) < 0) {
        r = -errno;
    }
    if (r < 0) {
        return err_set(err, -r, "dirty bitmap file %s: marking it in use: %s",
                       ds->file, strerror(-r));
    }
    return 0;
}

/* Syncs the directory holding `path`, so that a rename in it lasts. */
static int sync_dir(const char *path)
{
    char *copy = strdup(path);
    if (copy == NULL) {
        return -ENOMEM;
    }
    int fd = open(dirname(copy), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    free(copy);
    if (fd < 0) {
        return -errno;
    }
    int r = fsync(fd) < 0 ? -errno : 0;
    close(fd);
    return r;
}

int dirty_sidecar_save(const struct dirty_set *ds, const struct dirty_list *l,
                       bool in_use, struct err *err)
{
    size_t len;
    uint8_t *buf = build(ds, l, in_use, &len);
    char *tmp = NULL;
    if (buf == NULL || asprintf(&tmp, "%s.tmp", ds->file) < 0) {
        free(buf);
        return err_set(err, ENOMEM, "dirty bitmap file %s: out of memory",
                       ds->file);
    }
    int r = 0;
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0) {
        r = -errno;
    } else {
        r = fd_write_all(fd, buf, len, 0);
        if (r == 0 && fsync(fd) < 0) {
            r = -errno;
        }
        close(fd);
        if (r == 0 && rename(tmp, ds->file) < 0) {
            r = -errno;
        }
        if (r == 0) {
            r = sync_dir(ds->file);
        } else {
            unlink(tmp);
        }
    }
    free(buf);
    if (r < 0) {
        err_set(err, -r, "dirty bitmap file %s: writing %s: %s", ds->file, tmp,
                strerror(-r));
    }
    free(tmp);
    return r;
}
