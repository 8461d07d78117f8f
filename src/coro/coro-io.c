/* SPDX-License-Identifier: MIT */
/* Coroutine-blocking wrappers over io_uring operations. */
#include "nbdsrv/coro-io.h"

#include "coro-int.h"
#include "nbdsrv/log.h"
#include "nbdsrv/valgrind.h"

#include <errno.h>
#include <limits.h>
#include <poll.h>
#include <stdint.h>

/* Lives on the waiting coroutine's stack until its completion arrives. */
struct coro_op {
    struct loop_op op;
    struct coro *co;
    int res;
};

static void coro_op_complete(struct loop_op *op, int res, uint32_t flags)
{
    (void)flags;
    struct coro_op *c = container_of(op, struct coro_op, op);
    c->res = res;
    coro_wake(c->co);
}

static struct io_uring_sqe *op_begin(struct coro_op *c)
{
    c->co = coro_self();
    if (c->co == NULL || c->co->loop == NULL) {
        BUG("coroutine I/O outside a coroutine on a loop");
    }
    c->op.complete = coro_op_complete;
    c->res = 0;
    return loop_get_sqe(c->co->loop);
}

static int op_wait(struct coro_op *c, struct io_uring_sqe *sqe)
{
    io_uring_sqe_set_data(sqe, &c->op);
    coro_yield();
    return c->res;
}

/*
 * The kernel fills read buffers while executing ring operations, which
 * Valgrind does not see as system calls: memcheck would take the bytes
 * for uninitialised.  These tell it what the kernel wrote.
 */
static void mark_read(const void *buf, ssize_t r)
{
    if (r > 0) {
        VALGRIND_MAKE_MEM_DEFINED(buf, (size_t)r);
    }
}

static void mark_readv(const struct iovec *iov, int iovcnt, ssize_t r)
{
    for (int i = 0; i < iovcnt && r > 0; i++) {
        size_t n = iov[i].iov_len < (size_t)r ? iov[i].iov_len : (size_t)r;
        mark_read(iov[i].iov_base, (ssize_t)n);
        r -= (ssize_t)n;
    }
}

static unsigned clamp_len(size_t len)
{
    return len > INT_MAX ? INT_MAX : (unsigned)len;
}

ssize_t coro_read(int fd, void *buf, size_t len, uint64_t offset)
{
    struct coro_op c;
    struct io_uring_sqe *sqe = op_begin(&c);
    io_uring_prep_read(sqe, fd, buf, clamp_len(len), offset);
    ssize_t r = op_wait(&c, sqe);
    mark_read(buf, r);
    return r;
}

ssize_t coro_write(int fd, const void *buf, size_t len, uint64_t offset)
{
    struct coro_op c;
    struct io_uring_sqe *sqe = op_begin(&c);
    io_uring_prep_write(sqe, fd, buf, clamp_len(len), offset);
    return op_wait(&c, sqe);
}

ssize_t coro_readv(int fd, const struct iovec *iov, int iovcnt, uint64_t offset)
{
    struct coro_op c;
    struct io_uring_sqe *sqe = op_begin(&c);
    io_uring_prep_readv(sqe, fd, iov, iovcnt, offset);
    ssize_t r = op_wait(&c, sqe);
    mark_readv(iov, iovcnt, r);
    return r;
}

ssize_t coro_writev(int fd, const struct iovec *iov, int iovcnt,
                    uint64_t offset)
{
    struct coro_op c;
    struct io_uring_sqe *sqe = op_begin(&c);
    io_uring_prep_writev(sqe, fd, iov, iovcnt, offset);
    return op_wait(&c, sqe);
}

int coro_fsync(int fd)
{
    struct coro_op c;
    struct io_uring_sqe *sqe = op_begin(&c);
    io_uring_prep_fsync(sqe, fd, 0);
    return op_wait(&c, sqe);
}

int coro_fdatasync(int fd)
{
    struct coro_op c;
    struct io_uring_sqe *sqe = op_begin(&c);
    io_uring_prep_fsync(sqe, fd, IORING_FSYNC_DATASYNC);
    return op_wait(&c, sqe);
}

int coro_fallocate(int fd, int mode, uint64_t offset, uint64_t len)
{
    struct coro_op c;
    struct io_uring_sqe *sqe = op_begin(&c);
    io_uring_prep_fallocate(sqe, fd, mode, offset, len);
    return op_wait(&c, sqe);
}

ssize_t coro_write_flags(int fd, const void *buf, size_t len, uint64_t offset,
                         int rw_flags)
{
    struct coro_op c;
    struct io_uring_sqe *sqe = op_begin(&c);
    io_uring_prep_write(sqe, fd, buf, clamp_len(len), offset);
    sqe->rw_flags = rw_flags;
    return op_wait(&c, sqe);
}

int coro_fadvise(int fd, uint64_t offset, uint32_t len, int advice)
{
    struct coro_op c;
    struct io_uring_sqe *sqe = op_begin(&c);
    io_uring_prep_fadvise(sqe, fd, offset, (off_t)len, advice);
    return op_wait(&c, sqe);
}

int coro_poll(int fd, short events)
{
    struct coro_op c;
    struct io_uring_sqe *sqe = op_begin(&c);
    io_uring_prep_poll_add(sqe, fd, (unsigned)events);
    return op_wait(&c, sqe);
}

int coro_accept(int fd, struct sockaddr *addr, socklen_t *addrlen, int flags)
{
    struct coro_op c;
    struct io_uring_sqe *sqe = op_begin(&c);
    socklen_t room = addrlen != NULL ? *addrlen : 0;
    io_uring_prep_accept(sqe, fd, addr, addrlen, flags | SOCK_CLOEXEC);
    int r = op_wait(&c, sqe);
    if (r >= 0 && addr != NULL && addrlen != NULL) {
        mark_read(addrlen, sizeof *addrlen);
        mark_read(addr, *addrlen < room ? *addrlen : room);
    }
    return r;
}

int coro_connect(int fd, const struct sockaddr *addr, socklen_t addrlen)
{
    struct coro_op c;
    struct io_uring_sqe *sqe = op_begin(&c);
    io_uring_prep_connect(sqe, fd, addr, addrlen);
    return op_wait(&c, sqe);
}

ssize_t coro_recv(int fd, void *buf, size_t len, int flags)
{
    struct coro_op c;
    struct io_uring_sqe *sqe = op_begin(&c);
    io_uring_prep_recv(sqe, fd, buf, clamp_len(len), flags);
    ssize_t r = op_wait(&c, sqe);
    mark_read(buf, r);
    return r;
}

ssize_t coro_send(int fd, const void *buf, size_t len, int flags)
{
    struct coro_op c;
    struct io_uring_sqe *sqe = op_begin(&c);
    io_uring_prep_send(sqe, fd, buf, clamp_len(len), flags);
    return op_wait(&c, sqe);
}

int coro_sleep_ns(uint64_t ns)
{
    struct __kernel_timespec ts = {
        .tv_sec = (long long)(ns / 1000000000u),
        .tv_nsec = (long long)(ns % 1000000000u),
    };
    struct coro_op c;
    struct io_uring_sqe *sqe = op_begin(&c);
    io_uring_prep_timeout(sqe, &ts, 0, 0);
    int r = op_wait(&c, sqe);
    return r == -ETIME ? 0 : r;
}

static void timer_complete(struct loop_op *op, int res, uint32_t flags)
{
    (void)flags;
    struct coro_timer *t = container_of(op, struct coro_timer, op);
    t->armed = false;
    if (res == -ETIME) {
        t->fired = true;
        t->fire(t);
    }
    if (t->waiter != NULL) {
        struct coro *co = t->waiter;
        t->waiter = NULL;
        coro_wake(co);
    }
}

/* Arms t (its loop and callback already set) for `ns` from now. */
static void timer_arm(struct coro_timer *t, uint64_t ns)
{
    t->ts.tv_sec = (long long)(ns / 1000000000u);
    t->ts.tv_nsec = (long long)(ns % 1000000000u);
    t->fired = false;
    t->armed = true;
    struct io_uring_sqe *sqe = loop_get_sqe(t->loop);
    io_uring_prep_timeout(sqe, &t->ts, 0, 0);
    io_uring_sqe_set_data(sqe, &t->op);
}

void coro_timer_start(struct coro_timer *t, uint64_t ns, coro_timer_fn *fire)
{
    struct coro *co = coro_self();
    t->loop = coro_loop(co);
    t->op.complete = timer_complete;
    t->fire = fire;
    t->waiter = NULL;
    timer_arm(t, ns);
}

bool coro_timer_rearm(struct coro_timer *t, uint64_t ns)
{
    loop_assert_owner(t->loop);
    if (t->armed || t->waiter != NULL) {
        /* Not from its callback, or coro_timer_stop is waiting for it:
         * the stop must find the timer quiet when it wakes. */
        return false;
    }
    timer_arm(t, ns);
    return true;
}

bool coro_timer_stop(struct coro_timer *t)
{
    if (t->armed) {
        loop_assert_owner(t->loop);
        struct io_uring_sqe *sqe = loop_get_sqe(t->loop);
        io_uring_prep_timeout_remove(sqe, (uint64_t)(uintptr_t)&t->op, 0);
        io_uring_sqe_set_data(sqe, NULL);
        t->waiter = coro_self();
        coro_yield();
    }
    return t->fired;
}
