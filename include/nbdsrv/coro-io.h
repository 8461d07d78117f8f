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
#include "nbdsrv/loop.h"

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

/*
 * coro_write with pwritev2()-style per-call flags in `rw_flags` (RWF_DSYNC
 * makes this one write durable, as O_DSYNC would).  Kernels that do not
 * know a flag fail with -EOPNOTSUPP.  CORO_FN.
 */
CORO_FN ssize_t coro_write_flags(int fd, const void *buf, size_t len,
                                 uint64_t offset, int rw_flags);

/*
 * posix_fadvise() on io_uring (POSIX_FADV_WILLNEED starts readahead).  The
 * ring carries a 32-bit length, and 0 means "to the end of the file", as
 * for posix_fadvise; callers split longer ranges.  Returns 0 or -errno.
 * CORO_FN.
 */
CORO_FN int coro_fadvise(int fd, uint64_t offset, uint32_t len, int advice);

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

struct coro_timer;
typedef void coro_timer_fn(struct coro_timer *timer);

/*
 * A one-shot deadline on the current loop's ring: when it expires, `fire`
 * runs on that loop's thread (outside coroutine context, so it must not
 * block; shutting a socket down is the usual action).  Embedded in its
 * owner, which must call coro_timer_stop before freeing it.  Loop-local:
 * start and stop from coroutines on the same loop.
 */
struct coro_timer {
    struct loop_op op;
    struct __kernel_timespec ts;
    coro_timer_fn *fire;
    struct loop *loop;
    struct coro *waiter; /* coroutine waiting in coro_timer_stop */
    bool armed;
    bool fired;
};

/* Arms the timer for `ns` from now.  CORO_FN. */
CORO_FN void coro_timer_start(struct coro_timer *timer, uint64_t ns,
                              coro_timer_fn *fire);

/*
 * From the timer's own `fire` callback: arms it again for `ns` from now,
 * on the same loop, with the same callback.  A callback that finds its
 * deadline moved uses it instead of a second timer.  Returns false, and
 * leaves the timer disarmed, when a coroutine is waiting in
 * coro_timer_stop for it (the stop wins) or the timer is still armed.
 * LOOP_FN, on the timer's loop.
 */
LOOP_FN bool coro_timer_rearm(struct coro_timer *timer, uint64_t ns);

/*
 * Disarms the timer (if it has not fired) and waits until the kernel has
 * let go of it.  Returns whether it fired (since it was last armed).  CORO_FN,
 * same loop as start.
 */
CORO_FN bool coro_timer_stop(struct coro_timer *timer);

#endif
