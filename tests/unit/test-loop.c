/* SPDX-License-Identifier: MIT */
/*
 * Unit tests of loops: cross-thread posting, io_uring wrappers, a full
 * submission queue, and a clear message when io_uring is unavailable.
 */
#include "fixture-loops.h"
#include "fixture-main.h"
#include "nbdsrv/chan-sock.h"
#include "nbdsrv/coro-io.h"

#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <poll.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static void where_entry(void *arg)
{
    *(struct loop **)arg = loop_current();
}

UNIT_TEST("tasks", test_loop_runs_coroutine_on_each_loop)
{
    fixture_loops_start(3, 0);
    for (unsigned i = 0; i < 3; i++) {
        struct loop *seen = NULL;
        fixture_run_on(i, where_entry, &seen);
        ck_assert_ptr_eq(seen, fixture_loop(i));
        ck_assert_uint_eq(loop_index(seen), i);
    }
    ck_assert_ptr_eq(loop_main(), fixture_loop(0));
    fixture_loops_stop();
    ck_assert_ptr_null(loop_main());
}
END_TEST

struct order {
    atomic_int next;
    atomic_int done; /* counted after the slot is written */
    int seen[100];
};

struct order_task {
    struct loop_task task;
    struct order *order;
    int id;
};

static void order_task_run(struct loop_task *task)
{
    struct order_task *t = container_of(task, struct order_task, task);
    int slot = atomic_fetch_add(&t->order->next, 1);
    t->order->seen[slot] = t->id;
    atomic_fetch_add(&t->order->done, 1);
}

static bool all_done(void *arg)
{
    return atomic_load(&((struct order *)arg)->done) == 100;
}

/*
 * Posts 100 tasks from this (non-loop) thread over `loops` loops, pausing
 * `pause_us` after every tenth so that the loops fall asleep in between.
 */
static void post_numbered_tasks(struct order *order, struct order_task *tasks,
                                unsigned loops, unsigned pause_us)
{
    for (int i = 0; i < 100; i++) {
        tasks[i].task.fn = order_task_run;
        tasks[i].order = order;
        tasks[i].id = i;
        loop_post(fixture_loop((unsigned)i % loops), &tasks[i].task);
        if (pause_us != 0 && i % 10 == 0) {
            usleep(pause_us);
        }
    }
}

UNIT_TEST("tasks", test_loop_post_from_other_thread_keeps_order)
{
    fixture_loops_start(1, 0);
    struct order order = {.next = 0, .done = 0};
    struct order_task tasks[100];
    post_numbered_tasks(&order, tasks, 1, 0);
    ck_assert(fixture_wait_until(all_done, &order, 5000));
    for (int i = 0; i < 100; i++) {
        ck_assert_int_eq(order.seen[i], i);
    }
    fixture_loops_stop();
}
END_TEST

struct batch;

struct batch_item {
    struct loop_task task;
    struct batch *batch;
    int index;
};

struct batch {
    char order[8];
    int n;
    bool more_seen[3];
    struct batch_item items[3];
    struct loop_task start;
    struct loop_task deferred;
    atomic_int done;
};

static void batch_deferred_run(struct loop_task *task)
{
    struct batch *b = container_of(task, struct batch, deferred);
    b->order[b->n++] = 'D';
    atomic_store(&b->done, 1);
}

static void batch_item_run(struct loop_task *task)
{
    struct batch_item *item = container_of(task, struct batch_item, task);
    struct batch *b = item->batch;
    b->order[b->n++] = (char)('0' + item->index);
    b->more_seen[item->index] = loop_has_ready(loop_current());
    if (item->index == 0) {
        loop_defer(loop_current(), &b->deferred);
    }
}

/* Queues the three items from inside the loop, so they form one batch. */
static void batch_start_run(struct loop_task *task)
{
    struct batch *b = container_of(task, struct batch, start);
    b->deferred.fn = batch_deferred_run;
    for (int i = 0; i < 3; i++) {
        b->items[i] = (struct batch_item){
            .task.fn = batch_item_run, .batch = b, .index = i};
        loop_post(loop_current(), &b->items[i].task);
    }
}

static bool batch_done(void *arg)
{
    return atomic_load(&((struct batch *)arg)->done) == 1;
}

UNIT_TEST("tasks", test_loop_defer_runs_after_the_batch)
{
    fixture_loops_start(1, 0);
    struct batch b = {.n = 0, .done = 0};
    b.start.fn = batch_start_run;
    loop_post(fixture_loop(0), &b.start);
    ck_assert(fixture_wait_until(batch_done, &b, 5000));
    b.order[b.n] = '\0';
    /* Deferred by the first task, run after the third. */
    ck_assert_str_eq(b.order, "012D");
    ck_assert(b.more_seen[0]);
    ck_assert(b.more_seen[1]);
    ck_assert(!b.more_seen[2]);
    fixture_loops_stop();
}
END_TEST

struct pinger {
    unsigned hops;
    struct loop *last;
};

static void pinger_entry(void *arg)
{
    struct pinger *p = arg;
    for (unsigned i = 0; i < p->hops; i++) {
        coro_move_to(fixture_loop(i % 2));
        /* Let the other loop go to sleep before the next hop. */
        if (i % 50 == 0) {
            coro_sleep_ns(2 * 1000 * 1000);
        }
    }
    p->last = loop_current();
}

UNIT_TEST("tasks", test_loop_wakes_blocked_loop_without_polling)
{
    /* Polling off: every cross-thread post must wake a blocked ring. */
    struct loop_config config = {.poll_ns = LOOP_POLL_NONE};
    fixture_loops_start_config(2, &config);
    struct order order = {.next = 0, .done = 0};
    struct order_task tasks[100];
    post_numbered_tasks(&order, tasks, 2, 2000);
    ck_assert(fixture_wait_until(all_done, &order, 5000));
    struct pinger p = {.hops = 1000};
    fixture_run_on(1, pinger_entry, &p);
    ck_assert_ptr_eq(p.last, fixture_loop(1));
    fixture_loops_stop();
}
END_TEST

struct file_io {
    char path[64];
    int failures;
};

static void file_io_entry(void *arg)
{
    struct file_io *f = arg;
    int fd = open(f->path, O_RDWR);
    if (fd < 0) {
        f->failures++;
        return;
    }
    char out[8192], in[8192];
    memset(out, 'x', sizeof out);
    f->failures += coro_write(fd, out, sizeof out, 4096) != sizeof out;
    f->failures += coro_fdatasync(fd) != 0;
    f->failures += coro_fsync(fd) != 0;
    f->failures += coro_read(fd, in, sizeof in, 4096) != sizeof in;
    f->failures += memcmp(in, out, sizeof in) != 0;
    struct iovec iov[2] = {{in, 100}, {in + 100, 200}};
    f->failures += coro_readv(fd, iov, 2, 4096) != 300;
    f->failures += coro_writev(fd, iov, 2, 0) != 300;
    /* Punch a hole: the bytes read back as zero. */
    f->failures += coro_fallocate(fd, 0x02 | 0x01, 4096, 4096) != 0;
    f->failures += coro_read(fd, in, 4096, 4096) != 4096;
    for (int i = 0; i < 4096; i++) {
        f->failures += in[i] != 0;
    }
    f->failures += coro_read(-1, in, 1, 0) != -EBADF;
    struct timespec a, b;
    clock_gettime(CLOCK_MONOTONIC, &a);
    f->failures += coro_sleep_ns(20 * 1000 * 1000) != 0;
    clock_gettime(CLOCK_MONOTONIC, &b);
    long ms = (b.tv_sec - a.tv_sec) * 1000 + (b.tv_nsec - a.tv_nsec) / 1000000;
    f->failures += ms < 19;
    close(fd);
}

/* A timer whose callback re-arms it until it has fired `want` times. */
struct rearming {
    struct coro_timer timer;
    unsigned fires;
    unsigned want;
    unsigned refused; /* rearms that returned false */
    int failures;
};

static void rearming_fire(struct coro_timer *timer)
{
    struct rearming *r = container_of(timer, struct rearming, timer);
    r->fires++;
    if (r->fires < r->want && !coro_timer_rearm(timer, 2 * 1000 * 1000)) {
        r->refused++;
    }
}

static void rearming_entry(void *arg)
{
    struct rearming *r = arg;
    coro_timer_start(&r->timer, 1000 * 1000, rearming_fire);
    /* Armed, and not from its callback: a rearm is refused. */
    r->failures += coro_timer_rearm(&r->timer, 1000) != false;
    for (unsigned i = 0; i < 10000 && r->fires < r->want; i++) {
        coro_sleep_ns(1000 * 1000);
    }
    r->failures += r->fires != r->want;
    /* The last fire did not re-arm: stop has nothing to wait for. */
    r->failures += coro_timer_stop(&r->timer) != true;
    r->failures += r->fires != r->want;

    /* Stopped before it expires: the callback never runs. */
    unsigned before = r->fires;
    coro_timer_start(&r->timer, 3600ull * 1000 * 1000 * 1000, rearming_fire);
    r->failures += coro_timer_stop(&r->timer) != false;
    coro_sleep_ns(1000 * 1000);
    r->failures += r->fires != before;
}

UNIT_TEST("io", test_loop_timer_rearms_from_its_callback)
{
    fixture_loops_start(1, 0);
    struct rearming r = {.want = 4};
    fixture_run_on(0, rearming_entry, &r);
    ck_assert_int_eq(r.failures, 0);
    ck_assert_uint_eq(r.fires, 4);
    ck_assert_uint_eq(r.refused, 0);
    fixture_loops_stop();
}
END_TEST

UNIT_TEST("io", test_loop_file_operations)
{
    fixture_loops_start(1, 0);
    struct file_io f = {.failures = 0};
    strcpy(f.path, "/tmp/nbdsrv-test-XXXXXX");
    int fd = mkstemp(f.path);
    ck_assert_int_ge(fd, 0);
    close(fd);
    fixture_run_on(0, file_io_entry, &f);
    unlink(f.path);
    ck_assert_int_eq(f.failures, 0);
    fixture_loops_stop();
}
END_TEST

struct net_io {
    int listen_fd;
    struct sock_addr addr;
    int server_failures; /* written by the server coroutine only */
    int client_failures; /* written by the client coroutine only */
    char got[6];
    atomic_int server_done;
};

static void net_server_entry(void *arg)
{
    struct net_io *n = arg;
    int fd = coro_accept(n->listen_fd, NULL, NULL, 0);
    if (fd < 0) {
        n->server_failures++;
        atomic_store(&n->server_done, 1);
        return;
    }
    n->server_failures += coro_poll(fd, POLLIN) <= 0;
    n->server_failures += coro_recv(fd, n->got, 5, MSG_WAITALL) != 5;
    n->server_failures += coro_send(fd, "world", 5, 0) != 5;
    close(fd);
    atomic_store(&n->server_done, 1);
}

static bool server_done(void *arg)
{
    return atomic_load(&((struct net_io *)arg)->server_done) == 1;
}

static void net_client_entry(void *arg)
{
    struct net_io *n = arg;
    int fd = socket(n->addr.ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    n->client_failures +=
        coro_connect(fd, (struct sockaddr *)&n->addr.ss, n->addr.len) != 0;
    n->client_failures += coro_send(fd, "hello", 5, 0) != 5;
    char buf[5];
    n->client_failures += coro_recv(fd, buf, 5, MSG_WAITALL) != 5;
    n->client_failures += memcmp(buf, "world", 5) != 0;
    close(fd);
}

static void net_roundtrip(const char *listen_text)
{
    struct net_io n = {.server_failures = 0, .client_failures = 0};
    struct err err;
    ck_assert_msg(sock_addr_parse(listen_text, &n.addr, &err) == 0, "%s",
                  err.msg);
    n.listen_fd = sock_listen(&n.addr, 16, &err);
    ck_assert_msg(n.listen_fd >= 0, "%s", err.msg);
    n.addr.len = sizeof n.addr.ss;
    getsockname(n.listen_fd, (struct sockaddr *)&n.addr.ss, &n.addr.len);
    fixture_spawn_on(0, net_server_entry, &n);
    fixture_run_on(1, net_client_entry, &n);
    ck_assert(fixture_wait_until(server_done, &n, 5000));
    ck_assert_int_eq(n.server_failures, 0);
    ck_assert_int_eq(n.client_failures, 0);
    ck_assert_mem_eq(n.got, "hello", 5);
    close(n.listen_fd);
}

UNIT_TEST("io", test_loop_socket_operations_v4_v6_unix)
{
    fixture_loops_start(2, 0);
    net_roundtrip("127.0.0.1:0");
    net_roundtrip("[::1]:0");
    char path[64];
    snprintf(path, sizeof path, "unix:/tmp/nbdsrv-test-%d.sock", getpid());
    unlink(path + 5);
    net_roundtrip(path);
    unlink(path + 5);
    fixture_loops_stop();
}
END_TEST

#define FLOOD_OPS 5000

struct flood {
    atomic_int done;
    atomic_int failures;
    int fd;
};

static void flood_entry(void *arg)
{
    struct flood *f = arg;
    char c;
    if (coro_read(f->fd, &c, 1, 0) != 1 || c != 'z') {
        atomic_fetch_add(&f->failures, 1);
    }
    atomic_fetch_add(&f->done, 1);
}

static void flood_spawn_entry(void *arg)
{
    /* All created in one task: 5000 SQEs wanted before the loop submits. */
    for (int i = 0; i < FLOOD_OPS; i++) {
        struct coro *co = coro_new(flood_entry, arg, loop_current());
        coro_wake(co);
    }
}

static bool flood_done(void *arg)
{
    return atomic_load(&((struct flood *)arg)->done) == FLOOD_OPS;
}

UNIT_TEST("io", test_loop_full_submission_queue_completes_everything)
{
    /* An 8-entry ring has to be flushed hundreds of times. */
    fixture_loops_start(1, 8);
    struct flood f = {.done = 0, .failures = 0};
    char path[] = "/tmp/nbdsrv-test-XXXXXX";
    f.fd = mkstemp(path);
    ck_assert_int_ge(f.fd, 0);
    unlink(path);
    ck_assert_int_eq(write(f.fd, "z", 1), 1);
    fixture_run_on(0, flood_spawn_entry, &f);
    ck_assert(fixture_wait_until(flood_done, &f, 20000));
    ck_assert_int_eq(atomic_load(&f.failures), 0);
    close(f.fd);
    fixture_loops_stop();
}
END_TEST

/* Makes io_uring_setup fail with `errnum` in this process (seccomp). */
static void forbid_io_uring(int errnum)
{
    struct sock_filter filter[] = {
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_io_uring_setup, 0, 1),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | (errnum & 0xfff)),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
    };
    struct sock_fprog prog = {.len = ARRAY_SIZE(filter), .filter = filter};
    ck_assert_int_eq(prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), 0);
    ck_assert_int_eq(prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog), 0);
}

static void check_setup_failure(int errnum, const char *expect)
{
    int pipefd[2];
    ck_assert_int_eq(pipe(pipefd), 0);
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        close(pipefd[0]);
        forbid_io_uring(errnum);
        struct loop_group group;
        struct err err;
        err_clear(&err);
        int r = loop_group_start(&group, 2, NULL, &err);
        char line[600];
        int len = snprintf(line, sizeof line, "%d %s", r, err.msg);
        ssize_t w = write(pipefd[1], line, (size_t)len);
        _exit(w == len ? 0 : 1);
    }
    close(pipefd[1]);
    char line[600] = {0};
    ssize_t n = read(pipefd[0], line, sizeof line - 1);
    close(pipefd[0]);
    int status;
    ck_assert_int_eq(waitpid(pid, &status, 0), pid);
    ck_assert(n > 0);
    ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 0, "child: %s",
                  line);
    char want_rc[16];
    snprintf(want_rc, sizeof want_rc, "%d ", -errnum);
    ck_assert_msg(strncmp(line, want_rc, strlen(want_rc)) == 0, "got '%s'",
                  line);
    ck_assert_msg(strstr(line, "io_uring") != NULL, "got '%s'", line);
    ck_assert_msg(strstr(line, expect) != NULL, "got '%s'", line);
    ck_assert_msg(strchr(line, '\n') == NULL, "not one line: '%s'", line);
}

UNIT_TEST("setup", test_loop_reports_io_uring_unavailable)
{
    check_setup_failure(ENOSYS, "ENOSYS");
    check_setup_failure(EPERM, "EPERM");
}
END_TEST

UNIT_TEST("setup", test_loop_describes_disabled_sysctl)
{
    char buf[256];
    loop_describe_setup_error(ENOMEM, buf, sizeof buf);
    ck_assert_ptr_nonnull(strstr(buf, "ulimit -l"));
    loop_describe_setup_error(EPERM, buf, sizeof buf);
    FILE *f = fopen("/proc/sys/kernel/io_uring_disabled", "r");
    int c = f != NULL ? fgetc(f) : EOF;
    if (f != NULL) {
        fclose(f);
    }
    if (c == '2') {
        ck_assert_ptr_nonnull(strstr(buf, "kernel.io_uring_disabled=2"));
    } else if (c == '1') {
        ck_assert_ptr_nonnull(strstr(buf, "kernel.io_uring_group"));
    } else {
        ck_assert_ptr_nonnull(strstr(buf, "seccomp"));
    }
}
END_TEST

UNIT_SUITE("loop");
UNIT_TCASE("tasks", 60, NULL, NULL);
UNIT_TCASE("io", 60, NULL, NULL);
UNIT_TCASE("setup", 30, NULL, NULL);
