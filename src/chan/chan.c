/* SPDX-License-Identifier: MIT */
/*
 * The channel interface: waits that follow the waiting coroutine, and the
 * read-all / write-all helpers every protocol layer uses.
 *
 * A wait is a one-shot IORING_OP_POLL_ADD on the ring of `poll_loop`: the
 * waiting coroutine's own loop in following mode (it submits the SQE
 * itself), the main loop in pinned mode (a task posted there submits it).
 * The poll's completion runs on that loop and wakes the coroutine on its
 * own loop.  The coroutine only leaves chan_yield after its poll has
 * completed, so no poll outlives a wait and the waiter record can be
 * reused at once.
 *
 * chan_wake, from any thread, sets `cancel` and posts `cancel_task` to
 * the loop the waiter last chose; that task removes the poll if it is
 * armed there, which completes it with -ECANCELED.  The waiter stores
 * `poll_loop` before it reads `cancel`; the waker stores `cancel` before
 * it reads `poll_loop`.  Both seq_cst: whichever comes second sees the
 * other, so either the waiter gives up before arming or the cancel task
 * reaches the loop where the poll is (re-posting itself if the waiter
 * moved on in between).  A -ECANCELED poll with `cancel` already consumed
 * comes from a stale cancel task and is simply waited again.
 */
#include "nbdsrv/chan.h"

#include "nbdsrv/coro.h"
#include "nbdsrv/log.h"

#include <errno.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define CHAN_IOV_MAX 64

static void poll_complete(struct loop_op *op, int res, uint32_t flags);
static void submit_task_run(struct loop_task *task);
static void cancel_task_run(struct loop_task *task);

void chan_init(struct chan *ch, const struct chan_ops *ops, int fd)
{
    ch->ops = ops;
    ch->fd = fd;
    refcount_init(&ch->refs);
    atomic_init(&ch->follow, true);
    for (int dir = CHAN_IN; dir <= CHAN_OUT; dir++) {
        struct chan_waiter *w = &ch->waiters[dir];
        memset(w, 0, sizeof *w);
        w->ch = ch;
        w->dir = dir;
        atomic_init(&w->poll_loop, NULL);
        atomic_init(&w->armed_on, NULL);
        atomic_init(&w->cancel, false);
        atomic_init(&w->cancel_queued, false);
        atomic_init(&w->busy, 0);
        atomic_init(&w->stalled_since, 0);
        w->poll_op.complete = poll_complete;
        w->submit_task.fn = submit_task_run;
        w->cancel_task.fn = cancel_task_run;
    }
}

struct chan *chan_ref(struct chan *ch)
{
    refcount_get(&ch->refs);
    return ch;
}

void chan_unref(struct chan *ch)
{
    if (ch == NULL) {
        return;
    }
    if (refcount_put(&ch->refs)) {
        ch->ops->free(ch);
    }
}

void chan_set_follow(struct chan *ch, bool follow)
{
    atomic_store_explicit(&ch->follow, follow, memory_order_relaxed);
}

int chan_shutdown(struct chan *ch, int how)
{
    return ch->ops->shutdown(ch, how);
}

/* On the thread of `loop`: submits the poll of waiter w there. */
static void arm(struct chan_waiter *w, struct loop *loop)
{
    atomic_store_explicit(&w->armed_on, loop, memory_order_release);
    struct io_uring_sqe *sqe = loop_get_sqe(loop);
    io_uring_prep_poll_add(sqe, w->ch->fd,
                           w->dir == CHAN_IN ? POLLIN : POLLOUT);
    io_uring_sqe_set_data(sqe, &w->poll_op);
}

static void poll_complete(struct loop_op *op, int res, uint32_t flags)
{
    (void)flags;
    struct chan_waiter *w = container_of(op, struct chan_waiter, poll_op);
    atomic_store_explicit(&w->armed_on, NULL, memory_order_release);
    w->poll_res = res < 0 ? res : 0;
    coro_wake(w->co);
}

/* Pinned mode, on the main loop. */
static void submit_task_run(struct loop_task *task)
{
    struct chan_waiter *w = container_of(task, struct chan_waiter, submit_task);
    if (atomic_load(&w->cancel)) {
        w->poll_res = -ECANCELED;
        coro_wake(w->co);
        return;
    }
    arm(w, loop_current());
}

static void cancel_task_run(struct loop_task *task)
{
    struct chan_waiter *w = container_of(task, struct chan_waiter, cancel_task);
    struct chan *ch = w->ch;
    struct loop *here = loop_current();
    if (atomic_load(&w->cancel)) {
        if (atomic_load_explicit(&w->armed_on, memory_order_acquire) == here) {
            struct io_uring_sqe *sqe = loop_get_sqe(here);
            io_uring_prep_poll_remove(sqe, (uint64_t)(uintptr_t)&w->poll_op);
            io_uring_sqe_set_data(sqe, NULL);
        } else {
            struct loop *target = atomic_load(&w->poll_loop);
            if (target != NULL && target != here) {
                /* The waiter moved on: chase it (keeps ref and flag). */
                loop_post(target, &w->cancel_task);
                return;
            }
        }
    }
    atomic_store(&w->cancel_queued, false);
    chan_unref(ch);
}

void chan_wake(struct chan *ch, enum chan_dir dir)
{
    struct chan_waiter *w = &ch->waiters[dir];
    atomic_store(&w->cancel, true);
    struct loop *target = atomic_load(&w->poll_loop);
    if (target == NULL) {
        return; /* never waited: the next chan_yield sees the flag */
    }
    if (!atomic_exchange(&w->cancel_queued, true)) {
        chan_ref(ch);
        loop_post(target, &w->cancel_task);
    }
}

int chan_yield(struct chan *ch, enum chan_dir dir)
{
    struct chan_waiter *w = &ch->waiters[dir];
    struct coro *co = coro_self();
    if (co == NULL || coro_loop(co) == NULL) {
        BUG("chan_yield outside a coroutine on a loop");
    }
    for (;;) {
        struct loop *here = coro_loop(co);
        struct loop *target = here;
        if (!atomic_load_explicit(&ch->follow, memory_order_relaxed) &&
            loop_main() != NULL) {
            target = loop_main();
        }
        atomic_store(&w->poll_loop, target);
        if (atomic_exchange(&w->cancel, false)) {
            return -ECANCELED;
        }
        w->co = co;
        if (target == here) {
            arm(w, here);
        } else {
            loop_post(target, &w->submit_task);
        }
        coro_yield();
        loop_assert_owner(here);
        int res = w->poll_res;
        if (res != -ECANCELED) {
            return res;
        }
        if (atomic_exchange(&w->cancel, false)) {
            return -ECANCELED;
        }
        /* A stale cancel removed this poll: wait again. */
    }
}

#ifdef NDEBUG
#define direction_enter(w) ((void)0)
#define direction_leave(w) ((void)0)
#else
static void direction_enter(struct chan_waiter *w)
{
    if (atomic_fetch_add(&w->busy, 1) != 0) {
        BUG(w->dir == CHAN_IN ? "two coroutines reading one channel"
                              : "two coroutines writing one channel");
    }
}

static void direction_leave(struct chan_waiter *w)
{
    atomic_fetch_sub(&w->busy, 1);
}
#endif

static uint64_t monotonic_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

uint64_t chan_stalled_ns(const struct chan *ch, enum chan_dir dir,
                         uint64_t now_ns)
{
    uint64_t since = atomic_load_explicit(&ch->waiters[dir].stalled_since,
                                          memory_order_relaxed);
    return since != 0 && now_ns > since ? now_ns - since : 0;
}

/* Marks the direction as moving again (only a store when it waited). */
static void mark_moving(struct chan_waiter *w)
{
    if (atomic_load_explicit(&w->stalled_since, memory_order_relaxed) != 0) {
        atomic_store_explicit(&w->stalled_since, 0, memory_order_relaxed);
    }
}

/*
 * Moves the whole vector in direction `dir`.  Returns 1 when done, 0 on
 * end of file before the first byte (reads only), or -errno.  While it
 * waits without progress, stalled_since says since when.
 */
static int transfer_all(struct chan *ch, enum chan_dir dir,
                        const struct iovec *iov_in, int iovcnt, int flags)
{
    if (iovcnt < 0 || iovcnt > CHAN_IOV_MAX) {
        return -EINVAL;
    }
    struct iovec iov[CHAN_IOV_MAX];
    memcpy(iov, iov_in, sizeof *iov * (size_t)iovcnt);
    struct iovec *cur = iov;
    int left = iovcnt;
    size_t moved = 0;
    int r = 1;

    direction_enter(&ch->waiters[dir]);
    while (left > 0 && cur->iov_len == 0) {
        cur++;
        left--;
    }
    while (left > 0) {
        ssize_t n = dir == CHAN_IN ? ch->ops->readv(ch, cur, left)
                                   : ch->ops->writev(ch, cur, left, flags);
        if (n == -EAGAIN) {
            struct chan_waiter *w = &ch->waiters[dir];
            if (atomic_load_explicit(&w->stalled_since, memory_order_relaxed) ==
                0) {
                atomic_store_explicit(&w->stalled_since, monotonic_ns(),
                                      memory_order_relaxed);
            }
            int y = chan_yield(ch, dir);
            if (y < 0) {
                r = y;
                break;
            }
            continue;
        }
        if (n < 0) {
            r = (int)n;
            break;
        }
        if (n == 0 && dir == CHAN_IN) {
            r = moved == 0 ? 0 : -ECONNRESET;
            break;
        }
        mark_moving(&ch->waiters[dir]);
        moved += (size_t)n;
        while (left > 0 && (size_t)n >= cur->iov_len) {
            n -= (ssize_t)cur->iov_len;
            cur++;
            left--;
        }
        if (left > 0) {
            cur->iov_base = (char *)cur->iov_base + n;
            cur->iov_len -= (size_t)n;
        }
        while (left > 0 && cur->iov_len == 0) {
            cur++;
            left--;
        }
    }
    mark_moving(&ch->waiters[dir]);
    direction_leave(&ch->waiters[dir]);
    return r;
}

ssize_t chan_read_some(struct chan *ch, void *buf, size_t len)
{
    struct iovec iov = {.iov_base = buf, .iov_len = len};
    ssize_t n;
    direction_enter(&ch->waiters[CHAN_IN]);
    for (;;) {
        n = ch->ops->readv(ch, &iov, 1);
        if (n != -EAGAIN) {
            break;
        }
        int y = chan_yield(ch, CHAN_IN);
        if (y < 0) {
            n = y;
            break;
        }
    }
    direction_leave(&ch->waiters[CHAN_IN]);
    return n;
}

int chan_read_all_eof(struct chan *ch, void *buf, size_t len)
{
    struct iovec iov = {.iov_base = buf, .iov_len = len};
    return transfer_all(ch, CHAN_IN, &iov, 1, 0);
}

int chan_read_all(struct chan *ch, void *buf, size_t len)
{
    int r = chan_read_all_eof(ch, buf, len);
    if (r == 0) {
        return len == 0 ? 0 : -ECONNRESET;
    }
    return r < 0 ? r : 0;
}

int chan_writev_all_flags(struct chan *ch, const struct iovec *iov, int iovcnt,
                          int flags)
{
    int r = transfer_all(ch, CHAN_OUT, iov, iovcnt, flags);
    return r < 0 ? r : 0;
}

int chan_writev_all(struct chan *ch, const struct iovec *iov, int iovcnt)
{
    return chan_writev_all_flags(ch, iov, iovcnt, 0);
}

int chan_push(struct chan *ch)
{
    return ch->ops->push != NULL ? ch->ops->push(ch) : 0;
}

int chan_write_all(struct chan *ch, const void *buf, size_t len)
{
    struct iovec iov = {.iov_base = (void *)buf, .iov_len = len};
    return chan_writev_all(ch, &iov, 1);
}
