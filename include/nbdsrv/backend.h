/* SPDX-License-Identifier: MIT */
/*
 * The storage layer's interface: what an export's storage is to the
 * server, and what a layer of it must do.
 *
 * An export is a chain of layers.  The bottom one is a backend, which
 * holds the data (a file or block device, memory); each layer above it is
 * a filter, which wraps the layer below and adds one concern (faults for
 * the tests, a copy-on-write overlay).  Every layer is a struct backend
 * with an operations table (struct backend_ops), so that the server, and
 * each filter, talks to the layer below through this interface alone and
 * never knows what it is.
 *
 * Ownership.  A layer is reference counted (atomically).  The opener owns
 * the first reference; the server's export holds one and each connection
 * one more while it uses it.  A filter owns one reference to the layer
 * below, taken over at backend_init; so dropping the top of a chain
 * drops the whole chain, bottom last.  Buffers passed to the I/O calls
 * are borrowed for the call and never kept.
 *
 * Threads.  Opening and the facts (size, capabilities, concurrency class)
 * are ANY_THREAD: the facts are fixed at backend_init and immutable
 * afterwards, so they are read without locks.  The I/O calls are CORO_FN:
 * each issues its system calls on the ring of the loop the calling
 * coroutine runs on now (coro-io), makes no blocking call on a loop
 * thread beyond what the file system answers from memory (lseek
 * SEEK_DATA, a memcpy), and allocates nothing per request on the hot
 * path.  The last unref may come from any thread, loop threads included,
 * so a layer's close makes no blocking call either.
 *
 * Concurrency classes.  Each layer declares one:
 *  - BACKEND_PARALLEL: any number of calls at once, from any loops;
 *  - BACKEND_PER_CONN: calls of one connection one at a time, different
 *    connections in parallel;
 *  - BACKEND_SERIAL: one call at a time, whichever the caller.
 * The common code (backend.c) enforces the class of every layer at that
 * layer's entry: a layer that is not PARALLEL is entered under its own
 * co_mutex, so that at most one call of it runs, on one loop, at a time.
 * PER_CONN is served as SERIAL (stricter, so always correct; the layer
 * does not know connections).  The chain's class, what backend_concurrency
 * reports, is the strictest of its layers.  Lock order: a layer's mutex
 * before those of the layers below it.
 *
 * Checks done once, in the common code, for every layer: ranges lie in
 * [0, size) (-EINVAL otherwise), writes, trims and zeroes of a read-only
 * layer fail with -EPERM, zero-length data calls succeed without reaching
 * the layer, and a trim of a layer without BACKEND_CAP_TRIM succeeds
 * doing nothing (it is a hint).  So an operation of a layer is called
 * only with a non-empty range inside the export, and only for what its
 * capabilities allow.  What a filter may assume of the layer below is
 * exactly this contract: it calls the public backend_* functions on
 * be->lower, from the coroutine it was called on.
 *
 * Every I/O call returns 0 (extents: a count) or a negative errno.
 */
#ifndef NBDSRV_BACKEND_H
#define NBDSRV_BACKEND_H

#include "nbdsrv/affinity.h"
#include "nbdsrv/coro-lock.h"
#include "nbdsrv/err.h"
#include "nbdsrv/refcount.h"

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

struct backend;

/* Ordered from strictest to loosest (the chain's class is the minimum). */
enum backend_concurrency {
    BACKEND_SERIAL,
    BACKEND_PER_CONN,
    BACKEND_PARALLEL,
};

/*
 * Capabilities, a bitmask fixed at backend_init.  A filter computes its
 * own from those of the layer below, usually narrowing them (a layer
 * cannot trim faster than the one below it can); a filter that adds a
 * concern, such as a writable overlay over a read-only base, may add what
 * it implements itself.
 */
#define BACKEND_CAP_READ_ONLY 0x01u /* writes, trims, zeroes: -EPERM */
#define BACKEND_CAP_TRIM 0x02u      /* trim frees space */
#define BACKEND_CAP_ZERO 0x04u      /* zero works (else -ENOTSUP) */
#define BACKEND_CAP_FAST_ZERO 0x08u /* zero can be fast (no data moved) */
#define BACKEND_CAP_CACHE 0x10u     /* cache does something useful */
#define BACKEND_CAP_EXTENTS 0x20u   /* extents knows holes */
#define BACKEND_CAP_MULTI_CONN                                                 \
    0x40u                            /* flush on one connection covers the     \
                                        writes of all of them */
#define BACKEND_CAP_ROTATIONAL 0x80u /* seeks are slow */

/* Flags of backend_zero. */
#define BACKEND_ZERO_MAY_TRIM                                                  \
    0x1u                       /* a hole is fine (no NBD_CMD_FLAG_NO_HOLE) */
#define BACKEND_ZERO_FAST 0x2u /* fail with -ENOTSUP unless it is fast */

/*
 * The metadata contexts a layer describes with extents; a context a
 * layer does not know is -ENOTSUP.
 *  - BACKEND_META_ALLOCATION: the allocation map (NBD's base:allocation):
 *    `hole` is a range that reads as zeroes and takes no space.
 *  - BACKEND_META_DEPTH: which layer of the chain holds the data
 *    (qemu:allocation-depth): `depth` 1 is the layer asked, 2 the one
 *    below it that holds data, and so on; 0 would be a range no layer
 *    holds.  A bottom layer (a backend) holds every byte of its range,
 *    holes included, as a raw image does in qemu, so it is depth 1
 *    throughout and the common code answers for it.  A filter that holds
 *    no data passes the question down; a copy-on-write overlay
 *    (backend-overlay.c) answers 1 for what it holds itself and one more
 *    than the layer below for what it reads through.
 */
enum backend_meta {
    BACKEND_META_ALLOCATION,
    BACKEND_META_DEPTH,
};

/* One run of a map: `length` bytes that are all holes or all data (a hole
 * reads as zeroes) for BACKEND_META_ALLOCATION, or all at one `depth` for
 * BACKEND_META_DEPTH (the other field is then unused). */
struct backend_extent {
    uint64_t length;
    bool hole;
    uint32_t depth;
};

/*
 * A layer's operations.  The common code calls them only as the contract
 * above says (ranges checked, non-empty, capabilities honoured, under the
 * layer's mutex unless it is BACKEND_PARALLEL).  Every data operation is
 * CORO_FN; close is ANY_THREAD.  Each implementation is a const object
 * named <impl>_ops.
 *
 * NULL, in a filter (a layer with a layer below): the operation passes
 * to the layer below unchanged, as if the filter called the public
 * backend_* function on be->lower itself (after this layer's checks and
 * under its mutex).  So a filter fills in only what it changes, as
 * nbdkit's filters do; close is never NULL.  NULL, in a bottom layer (a
 * backend): only the optional operations may be NULL, with the meaning
 * noted at each (pread, pwrite, flush and zero are required; pwrite and
 * zero may be NULL in a layer that can never be asked for them, one
 * read-only or without BACKEND_CAP_ZERO).
 */
struct backend_ops {
    const char *name; /* "file", "memory", ...: for messages */

    /*
     * Frees the layer's own state and the object holding `be` (the
     * common code has already dropped nothing; it drops the layer below
     * after close returns).  Called once, with the last reference.
     */
    void (*close)(struct backend *be);

    /* Reads exactly len bytes. */
    int (*pread)(struct backend *be, void *buf, uint32_t len, uint64_t offset);
    /* Writes exactly len bytes; with fua durable before it returns. */
    int (*pwrite)(struct backend *be, const void *buf, uint32_t len,
                  uint64_t offset, bool fua);
    /* Makes every completed write durable. */
    int (*flush)(struct backend *be);
    /* Frees space; the range then reads as zeroes or as before.  NULL in
     * a backend: trims succeed doing nothing. */
    int (*trim)(struct backend *be, uint64_t offset, uint64_t len, bool fua);
    /* Makes the range read as zeroes (BACKEND_ZERO_* flags). */
    int (*zero)(struct backend *be, uint64_t offset, uint64_t len,
                unsigned flags, bool fua);
    /* Prefetches the range.  NULL in a backend: succeeds doing nothing. */
    int (*cache)(struct backend *be, uint64_t offset, uint64_t len);
    /*
     * Describes `meta` from offset onwards: fills 1..max extents covering
     * at least the first byte and at most len bytes (len is already
     * clipped to the export's end).  Returns the count or -errno.  NULL
     * in a backend: the common code reports one data extent.
     */
    int (*extents)(struct backend *be, enum backend_meta meta, uint64_t offset,
                   uint64_t len, struct backend_extent *out, unsigned max);
    /*
     * Whether [offset, offset+len) is all hole: 1, 0 (or cannot tell),
     * or -errno.  NULL: the common code asks this layer's own extents
     * for one extent; when that is NULL too, a filter passes the
     * question down and a backend answers 0.
     */
    int (*range_is_hole)(struct backend *be, uint64_t offset, uint64_t len);
    /*
     * Whether this layer has `path` open now (same device and inode).
     * Asked of the bottom layer only; NULL: it has no file.  ANY_THREAD.
     */
    bool (*same_file)(const struct backend *be, const char *path);
};

/*
 * The part of a layer every layer shares.  An implementation embeds it
 * (first or not) and finds itself with container_of.  Written only by
 * backend_init and backend_unref; the implementation reads `lower` and
 * uses the accessors for the rest.
 */
struct backend {
    const struct backend_ops *ops; /* immutable after init */
    struct refcount refs;          /* atomic; see backend_unref */
    struct backend *lower;         /* immutable: the layer below (a filter
                                      holds one reference), or NULL */
    uint64_t size;                 /* immutable after init */
    unsigned caps;                 /* immutable: BACKEND_CAP_* */
    enum backend_concurrency concurrency; /* immutable: this layer's */
    enum backend_concurrency chain;       /* immutable: the strictest of
                                             this layer and those below */
    /* Serialises calls into a layer that is not BACKEND_PARALLEL (then
     * initialised; untouched otherwise).  Before the layers below's. */
    struct co_mutex serial;
};

/*
 * Initialises the common part of a new layer with one reference.
 * `lower_take` is the layer below for a filter (its reference passes to
 * the new layer, which drops it when it closes), NULL for a backend.
 * ANY_THREAD, before the layer is shared.
 */
ANY_THREAD void backend_init(struct backend *be, const struct backend_ops *ops,
                             struct backend *lower_take, uint64_t size,
                             unsigned caps,
                             enum backend_concurrency concurrency);

ANY_THREAD struct backend *backend_ref(struct backend *be);
/*
 * Drops a reference; the last one closes the layer, then drops its
 * reference to the layer below.  NULL is allowed.  ANY_THREAD.
 */
ANY_THREAD void backend_unref(struct backend *be);

/* Immutable facts of the chain from this layer down.  ANY_THREAD. */
ANY_THREAD uint64_t backend_size(const struct backend *be);
ANY_THREAD unsigned backend_caps(const struct backend *be);
ANY_THREAD bool backend_read_only(const struct backend *be);
ANY_THREAD bool backend_can_trim(const struct backend *be);
ANY_THREAD bool backend_can_zero(const struct backend *be);
/* Whether zeroing can be fast (fallocate works on this file system). */
ANY_THREAD bool backend_can_fast_zero(const struct backend *be);
ANY_THREAD bool backend_can_cache(const struct backend *be);
ANY_THREAD bool backend_can_extents(const struct backend *be);
ANY_THREAD bool backend_can_multi_conn(const struct backend *be);
ANY_THREAD bool backend_is_rotational(const struct backend *be);
/* The chain's class: the strictest of its layers.  ANY_THREAD. */
ANY_THREAD enum backend_concurrency
backend_concurrency(const struct backend *be);
/* The ops name of this layer ("file", "memory", ...).  ANY_THREAD. */
ANY_THREAD const char *backend_name(const struct backend *be);
/*
 * Whether the bottom layer of the chain has `path` open now (same device
 * and inode): false once the file was replaced or removed, and for a
 * backend that has no file.  ANY_THREAD.
 */
ANY_THREAD bool backend_same_file(const struct backend *be, const char *path);

/* Reads exactly len bytes at offset. */
CORO_FN int backend_pread(struct backend *be, void *buf, uint32_t len,
                          uint64_t offset);

/* Writes exactly len bytes; with fua the data is durable before it
 * returns.  -EPERM on a read-only layer. */
CORO_FN int backend_pwrite(struct backend *be, const void *buf, uint32_t len,
                           uint64_t offset, bool fua);

/* Makes every completed write durable. */
CORO_FN int backend_flush(struct backend *be);

/* Frees the range's space (the range then reads as zeroes or as before:
 * NBD_CMD_TRIM promises nothing about the contents). */
CORO_FN int backend_trim(struct backend *be, uint64_t offset, uint64_t len,
                         bool fua);

/*
 * Makes the range read as zeroes.  With BACKEND_ZERO_MAY_TRIM it may free
 * space; without it a layer that can keeps the space allocated.  With
 * BACKEND_ZERO_FAST it returns -ENOTSUP rather than fall back to writing
 * zeroes.
 */
CORO_FN int backend_zero(struct backend *be, uint64_t offset, uint64_t len,
                         unsigned flags, bool fua);

/* Starts reading the range in ahead of use (readahead), if the layer can. */
CORO_FN int backend_cache(struct backend *be, uint64_t offset, uint64_t len);

/*
 * Describes allocation (base:allocation) from `offset` onwards: fills up
 * to `max` extents covering at least the first byte and at most `len`
 * bytes (the last extent is clipped to offset+len and the export's end).
 * Returns the number of extents (>= 1) or -errno; -EINVAL when len or max
 * is 0 or offset is not inside the export.  A layer without
 * BACKEND_CAP_EXTENTS reports one data extent.
 */
CORO_FN int backend_extents(struct backend *be, uint64_t offset, uint64_t len,
                            struct backend_extent *out, unsigned max);

/* backend_extents for any metadata context.  For BACKEND_META_DEPTH a
 * layer without a layer below answers one extent of depth 1. */
CORO_FN int backend_extents_meta(struct backend *be, enum backend_meta meta,
                                 uint64_t offset, uint64_t len,
                                 struct backend_extent *out, unsigned max);

/*
 * Tells whether [offset, offset+len) is entirely a hole: 1 if it is, 0 if
 * it holds data (or the layer cannot tell), or -errno (-EINVAL for an
 * empty range or one outside the export).  Cheap where the layer can
 * answer without a full map (the file backend: one SEEK_DATA).
 */
CORO_FN int backend_range_is_hole(struct backend *be, uint64_t offset,
                                  uint64_t len);

#endif
