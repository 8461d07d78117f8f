/* SPDX-License-Identifier: MIT */
/*
 * io_uring operations that block the calling coroutine, not its thread.
 *
 * Each call queues one SQE on the ring of the loop the coroutine runs on
 * now, yields, and is woken by the completion on that same loop; the SQE
 * goes to the kernel with the loop's next batched submit.  Results follow
 * the CQE convention: 0 or more on success, -errno on failure.  All are
 * CORO_FN and need a coroutine that is on a loop.
 */
#ifndef NBDSRV_CORO_IO_H
#define NBDSRV_CORO_IO_H

#include "nbdsrv/affinity.h"

#include <stdint.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <sys/uio.h>

CORO_FN ssize_t coro_read(int fd, void *buf, size_t len, uint64_t offset);
CORO_FN ssize_t coro_write(int fd, const void *buf, size_t len,
                           uint64_t offset);
CORO_FN ssize_t coro_readv(int fd, const struct iovec *iov, int iovcnt,
                           uint64_t offset);
CORO_FN ssize_t coro_writev(int fd, const struct iovec *iov, int iovcnt,
                            uint64_t offset);
CORO_FN int coro_fsync(int fd);
CORO_FN int coro_fdatasync(int fd);
CORO_FN int coro_fallocate(int fd, int mode, uint64_t offset, uint64_t len);

/* Waits until fd reports one of `events` (POLLIN...); returns revents. */
CORO_FN int coro_poll(int fd, short events);

/* Returns the new fd (with SOCK_CLOEXEC and the given extra flags). */
CORO_FN int coro_accept(int fd, struct sockaddr *addr, socklen_t *addrlen,
                        int flags);
CORO_FN int coro_connect(int fd, const struct sockaddr *addr,
                         socklen_t addrlen);
CORO_FN ssize_t coro_recv(int fd, void *buf, size_t len, int flags);
CORO_FN ssize_t coro_send(int fd, const void *buf, size_t len, int flags);

/* Sleeps for `ns` nanoseconds on an io_uring timeout.  Returns 0. */
CORO_FN int coro_sleep_ns(uint64_t ns);

#endif
