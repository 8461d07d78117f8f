/* SPDX-License-Identifier: MIT */
/*
 * The layers this tree ships, and how to open each: one file per layer
 * under src/backend/.  What a layer is, and what every layer promises,
 * is in backend.h; this header only names the constructors and the few
 * facts that belong to one kind of layer.
 */
#ifndef NBDSRV_BACKENDS_H
#define NBDSRV_BACKENDS_H

#include "nbdsrv/affinity.h"
#include "nbdsrv/backend.h"
#include "nbdsrv/err.h"

#include <stdbool.h>
#include <stdint.h>

/* ---- The file backend (backend-file.c): BACKEND_PARALLEL ---- */

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

/* Whether `be`, a file backend, was opened for cache=none.  ANY_THREAD. */
ANY_THREAD bool backend_file_is_direct(const struct backend *be);

/* ---- The memory backend (backend-mem.c): BACKEND_PARALLEL ---- */

/* The largest memory export: 16 TiB. */
#define BACKEND_MEMORY_MAX_SIZE (16ull << 40)

/*
 * A sparse export of `size` bytes held in memory, empty (all zeroes) at
 * first: pages are allocated on first write and given back by trims and
 * zeroes, and extents report pages never written as holes.  read_only
 * makes an export of zeroes.  NULL with err set (-EFBIG beyond
 * BACKEND_MEMORY_MAX_SIZE, -ENOMEM).  ANY_THREAD.
 */
ANY_THREAD struct backend *backend_memory_new(uint64_t size, bool read_only,
                                              struct err *err);

/* Bytes of data pages a memory backend holds now (0 for another kind of
 * layer).  ANY_THREAD. */
ANY_THREAD uint64_t backend_memory_allocated(const struct backend *be);

#endif
