/* SPDX-License-Identifier: MIT */
/*
 * The event loop: one thread, one io_uring ring, one ready queue.
 *
 * An iteration runs the tasks that were ready when it began, moves the
 * inbox (tasks posted by other threads) onto the ready queue, then makes
 * one io_uring_submit_and_wait: it waits for a completion only when there
 * is nothing ready.  Before blocking, an idle loop first submits what it
 * queued and polls for up to `poll_ns`: for a posted task, a CQE, or the
 * kernel's IORING_SQ_TASKRUN flag (deferred completions waiting for us to
 * enter).  A thread that blocks costs the next poster an eventfd write
 * and a scheduler wake-up, tens of microseconds on a VM; a polling one
 * sees the post within a cache miss.  The window adapts: a block that
 * outlasted the maximum window halves it (polling would not have helped
 * and only burns a core other processes may need), a block shorter than
 * the maximum doubles it.  Completions are copied out of the CQ ring before
 * their handlers run, so a handler that needs an SQE (and may have to
 * reap to get one) never sees a CQE twice.
 *
 * Sleeping and waking: before it blocks, the loop sets `sleeping` and then
 * looks at the inbox once more; a poster pushes to the inbox and then
 * looks at `sleeping`.  Both sides use sequentially consistent accesses,
 * so at least one of them sees the other (the classic store-load pair),
 * and a sleeping loop is always woken through its eventfd.  `notified`
 * keeps a burst of posts down to one eventfd write per sleep.
 */
#include "nbdsrv/loop.h"

#include "nbdsrv/compiler.h"
#include "nbdsrv/log.h"
#include "nbdsrv/valgrind.h"

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <semaphore.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#define DEFAULT_RING_ENTRIES 256
#define REAP_BATCH 64

/*
 * A loop.  Owned by its group.  Fields marked loop-local are touched only
 * by the loop's thread; the rest say how they are shared.
 */
struct loop {
    unsigned index;        /* immutable after init */
    pthread_t thread;      /* written by the starter before any use */
    struct io_uring ring;  /* loop-local */
    unsigned ring_entries; /* immutable after init */
    uint64_t poll_max_ns;  /* immutable after init; 0: no polling */
    uint64_t poll_ns;      /* loop-local: current, adapted window */

    struct loop_task *ready_head;   /* loop-local FIFO */
    struct loop_task *running_rest; /* loop-local: rest of the batch that
                                       run_ready is working through */
    struct loop_task *deferred;     /* loop-local: run after each batch */
    struct loop_task **ready_tail;  /* loop-local */

    /* Multi-producer LIFO; seq_cst, paired with `sleeping` (see top). */
    _Atomic(struct loop_task *) inbox;
    atomic_bool sleeping;    /* seq_cst: set by the loop before it blocks */
    atomic_bool notified;    /* an eventfd write is on its way */
    int event_fd;            /* immutable after init */
    uint64_t event_buf;      /* loop-local: target of the eventfd read */
    struct loop_op event_op; /* loop-local */

    bool stopping;       /* loop-local */
    bool under_valgrind; /* immutable after init: see ring_wait */
    struct loop_task stop_task;

    /* Start-up hand-shake with loop_group_start; sem_t orders the rest. */
    sem_t started;
    int start_result;
    char start_msg[256];
};

static _Atomic(struct loop *) main_loop;
static __thread struct loop *current_loop;

NOINLINE struct loop *loop_current(void)
{
    struct loop *loop = current_loop;
    __asm__ volatile("" ::: "memory");
    return loop;
}

struct loop *loop_main(void)
{
    return atomic_load_explicit(&main_loop, memory_order_acquire);
}

unsigned loop_index(const struct loop *loop)
{
    return loop->index;
}

int loop_cpu_ns(const struct loop *loop, uint64_t *ns)
{
    clockid_t clock;
    struct timespec ts;
    int r = pthread_getcpuclockid(loop->thread, &clock);
    if (r != 0) {
        return -r;
    }
    if (clock_gettime(clock, &ts) < 0) {
        return -errno;
    }
    *ns = (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
    return 0;
}

#ifndef NDEBUG
void loop_assert_owner(const struct loop *loop)
{
    if (loop_current() != loop) {
        BUG("loop function called from a thread that does not own the loop");
    }
}
#endif

static void ready_push(struct loop *loop, struct loop_task *task)
{
    task->next = NULL;
    *loop->ready_tail = task;
    loop->ready_tail = &task->next;
}

static void wake(struct loop *loop)
{
    if (atomic_load(&loop->sleeping) &&
        !atomic_exchange(&loop->notified, true)) {
        uint64_t one = 1;
        ssize_t r;
        do {
            r = write(loop->event_fd, &one, sizeof one);
        } while (r < 0 && errno == EINTR);
        /* EAGAIN means the counter is already non-zero: it will wake. */
    }
}

void loop_post(struct loop *loop, struct loop_task *task)
{
    if (loop_current() == loop) {
        ready_push(loop, task);
        return;
    }
    struct loop_task *head = atomic_load(&loop->inbox);
    do {
        task->next = head;
    } while (!atomic_compare_exchange_weak(&loop->inbox, &head, task));
    wake(loop);
}

/* Moves the inbox onto the ready queue in posting order. */
static void inbox_drain(struct loop *loop)
{
    struct loop_task *list = atomic_exchange(&loop->inbox, NULL);
    struct loop_task *fifo = NULL;
    while (list != NULL) {
        struct loop_task *next = list->next;
        list->next = fifo;
        fifo = list;
        list = next;
    }
    while (fifo != NULL) {
        struct loop_task *next = fifo->next;
        ready_push(loop, fifo);
        fifo = next;
    }
}

static void run_ready(struct loop *loop)
{
    struct loop_task *task = loop->ready_head;
    loop->ready_head = NULL;
    loop->ready_tail = &loop->ready_head;
    while (task != NULL) {
        loop->running_rest = task->next;
        task->next = NULL;
        task->fn(task);
        task = loop->running_rest;
    }
    /* Deferred tasks may defer again: those wait for the next batch. */
    struct loop_task *deferred = loop->deferred;
    loop->deferred = NULL;
    while (deferred != NULL) {
        struct loop_task *next = deferred->next;
        deferred->next = NULL;
        deferred->fn(deferred);
        deferred = next;
    }
}

bool loop_has_ready(const struct loop *loop)
{
    return loop->running_rest != NULL || loop->ready_head != NULL;
}

void loop_defer(struct loop *loop, struct loop_task *task)
{
    loop_assert_owner(loop);
    task->next = loop->deferred;
    loop->deferred = task;
}

struct cqe_copy {
    uint64_t user_data;
    int res;
    uint32_t flags;
};

/* Reaps what the CQ ring holds now; returns how many were handled. */
static unsigned reap(struct loop *loop)
{
    unsigned total = 0;
    for (;;) {
        struct io_uring_cqe *cqes[REAP_BATCH];
        struct cqe_copy copy[REAP_BATCH];
        unsigned n = io_uring_peek_batch_cqe(&loop->ring, cqes, REAP_BATCH);
        if (n == 0) {
            return total;
        }
        for (unsigned i = 0; i < n; i++) {
            copy[i].user_data = cqes[i]->user_data;
            copy[i].res = cqes[i]->res;
            copy[i].flags = cqes[i]->flags;
        }
        io_uring_cq_advance(&loop->ring, n);
        for (unsigned i = 0; i < n; i++) {
            struct loop_op *op = (struct loop_op *)(uintptr_t)copy[i].user_data;
            if (op != NULL) {
                op->complete(op, copy[i].res, copy[i].flags);
            }
        }
        total += n;
    }
}

static int ring_wait(struct loop *loop, unsigned wait);

struct io_uring_sqe *loop_get_sqe(struct loop *loop)
{
    loop_assert_owner(loop);
    struct io_uring_sqe *sqe;
    while ((sqe = io_uring_get_sqe(&loop->ring)) == NULL) {
        int r = io_uring_submit(&loop->ring);
        if (r == -EBUSY || r == -EAGAIN) {
            /* The completion side is full: make room, or wait for it. */
            if (reap(loop) == 0) {
                ring_wait(loop, 1);
                reap(loop);
            }
        } else if (r < 0 && r != -EINTR) {
            log_error("io_uring_submit: %s", strerror(-r));
            BUG("io_uring submission failed");
        }
    }
    return sqe;
}

static void event_op_arm(struct loop *loop)
{
    struct io_uring_sqe *sqe = loop_get_sqe(loop);
    io_uring_prep_read(sqe, loop->event_fd, &loop->event_buf,
                       sizeof loop->event_buf, 0);
    io_uring_sqe_set_data(sqe, &loop->event_op);
}

static void event_op_complete(struct loop_op *op, int res, uint32_t flags)
{
    (void)flags;
    struct loop *loop = container_of(op, struct loop, event_op);
    if (res < 0 && res != -EAGAIN && res != -EINTR && res != -ECANCELED) {
        log_error("loop %u: eventfd read: %s", loop->index, strerror(-res));
    }
    atomic_store(&loop->notified, false);
    event_op_arm(loop);
}

static void stop_task_run(struct loop_task *task)
{
    struct loop *loop = container_of(task, struct loop, stop_task);
    loop->stopping = true;
}

static uint64_t monotonic_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static inline void cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ volatile("yield" ::: "memory");
#endif
}

static bool work_arrived(struct loop *loop)
{
    return atomic_load_explicit(&loop->inbox, memory_order_relaxed) != NULL ||
           io_uring_cq_ready(&loop->ring) != 0 ||
           (IO_URING_READ_ONCE(*loop->ring.sq.kflags) & IORING_SQ_TASKRUN);
}

/*
 * Submits what is queued and, if `wait`, waits for a completion or a post;
 * returns what io_uring_submit_and_wait returns.  Valgrind runs one thread
 * at a time and, in 3.19 at least, does not let the others run while a
 * thread waits in io_uring_enter: a loop blocked there would stop the very
 * thread that would wake it.  Under Valgrind a loop therefore never blocks
 * in io_uring_enter: it submits and runs completions without waiting, and
 * sleeps in poll(2) on its eventfd (which Valgrind does let go for) for at
 * most a millisecond before it looks again.
 */
static int ring_wait(struct loop *loop, unsigned wait)
{
    if (!wait || !loop->under_valgrind) {
        return io_uring_submit_and_wait(&loop->ring, wait);
    }
    for (;;) {
        int r = io_uring_submit_and_get_events(&loop->ring);
        if ((r < 0 && r != -EINTR) || work_arrived(loop)) {
            return r;
        }
        struct pollfd pfd = {.fd = loop->event_fd, .events = POLLIN};
        poll(&pfd, 1, 1);
    }
}

/* Polls for new work for up to poll_ns; returns whether some arrived. */
static bool poll_for_work(struct loop *loop)
{
    if (loop->poll_ns == 0) {
        return work_arrived(loop);
    }
    if (io_uring_sq_ready(&loop->ring) != 0) {
        io_uring_submit(&loop->ring);
    }
    uint64_t deadline = monotonic_ns() + loop->poll_ns;
    for (;;) {
        for (int i = 0; i < 64; i++) {
            if (work_arrived(loop)) {
                return true;
            }
            cpu_relax();
        }
        if (monotonic_ns() >= deadline) {
            return false;
        }
    }
}

/* After a blocking wait of `blocked` ns, resizes the polling window. */
static void adapt_poll(struct loop *loop, uint64_t blocked)
{
    if (blocked > loop->poll_max_ns) {
        loop->poll_ns /= 2;
        if (loop->poll_ns < 1000) {
            loop->poll_ns = 0;
        }
    } else {
        loop->poll_ns = loop->poll_ns == 0 ? 4000 : loop->poll_ns * 2;
        if (loop->poll_ns > loop->poll_max_ns) {
            loop->poll_ns = loop->poll_max_ns;
        }
    }
}

static void run(struct loop *loop)
{
    for (;;) {
        run_ready(loop);
        inbox_drain(loop);
        if (loop->stopping && loop->ready_head == NULL) {
            return;
        }
        unsigned wait = 0;
        if (loop->ready_head == NULL && !poll_for_work(loop)) {
            atomic_store(&loop->sleeping, true);
            if (atomic_load(&loop->inbox) == NULL) {
                wait = 1;
            }
        }
        uint64_t blocked_since = wait ? monotonic_ns() : 0;
        int r = ring_wait(loop, wait);
        atomic_store(&loop->sleeping, false);
        if (wait && loop->poll_max_ns != 0) {
            adapt_poll(loop, monotonic_ns() - blocked_since);
        }
        if (r < 0 && r != -EINTR && r != -EBUSY && r != -EAGAIN &&
            r != -ETIME) {
            log_error("loop %u: io_uring_submit_and_wait: %s", loop->index,
                      strerror(-r));
            BUG("io_uring wait failed");
        }
        reap(loop);
    }
}

void loop_describe_setup_error(int errnum, char *buf, size_t size)
{
    char disabled = '?';
    FILE *f = fopen("/proc/sys/kernel/io_uring_disabled", "r");
    if (f != NULL) {
        int c = fgetc(f);
        if (c != EOF) {
            disabled = (char)c;
        }
        fclose(f);
    }
    switch (errnum) {
    case ENOSYS:
        snprintf(buf, size,
                 "cannot set up io_uring: this kernel does not provide it "
                 "(io_uring_setup: ENOSYS)");
        break;
    case EPERM:
        if (disabled == '2') {
            snprintf(buf, size,
                     "cannot set up io_uring: it is disabled by the sysctl "
                     "kernel.io_uring_disabled=2 (EPERM)");
        } else if (disabled == '1') {
            snprintf(buf, size,
                     "cannot set up io_uring: kernel.io_uring_disabled=1 "
                     "allows only members of kernel.io_uring_group (EPERM)");
        } else {
            snprintf(buf, size,
                     "cannot set up io_uring: io_uring_setup was refused "
                     "(EPERM), by a seccomp or container policy");
        }
        break;
    case ENOMEM:
        snprintf(buf, size,
                 "cannot set up io_uring: out of memory or over the "
                 "locked-memory limit (ulimit -l) (ENOMEM)");
        break;
    default:
        snprintf(buf, size, "cannot set up io_uring: %s", strerror(errnum));
        break;
    }
}

static int ring_init(struct loop *loop)
{
    static const unsigned flag_sets[] = {
        IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN |
            IORING_SETUP_TASKRUN_FLAG,
        IORING_SETUP_COOP_TASKRUN,
        0,
    };
    int r = -EINVAL;
    for (size_t i = 0; i < ARRAY_SIZE(flag_sets); i++) {
        struct io_uring_params p;
        memset(&p, 0, sizeof p);
        p.flags = flag_sets[i] | IORING_SETUP_CQSIZE;
        p.cq_entries = loop->ring_entries * 4;
        r = io_uring_queue_init_params(loop->ring_entries, &loop->ring, &p);
        if (r != -EINVAL) {
            return r;
        }
    }
    return r;
}

static void *thread_main(void *opaque)
{
    struct loop *loop = opaque;
    current_loop = loop;
    char name[16];
    snprintf(name, sizeof name, "loop%u", loop->index);
    pthread_setname_np(pthread_self(), name);
    int r = ring_init(loop);
    if (r < 0) {
        loop_describe_setup_error(-r, loop->start_msg, sizeof loop->start_msg);
        loop->start_result = r;
        sem_post(&loop->started);
        return NULL;
    }
    event_op_arm(loop);
    loop->start_result = 0;
    sem_post(&loop->started);
    run(loop);
    io_uring_queue_exit(&loop->ring);
    current_loop = NULL;
    return NULL;
}

static struct loop *loop_alloc(unsigned index, unsigned entries,
                               uint64_t poll_ns, struct err *err)
{
    struct loop *loop = calloc(1, sizeof *loop);
    if (loop == NULL) {
        err_set_errno(err, ENOMEM, "allocating a loop");
        return NULL;
    }
    loop->index = index;
    loop->ring_entries = entries;
    /* Under Valgrind threads take turns: polling would only spin while
     * the thread that could post to this loop waits for the CPU. */
    loop->under_valgrind = RUNNING_ON_VALGRIND != 0;
    if (loop->under_valgrind) {
        poll_ns = 0;
    }
    loop->poll_max_ns = poll_ns;
    loop->poll_ns = poll_ns;
    loop->ready_tail = &loop->ready_head;
    loop->event_op.complete = event_op_complete;
    loop->stop_task.fn = stop_task_run;
    loop->event_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (loop->event_fd < 0) {
        err_set_errno(err, errno, "eventfd");
        free(loop);
        return NULL;
    }
    if (sem_init(&loop->started, 0, 0) < 0) {
        err_set_errno(err, errno, "sem_init");
        close(loop->event_fd);
        free(loop);
        return NULL;
    }
    return loop;
}

static void loop_dealloc(struct loop *loop)
{
    sem_destroy(&loop->started);
    close(loop->event_fd);
    free(loop);
}

/* Starts the thread; returns 0 or -errno with err set. */
static int loop_start(struct loop *loop, struct err *err)
{
    int r = pthread_create(&loop->thread, NULL, thread_main, loop);
    if (r != 0) {
        return err_set_errno(err, r, "starting loop thread %u", loop->index);
    }
    while (sem_wait(&loop->started) < 0 && errno == EINTR) {
    }
    if (loop->start_result < 0) {
        pthread_join(loop->thread, NULL);
        return err_set(err, -loop->start_result, "%s", loop->start_msg);
    }
    return 0;
}

static void loop_stop(struct loop *loop)
{
    loop_post(loop, &loop->stop_task);
    pthread_join(loop->thread, NULL);
}

int loop_group_start(struct loop_group *group, unsigned count,
                     const struct loop_config *config, struct err *err)
{
    unsigned entries = DEFAULT_RING_ENTRIES;
    uint64_t poll_ns = LOOP_POLL_NS_DEFAULT;
    if (config != NULL && config->ring_entries != 0) {
        entries = config->ring_entries;
    }
    if (config != NULL && config->poll_ns != 0) {
        poll_ns = config->poll_ns == LOOP_POLL_NONE ? 0 : config->poll_ns;
    }
    group->count = 0;
    group->loops = calloc(count, sizeof *group->loops);
    if (group->loops == NULL) {
        return err_set_errno(err, ENOMEM, "allocating loops");
    }
    int r = 0;
    for (unsigned i = 0; i < count; i++) {
        struct loop *loop = loop_alloc(i, entries, poll_ns, err);
        if (loop == NULL) {
            r = -ENOMEM;
            goto out_stop;
        }
        r = loop_start(loop, err);
        if (r < 0) {
            loop_dealloc(loop);
            goto out_stop;
        }
        group->loops[group->count++] = loop;
    }
    struct loop *expected = NULL;
    atomic_compare_exchange_strong(&main_loop, &expected, group->loops[0]);
    return 0;

out_stop:
    loop_group_stop(group);
    return r;
}

void loop_group_stop(struct loop_group *group)
{
    if (group->loops == NULL) {
        return;
    }
    for (unsigned i = 0; i < group->count; i++) {
        struct loop *expected = group->loops[i];
        atomic_compare_exchange_strong(&main_loop, &expected, NULL);
        loop_stop(group->loops[i]);
    }
    for (unsigned i = 0; i < group->count; i++) {
        loop_dealloc(group->loops[i]);
    }
    free(group->loops);
    group->loops = NULL;
    group->count = 0;
}
