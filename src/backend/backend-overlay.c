/* SPDX-License-Identifier: MIT */
/* The copy-on-write overlay: reads through to a read-only base, keeps
 * writes in an overlay file with a persistent allocation map. */

/*
 * Design.  The export is cut into blocks of `gran` bytes (64 KiB for the
 * overlays this build creates).  A block is either in the base (never
 * written through this overlay: reads come from the layer below, which
 * is opened read-only and never written) or in the overlay (reads come
 * from the overlay file).  The allocation map holds one bit per block;
 * a bit is only ever set, never cleared: a trim or zero of a block masks
 * the base by making the overlay's copy of it read as zeroes (a hole in
 * the overlay file), so the block stays in the overlay.
 *
 * The overlay file (the format: man/nbd-serverd.conf.5, OVERLAY FILES):
 *   [0, 4096)                   header: magic, version, granularity,
 *                               base size, image size, where the map and
 *                               the data start, a checksum
 *   [map_offset, +map_len)      the map: bit b%8 of byte b/8 is block b
 *   [data_offset, +image size)  block b's data at data_offset + b*gran,
 *                               a sparse mirror of the export
 * The data goes through a file backend over the same file (the store),
 * so that it uses the rings and fallbacks of backend-file.c.
 *
 * Crash consistency.  The invariant is: a bit set in the map on disk
 * means that block's data in the overlay file is complete and durable.
 *  1. A block becomes allocated (its bit set in memory, `map`) only
 *     after a store write of the whole block has completed: a write or
 *     zero covering it, or, for a partial write, a copy-up that reads
 *     the block from the base, merges the new bytes and writes it all.
 *     Never-allocated blocks may hold stale bytes in the overlay file (a
 *     write that was never flushed before a crash); a whole-block write
 *     makes them irrelevant.
 *  2. A commit (FLUSH, a FUA request that touches a block whose bit is
 *     not yet durable, the last reference) first copies the map pages
 *     that gained bits into `staging`, then fdatasyncs the file (every
 *     block allocated before the copy is now durable), and only then
 *     writes those pages and fdatasyncs again.  The map pages reach the
 *     page cache after the data is durable, so no writeback can put a
 *     bit on disk before its data.  Bits set after the copy wait for the
 *     next commit.
 *  3. Bits only go from 0 to 1, so a map page torn by a power cut holds
 *     old and new bytes, each of which is valid.
 *  4. A block whose bit never reached the disk reads from the base after
 *     a restart: what it held before the write that was not flushed.
 * So a write acknowledged with FUA, or before an acknowledged FLUSH, is
 * there after a crash (its block's bit and data are durable), and a
 * block never written reads the base's bytes.  Overwrites of an
 * allocated block have the guarantees of the file underneath.
 *
 * Concurrency: BACKEND_PARALLEL.  The map is an array of atomic bytes:
 * a reader loads a block's bit (acquire) and reads from the base or the
 * store; a writer sets it (release) after its store write completed.
 * Partial-block copy-up runs under a co_mutex striped by block
 * (stripes[b % OVL_STRIPES]) and looks at the bit again inside it, so
 * that two partial writes of different bytes of one block cannot both
 * copy the base and lose each other's bytes.  Whole-block writes take no
 * lock: anything racing with them overlaps them, and the NBD protocol
 * leaves overlapping requests in flight undefined.  Commits run one at a
 * time under `commit`.  Lock order: a stripe, then commit (a FUA write
 * commits after its stripes are released, so in practice neither is
 * held with the other), then the store's and base's own.
 *
 * The last reference.  Writes that were never flushed are on the file in
 * the page cache; for a restart of the daemon to serve them, as it would
 * a plain file, close makes a final commit with plain system calls.  It
 * blocks the thread that drops the last reference for one or two
 * fdatasyncs, unlike other layers' close: that is the main thread at
 * shutdown, or a loop thread when an export a reload removed loses its
 * last client, and nothing is synced when the clients flushed.
 */
#include "nbdsrv/backends.h"
#include "nbdsrv/compiler.h"
#include "nbdsrv/coro-lock.h"
#include "nbdsrv/fdio.h"

#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#define OVL_MAGIC "nbdsrvOV"
#define OVL_VERSION 1u
#define OVL_HEADER_SIZE 4096u
#define OVL_MAP_PAGE 4096u
#define OVL_MIN_GRAN 4096u
#define OVL_MAX_GRAN (16u * 1024 * 1024)
#define OVL_STRIPES 64u
/* Header fields covered by the checksum: bytes [0, OVL_SUM_AT). */
#define OVL_SUM_AT 64u
/* Runs of blocks an extents call looks at before it answers what it has
 * (it may cover less than asked, never nothing). */
#define OVL_EXTENT_RUNS 1024u

/* The header's fields, host order. */
struct ovl_header {
    uint32_t version;
    uint32_t gran;
    uint32_t flags;
    uint64_t base_size;
    uint64_t image_size;
    uint64_t map_offset;
    uint64_t map_len;
    uint64_t data_offset;
};

/*
 * Freed by ovl_close with the last reference.  Fields not marked
 * otherwise are immutable after init.
 */
struct ovl_backend {
    struct backend be;     /* the common part; be.lower is the base */
    struct backend *store; /* the overlay file; we hold one reference */
    int fd;                /* the overlay file, holding the flock */
    bool read_only;
    uint32_t gran;
    unsigned shift; /* gran == 1 << shift */
    uint64_t nblocks;
    uint64_t map_offset, map_len, data_offset;
    uint64_t nr_pages; /* map pages: map_len / OVL_MAP_PAGE */
    /* Atomic: the bits set in memory (release after the block's store
     * write; acquire by readers).  map_len bytes. */
    _Atomic unsigned char *map;
    /* Atomic: the bits known to be durable on disk (written by commits
     * after their last sync, read by FUA writes).  map_len bytes. */
    _Atomic unsigned char *durable;
    /* Atomic, per map page: bits set since the page was last staged
     * (store release after the bit; exchange acq_rel by the commit). */
    atomic_bool *dirty;
    /* under commit: the map pages a commit writes, and which. */
    unsigned char *staging; /* map_len bytes, 4096-aligned (O_DIRECT) */
    uint64_t *staged;       /* nr_pages entries */
    struct co_mutex commit; /* see the lock order above */
    struct co_mutex stripes[OVL_STRIPES];
};

static const struct backend_ops ovl_ops;

static struct ovl_backend *to_ovl(struct backend *b)
{
    return container_of(b, struct ovl_backend, be);
}

/* ---- The header ---- */

static void put_le32(unsigned char *p, uint32_t v)
{
    for (unsigned i = 0; i < 4; i++) {
        p[i] = (unsigned char)(v >> (8 * i));
    }
}

static void put_le64(unsigned char *p, uint64_t v)
{
    for (unsigned i = 0; i < 8; i++) {
        p[i] = (unsigned char)(v >> (8 * i));
    }
}

static uint32_t get_le32(const unsigned char *p)
{
    uint32_t v = 0;
    for (unsigned i = 0; i < 4; i++) {
        v |= (uint32_t)p[i] << (8 * i);
    }
    return v;
}

static uint64_t get_le64(const unsigned char *p)
{
    uint64_t v = 0;
    for (unsigned i = 0; i < 8; i++) {
        v |= (uint64_t)p[i] << (8 * i);
    }
    return v;
}

/* 64-bit FNV-1a: the header's checksum (it catches a damaged header, it
 * is no protection against a forged one). */
static uint64_t fnv1a64(const unsigned char *p, size_t n)
{
    uint64_t h = 0xcbf29ce484222325ull;
    for (size_t i = 0; i < n; i++) {
        h ^= p[i];
        h *= 0x100000001b3ull;
    }
    return h;
}

static uint64_t round_up(uint64_t v, uint64_t a)
{
    return (v + a - 1) / a * a;
}

/* The layout of a new overlay over `size` bytes. */
static void layout_new(struct ovl_header *h, uint64_t size)
{
    uint64_t blocks = round_up(size, BACKEND_OVERLAY_GRANULARITY) /
                      BACKEND_OVERLAY_GRANULARITY;
    *h = (struct ovl_header){
        .version = OVL_VERSION,
        .gran = BACKEND_OVERLAY_GRANULARITY,
        .base_size = size,
        .image_size = size,
        .map_offset = OVL_HEADER_SIZE,
        .map_len = round_up(round_up(blocks, 8) / 8, OVL_MAP_PAGE),
    };
    if (h->map_len == 0) {
        h->map_len = OVL_MAP_PAGE;
    }
    h->data_offset = round_up(h->map_offset + h->map_len, h->gran);
}

static void header_encode(const struct ovl_header *h, unsigned char *p)
{
    memset(p, 0, OVL_HEADER_SIZE);
    memcpy(p, OVL_MAGIC, 8);
    put_le32(p + 8, h->version);
    put_le32(p + 12, OVL_HEADER_SIZE);
    put_le32(p + 16, h->gran);
    put_le32(p + 20, h->flags);
    put_le64(p + 24, h->base_size);
    put_le64(p + 32, h->image_size);
    put_le64(p + 40, h->map_offset);
    put_le64(p + 48, h->map_len);
    put_le64(p + 56, h->data_offset);
    put_le64(p + OVL_SUM_AT, fnv1a64(p, OVL_SUM_AT));
}

/* Parses and checks a header read from a file of file_size bytes. */
static int header_decode(const unsigned char *p, uint64_t file_size,
                         struct ovl_header *h, struct err *err)
{
    if (memcmp(p, OVL_MAGIC, 8) != 0) {
        return err_set(err, EINVAL, "not an nbd-serverd overlay (no magic)");
    }
    if (get_le64(p + OVL_SUM_AT) != fnv1a64(p, OVL_SUM_AT)) {
        return err_set(err, EINVAL, "damaged header (bad checksum)");
    }
    h->version = get_le32(p + 8);
    if (h->version != OVL_VERSION) {
        return err_set(err, ENOTSUP,
                       "overlay format version %u (this build reads %u)",
                       h->version, OVL_VERSION);
    }
    h->gran = get_le32(p + 16);
    h->flags = get_le32(p + 20);
    h->base_size = get_le64(p + 24);
    h->image_size = get_le64(p + 32);
    h->map_offset = get_le64(p + 40);
    h->map_len = get_le64(p + 48);
    h->data_offset = get_le64(p + 56);
    if (h->flags != 0) {
        return err_set(err, ENOTSUP, "unknown header flags %#x", h->flags);
    }
    uint64_t blocks =
        h->gran == 0 ? 0
                     : h->image_size / h->gran + (h->image_size % h->gran != 0);
    if (get_le32(p + 12) != OVL_HEADER_SIZE || h->gran < OVL_MIN_GRAN ||
        h->gran > OVL_MAX_GRAN || (h->gran & (h->gran - 1)) != 0 ||
        h->image_size != h->base_size || h->map_offset < OVL_HEADER_SIZE ||
        h->map_offset % OVL_MAP_PAGE != 0 || h->map_len % OVL_MAP_PAGE != 0 ||
        h->map_len < round_up(blocks, 8) / 8 || h->map_len > UINT64_MAX / 2 ||
        h->map_offset > UINT64_MAX / 4 ||
        h->data_offset < h->map_offset + h->map_len ||
        h->data_offset % h->gran != 0 ||
        h->image_size > UINT64_MAX / 2 - h->data_offset) {
        return err_set(err, EINVAL, "damaged header (inconsistent layout)");
    }
    if (file_size < h->data_offset + h->image_size) {
        return err_set(err, EINVAL,
                       "truncated: %llu bytes, the layout needs %llu",
                       (unsigned long long)file_size,
                       (unsigned long long)(h->data_offset + h->image_size));
    }
    return 0;
}

/* Reads and checks the header of the open overlay fd. */
static int header_read(int fd, struct ovl_header *h, struct err *err)
{
    struct stat st;
    if (fstat(fd, &st) != 0) {
        return err_set_errno(err, errno, "fstat");
    }
    if (!S_ISREG(st.st_mode)) {
        return err_set(err, EINVAL, "not a regular file");
    }
    if (st.st_size == 0) {
        return err_set(err, EINVAL,
                       "empty file, not an overlay (remove it: the server "
                       "creates a missing overlay)");
    }
    unsigned char buf[OVL_HEADER_SIZE];
    ssize_t n = pread(fd, buf, sizeof buf, 0);
    if (n < 0) {
        return err_set_errno(err, errno, "reading the header");
    }
    if ((size_t)n < sizeof buf) {
        return err_set(err, EINVAL,
                       "not an nbd-serverd overlay (shorter than a header)");
    }
    return header_decode(buf, (uint64_t)st.st_size, h, err);
}

/* pread of all len bytes (start-up only): 0, or -errno (-EIO when the
 * file ends first). */
static int read_all(int fd, void *buf, size_t len, off_t offset)
{
    ssize_t n = fd_read_full(fd, buf, len, offset);
    return n < 0 ? (int)n : (size_t)n < len ? -EIO : 0;
}

/*
 * Creates a new, empty overlay over `size` bytes at `path`: written in a
 * temporary file beside it, synced, then renamed into place (never over
 * an existing file), so that a crash leaves no half-made overlay.  0
 * (also when another process created it first), or -errno with err set.
 */
static int overlay_create(const char *path, uint64_t size, struct err *err)
{
    struct ovl_header h;
    layout_new(&h, size);
    char *copy = strdup(path);
    char *tmp = NULL;
    const char *slash = strrchr(path, '/');
    /* dirname may change copy: called once. */
    const char *dir = copy != NULL ? dirname(copy) : NULL;
    if (copy == NULL || asprintf(&tmp, "%s/.%s.XXXXXX", dir,
                                 slash != NULL ? slash + 1 : path) < 0) {
        free(copy);
        return err_set(err, ENOMEM, "out of memory");
    }
    int r = 0;
    int fd = mkostemp(tmp, O_CLOEXEC);
    if (fd < 0) {
        r = err_set_errno(err, errno, "creating a file in %s", dir);
        goto out_free;
    }
    unsigned char buf[OVL_HEADER_SIZE];
    header_encode(&h, buf);
    if ((r = fd_write_all(fd, buf, sizeof buf, 0)) < 0 ||
        ftruncate(fd, (off_t)(h.data_offset + size)) != 0 || fsync(fd) != 0) {
        r = err_set_errno(err, r < 0 ? -r : errno, "writing a new overlay");
        goto out_unlink;
    }
    if (renameat2(AT_FDCWD, tmp, AT_FDCWD, path, RENAME_NOREPLACE) != 0) {
        if (errno != EEXIST) {
            r = err_set_errno(err, errno, "renaming %s into place", tmp);
        }
        goto out_unlink;
    }
    int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd >= 0) {
        fsync(dfd);
        close(dfd);
    }
    close(fd);
    goto out_free;

out_unlink:
    unlink(tmp);
    close(fd);
out_free:
    free(tmp);
    free(copy);
    return r;
}

int backend_overlay_check(const char *path, uint64_t base_size, bool read_only,
                          struct err *err)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
    if (fd < 0 && errno == ENOENT) {
        if (read_only) {
            return err_set(err, ENOENT,
                           "does not exist (a read-only export cannot "
                           "create it)");
        }
        char *copy = strdup(path);
        if (copy == NULL) {
            return err_set(err, ENOMEM, "out of memory");
        }
        int r = access(dirname(copy), W_OK) == 0
                    ? 0
                    : err_set_errno(err, errno,
                                    "does not exist and cannot be created");
        free(copy);
        return r;
    }
    if (fd < 0) {
        return err_set_errno(err, errno, "open");
    }
    struct ovl_header h;
    int r = header_read(fd, &h, err);
    close(fd);
    if (r == 0 && h.base_size != base_size) {
        r = err_set(err, EINVAL,
                    "made over a base of %llu bytes, but the base now has "
                    "%llu: the base changed size",
                    (unsigned long long)h.base_size,
                    (unsigned long long)base_size);
    }
    return r;
}

/* ---- The map ---- */

static uint64_t block_of(const struct ovl_backend *o, uint64_t offset)
{
    return offset >> o->shift;
}

/* The first byte of block b and the end of it (the export's end for the
 * last, short block). */
static uint64_t block_start(const struct ovl_backend *o, uint64_t b)
{
    return b << o->shift;
}

static uint64_t block_end(const struct ovl_backend *o, uint64_t b)
{
    uint64_t e = (b + 1) << o->shift;
    return e < o->be.size ? e : o->be.size;
}

static bool bit_get(_Atomic unsigned char *m, uint64_t b)
{
    /* Acquire: pairs with the release in mark_allocated (or the commit's
     * store of `durable`), so what was done before the bit is seen. */
    return (atomic_load_explicit(&m[b / 8], memory_order_acquire) >> (b % 8)) &
           1;
}

static bool allocated(struct ovl_backend *o, uint64_t b)
{
    return bit_get(o->map, b);
}

/* Block b's store write has completed: reads now go to the overlay. */
static void mark_allocated(struct ovl_backend *o, uint64_t b)
{
    /* Release: the completed store write before the bit (bit_get). */
    unsigned char old = atomic_fetch_or_explicit(
        &o->map[b / 8], (unsigned char)(1u << (b % 8)), memory_order_release);
    if (!((old >> (b % 8)) & 1)) {
        /* Release, after the bit: the commit that exchanges this flag
         * (acq_rel) then sees the bit when it copies the page. */
        atomic_store_explicit(&o->dirty[b / 8 / OVL_MAP_PAGE], true,
                              memory_order_release);
    }
}

/*
 * Where the run of blocks in the same state as the block at `offset`
 * ends: the first byte after it, at most `end`.
 */
static uint64_t run_end(struct ovl_backend *o, uint64_t offset, uint64_t end,
                        bool *in_overlay)
{
    uint64_t b = block_of(o, offset);
    bool a = allocated(o, b);
    *in_overlay = a;
    uint64_t next = block_end(o, b);
    while (next < end && allocated(o, block_of(o, next)) == a) {
        next = block_end(o, block_of(o, next));
    }
    return next < end ? next : end;
}

/* ---- Opening ---- */

static void ovl_free(struct ovl_backend *o)
{
    free((void *)o->map);
    free((void *)o->durable);
    free(o->dirty);
    free(o->staging);
    free(o->staged);
    free(o);
}

/* Opens (creating if allowed) and locks the overlay file.  fd or -errno. */
static int open_locked(const char *path, bool read_only, uint64_t size,
                       struct err *err)
{
    int flags = (read_only ? O_RDONLY : O_RDWR) | O_CLOEXEC | O_NOCTTY;
    int fd = open(path, flags | O_NONBLOCK);
    if (fd < 0 && errno == ENOENT && !read_only) {
        struct err cerr;
        err_clear(&cerr);
        if (overlay_create(path, size, &cerr) < 0) {
            return err_set(err, cerr.errnum, "overlay %s: %s", path, cerr.msg);
        }
        fd = open(path, flags | O_NONBLOCK);
    }
    if (fd < 0) {
        return err_set_errno(err, errno, "overlay %s: open", path);
    }
    int fl = fcntl(fd, F_GETFL);
    if (fl < 0 || fcntl(fd, F_SETFL, fl & ~O_NONBLOCK) != 0) {
        int e = errno;
        close(fd);
        return err_set_errno(err, e, "overlay %s: fcntl", path);
    }
    if (flock(fd, (read_only ? LOCK_SH : LOCK_EX) | LOCK_NB) != 0) {
        int e = errno;
        close(fd);
        if (e == EWOULDBLOCK) {
            return err_set(err, EBUSY,
                           "overlay %s: in use (locked by another export "
                           "or process)",
                           path);
        }
        return err_set_errno(err, e, "overlay %s: flock", path);
    }
    return fd;
}

struct backend *backend_overlay_open(struct backend *base_take,
                                     const char *path, unsigned flags,
                                     struct err *err)
{
    bool read_only = (flags & BACKEND_OPEN_READ_ONLY) != 0;
    uint64_t size = backend_size(base_take);
    struct ovl_backend *o = NULL;
    struct err e;
    err_clear(&e);
    if (backend_same_file(base_take, path)) {
        err_set(err, EINVAL, "overlay %s: is the base itself", path);
        goto out_unref;
    }
    int fd = open_locked(path, read_only, size, err);
    if (fd < 0) {
        goto out_unref;
    }
    struct ovl_header h;
    if (header_read(fd, &h, &e) < 0) {
        err_set(err, e.errnum, "overlay %s: %s", path, e.msg);
        goto out_close;
    }
    if (h.base_size != size) {
        err_set(err, EINVAL,
                "overlay %s: made over a base of %llu bytes, but the base "
                "now has %llu: the base changed size",
                path, (unsigned long long)h.base_size,
                (unsigned long long)size);
        goto out_close;
    }
    o = calloc(1, sizeof *o);
    if (o == NULL) {
        err_set(err, ENOMEM, "overlay %s: out of memory", path);
        goto out_close;
    }
    o->fd = fd;
    o->read_only = read_only;
    o->gran = h.gran;
    o->shift = (unsigned)__builtin_ctz(h.gran);
    o->nblocks = (size + h.gran - 1) >> o->shift;
    o->map_offset = h.map_offset;
    o->map_len = h.map_len;
    o->data_offset = h.data_offset;
    o->nr_pages = h.map_len / OVL_MAP_PAGE;
    o->map = calloc(1, h.map_len);
    o->durable = calloc(1, h.map_len);
    o->dirty = calloc(o->nr_pages, sizeof *o->dirty);
    o->staging = aligned_alloc(OVL_MAP_PAGE, h.map_len);
    o->staged = calloc(o->nr_pages, sizeof *o->staged);
    if (o->map == NULL || o->durable == NULL || o->dirty == NULL ||
        o->staging == NULL || o->staged == NULL) {
        err_set(err, ENOMEM, "overlay %s: out of memory for the map", path);
        goto out_free;
    }
    int r = read_all(fd, o->staging, h.map_len, (off_t)h.map_offset);
    if (r < 0) {
        err_set_errno(err, -r, "overlay %s: reading the map", path);
        goto out_free;
    }
    for (uint64_t i = 0; i < h.map_len; i++) {
        atomic_init(&o->map[i], o->staging[i]);
        atomic_init(&o->durable[i], o->staging[i]);
    }
    for (uint64_t i = 0; i < o->nr_pages; i++) {
        atomic_init(&o->dirty[i], false);
    }
    o->store = backend_file_open_flags(
        path, flags & (BACKEND_OPEN_READ_ONLY | BACKEND_OPEN_DIRECT), &e);
    if (o->store == NULL) {
        err_set(err, e.errnum, "overlay %s", e.msg);
        goto out_free;
    }
    co_mutex_init(&o->commit);
    for (unsigned i = 0; i < OVL_STRIPES; i++) {
        co_mutex_init(&o->stripes[i]);
    }
    const struct backend *s = o->store;
    unsigned caps =
        BACKEND_CAP_EXTENTS | BACKEND_CAP_MULTI_CONN |
        (read_only
             ? BACKEND_CAP_READ_ONLY
             : BACKEND_CAP_TRIM | BACKEND_CAP_ZERO |
                   (backend_can_fast_zero(s) ? BACKEND_CAP_FAST_ZERO : 0)) |
        ((backend_can_cache(s) || backend_can_cache(base_take))
             ? BACKEND_CAP_CACHE
             : 0) |
        ((backend_is_rotational(s) || backend_is_rotational(base_take))
             ? BACKEND_CAP_ROTATIONAL
             : 0);
    backend_init(&o->be, &ovl_ops, base_take, size, caps, BACKEND_PARALLEL);
    return &o->be;

out_free:
    ovl_free(o);
out_close:
    close(fd);
out_unref:
    backend_unref(base_take);
    return NULL;
}

/* ---- Commits ---- */

/* Copies the map page p into staging and notes it.  Under commit. */
static void stage_page(struct ovl_backend *o, uint64_t p, uint64_t *n)
{
    uint64_t from = p * OVL_MAP_PAGE;
    for (uint64_t i = from; i < from + OVL_MAP_PAGE; i++) {
        o->staging[i] = atomic_load_explicit(&o->map[i], memory_order_acquire);
    }
    o->staged[(*n)++] = p;
}

/* The staged pages are durable: FUA writes may rely on their bits. */
static void staged_durable(struct ovl_backend *o, uint64_t n)
{
    for (uint64_t k = 0; k < n; k++) {
        uint64_t from = o->staged[k] * OVL_MAP_PAGE;
        for (uint64_t i = from; i < from + OVL_MAP_PAGE; i++) {
            /* Release: pairs with bit_get's acquire in all_durable. */
            atomic_store_explicit(&o->durable[i], o->staging[i],
                                  memory_order_release);
        }
    }
}

/* A commit failed: its pages go to the next one. */
static void staged_retry(struct ovl_backend *o, uint64_t n)
{
    for (uint64_t k = 0; k < n; k++) {
        atomic_store_explicit(&o->dirty[o->staged[k]], true,
                              memory_order_relaxed);
    }
}

/* Stages every dirty page (the design's step 2).  Under commit. */
static uint64_t stage_dirty(struct ovl_backend *o)
{
    uint64_t n = 0;
    for (uint64_t p = 0; p < o->nr_pages; p++) {
        /* acq_rel: pairs with mark_allocated's release store. */
        if (atomic_load_explicit(&o->dirty[p], memory_order_relaxed) &&
            atomic_exchange_explicit(&o->dirty[p], false,
                                     memory_order_acq_rel)) {
            stage_page(o, p, &n);
        }
    }
    return n;
}

/*
 * Makes every completed write durable, the map included: data first,
 * then the map pages that gained bits before the data sync.
 */
static int commit(struct ovl_backend *o)
{
    co_mutex_lock(&o->commit);
    uint64_t n = stage_dirty(o);
    int r = backend_flush(o->store);
    for (uint64_t k = 0; r == 0 && k < n;) {
        /* Adjacent pages in one write. */
        uint64_t first = o->staged[k], count = 1;
        while (k + count < n && o->staged[k + count] == first + count) {
            count++;
        }
        uint64_t off = first * OVL_MAP_PAGE;
        r = backend_pwrite(o->store, o->staging + off,
                           (uint32_t)(count * OVL_MAP_PAGE),
                           o->map_offset + off, false);
        k += count;
    }
    if (r == 0 && n > 0) {
        r = backend_flush(o->store);
    }
    if (r == 0) {
        staged_durable(o, n);
    } else {
        staged_retry(o, n);
    }
    co_mutex_unlock(&o->commit);
    return r;
}

static void ovl_close(struct backend *b)
{
    struct ovl_backend *o = to_ovl(b);
    /* The final commit of the design note, with plain system calls:
     * nothing is in flight any more. */
    if (!o->read_only) {
        uint64_t n = stage_dirty(o);
        if (n > 0 && fdatasync(o->fd) == 0) {
            bool ok = true;
            for (uint64_t k = 0; ok && k < n; k++) {
                uint64_t off = o->staged[k] * OVL_MAP_PAGE;
                ok = fd_write_all(o->fd, o->staging + off, OVL_MAP_PAGE,
                                  (off_t)(o->map_offset + off)) == 0;
            }
            if (ok) {
                fdatasync(o->fd);
            }
        }
    }
    backend_unref(o->store);
    o->store = NULL;
    co_mutex_fini(&o->commit);
    for (unsigned i = 0; i < OVL_STRIPES; i++) {
        co_mutex_fini(&o->stripes[i]);
    }
    close(o->fd);
    o->fd = -1;
    ovl_free(o);
}

/* ---- I/O ---- */

static int ovl_pread(struct backend *b, void *buf, uint32_t len,
                     uint64_t offset)
{
    struct ovl_backend *o = to_ovl(b);
    unsigned char *p = buf;
    uint64_t end = offset + len;
    while (offset < end) {
        bool a;
        uint64_t next = run_end(o, offset, end, &a);
        uint32_t n = (uint32_t)(next - offset);
        int r = a ? backend_pread(o->store, p, n, o->data_offset + offset)
                  : backend_pread(b->lower, p, n, offset);
        if (r < 0) {
            return r;
        }
        p += n;
        offset = next;
    }
    return 0;
}

/* What a change of an unallocated block does. */
enum fill_kind {
    FILL_WRITE, /* the bytes of src */
    FILL_ZERO,  /* zeroes */
    FILL_TRIM,  /* zeroes for whole blocks; partial blocks are left */
};

/*
 * Puts [offset, offset+n) of block b (a part of it) into the overlay:
 * under b's stripe, if the block is still in the base, read it from the
 * base, merge the new bytes (src, or zeroes when src is NULL) and write
 * the whole block; if another request allocated it meanwhile, change the
 * part in place.
 */
static int copy_up(struct ovl_backend *o, uint64_t b, const unsigned char *src,
                   uint64_t offset, uint32_t n)
{
    struct co_mutex *m = &o->stripes[b % OVL_STRIPES];
    int r;
    co_mutex_lock(m);
    if (allocated(o, b)) {
        r = src != NULL
                ? backend_pwrite(o->store, src, n, o->data_offset + offset,
                                 false)
                : backend_zero(o->store, o->data_offset + offset, n, 0, false);
        co_mutex_unlock(m);
        return r;
    }
    uint64_t start = block_start(o, b);
    uint32_t blen = (uint32_t)(block_end(o, b) - start);
    /* The block itself: the cost of a first write, as a memory backend's
     * page is (aligned for cache=none). */
    unsigned char *block = aligned_alloc(4096, o->gran);
    if (block == NULL) {
        co_mutex_unlock(m);
        return -ENOMEM;
    }
    r = backend_pread(o->be.lower, block, blen, start);
    if (r == 0) {
        if (src != NULL) {
            memcpy(block + (offset - start), src, n);
        } else {
            memset(block + (offset - start), 0, n);
        }
        r = backend_pwrite(o->store, block, blen, o->data_offset + start,
                           false);
    }
    free(block);
    if (r == 0) {
        mark_allocated(o, b);
    }
    co_mutex_unlock(m);
    return r;
}

/*
 * Applies a change to [offset, end), a run of blocks that were in the
 * base when looked at: partial blocks are copied up, whole ones written
 * or zeroed in the store without reading the base.  src is the bytes of
 * [offset, end) for FILL_WRITE; zflags are those of the zero.
 */
static int fill_base_run(struct ovl_backend *o, enum fill_kind kind,
                         const unsigned char *src, uint64_t offset,
                         uint64_t end, unsigned zflags)
{
    while (offset < end) {
        uint64_t b = block_of(o, offset);
        uint64_t bs = block_start(o, b), be = block_end(o, b);
        if (offset > bs || end < be) {
            uint64_t e = end < be ? end : be;
            int r = 0;
            if (kind != FILL_TRIM) {
                r = copy_up(o, b, src, offset, (uint32_t)(e - offset));
            }
            if (r < 0) {
                return r;
            }
            if (src != NULL) {
                src += e - offset;
            }
            offset = e;
            continue;
        }
        /* Whole blocks from here up to the last one that fits. */
        uint64_t whole = end == o->be.size ? end : end >> o->shift << o->shift;
        int r;
        if (kind == FILL_WRITE) {
            r = backend_pwrite(o->store, src, (uint32_t)(whole - offset),
                               o->data_offset + offset, false);
        } else {
            unsigned f = kind == FILL_TRIM ? BACKEND_ZERO_MAY_TRIM : zflags;
            r = backend_zero(o->store, o->data_offset + offset, whole - offset,
                             f, false);
        }
        if (r < 0) {
            return r;
        }
        for (uint64_t k = b; k < block_of(o, whole - 1) + 1; k++) {
            mark_allocated(o, k);
        }
        if (src != NULL) {
            src += whole - offset;
        }
        offset = whole;
    }
    return 0;
}

/* Every block of [offset, offset+len) has its bit on disk. */
static bool all_durable(struct ovl_backend *o, uint64_t offset, uint64_t len)
{
    for (uint64_t b = block_of(o, offset); b <= block_of(o, offset + len - 1);
         b++) {
        if (!bit_get(o->durable, b)) {
            return false;
        }
    }
    return true;
}

static int ovl_pwrite(struct backend *b, const void *buf, uint32_t len,
                      uint64_t offset, bool fua)
{
    struct ovl_backend *o = to_ovl(b);
    if (fua && all_durable(o, offset, len)) {
        /* Nothing of the map to persist: a FUA write of the data. */
        return backend_pwrite(o->store, buf, len, o->data_offset + offset,
                              true);
    }
    const unsigned char *p = buf;
    uint64_t end = offset + len;
    while (offset < end) {
        bool a;
        uint64_t next = run_end(o, offset, end, &a);
        int r = a ? backend_pwrite(o->store, p, (uint32_t)(next - offset),
                                   o->data_offset + offset, false)
                  : fill_base_run(o, FILL_WRITE, p, offset, next, 0);
        if (r < 0) {
            return r;
        }
        p += next - offset;
        offset = next;
    }
    return fua ? commit(o) : 0;
}

static int ovl_flush(struct backend *b)
{
    return commit(to_ovl(b));
}

static int ovl_trim(struct backend *b, uint64_t offset, uint64_t len, bool fua)
{
    struct ovl_backend *o = to_ovl(b);
    uint64_t end = offset + len;
    while (offset < end) {
        bool a;
        uint64_t next = run_end(o, offset, end, &a);
        int r = a ? backend_trim(o->store, o->data_offset + offset,
                                 next - offset, false)
                  : fill_base_run(o, FILL_TRIM, NULL, offset, next, 0);
        if (r < 0) {
            return r;
        }
        offset = next;
    }
    return fua ? commit(o) : 0;
}

/* A partial block still in the base: zeroing it means a copy-up. */
static bool needs_copy_up(struct ovl_backend *o, uint64_t offset, uint64_t end)
{
    uint64_t b = block_of(o, offset);
    return (offset > block_start(o, b) || end < block_end(o, b)) &&
           !allocated(o, b);
}

static int ovl_zero(struct backend *b, uint64_t offset, uint64_t len,
                    unsigned flags, bool fua)
{
    struct ovl_backend *o = to_ovl(b);
    uint64_t end = offset + len;
    if ((flags & BACKEND_ZERO_FAST) &&
        (needs_copy_up(o, offset, end) ||
         needs_copy_up(o, block_start(o, block_of(o, end - 1)), end))) {
        /* Reading the base and writing a block is not fast. */
        return -ENOTSUP;
    }
    while (offset < end) {
        bool a;
        uint64_t next = run_end(o, offset, end, &a);
        int r = a ? backend_zero(o->store, o->data_offset + offset,
                                 next - offset, flags, false)
                  : fill_base_run(o, FILL_ZERO, NULL, offset, next, flags);
        if (r < 0) {
            return r;
        }
        offset = next;
    }
    return fua ? commit(o) : 0;
}

static int ovl_cache(struct backend *b, uint64_t offset, uint64_t len)
{
    struct ovl_backend *o = to_ovl(b);
    uint64_t end = offset + len;
    while (offset < end) {
        bool a;
        uint64_t next = run_end(o, offset, end, &a);
        int r =
            a ? backend_cache(o->store, o->data_offset + offset, next - offset)
              : backend_cache(b->lower, offset, next - offset);
        if (r < 0) {
            return r;
        }
        offset = next;
    }
    return 0;
}

/* Appends an extent, merging it with the last one; false when full. */
static bool extent_add(struct backend_extent *out, unsigned max, unsigned *n,
                       struct backend_extent e)
{
    if (*n > 0 && out[*n - 1].hole == e.hole && out[*n - 1].depth == e.depth) {
        out[*n - 1].length += e.length;
        return true;
    }
    if (*n == max) {
        return false;
    }
    out[(*n)++] = e;
    return true;
}

/*
 * One run's map, from the store for the overlay's blocks (zeroed or
 * trimmed ones are holes there) or from the base for the rest.  Depth
 * counts from here: 1 for the overlay's blocks, one more than the base
 * says for the others (0, held by nobody, stays 0).
 */
static int run_extents(struct ovl_backend *o, enum backend_meta meta,
                       bool in_overlay, uint64_t offset, uint64_t len,
                       struct backend_extent *sub, unsigned max)
{
    if (meta == BACKEND_META_DEPTH) {
        if (in_overlay) {
            sub[0] = (struct backend_extent){.length = len, .depth = 1};
            return 1;
        }
        int r = backend_extents_meta(o->be.lower, meta, offset, len, sub, max);
        for (int i = 0; i < r; i++) {
            sub[i].depth += sub[i].depth > 0;
        }
        return r;
    }
    int r = in_overlay ? backend_extents(o->store, o->data_offset + offset, len,
                                         sub, max)
                       : backend_extents(o->be.lower, offset, len, sub, max);
    /* depth means nothing here; runs merge on `hole` alone. */
    for (int i = 0; i < r; i++) {
        sub[i].depth = 0;
    }
    return r;
}

static int ovl_extents(struct backend *b, enum backend_meta meta,
                       uint64_t offset, uint64_t len,
                       struct backend_extent *out, unsigned max)
{
    struct ovl_backend *o = to_ovl(b);
    if (meta != BACKEND_META_ALLOCATION && meta != BACKEND_META_DEPTH) {
        return -ENOTSUP;
    }
    uint64_t end = offset + len;
    unsigned n = 0;
    for (unsigned runs = 0; offset < end && runs < OVL_EXTENT_RUNS; runs++) {
        bool a;
        uint64_t next = run_end(o, offset, end, &a);
        struct backend_extent sub[16];
        int r = run_extents(o, meta, a, offset, next - offset, sub,
                            ARRAY_SIZE(sub));
        if (r < 0) {
            return n > 0 ? (int)n : r;
        }
        for (int i = 0; i < r; i++) {
            if (!extent_add(out, max, &n, sub[i])) {
                return (int)n;
            }
            offset += sub[i].length;
        }
    }
    return (int)n;
}

static int ovl_range_is_hole(struct backend *b, uint64_t offset, uint64_t len)
{
    struct ovl_backend *o = to_ovl(b);
    uint64_t end = offset + len;
    while (offset < end) {
        bool a;
        uint64_t next = run_end(o, offset, end, &a);
        int r = a ? backend_range_is_hole(o->store, o->data_offset + offset,
                                          next - offset)
                  : backend_range_is_hole(b->lower, offset, next - offset);
        if (r != 1) {
            return r;
        }
        offset = next;
    }
    return 1;
}

static const struct backend_ops ovl_ops = {
    .name = "overlay",
    .close = ovl_close,
    .pread = ovl_pread,
    .pwrite = ovl_pwrite,
    .flush = ovl_flush,
    .trim = ovl_trim,
    .zero = ovl_zero,
    .cache = ovl_cache,
    .extents = ovl_extents,
    .range_is_hole = ovl_range_is_hole,
};
