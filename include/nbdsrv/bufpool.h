/* SPDX-License-Identifier: MIT */
/*
 * Buffer pools for request payloads and small per-request objects.
 *
 * Buffers come in power-of-two size classes from 256 bytes to 64 MiB,
 * 4096-byte aligned from 4 KiB up.  Each thread (each loop) keeps a small
 * cache of the small and medium classes; a buffer taken on one loop may
 * be returned on another (a WRITE payload is read on the connection's
 * home loop and released on the worker loop that wrote it), so caches
 * trade through global lists under a mutex when they run empty or full.
 * What the pools keep is bounded per class, and bufpool_trim gives back
 * to the system what has sat unused in the global lists for a while.
 */
#ifndef NBDSRV_BUFPOOL_H
#define NBDSRV_BUFPOOL_H

#include "nbdsrv/affinity.h"

#include <stddef.h>
#include <stdint.h>

#define BUFPOOL_MAX_SIZE (64u * 1024 * 1024)

/*
 * Returns a buffer of at least `size` bytes (size <= BUFPOOL_MAX_SIZE),
 * or NULL when memory is exhausted.  Contents are undefined.  ANY_THREAD.
 */
ANY_THREAD void *bufpool_get(size_t size);

/* Returns a buffer; `size` is the size passed to bufpool_get.  NULL is
 * allowed.  ANY_THREAD. */
ANY_THREAD void bufpool_put(void *buf, size_t size);

/*
 * The bytes bufpool_get(size) really allocates (its size class): what a
 * caller that accounts for memory must count.  0 for 0 and for sizes
 * over BUFPOOL_MAX_SIZE.  ANY_THREAD.
 */
ANY_THREAD size_t bufpool_alloc_size(size_t size);

/*
 * Frees the buffers of the global lists that have been there for more
 * than `idle_ns` (0: all of them) and returns the heap's free pages to
 * the system.  Thread caches, small and bounded, are kept.  Returns the
 * bytes freed.  ANY_THREAD; meant to be called periodically.
 */
ANY_THREAD size_t bufpool_trim(uint64_t idle_ns);

/* Bytes of free buffers the pools hold now (global lists and thread
 * caches).  ANY_THREAD. */
ANY_THREAD size_t bufpool_cached_bytes(void);

#endif
