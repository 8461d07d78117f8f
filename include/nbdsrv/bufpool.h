/* SPDX-License-Identifier: MIT */
/*
 * Buffer pools for request payloads and small per-request objects.
 *
 * Buffers come in power-of-two size classes from 256 bytes to 32 MiB,
 * 4096-byte aligned from 4 KiB up.  Each thread (each loop) keeps a small
 * cache per class; a buffer taken on one loop may be returned on another
 * (a WRITE payload is read on the connection's home loop and released on
 * the worker loop that wrote it), so caches trade through a global list
 * under a mutex when they run empty or full.  Memory held by the pools is
 * bounded per class.
 */
#ifndef NBDSRV_BUFPOOL_H
#define NBDSRV_BUFPOOL_H

#include "nbdsrv/affinity.h"

#include <stddef.h>

#define BUFPOOL_MAX_SIZE (32u * 1024 * 1024)

/*
 * Returns a buffer of at least `size` bytes (size <= BUFPOOL_MAX_SIZE),
 * or NULL when memory is exhausted.  Contents are undefined.  ANY_THREAD.
 */
ANY_THREAD void *bufpool_get(size_t size);

/* Returns a buffer; `size` is the size passed to bufpool_get.  NULL is
 * allowed.  ANY_THREAD. */
ANY_THREAD void bufpool_put(void *buf, size_t size);

#endif
