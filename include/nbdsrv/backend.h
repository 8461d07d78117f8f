/* SPDX-License-Identifier: MIT */
/*
 * Backends: the storage behind an export.
 *
 * A backend is opened once per export and shared by every connection to
 * it, from every loop: its I/O functions are CORO_FN and issue their
 * io_uring operations on the ring of the loop the calling coroutine runs
 * on now.  Size, read-only-ness and capabilities are fixed at open and
 * immutable afterwards, so they are read without locks.  Reference
 * counted (atomically): the export holds one reference, each connection
 * one more while it uses it.
 *
 * Every I/O call returns 0 or a negative errno.  Callers check ranges
 * against backend_size() before calling; the backend checks nothing the
 * protocol layer already checked, but never reads or writes outside
 * [0, size).
 *
 * Concurrency class: BACKEND_PARALLEL (any number of requests at once,
 * from any loop).
 */
#ifndef NBDSRV_BACKEND_H
#define NBDSRV_BACKEND_H

#include "nbdsrv/affinity.h"
#include "nbdsrv/err.h"

#include <stdbool.h>
#include <stdint.h>

struct backend;

enum backend_concurrency {
    BACKEND_SERIAL,
    BACKEND_PER_CONN,
    BACKEND_PARALLEL,
};

/* Flags of backend_zero. */
#define BACKEND_ZERO_MAY_TRIM                                                  \
    0x1u                       /* a hole is fine (no NBD_CMD_FLAG_NO_HOLE) */
#define BACKEND_ZERO_FAST 0x2u /* fail with -ENOTSUP unless it is fast */

/* One run of the allocation map: `length` bytes that are all holes or all
 * data.  A hole reads as zeroes. */
struct backend_extent {
    uint64_t length;
    bool hole;
};

/*
 * Opens a raw image file or a block device.  read_only opens it O_RDONLY.
 * The size comes from fstat (regular files) or BLKGETSIZE64 (block
 * devices); anything else is refused.  Returns NULL with err naming the
 * path and the cause.  ANY_THREAD.
 */
ANY_THREAD struct backend *backend_file_open(const char *path, bool read_only,
                                             struct err *err);

/* Flags of backend_file_open_flags. */
#define BACKEND_OPEN_READ_ONLY 0x1u
#define BACKEND_OPEN_DIRECT 0x2u /* cache=none: aligned I/O uses O_DIRECT */

/*
 * backend_file_open with flags.  With BACKEND_OPEN_DIRECT, reads and
 * writes aligned to 4096 bytes (offset, length and buffer) bypass the
 * page cache; others stay buffered, so any request works.  A file system
 * that refuses O_DIRECT (tmpfs before Linux 6.6) fails the open with a
 * message saying so.
 * ANY_THREAD.
 */
ANY_THREAD struct backend *
backend_file_open_flags(const char *path, unsigned flags, struct err *err);

ANY_THREAD struct backend *backend_ref(struct backend *be);
/* Drops a reference; the last one closes the file.  NULL is allowed. */
ANY_THREAD void backend_unref(struct backend *be);

/* Immutable facts, fixed at open.  ANY_THREAD. */
ANY_THREAD uint64_t backend_size(const struct backend *be);
ANY_THREAD bool backend_read_only(const struct backend *be);
ANY_THREAD bool backend_can_trim(const struct backend *be);
ANY_THREAD bool backend_can_zero(const struct backend *be);
/* Whether zeroing can be fast (fallocate works on this file system). */
ANY_THREAD bool backend_can_fast_zero(const struct backend *be);
ANY_THREAD bool backend_can_cache(const struct backend *be);
ANY_THREAD bool backend_can_extents(const struct backend *be);
ANY_THREAD bool backend_is_rotational(const struct backend *be);
ANY_THREAD enum backend_concurrency
backend_concurrency(const struct backend *be);
ANY_THREAD const char *backend_path(const struct backend *be);
/*
 * Whether `path` names the file the backend has open now (same device
 * and inode): false once the file was replaced or removed.  ANY_THREAD.
 */
ANY_THREAD bool backend_same_file(const struct backend *be, const char *path);
/* Whether the image was opened for cache=none. */
ANY_THREAD bool backend_is_direct(const struct backend *be);

/* Reads exactly len bytes at offset (short reads are retried). */
CORO_FN int backend_pread(struct backend *be, void *buf, uint32_t len,
                          uint64_t offset);

/* Writes exactly len bytes; with fua the data is durable (RWF_DSYNC or
 * fdatasync) before it returns.  -EPERM on a read-only backend. */
CORO_FN int backend_pwrite(struct backend *be, const void *buf, uint32_t len,
                           uint64_t offset, bool fua);

/* Makes every completed write durable (fdatasync). */
CORO_FN int backend_flush(struct backend *be);

/* Punches a hole (the range then reads as zeroes). */
CORO_FN int backend_trim(struct backend *be, uint64_t offset, uint64_t len,
                         bool fua);

/*
 * Makes the range read as zeroes.  With BACKEND_ZERO_MAY_TRIM it may punch
 * a hole; without it the blocks stay allocated (zero range, or writing
 * zeroes).  With BACKEND_ZERO_FAST it returns -ENOTSUP rather than fall
 * back to writing zeroes.
 */
CORO_FN int backend_zero(struct backend *be, uint64_t offset, uint64_t len,
                         unsigned flags, bool fua);

/* Starts reading the range into the page cache (readahead). */
CORO_FN int backend_cache(struct backend *be, uint64_t offset, uint64_t len);

/*
 * Describes allocation from `offset` onwards, with SEEK_DATA/SEEK_HOLE:
 * fills up to `max` extents covering at least the first byte and at most
 * `len` bytes (the last extent is clipped to offset+len), never scanning
 * beyond offset+len.  Returns the number of extents (>= 1) or -errno.
 * File systems without SEEK_HOLE report one data extent.
 */
CORO_FN int backend_extents(struct backend *be, uint64_t offset, uint64_t len,
                            struct backend_extent *out, unsigned max);

/*
 * Tells with one SEEK_DATA whether [offset, offset+len) is entirely a
 * hole: 1 if it is, 0 if it holds data (or the file system cannot tell),
 * or -errno.  Cheap when offset is data, unlike backend_extents, whose
 * SEEK_HOLE may walk a whole fully written file on some file systems.
 */
CORO_FN int backend_range_is_hole(struct backend *be, uint64_t offset,
                                  uint64_t len);

#endif
