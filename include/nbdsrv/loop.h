/* SPDX-License-Identifier: MIT */
/*
 * Event loops: one thread, one io_uring ring and one ready queue each.
 *
 * A loop runs tasks.  A task is a callback queued on a loop; coroutines
 * are tasks (their callback enters the coroutine), and so are the helpers
 * that one loop asks another to run.  Tasks posted from the loop's own
 * thread go straight onto the ready queue; tasks posted from any other
 * thread go through a multi-producer inbox and an eventfd wake-up.
 *
 * io_uring operations carry a `struct loop_op *` as user_data; when the
 * completion is reaped, op->complete runs on the loop's thread.  A
 * user_data of 0 marks an operation whose completion nobody wants
 * (cancellations).  The loop submits once per iteration: queued SQEs go to
 * the kernel in one io_uring_submit_and_wait, which also waits when there
 * is nothing to run and a short poll found nothing either.
 */
#ifndef NBDSRV_LOOP_H
#define NBDSRV_LOOP_H

#include "nbdsrv/affinity.h"
#include "nbdsrv/err.h"

#include <liburing.h>
#include <stdbool.h>
#include <stdint.h>

struct loop;

struct loop_task;
typedef void loop_task_fn(struct loop_task *task);

/*
 * A unit of work for a loop.  Embedded in its owner (a coroutine, a
 * channel waiter, a caller's stack frame); the loop only links it.
 * `next` belongs to whichever queue holds the task; a task is in at most
 * one queue at a time.
 */
struct loop_task {
    struct loop_task *next;
    loop_task_fn *fn;
};

struct loop_op;
typedef void loop_op_fn(struct loop_op *op, int res, uint32_t cqe_flags);

/* One io_uring operation in flight.  Owned by the submitter. */
struct loop_op {
    loop_op_fn *complete;
};

/* Ring and thread settings for loop_group_start. */
struct loop_config {
    unsigned ring_entries; /* submission queue size; 0 means 256 */
    /*
     * How long an idle loop keeps polling its inbox and completion ring
     * before it blocks in the kernel: a wake-up of a blocked thread costs
     * tens of microseconds on a virtual machine.  0 means the default,
     * LOOP_POLL_NS_DEFAULT; LOOP_POLL_NONE turns polling off.
     */
    unsigned poll_ns;
};

#define LOOP_POLL_NS_DEFAULT 50000u
#define LOOP_POLL_NONE ((unsigned)-1)

/* A set of loops started together.  Owned by the caller of _start. */
struct loop_group {
    unsigned count;
    struct loop **loops;
};

/*
 * Starts `count` loops, each on its own thread with its own ring.  The
 * first loop becomes the main loop (loop_main) unless one exists.
 * Returns 0, or -errno with err naming the cause (io_uring unavailable,
 * thread creation failure); on failure nothing is left running.
 * ANY_THREAD (not from a loop thread of the group).
 */
ANY_THREAD int loop_group_start(struct loop_group *group, unsigned count,
                                const struct loop_config *config,
                                struct err *err);

/*
 * Stops every loop of the group once its ready queue is empty, joins the
 * threads and frees the rings.  Coroutines still parked on a loop are not
 * resumed: stop a group only after its work has finished.
 * ANY_THREAD (not from a loop thread of the group).
 */
ANY_THREAD void loop_group_stop(struct loop_group *group);

/* The loop whose thread is calling, or NULL.  ANY_THREAD. */
ANY_THREAD struct loop *loop_current(void);

/* The main loop (first loop of the first group), or NULL.  ANY_THREAD. */
ANY_THREAD struct loop *loop_main(void);

/* The index of the loop in its group.  ANY_THREAD. */
ANY_THREAD unsigned loop_index(const struct loop *loop);

/* CPU time the loop's thread has used so far, in *ns: 0 or -errno.
 * Only while the loop runs (between loop_group_start and _stop).
 * ANY_THREAD. */
ANY_THREAD int loop_cpu_ns(const struct loop *loop, uint64_t *ns);

/*
 * Queues `task` to run on `loop`.  From the loop's own thread the task
 * joins the ready queue; from any other thread it is pushed onto the
 * inbox and the loop is woken if it sleeps.  ANY_THREAD.
 */
ANY_THREAD void loop_post(struct loop *loop, struct loop_task *task);

/*
 * Whether more tasks are queued to run on `loop` before it next waits:
 * work that can be batched (replies to one socket) may wait for them.
 * LOOP_FN.
 */
LOOP_FN bool loop_has_ready(const struct loop *loop);

/*
 * Runs `task` on `loop` once the current batch of ready tasks is done,
 * before the loop submits and waits: for flushing what the batch
 * accumulated.  LOOP_FN (also from a coroutine running on that loop).
 */
LOOP_FN void loop_defer(struct loop *loop, struct loop_task *task);

/*
 * Returns a submission queue entry of `loop`'s ring.  When the queue is
 * full it submits what is queued (reaping completions if the kernel's
 * completion queue is full) and tries again; it never returns NULL.
 * LOOP_FN (also from a coroutine running on that loop).
 */
LOOP_FN struct io_uring_sqe *loop_get_sqe(struct loop *loop);

/* Checks that the caller runs on `loop`'s thread (debug builds). */
#ifdef NDEBUG
#define loop_assert_owner(loop) ((void)(loop))
#else
ANY_THREAD void loop_assert_owner(const struct loop *loop);
#endif

/*
 * Describes why io_uring cannot be used, for a setup error `-errnum`:
 * names ENOSYS, EPERM and the kernel.io_uring_disabled sysctl.  Writes a
 * NUL-terminated line to buf.  ANY_THREAD.
 */
ANY_THREAD void loop_describe_setup_error(int errnum, char *buf, size_t size);

#endif
