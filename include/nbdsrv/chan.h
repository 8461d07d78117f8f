/* SPDX-License-Identifier: MIT */
/*
 * Channels: a byte stream (socket, TLS over a socket) with non-blocking
 * readv/writev and a wait that follows the waiting coroutine.
 *
 * A channel has no home loop.  chan_yield(ch, dir) parks the calling
 * coroutine until the channel's fd is ready for `dir`, and the poll is
 * submitted on the ring of the loop the coroutine runs on *at that
 * moment* (following mode, the default) or on the main loop (pinned
 * mode); either way the coroutine resumes on its own loop.  The read side
 * and the write side keep separate waiter records, so one coroutine can
 * be parked reading on loop A while another writes on loop B.  At most
 * one coroutine reads and one writes at a time (asserted in debug
 * builds).
 *
 * A channel is shared by the coroutines of a connection and by wakers on
 * other threads, so it is reference-counted (atomically).
 */
#ifndef NBDSRV_CHAN_H
#define NBDSRV_CHAN_H

#include "nbdsrv/affinity.h"
#include "nbdsrv/loop.h"
#include "nbdsrv/refcount.h"

#include <stdatomic.h>
#include <stdbool.h>
#include <sys/types.h>
#include <sys/uio.h>

struct chan;

/*
 * Flags of chan_writev_all_flags.  CHAN_WRITE_MORE: more data follows
 * soon, the transport may hold this back to send it together (TCP
 * MSG_MORE); the caller must then call chan_push or send again without
 * the flag.
 */
#define CHAN_WRITE_MORE 0x1

enum chan_dir {
    CHAN_IN = 0,
    CHAN_OUT = 1,
};

/*
 * An implementation.  readv/writev never block: they return the bytes
 * moved, 0 for end of file (readv only), -EAGAIN when they would block,
 * or another -errno.  poll_fd names the fd whose readiness for the given
 * direction unblocks it.  free releases the implementation's resources
 * (it closes the fd).
 */
struct chan_ops {
    const char *name;
    ssize_t (*readv)(struct chan *ch, const struct iovec *iov, int iovcnt);
    ssize_t (*writev)(struct chan *ch, const struct iovec *iov, int iovcnt,
                      int flags);
    /* Sends what CHAN_WRITE_MORE held back; may be NULL. */
    int (*push)(struct chan *ch);
    int (*shutdown)(struct chan *ch, int how);
    void (*free)(struct chan *ch);
};

/*
 * One direction's waiter.  Loop-affine fields are touched only on the
 * thread of the loop the current poll was submitted on (`armed_on`).
 */
struct chan_waiter {
    struct chan *ch;                  /* immutable after init */
    enum chan_dir dir;                /* immutable after init */
    struct coro *co;                  /* the parked coroutine; written by
                                         it before it parks, read by the
                                         poll completion */
    _Atomic(struct loop *) poll_loop; /* seq_cst; paired with cancel */
    _Atomic(struct loop *) armed_on;  /* loop holding a live poll, or
                                         NULL; release/acquire */
    atomic_bool cancel;               /* seq_cst; set by chan_wake */
    atomic_bool cancel_queued;        /* cancel_task is in a queue */
    int poll_res;                     /* written by the completion before
                                         it wakes co */
    struct loop_op poll_op;
    struct loop_task submit_task; /* pinned mode: submit on main */
    struct loop_task cancel_task; /* chan_wake: remove the poll */
    atomic_int busy;              /* debug: one user per direction */
    /* Relaxed: CLOCK_MONOTONIC ns since which this direction's transfer
     * waits without moving a byte, 0 when it does not wait; written by
     * the transferring coroutine, read by watchdogs (chan_stalled_ns). */
    atomic_uint_least64_t stalled_since;
};

/*
 * The common part of every channel, embedded first in each
 * implementation.  Owned by its references.
 */
struct chan {
    const struct chan_ops *ops; /* immutable after init */
    int fd;                     /* immutable after init: polled fd */
    struct refcount refs;
    atomic_bool follow; /* relaxed: set before use */
    struct chan_waiter waiters[2];
};

/* Initialises the common part; refcount 1, following mode.  ANY_THREAD. */
ANY_THREAD void chan_init(struct chan *ch, const struct chan_ops *ops, int fd);

ANY_THREAD struct chan *chan_ref(struct chan *ch);
/* Drops a reference; the last one frees the channel.  NULL is allowed. */
ANY_THREAD void chan_unref(struct chan *ch);

/*
 * Chooses where waits are registered: in the waiting coroutine's current
 * loop (true, the default) or in the main loop (false).  ANY_THREAD.
 */
ANY_THREAD void chan_set_follow(struct chan *ch, bool follow);

/*
 * Parks the calling coroutine until the channel is ready for `dir`.
 * Returns 0 when it may be ready, -ECANCELED when chan_wake interrupted
 * the wait (or came before it), or -errno from the poll.  CORO_FN.
 */
CORO_FN int chan_yield(struct chan *ch, enum chan_dir dir);

/*
 * Interrupts the wait in direction `dir`: a parked waiter returns
 * -ECANCELED from chan_yield; if none is parked, the next chan_yield in
 * that direction returns -ECANCELED at once.  The only channel entry
 * point callable from any thread.  ANY_THREAD.
 */
ANY_THREAD void chan_wake(struct chan *ch, enum chan_dir dir);

/*
 * Reads exactly `len` bytes, waiting as needed.  Returns 0, or -errno;
 * end of file before `len` bytes is -ECONNRESET.  CORO_FN.
 */
CORO_FN int chan_read_all(struct chan *ch, void *buf, size_t len);

/*
 * Like chan_read_all, but end of file before the first byte returns 0,
 * and 1 means the buffer was filled.  For reading message headers.
 */
CORO_FN int chan_read_all_eof(struct chan *ch, void *buf, size_t len);

/*
 * Reads what is available, at least 1 and at most `len` bytes, waiting
 * only while nothing is.  Returns the count, 0 at end of file, or -errno.
 * CORO_FN.
 */
CORO_FN ssize_t chan_read_some(struct chan *ch, void *buf, size_t len);

/* Writes all of buf / the vector.  Returns 0 or -errno.  CORO_FN. */
CORO_FN int chan_write_all(struct chan *ch, const void *buf, size_t len);
CORO_FN int chan_writev_all(struct chan *ch, const struct iovec *iov,
                            int iovcnt);

/* chan_writev_all with CHAN_WRITE_* flags.  CORO_FN. */
CORO_FN int chan_writev_all_flags(struct chan *ch, const struct iovec *iov,
                                  int iovcnt, int flags);

/* Sends data held back by CHAN_WRITE_MORE now.  Returns 0 or -errno.
 * ANY_THREAD (it never waits). */
ANY_THREAD int chan_push(struct chan *ch);

/*
 * How long the transfer in progress in direction `dir` (chan_*_all) has
 * been waiting without moving a byte, as of `now_ns` (CLOCK_MONOTONIC);
 * 0 when none waits.  For watchdogs that drop peers which stopped
 * reading.  ANY_THREAD.
 */
ANY_THREAD uint64_t chan_stalled_ns(const struct chan *ch, enum chan_dir dir,
                                    uint64_t now_ns);

/* Shuts down one or both directions (SHUT_RD, SHUT_WR, SHUT_RDWR). */
ANY_THREAD int chan_shutdown(struct chan *ch, int how);

#endif
