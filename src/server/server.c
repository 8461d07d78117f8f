/* SPDX-License-Identifier: MIT */
/*
 * The server: exports, listeners and the orderly stop.
 *
 * Each listening socket has an acceptor coroutine on the main loop (the
 * first loop of the group) that accepts with io_uring and starts each
 * connection's coroutine on a home loop chosen round robin.
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
#include "nbdsrv/chan-sock.h"
#include "nbdsrv/coro-io.h"
#include "nbdsrv/coro.h"
#include "nbdsrv/log.h"
#include "server-int.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

/* One listening socket.  Owned by the server. */
struct listener {
    struct server *srv;
    int fd;
};

/* The limits as connections use them: zeroes and nonsense get defaults. */
static struct server_limits normal_limits(const struct server_limits *limits)
{
    struct server_limits l = *limits;
    if (l.max_requests == 0) {
        l.max_requests = SERVER_DEFAULT_MAX_REQUESTS;
    }
    if (l.max_inflight_bytes < SERVER_BLOCK_MAX) {
        l.max_inflight_bytes = SERVER_DEFAULT_MAX_INFLIGHT_BYTES;
    }
    return l;
}

struct server *server_new(const struct server_limits *limits)
{
    struct server *srv = calloc(1, sizeof *srv);
    if (srv == NULL) {
        return NULL;
    }
    srv->table = export_table_new(0);
    if (srv->table == NULL) {
        free(srv);
        return NULL;
    }
    pthread_mutex_init(&srv->lock, NULL);
    srv->limits = normal_limits(limits);
    pthread_cond_init(&srv->changed, NULL);
    atomic_init(&srv->next_loop, 0);
    atomic_init(&srv->stopping, false);
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
 * (naming the export) on failure.
 */
static struct export_table *table_build(const struct export_table *old,
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
    struct export_table *t = table_build(old, configs, nr, &e);
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
    pthread_mutex_lock(&srv->lock);
    if (new_table != NULL) {
        old_table = srv->table;
        /* Relaxed: srv->lock orders this against a later swap's unref. */
        atomic_fetch_add_explicit(&new_table->refs, 1, memory_order_relaxed);
        srv->table = new_table;
        up->table = NULL;
    }
    if (up->set_tls) {
        old_creds = srv->tls_creds;
        srv->tls_creds = up->tls_creds;
        srv->tls_mode = up->tls_mode;
        up->tls_creds = NULL;
        up->set_tls = false;
    }
    if (up->set_limits) {
        srv->limits = up->limits;
        up->set_limits = false;
    }
    pthread_mutex_unlock(&srv->lock);
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
    struct export_table *old = server_get_table(srv);
    struct export_config *all = calloc(old->nr + 1, sizeof *all);
    int r;
    if (all == NULL) {
        r = err_set(err, ENOMEM, "out of memory");
        goto out;
    }
    for (unsigned i = 0; i < old->nr; i++) {
        const struct export *exp = old->exps[i];
        all[i] = (struct export_config){
            .name = exp->name,
            .path = exp->path,
            .description = exp->description,
            .read_only = backend_read_only(exp->be),
            .direct = exp->direct,
            .no_trim = exp->no_trim,
            .allow = exp->allow,
            .nr_allow = exp->nr_allow,
            .tls_identities = (const char *const *)exp->tls_identities,
            .nr_tls_identities = exp->nr_tls_identities,
        };
    }
    all[old->nr] = *config;
    r = server_set_exports(srv, all, old->nr + 1, err);
out:
    free(all);
    export_table_unref(old);
    return r;
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
            log_warning("accept: %s", strerror(-fd));
            if (fd == -EMFILE || fd == -ENFILE || fd == -ENOBUFS ||
                fd == -ENOMEM) {
                /* Out of descriptors: let some connections go first. */
                coro_sleep_ns(100 * 1000 * 1000);
            }
            continue;
        }
        struct conn_start *cs = calloc(1, sizeof *cs);
        struct loop *home = server_pick_loop(srv);
        struct coro *co = cs != NULL ? coro_new(conn_entry, cs, home) : NULL;
        if (co == NULL) {
            log_error("no memory for a new connection");
            free(cs);
            close(fd);
            continue;
        }
        cs->srv = srv;
        cs->fd = fd;
        cs->addr = ss;
        sock_addr_format((struct sockaddr *)&ss, len, cs->peer,
                         sizeof cs->peer);
        coro_schedule(home, co);
    }
    pthread_mutex_lock(&srv->lock);
    srv->nr_acceptors--;
    pthread_cond_broadcast(&srv->changed);
    pthread_mutex_unlock(&srv->lock);
}

int server_start(struct server *srv, struct loop_group *loops,
                 const int *listen_fds, unsigned nr_listen, struct err *err)
{
    srv->loops = loops;
    srv->load = calloc(loops->count, sizeof *srv->load);
    srv->listeners = calloc(nr_listen, sizeof *srv->listeners);
    if (srv->listeners == NULL || srv->load == NULL) {
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
        pthread_mutex_lock(&srv->lock);
        srv->nr_acceptors++;
        pthread_mutex_unlock(&srv->lock);
        coro_schedule(main_loop, co);
    }
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
    pthread_mutex_lock(&srv->lock);
    while (srv->nr_acceptors > 0) {
        pthread_cond_wait(&srv->changed, &srv->lock);
    }
    for (unsigned i = 0; i < srv->nr_listeners; i++) {
        close(srv->listeners[i].fd);
        srv->listeners[i].fd = -1;
    }

    for (struct conn *c = srv->conns; c != NULL; c = c->next) {
        chan_wake(c->ch, CHAN_IN);
    }
    uint64_t timeout_ns = srv->limits.shutdown_timeout_ns;
    struct timespec deadline;
    clock_gettime(CLOCK_REALTIME, &deadline);
    deadline.tv_sec += (time_t)(timeout_ns / 1000000000u);
    deadline.tv_nsec += (long)(timeout_ns % 1000000000u);
    if (deadline.tv_nsec >= 1000000000) {
        deadline.tv_sec++;
        deadline.tv_nsec -= 1000000000;
    }
    bool forced = false;
    while (srv->nr_conns > 0) {
        if (!forced && timespec_passed(&deadline)) {
            log_warning("%u connections still busy after %.1f s; closing "
                        "them",
                        srv->nr_conns, (double)timeout_ns / 1e9);
            for (struct conn *c = srv->conns; c != NULL; c = c->next) {
                chan_shutdown(c->ch, SHUT_RDWR);
            }
            forced = true;
        }
        if (forced) {
            clock_gettime(CLOCK_REALTIME, &deadline);
            deadline.tv_sec++;
        }
        pthread_cond_timedwait(&srv->changed, &srv->lock, &deadline);
    }
    pthread_mutex_unlock(&srv->lock);

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

void server_free(struct server *srv)
{
    if (srv == NULL) {
        return;
    }
    tls_creds_unref(srv->tls_creds);
    srv->tls_creds = NULL;
    for (unsigned i = 0; i < srv->nr_listeners; i++) {
        if (srv->listeners[i].fd >= 0) {
            close(srv->listeners[i].fd);
        }
    }
    free(srv->listeners);
    free(srv->load);
    export_table_unref(srv->table);
    srv->table = NULL;
    pthread_cond_destroy(&srv->changed);
    pthread_mutex_destroy(&srv->lock);
    free(srv);
}
