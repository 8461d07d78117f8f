/* SPDX-License-Identifier: MIT */
/*
 * The server: exports, listeners and the orderly stop.
 *
 * Each listening socket has an acceptor coroutine on the main loop (the
 * first loop of the group) that accepts with io_uring, counts the client
 * against the connection limits (admit.c; one over a limit is closed at
 * once) and starts each connection's coroutine on a home loop chosen
 * round robin.
 *
 * Stop, in order: set `stopping`; cancel the pending accepts (a task on
 * the main loop submits IORING_OP_ASYNC_CANCEL for each listening fd);
 * wait for the acceptors to end; wake the read side of every connection
 * so it stops taking requests; wait for the connections to finish their
 * requests in flight and go (shutting the stragglers' sockets down once
 * limits.shutdown_timeout_ns has passed); flush every export.
 *
 * Reload, in two steps so that it is all or nothing: a struct
 * server_update collects what is to change, prepared by the calls that
 * can fail (server_update_exports builds a new export table, sharing the
 * open images of unchanged exports; server_update_tls loads the
 * credentials); server_update_commit, which cannot fail, then swaps
 * every part in under one hold of srv->lock, so a new connection sees
 * either the old settings or the new ones, never a mix.  server_set_*
 * are updates of one part.
 */
#include "nbdsrv/bufpool.h"
#include "nbdsrv/chan-sock.h"
#include "nbdsrv/coro-io.h"
#include "nbdsrv/coro.h"
#include "nbdsrv/log.h"
#include "server-int.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

/* One listening socket.  Owned by the server. */
struct listener {
    struct server *srv;
    int fd;
    /* While its acceptor pauses (accept_pause): the parked coroutine,
     * and the timer that ends the pause.  Loop-local to the main loop. */
    struct coro *paused;
    struct coro_timer backoff;
};

/*
 * Out of descriptors (or memory), accept fails at once, and retrying at
 * once would spin: the acceptor pauses until a connection closes (which
 * frees a descriptor) or ACCEPT_BACKOFF_NS has passed (for a shortage
 * that is not ours: ENFILE, memory).  Clients meanwhile wait in the
 * listen backlog and are served in turn.
 */
#define ACCEPT_BACKOFF_NS (1000ull * 1000 * 1000)

static void resume_task_run(struct loop_task *task);

/* The limits as connections use them: zeroes and nonsense get defaults,
 * and one request of the largest kind always fits a connection's cap
 * and the server's. */
static struct server_limits normal_limits(const struct server_limits *limits)
{
    struct server_limits l = *limits;
    if (l.max_requests == 0) {
        l.max_requests = SERVER_DEFAULT_MAX_REQUESTS;
    }
    if (l.max_payload == 0) {
        l.max_payload = SERVER_DEFAULT_MAX_PAYLOAD;
    }
    if (l.max_payload < SERVER_MIN_MAX_PAYLOAD) {
        l.max_payload = SERVER_MIN_MAX_PAYLOAD;
    }
    if (l.max_payload > BUFPOOL_MAX_SIZE) {
        l.max_payload = BUFPOOL_MAX_SIZE;
    }
    uint64_t largest = bufpool_alloc_size(l.max_payload);
    if (l.max_inflight_bytes == 0) {
        l.max_inflight_bytes = SERVER_DEFAULT_MAX_INFLIGHT_BYTES;
    }
    if (l.max_inflight_bytes < largest) {
        l.max_inflight_bytes = largest;
    }
    if (l.max_buffer_memory == 0) {
        l.max_buffer_memory = SERVER_DEFAULT_MAX_BUFFER_MEMORY;
    }
    if (l.max_buffer_memory < l.max_inflight_bytes) {
        l.max_buffer_memory = l.max_inflight_bytes;
    }
    return l;
}

struct server *server_new(const struct server_limits *limits)
{
    struct server *srv = calloc(1, sizeof *srv);
    if (srv == NULL) {
        return NULL;
    }
    server_unshared(srv)->table = export_table_new(0);
    if (server_unshared(srv)->table == NULL) {
        free(srv);
        return NULL;
    }
    mutex_init(&srv->lock);
    server_unshared(srv)->limits = normal_limits(limits);
    buffer_budget_init(&srv->budget,
                       server_unshared(srv)->limits.max_buffer_memory);
    client_table_init(&server_unshared(srv)->clients);
    pthread_cond_init(&srv->changed, NULL);
    atomic_init(&srv->next_loop, 0);
    atomic_init(&srv->next_conn_id, 0);
    srv->started = (int64_t)time(NULL);
    atomic_init(&srv->stopping, false);
    atomic_init(&srv->nr_paused, 0);
    atomic_init(&srv->resume_queued, false);
    srv->resume_task.fn = resume_task_run;
    srv->done_fd = -1;
    atomic_init(&srv->single_clean, false);
    return srv;
}

void server_set_limits(struct server *srv, const struct server_limits *limits)
{
    struct server_update up = {0};
    server_update_limits(&up, limits);
    server_update_commit(srv, &up);
}

/* The export of `t` named `name`, or NULL. */
static struct export *table_lookup(const struct export_table *t,
                                   const char *name)
{
    for (unsigned i = 0; i < t->nr; i++) {
        if (strcmp(t->exps[i]->name, name) == 0) {
            return t->exps[i];
        }
    }
    return NULL;
}

/* Whether two exports are configured alike (for the reload log). */
static bool same_settings(const struct export *a, const struct export *b)
{
    bool same_desc = (a->description == NULL && b->description == NULL) ||
                     (a->description != NULL && b->description != NULL &&
                      strcmp(a->description, b->description) == 0);
    bool same_ids = a->nr_tls_identities == b->nr_tls_identities;
    for (unsigned i = 0; same_ids && i < a->nr_tls_identities; i++) {
        same_ids = strcmp(a->tls_identities[i], b->tls_identities[i]) == 0;
    }
    return a->be == b->be && a->read_only == b->read_only &&
           a->no_trim == b->no_trim && same_desc && same_ids &&
           a->nr_allow == b->nr_allow &&
           (a->nr_allow == 0 ||
            memcmp(a->allow, b->allow, a->nr_allow * sizeof *a->allow) == 0);
}

/* Logs what a new export table changes (nothing on the first one). */
static void log_changes(const struct export_table *old,
                        const struct export_table *t)
{
    if (old->nr == 0) {
        return;
    }
    for (unsigned i = 0; i < t->nr; i++) {
        const struct export *prev = table_lookup(old, t->exps[i]->name);
        if (prev == NULL) {
            log_info("export '%s' added", t->exps[i]->name);
        } else if (prev->be != t->exps[i]->be) {
            log_info("export '%s' changed: image reopened; connected "
                     "clients keep the old one",
                     t->exps[i]->name);
        } else if (!same_settings(prev, t->exps[i])) {
            log_info("export '%s' changed: new settings apply to new "
                     "connections",
                     t->exps[i]->name);
        }
    }
    for (unsigned i = 0; i < old->nr; i++) {
        if (table_lookup(t, old->exps[i]->name) == NULL) {
            log_info("export '%s' removed: no new clients; connected "
                     "ones stay until they leave",
                     old->exps[i]->name);
        }
    }
}

/*
 * Builds the export table for `configs`, sharing the open image of each
 * export of `old` whose image settings are unchanged.  NULL with err set
 * (naming the export) on failure.  With metrics on, each export gets its
 * name's counters from srv.
 */
static struct export_table *table_build(struct server *srv,
                                        const struct export_table *old,
                                        const struct export_config *configs,
                                        unsigned nr, struct err *err)
{
    struct export_table *t = export_table_new(nr);
    if (t == NULL) {
        err_set(err, ENOMEM, "out of memory");
        return NULL;
    }
    for (unsigned i = 0; i < nr; i++) {
        const struct export_config *c = &configs[i];
        size_t name_len = strlen(c->name);
        if (proto_check_string(c->name, name_len) < 0) {
            err_set(err, EINVAL, "export name '%.40s...' is too long", c->name);
            goto fail;
        }
        if (name_len == 0) {
            err_set(err, EINVAL, "an export name is empty");
            goto fail;
        }
        if (table_lookup(t, c->name) != NULL) {
            err_set(err, EEXIST, "export '%s' is given twice", c->name);
            goto fail;
        }
        const struct export *prev = table_lookup(old, c->name);
        struct backend *reuse =
            prev != NULL && export_same_image(prev, c) ? prev->be : NULL;
        struct err e;
        err_clear(&e);
        t->exps[t->nr] = export_new(c, reuse, &e);
        if (t->exps[t->nr] == NULL) {
            err_set(err, e.errnum != 0 ? e.errnum : EINVAL, "export '%s': %s",
                    c->name, e.msg);
            goto fail;
        }
        /* Counters go by name: a new object of a name carries on. */
        if (srv->stats_on) {
            t->exps[t->nr]->stats = server_export_stats(srv, c->name);
        }
        t->nr++;
    }
    return t;

fail:
    export_table_unref(t);
    return NULL;
}

/* Passes a callee's error on to err; returns -errno (EINVAL if none). */
static int pass_err(struct err *err, const struct err *e)
{
    return err_set(err, e->errnum != 0 ? e->errnum : EINVAL, "%s", e->msg);
}

int server_update_exports(struct server *srv, struct server_update *up,
                          const struct export_config *configs, unsigned nr,
                          struct err *err)
{
    struct err e;
    err_clear(&e);
    struct export_table *old = server_get_table(srv);
    struct export_table *t = table_build(srv, old, configs, nr, &e);
    export_table_unref(old);
    if (t == NULL) {
        return pass_err(err, &e);
    }
    export_table_unref(up->table);
    up->table = t;
    return 0;
}

int server_update_tls(struct server_update *up, const struct tls_config *cfg,
                      struct err *err)
{
    struct tls_creds *creds = NULL;
    if (cfg->mode != TLS_MODE_OFF) {
        struct err e;
        err_clear(&e);
        creds = tls_creds_new_server(cfg, &e);
        if (creds == NULL) {
            return pass_err(err, &e);
        }
    }
    tls_creds_unref(up->tls_creds);
    up->tls_creds = creds;
    up->tls_mode = cfg->mode;
    up->set_tls = true;
    return 0;
}

void server_update_limits(struct server_update *up,
                          const struct server_limits *limits)
{
    up->limits = normal_limits(limits);
    up->set_limits = true;
}

void server_update_commit(struct server *srv, struct server_update *up)
{
    /* The new table keeps up's reference until it has been logged; the
     * server takes one of its own. */
    struct export_table *new_table = up->table;
    struct export_table *old_table = NULL;
    struct tls_creds *old_creds = NULL;
    mutex_lock(&srv->lock);
    struct server_shared *sh = server_locked(srv);
    if (new_table != NULL) {
        old_table = sh->table;
        /* srv->lock orders this against a later swap's unref. */
        refcount_get(&new_table->refs);
        sh->table = new_table;
        up->table = NULL;
    }
    if (up->set_tls) {
        old_creds = sh->tls_creds;
        sh->tls_creds = up->tls_creds;
        sh->tls_mode = up->tls_mode;
        up->tls_creds = NULL;
        up->set_tls = false;
    }
    bool set_limits = up->set_limits;
    if (up->set_limits) {
        sh->limits = up->limits;
        up->set_limits = false;
    }
    mutex_unlock(&srv->lock);
    if (set_limits) {
        buffer_budget_set_limit(&srv->budget, up->limits.max_buffer_memory);
    }
    if (new_table != NULL) {
        log_changes(old_table, new_table);
        export_table_unref(old_table);
        export_table_unref(new_table);
    }
    tls_creds_unref(old_creds);
}

void server_update_fini(struct server_update *up)
{
    export_table_unref(up->table);
    up->table = NULL;
    tls_creds_unref(up->tls_creds);
    up->tls_creds = NULL;
    up->set_tls = false;
    up->set_limits = false;
}

int server_set_exports(struct server *srv, const struct export_config *configs,
                       unsigned nr, struct err *err)
{
    struct server_update up = {0};
    int r = server_update_exports(srv, &up, configs, nr, err);
    if (r == 0) {
        server_update_commit(srv, &up);
    }
    server_update_fini(&up);
    return r;
}

int server_add_export(struct server *srv, const struct export_config *config,
                      struct err *err)
{
    return server_edit_export(srv, SERVER_EDIT_ADD, config->name, config, err);
}

struct conn_start {
    struct server *srv;
    int fd;
    char peer[96];
    struct sockaddr_storage addr;
};

static void conn_entry(void *opaque)
{
    struct conn_start cs = *(struct conn_start *)opaque;
    free(opaque);
    conn_run(cs.srv, cs.fd, cs.peer, &cs.addr);
}

/* On the main loop: wakes every pausing acceptor. */
static void resume_acceptors(struct server *srv)
{
    for (unsigned i = 0; i < srv->nr_listeners; i++) {
        struct listener *l = &srv->listeners[i];
        struct coro *co = l->paused;
        if (co != NULL) {
            l->paused = NULL;
            coro_wake(co);
        }
    }
}

static void resume_task_run(struct loop_task *task)
{
    struct server *srv = container_of(task, struct server, resume_task);
    atomic_store(&srv->resume_queued, false);
    resume_acceptors(srv);
}

void server_conn_closed(struct server *srv)
{
    /* seq_cst, pairs with the increment in accept_pause: an acceptor
     * that starts to pause after this load waits for its backoff. */
    if (atomic_load(&srv->nr_paused) > 0 &&
        !atomic_exchange(&srv->resume_queued, true)) {
        loop_post(srv->loops->loops[0], &srv->resume_task);
    }
}

static void backoff_over(struct coro_timer *timer)
{
    struct listener *l = container_of(timer, struct listener, backoff);
    struct coro *co = l->paused;
    if (co != NULL) {
        l->paused = NULL;
        coro_wake(co);
    }
}

/*
 * Parks the acceptor until a connection closes, the backoff passes or
 * the server stops.  The main loop's thread is the only one that touches
 * l->paused, so the wakers (resume_acceptors, backoff_over) cannot race.
 */
static void accept_pause(struct listener *l)
{
    struct server *srv = l->srv;
    atomic_fetch_add(&srv->nr_paused, 1);
    coro_timer_start(&l->backoff, ACCEPT_BACKOFF_NS, backoff_over);
    /* server_stop sets `stopping` before it posts the task that wakes us:
     * seen here, or the task comes after we park. */
    if (!atomic_load(&srv->stopping)) {
        l->paused = coro_self();
        coro_yield();
    }
    coro_timer_stop(&l->backoff);
    atomic_fetch_sub(&srv->nr_paused, 1);
}

/* The soft limit on open files, for messages; 0 if unknown. */
static unsigned long long nofile_limit(void)
{
    struct rlimit rl;
    return getrlimit(RLIMIT_NOFILE, &rl) == 0 ? (unsigned long long)rl.rlim_cur
                                              : 0;
}

/*
 * accept failed with -err: logs (rate-limited) and pauses when retrying
 * at once would fail the same way.  Errors of one connection that the
 * kernel passes on (accept(2): "treat them like EAGAIN") just retry.
 */
static void accept_failed(struct listener *l, int err)
{
    struct server *srv = l->srv;
    unsigned held;
    char more[80] = "";
    switch (err) {
    case EAGAIN:
    case EINTR:
    case ECONNABORTED:
    case EPROTO:
    case EPERM:
    case ENETDOWN:
    case ENOPROTOOPT:
    case EHOSTDOWN:
    case ENONET:
    case EHOSTUNREACH:
    case EOPNOTSUPP:
    case ENETUNREACH:
        if (log_ratelimit_pass(&srv->accept_log[ACCEPT_LOG_OTHER],
                               SERVER_REFUSAL_LOG_NS, &held)) {
            log_debug("accept: %s (%u more errors like it held back)",
                      strerror(err), held);
        }
        return;
    case EMFILE:
    case ENFILE:
        if (log_ratelimit_pass(&srv->accept_log[ACCEPT_LOG_NOFILE],
                               SERVER_REFUSAL_LOG_NS, &held)) {
            if (held > 0) {
                snprintf(more, sizeof more,
                         "; %u more pauses since the last message", held);
            }
            log_warning("accept: %s (open file limit %llu): accepting "
                        "pauses until a connection closes (%llu s at "
                        "most)%s; logged at most every %u s",
                        strerror(err), nofile_limit(),
                        ACCEPT_BACKOFF_NS / 1000000000u, more,
                        (unsigned)(SERVER_REFUSAL_LOG_NS / 1000000000u));
        }
        break;
    default:
        /* ENOBUFS, ENOMEM, and errors of the listening socket itself. */
        if (log_ratelimit_pass(&srv->accept_log[ACCEPT_LOG_NOMEM],
                               SERVER_REFUSAL_LOG_NS, &held)) {
            if (held > 0) {
                snprintf(more, sizeof more,
                         "; %u more pauses since the last message", held);
            }
            log_warning("accept: %s: accepting pauses for %llu s%s; logged "
                        "at most every %u s",
                        strerror(err), ACCEPT_BACKOFF_NS / 1000000000u, more,
                        (unsigned)(SERVER_REFUSAL_LOG_NS / 1000000000u));
        }
        break;
    }
    accept_pause(l);
}

static void acceptor_entry(void *opaque)
{
    struct listener *l = opaque;
    struct server *srv = l->srv;
    while (!atomic_load(&srv->stopping)) {
        struct sockaddr_storage ss;
        socklen_t len = sizeof ss;
        int fd = coro_accept(l->fd, (struct sockaddr *)&ss, &len, 0);
        if (fd < 0) {
            if (fd == -ECANCELED || atomic_load(&srv->stopping)) {
                break;
            }
            accept_failed(l, -fd);
            continue;
        }
        server_serve_fd(srv, fd, &ss, len);
    }
    mutex_lock(&srv->lock);
    server_locked(srv)->nr_acceptors--;
    pthread_cond_broadcast(&srv->changed);
    mutex_unlock(&srv->lock);
}

/*
 * Admits the connection on `fd` from `addr` (printed as `peer`) and starts
 * `entry` for it on the next loop.  On failure the refusal is logged, fd
 * closed and -EBUSY (over a limit) or -ENOMEM returned.
 */
static int admit_and_start(struct server *srv, int fd,
                           const struct sockaddr_storage *addr,
                           const char *peer, void (*entry)(void *))
{
    unsigned count = 0;
    enum server_admit admitted = server_admit(srv, addr, &count);
    if (admitted != SERVER_ADMIT_OK) {
        close(fd);
        atomic_fetch_add_explicit(&srv->events.refused[admitted], 1,
                                  memory_order_relaxed);
        server_log_refusal(srv, admitted, peer, count);
        return admitted == SERVER_ADMIT_NO_MEMORY ? -ENOMEM : -EBUSY;
    }
    struct conn_start *cs = calloc(1, sizeof *cs);
    struct loop *home = server_pick_loop(srv);
    struct coro *co = cs != NULL ? coro_new(entry, cs, home) : NULL;
    if (co == NULL) {
        log_error("no memory for a new connection");
        atomic_fetch_add_explicit(&srv->events.refused[SERVER_ADMIT_NO_MEMORY],
                                  1, memory_order_relaxed);
        free(cs);
        server_admit_release(srv, addr);
        close(fd);
        return -ENOMEM;
    }
    cs->srv = srv;
    cs->fd = fd;
    cs->addr = *addr;
    snprintf(cs->peer, sizeof cs->peer, "%s", peer);
    atomic_fetch_add_explicit(&srv->events.accepted, 1, memory_order_relaxed);
    coro_schedule(home, co);
    return 0;
}

int server_serve_fd(struct server *srv, int fd,
                    const struct sockaddr_storage *peer_addr, socklen_t len)
{
    char peer[sizeof((struct conn_start *)NULL)->peer];
    sock_addr_format((const struct sockaddr *)peer_addr, len, peer,
                     sizeof peer);
    return admit_and_start(srv, fd, peer_addr, peer, conn_entry);
}

int server_start(struct server *srv, struct loop_group *loops,
                 const int *listen_fds, unsigned nr_listen, struct err *err)
{
    srv->loops = loops;
    srv->load = calloc(loops->count, sizeof *srv->load);
    srv->listeners =
        calloc(nr_listen > 0 ? nr_listen : 1, sizeof *srv->listeners);
    if (srv->stats_on) {
        srv->stats_loops =
            aligned_alloc(64, loops->count * sizeof *srv->stats_loops);
        if (srv->stats_loops != NULL) {
            memset(srv->stats_loops, 0,
                   loops->count * sizeof *srv->stats_loops);
        }
    }
    if (srv->listeners == NULL || srv->load == NULL ||
        (srv->stats_on && srv->stats_loops == NULL)) {
        for (unsigned i = 0; i < nr_listen; i++) {
            close(listen_fds[i]);
        }
        return err_set(err, ENOMEM, "out of memory");
    }
    srv->nr_listeners = nr_listen;
    for (unsigned i = 0; i < nr_listen; i++) {
        srv->listeners[i] = (struct listener){.srv = srv, .fd = listen_fds[i]};
    }
    struct loop *main_loop = loops->loops[0];
    for (unsigned i = 0; i < nr_listen; i++) {
        struct coro *co =
            coro_new(acceptor_entry, &srv->listeners[i], main_loop);
        if (co == NULL) {
            return err_set_errno(err, errno, "starting an acceptor");
        }
        mutex_lock(&srv->lock);
        server_locked(srv)->nr_acceptors++;
        mutex_unlock(&srv->lock);
        coro_schedule(main_loop, co);
    }
    return 0;
}

void server_single_over(struct server *srv, bool clean)
{
    /* Release: the reader of done_fd sees how it ended. */
    atomic_store_explicit(&srv->single_clean, clean, memory_order_release);
    uint64_t one = 1;
    if (write(srv->done_fd, &one, sizeof one) != (ssize_t)sizeof one) {
        log_error("cannot signal the end of the connection: %s",
                  strerror(errno));
    }
}

bool server_single_clean(struct server *srv)
{
    return atomic_load_explicit(&srv->single_clean, memory_order_acquire);
}

static void single_entry(void *opaque)
{
    struct conn_start cs = *(struct conn_start *)opaque;
    free(opaque);
    if (!conn_run(cs.srv, cs.fd, cs.peer, &cs.addr)) {
        server_single_over(cs.srv, false);
    }
}

int server_start_single(struct server *srv, struct loop_group *loops, int fd,
                        int *done_fd, struct err *err)
{
    if (server_start(srv, loops, NULL, 0, err) < 0) {
        close(fd);
        return -1;
    }
    srv->done_fd = eventfd(0, EFD_CLOEXEC);
    if (srv->done_fd < 0) {
        int e = errno;
        close(fd);
        return err_set_errno(err, e, "serving the connection");
    }
    struct sockaddr_storage addr;
    char peer[sizeof((struct conn_start *)NULL)->peer];
    socklen_t len = sizeof addr;
    if (getpeername(fd, (struct sockaddr *)&addr, &len) < 0 ||
        len <= sizeof(sa_family_t)) {
        /* A socketpair has no name: it counts as a unix client. */
        memset(&addr, 0, sizeof addr);
        addr.ss_family = AF_UNIX;
        snprintf(peer, sizeof peer, "unix:(socketpair)");
    } else {
        sock_addr_format((struct sockaddr *)&addr, len, peer, sizeof peer);
    }
    int r = admit_and_start(srv, fd, &addr, peer, single_entry);
    if (r < 0) {
        return err_set(err, -r,
                       r == -EBUSY ? "the connection is over the limits"
                                   : "starting the connection");
    }
    log_info("serving one connection from %s", peer);
    *done_fd = srv->done_fd;
    return 0;
}

struct cancel_accepts {
    struct loop_task task;
    struct server *srv;
};

static void cancel_accepts_run(struct loop_task *task)
{
    struct cancel_accepts *c = container_of(task, struct cancel_accepts, task);
    struct loop *loop = loop_current();
    resume_acceptors(c->srv); /* a pausing acceptor sees `stopping` */
    for (unsigned i = 0; i < c->srv->nr_listeners; i++) {
        struct io_uring_sqe *sqe = loop_get_sqe(loop);
        io_uring_prep_cancel_fd(sqe, c->srv->listeners[i].fd,
                                IORING_ASYNC_CANCEL_ALL);
        io_uring_sqe_set_data(sqe, NULL);
    }
}

static bool timespec_passed(const struct timespec *deadline)
{
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    return now.tv_sec > deadline->tv_sec ||
           (now.tv_sec == deadline->tv_sec && now.tv_nsec >= deadline->tv_nsec);
}

struct flush_all {
    struct server *srv;
    int result;
};

static void flush_all_entry(void *opaque)
{
    struct flush_all *f = opaque;
    struct export_table *t = server_get_table(f->srv);
    for (unsigned i = 0; i < t->nr; i++) {
        const struct export *exp = t->exps[i];
        if (exp->read_only) {
            continue;
        }
        int r = backend_flush(exp->be);
        if (r < 0) {
            log_error("flushing export '%s': %s", exp->name, strerror(-r));
            f->result = r;
        }
    }
    export_table_unref(t);
}

int server_stop(struct server *srv)
{
    if (srv->loops == NULL) {
        return 0;
    }
    atomic_store(&srv->stopping, true);

    struct cancel_accepts cancel = {.task.fn = cancel_accepts_run, .srv = srv};
    loop_post(srv->loops->loops[0], &cancel.task);
    mutex_lock(&srv->lock);
    struct server_shared *sh = server_locked(srv);
    while (sh->nr_acceptors > 0) {
        mutex_cond_wait(&srv->changed, &srv->lock);
    }
    for (unsigned i = 0; i < srv->nr_listeners; i++) {
        close(srv->listeners[i].fd);
        srv->listeners[i].fd = -1;
    }

    for (struct conn *c = sh->conns; c != NULL; c = conn_links(srv, c)->next) {
        chan_wake(c->ch, CHAN_IN);
    }
    uint64_t timeout_ns = sh->limits.shutdown_timeout_ns;
    struct timespec deadline;
    clock_gettime(CLOCK_REALTIME, &deadline);
    deadline.tv_sec += (time_t)(timeout_ns / 1000000000u);
    deadline.tv_nsec += (long)(timeout_ns % 1000000000u);
    if (deadline.tv_nsec >= 1000000000) {
        deadline.tv_sec++;
        deadline.tv_nsec -= 1000000000;
    }
    bool forced = false;
    while (sh->nr_conns > 0) {
        if (!forced && timespec_passed(&deadline)) {
            log_warning("%u connections still busy after %.1f s; closing "
                        "them",
                        sh->nr_conns, (double)timeout_ns / 1e9);
            for (struct conn *c = sh->conns; c != NULL;
                 c = conn_links(srv, c)->next) {
                chan_shutdown(c->ch, SHUT_RDWR);
            }
            forced = true;
        }
        if (forced) {
            clock_gettime(CLOCK_REALTIME, &deadline);
            deadline.tv_sec++;
        }
        mutex_cond_timedwait(&srv->changed, &srv->lock, &deadline);
    }
    mutex_unlock(&srv->lock);

    struct flush_all f = {.srv = srv, .result = 0};
    coro_run_sync(srv->loops->loops[0], flush_all_entry, &f);
    return f.result;
}

int server_set_tls(struct server *srv, const struct tls_config *cfg,
                   struct err *err)
{
    struct server_update up = {0};
    int r = server_update_tls(&up, cfg, err);
    if (r == 0) {
        server_update_commit(srv, &up);
    }
    server_update_fini(&up);
    return r;
}

void server_tick(struct server *srv)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    uint64_t now = (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
    mutex_lock(&srv->lock);
    for (struct conn *conn = server_locked(srv)->conns; conn != NULL;
         conn = conn_links(srv, conn)->next) {
        uint64_t limit = conn->limits.request_timeout_ns;
        if (limit == 0 || conn_links(srv, conn)->stall_dropped) {
            continue;
        }
        uint64_t stalled = chan_stalled_ns(conn->ch, CHAN_OUT, now);
        if (stalled >= limit) {
            conn_links(srv, conn)->stall_dropped = true;
            log_info("%s: the client has read no reply for %.0f s "
                     "(request-timeout), disconnecting",
                     conn->peer, (double)stalled / 1e9);
            /* The blocked writer fails, and with it the connection. */
            chan_shutdown(conn->ch, SHUT_RDWR);
        }
    }
    mutex_unlock(&srv->lock);
}

void server_free(struct server *srv)
{
    if (srv == NULL) {
        return;
    }
    tls_creds_unref(server_unshared(srv)->tls_creds);
    server_unshared(srv)->tls_creds = NULL;
    for (unsigned i = 0; i < srv->nr_listeners; i++) {
        if (srv->listeners[i].fd >= 0) {
            close(srv->listeners[i].fd);
        }
    }
    free(srv->listeners);
    free(srv->load);
    if (srv->done_fd >= 0) {
        close(srv->done_fd);
    }
    export_table_unref(server_unshared(srv)->table);
    server_unshared(srv)->table = NULL;
    client_table_fini(&server_unshared(srv)->clients);
    server_stats_fini(srv);
    pthread_cond_destroy(&srv->changed);
    mutex_destroy(&srv->lock);
    buffer_budget_fini(&srv->budget);
    free(srv);
}
