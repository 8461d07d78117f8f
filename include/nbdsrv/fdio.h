/* SPDX-License-Identifier: MIT */
/*
 * Blocking reads and writes of a whole buffer on a file descriptor,
 * retried after EINTR: for start-up, sidecar and map files, and the
 * tools' standard input and output.  Never on a loop thread's request
 * path (that is coro-io's ring).  ANY_THREAD; they keep no state.
 *
 * `at` is the file offset (pread, pwrite), or FDIO_POS for the file
 * position (read, write: pipes, terminals, sockets).
 */
#ifndef NBDSRV_FDIO_H
#define NBDSRV_FDIO_H

#include "nbdsrv/affinity.h"

#include <stddef.h>
#include <sys/types.h>

#define FDIO_POS ((off_t)-1)

/* Writes all len bytes: 0, or -errno (-EIO when a write moved nothing). */
ANY_THREAD int fd_write_all(int fd, const void *buf, size_t len, off_t at);

/* Reads len bytes, fewer only at end of file: the count, or -errno. */
ANY_THREAD ssize_t fd_read_full(int fd, void *buf, size_t len, off_t at);

#endif
