/* SPDX-License-Identifier: MIT */
/* The memory backend: a sparse export held in pages allocated on first
 * write (scratch disks, tests). */

/*
 * Design.  The export is cut into MEM_PAGE_SIZE pages, found through a
 * two-level table: a directory of leaves, each leaf MEM_LEAF_PAGES page
 * pointers.  Both the leaves and the pages are allocated on the first
 * write that touches them; a page that was never written (or was trimmed
 * or zeroed whole since) is a hole, reads as zeroes and costs nothing.
 * The directory is allocated at open (8 bytes per 16 MiB of export).
 *
 * Concurrency: BACKEND_PARALLEL.  A read-write lock guards the tables:
 * reads and writes take it shared (so loops copy in parallel), and
 * install missing leaves and pages with a compare-and-swap, so that two
 * writers racing for the same page keep one; trims and zeroes take it
 * exclusive, because they free pages a shared holder could be copying.
 * The lock is held only across memory copies, never across a yield, so a
 * loop thread waits at most for the copies in progress (docs/design.md,
 * "Threads and affinity": no pthread lock across a yield).  It prefers writers,
 * so that a stream of reads cannot starve a trim.
 *
 * A new page is filled (data, and zeroes around it) before it is
 * published, so that a concurrent read of the same page, which the NBD
 * protocol leaves undefined, sees zeroes or data but never stale heap
 * memory.  The allocation on first write is the data itself, not
 * per-request bookkeeping; nothing else is allocated on the I/O path.
 *
 * Zeroes and trims give whole pages back, with or without
 * NBD_CMD_FLAG_NO_HOLE: keeping a page of zeroes would reserve nothing a
 * later write could run short of that the allocator would not give
 * again.  The partial pages at either end are cleared in place.  Flush
 * and FUA have nothing to make durable: the data lives as long as the
 * daemon (and across reloads that keep the export, see export.c).
 */
#include "nbdsrv/backends.h"
#include "nbdsrv/compiler.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#define MEM_PAGE_SHIFT 12u
#define MEM_PAGE_SIZE (1u << MEM_PAGE_SHIFT)
#define MEM_LEAF_SHIFT 12u
#define MEM_LEAF_PAGES (1u << MEM_LEAF_SHIFT)
#define MEM_LEAF_BYTES ((uint64_t)MEM_LEAF_PAGES * MEM_PAGE_SIZE)

/* MEM_LEAF_PAGES page pointers: atomic, see struct mem_backend. */
struct mem_leaf {
    _Atomic(unsigned char *) pages[MEM_LEAF_PAGES];
};

/*
 * Freed by mem_close with the last reference.  The tables: pointers are
 * atomics; they change from NULL to a page under the shared lock (CAS,
 * release, paired with the acquire load of the readers) and back to NULL
 * under the exclusive lock.
 */
struct mem_backend {
    struct backend be;     /* the common part */
    pthread_rwlock_t lock; /* see above; leaf, taken inside be.serial */
    uint64_t nr_leaves;    /* immutable */
    _Atomic(struct mem_leaf *) *leaves; /* nr_leaves entries; owned */
    atomic_uint_least64_t pages;        /* relaxed: pages allocated now */
};

static const struct backend_ops mem_ops;

static struct mem_backend *to_mem(struct backend *b)
{
    return container_of(b, struct mem_backend, be);
}

struct backend *backend_memory_new(uint64_t size, bool read_only,
                                   struct err *err)
{
    if (size > BACKEND_MEMORY_MAX_SIZE) {
        err_set(err, EFBIG,
                "memory: %llu bytes is more than a memory export may hold "
                "(16T)",
                (unsigned long long)size);
        return NULL;
    }
    struct mem_backend *m = calloc(1, sizeof *m);
    if (m == NULL) {
        err_set(err, ENOMEM, "memory: out of memory");
        return NULL;
    }
    m->nr_leaves = (size + MEM_LEAF_BYTES - 1) / MEM_LEAF_BYTES;
    m->leaves = calloc(m->nr_leaves > 0 ? m->nr_leaves : 1, sizeof *m->leaves);
    if (m->leaves == NULL) {
        free(m);
        err_set(err, ENOMEM, "memory: out of memory");
        return NULL;
    }
    pthread_rwlockattr_t attr;
    pthread_rwlockattr_init(&attr);
    pthread_rwlockattr_setkind_np(&attr,
                                  PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
    pthread_rwlock_init(&m->lock, &attr);
    pthread_rwlockattr_destroy(&attr);
    atomic_init(&m->pages, 0);
    unsigned caps = BACKEND_CAP_EXTENTS | BACKEND_CAP_MULTI_CONN |
                    (read_only ? BACKEND_CAP_READ_ONLY
                               : BACKEND_CAP_TRIM | BACKEND_CAP_ZERO |
                                     BACKEND_CAP_FAST_ZERO);
    backend_init(&m->be, &mem_ops, NULL, size, caps, BACKEND_PARALLEL);
    return &m->be;
}

uint64_t backend_memory_allocated(const struct backend *be)
{
    if (be->ops != &mem_ops) {
        return 0;
    }
    const struct mem_backend *m =
        container_of(be, const struct mem_backend, be);
    return atomic_load_explicit(&m->pages, memory_order_relaxed) *
           MEM_PAGE_SIZE;
}

static void mem_close(struct backend *b)
{
    struct mem_backend *m = to_mem(b);
    for (uint64_t i = 0; i < m->nr_leaves; i++) {
        struct mem_leaf *leaf = atomic_load(&m->leaves[i]);
        if (leaf == NULL) {
            continue;
        }
        for (unsigned j = 0; j < MEM_LEAF_PAGES; j++) {
            free(atomic_load(&leaf->pages[j]));
        }
        free(leaf);
    }
    free(m->leaves);
    m->leaves = NULL;
    pthread_rwlock_destroy(&m->lock);
    free(m);
}

/* The page holding byte `offset`, or NULL for a hole.  Shared lock. */
static unsigned char *page_find(struct mem_backend *m, uint64_t offset)
{
    uint64_t page = offset >> MEM_PAGE_SHIFT;
    /* Acquire: pairs with the CAS that published the leaf or page, so its
     * contents (zeroes, the first write's data) are visible. */
    struct mem_leaf *leaf = atomic_load_explicit(
        &m->leaves[page >> MEM_LEAF_SHIFT], memory_order_acquire);
    if (leaf == NULL) {
        return NULL;
    }
    return atomic_load_explicit(&leaf->pages[page & (MEM_LEAF_PAGES - 1)],
                                memory_order_acquire);
}

/* The leaf for `offset`, allocated if missing.  NULL: out of memory. */
static struct mem_leaf *leaf_get(struct mem_backend *m, uint64_t offset)
{
    _Atomic(struct mem_leaf *) *slot =
        &m->leaves[offset >> MEM_PAGE_SHIFT >> MEM_LEAF_SHIFT];
    struct mem_leaf *leaf = atomic_load_explicit(slot, memory_order_acquire);
    if (leaf != NULL) {
        return leaf;
    }
    struct mem_leaf *fresh = calloc(1, sizeof *fresh);
    if (fresh == NULL) {
        return NULL;
    }
    /* Release: the zeroed leaf before its pointer; acquire on failure:
     * the winner's leaf, as page_find. */
    if (atomic_compare_exchange_strong_explicit(
            slot, &leaf, fresh, memory_order_acq_rel, memory_order_acquire)) {
        return fresh;
    }
    free(fresh);
    return leaf;
}

/*
 * Copies n bytes of src into the page holding `offset` (all inside one
 * page), allocating it if it is a hole.  Shared lock.  0 or -ENOMEM.
 */
static int page_write(struct mem_backend *m, uint64_t offset,
                      const unsigned char *src, uint32_t n)
{
    uint32_t in = (uint32_t)(offset & (MEM_PAGE_SIZE - 1));
    unsigned char *p = page_find(m, offset);
    if (p != NULL) {
        memcpy(p + in, src, n);
        return 0;
    }
    struct mem_leaf *leaf = leaf_get(m, offset);
    unsigned char *fresh = leaf != NULL ? malloc(MEM_PAGE_SIZE) : NULL;
    if (fresh == NULL) {
        return -ENOMEM;
    }
    /* Filled before it is published: see the design note. */
    memset(fresh, 0, in);
    memcpy(fresh + in, src, n);
    memset(fresh + in + n, 0, MEM_PAGE_SIZE - in - n);
    _Atomic(unsigned char *) *slot =
        &leaf->pages[(offset >> MEM_PAGE_SHIFT) & (MEM_LEAF_PAGES - 1)];
    unsigned char *expected = NULL;
    /* Release: the filled page before its pointer (page_find acquires). */
    if (atomic_compare_exchange_strong_explicit(slot, &expected, fresh,
                                                memory_order_acq_rel,
                                                memory_order_acquire)) {
        atomic_fetch_add_explicit(&m->pages, 1, memory_order_relaxed);
        return 0;
    }
    /* Another writer installed the page first: write into theirs. */
    free(fresh);
    memcpy(expected + in, src, n);
    return 0;
}

/* Bytes from offset to the end of its page, at most len. */
static uint32_t page_chunk(uint64_t offset, uint64_t len)
{
    uint64_t left = MEM_PAGE_SIZE - (offset & (MEM_PAGE_SIZE - 1));
    return (uint32_t)(len < left ? len : left);
}

static int mem_pread(struct backend *b, void *buf, uint32_t len,
                     uint64_t offset)
{
    struct mem_backend *m = to_mem(b);
    unsigned char *out = buf;
    pthread_rwlock_rdlock(&m->lock);
    while (len > 0) {
        uint32_t n = page_chunk(offset, len);
        const unsigned char *p = page_find(m, offset);
        if (p != NULL) {
            memcpy(out, p + (offset & (MEM_PAGE_SIZE - 1)), n);
        } else {
            memset(out, 0, n);
        }
        out += n;
        offset += n;
        len -= n;
    }
    pthread_rwlock_unlock(&m->lock);
    return 0;
}

static int mem_pwrite(struct backend *b, const void *buf, uint32_t len,
                      uint64_t offset, bool fua)
{
    (void)fua; /* nothing is more durable than memory here */
    struct mem_backend *m = to_mem(b);
    const unsigned char *in = buf;
    int r = 0;
    pthread_rwlock_rdlock(&m->lock);
    while (len > 0 && r == 0) {
        uint32_t n = page_chunk(offset, len);
        r = page_write(m, offset, in, n);
        in += n;
        offset += n;
        len -= n;
    }
    pthread_rwlock_unlock(&m->lock);
    return r;
}

static int mem_flush(struct backend *b)
{
    (void)b;
    return 0;
}

/* Frees the page at `offset` if it is one.  Exclusive lock. */
static void page_free(struct mem_backend *m, struct mem_leaf *leaf,
                      uint64_t offset)
{
    _Atomic(unsigned char *) *slot =
        &leaf->pages[(offset >> MEM_PAGE_SHIFT) & (MEM_LEAF_PAGES - 1)];
    unsigned char *p =
        atomic_exchange_explicit(slot, NULL, memory_order_relaxed);
    if (p != NULL) {
        free(p);
        atomic_fetch_sub_explicit(&m->pages, 1, memory_order_relaxed);
    }
}

/* Frees a whole leaf and its pages.  Exclusive lock. */
static void leaf_free(struct mem_backend *m, uint64_t leaf_index)
{
    struct mem_leaf *leaf = atomic_exchange_explicit(
        &m->leaves[leaf_index], NULL, memory_order_relaxed);
    if (leaf == NULL) {
        return;
    }
    for (unsigned j = 0; j < MEM_LEAF_PAGES; j++) {
        unsigned char *p =
            atomic_load_explicit(&leaf->pages[j], memory_order_relaxed);
        if (p != NULL) {
            free(p);
            atomic_fetch_sub_explicit(&m->pages, 1, memory_order_relaxed);
        }
    }
    free(leaf);
}

/*
 * Makes [offset, offset+len) read as zeroes: whole pages (and leaves) are
 * given back, the partial pages at the ends cleared.
 */
static void zero_range(struct mem_backend *m, uint64_t offset, uint64_t len)
{
    pthread_rwlock_wrlock(&m->lock);
    uint64_t end = offset + len;
    while (offset < end) {
        uint32_t in = (uint32_t)(offset & (MEM_PAGE_SIZE - 1));
        uint64_t leaf_index = offset >> MEM_PAGE_SHIFT >> MEM_LEAF_SHIFT;
        if (in == 0 && offset % MEM_LEAF_BYTES == 0 &&
            end - offset >= MEM_LEAF_BYTES) {
            leaf_free(m, leaf_index);
            offset += MEM_LEAF_BYTES;
            continue;
        }
        uint32_t n = page_chunk(offset, end - offset);
        struct mem_leaf *leaf =
            atomic_load_explicit(&m->leaves[leaf_index], memory_order_relaxed);
        if (leaf == NULL) {
            /* All hole up to the end of this leaf. */
            uint64_t next = (leaf_index + 1) * MEM_LEAF_BYTES;
            offset = next < end ? next : end;
            continue;
        }
        if (n == MEM_PAGE_SIZE) {
            page_free(m, leaf, offset);
        } else {
            unsigned char *p = page_find(m, offset);
            if (p != NULL) {
                memset(p + in, 0, n);
            }
        }
        offset += n;
    }
    pthread_rwlock_unlock(&m->lock);
}

static int mem_trim(struct backend *b, uint64_t offset, uint64_t len, bool fua)
{
    (void)fua;
    zero_range(to_mem(b), offset, len);
    return 0;
}

static int mem_zero(struct backend *b, uint64_t offset, uint64_t len,
                    unsigned flags, bool fua)
{
    (void)flags; /* always fast, and always a hole: see the design note */
    (void)fua;
    zero_range(to_mem(b), offset, len);
    return 0;
}

static int mem_extents(struct backend *b, enum backend_meta meta,
                       uint64_t offset, uint64_t len,
                       struct backend_extent *out, unsigned max)
{
    if (meta != BACKEND_META_ALLOCATION) {
        return -ENOTSUP;
    }
    struct mem_backend *m = to_mem(b);
    uint64_t end = offset + len;
    unsigned n = 0;
    pthread_rwlock_rdlock(&m->lock);
    while (offset < end) {
        uint64_t leaf_index = offset >> MEM_PAGE_SHIFT >> MEM_LEAF_SHIFT;
        uint64_t next;
        bool hole;
        if (atomic_load_explicit(&m->leaves[leaf_index],
                                 memory_order_acquire) == NULL) {
            next = (leaf_index + 1) * MEM_LEAF_BYTES;
            hole = true;
        } else {
            next = ((offset >> MEM_PAGE_SHIFT) + 1) << MEM_PAGE_SHIFT;
            hole = page_find(m, offset) == NULL;
        }
        if (next > end) {
            next = end;
        }
        if (n > 0 && out[n - 1].hole == hole) {
            out[n - 1].length += next - offset;
        } else if (n == max) {
            break;
        } else {
            out[n++] =
                (struct backend_extent){.length = next - offset, .hole = hole};
        }
        offset = next;
    }
    pthread_rwlock_unlock(&m->lock);
    return (int)n;
}

static const struct backend_ops mem_ops = {
    .name = "memory",
    .close = mem_close,
    .pread = mem_pread,
    .pwrite = mem_pwrite,
    .flush = mem_flush,
    .trim = mem_trim,
    .zero = mem_zero,
    .extents = mem_extents,
};
