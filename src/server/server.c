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
 * requests in flight and go (shutting the stragglers' sockets down after
 * DRAIN_GRACE_S); flush every export.
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

#define DRAIN_GRACE_S 30

/* One listening socket.  Owned by the server. */
struct listener {
    struct server *srv;
    int fd;
};

struct server *server_new(const struct server_limits *limits)
{
    struct server *srv = calloc(1, sizeof *srv);
    if (srv == NULL) {
        return NULL;
    }
    srv->limits = *limits;
    if (srv->limits.max_requests == 0) {
        srv->limits.max_requests = SERVER_DEFAULT_MAX_REQUESTS;
    }
    if (srv->limits.max_inflight_bytes < SERVER_BLOCK_MAX) {
        srv->limits.max_inflight_bytes = SERVER_DEFAULT_MAX_INFLIGHT_BYTES;
    }
    pthread_mutex_init(&srv->lock, NULL);
    pthread_cond_init(&srv->changed, NULL);
    atomic_init(&srv->next_loop, 0);
    atomic_init(&srv->stopping, false);
    return srv;
}

int server_add_export(struct server *srv, const struct export_config *config,
                      struct err *err)
{
    size_t name_len = strlen(config->name);
    if (proto_check_string(config->name, name_len) < 0) {
        return err_set(err, EINVAL, "export name '%.40s...' is too long",
                       config->name);
    }
    if (server_find_export(srv, config->name, name_len) != NULL &&
        name_len > 0) {
        return err_set(err, EEXIST, "export '%s' is given twice", config->name);
    }
    struct export *grown =
        realloc(srv->exports, (srv->nr_exports + 1) * sizeof *grown);
    if (grown == NULL) {
        return err_set(err, ENOMEM, "out of memory");
    }
    srv->exports = grown;
    struct backend *be =
        backend_file_open(config->path, config->read_only, err);
    if (be == NULL) {
        return -EINVAL;
    }
    struct export *exp = &srv->exports[srv->nr_exports];
    exp->name = strdup(config->name);
    exp->description =
        config->description != NULL ? strdup(config->description) : NULL;
    exp->be = be;
    exp->read_only = config->read_only || backend_read_only(be);
    if (exp->name == NULL ||
        (config->description != NULL && exp->description == NULL)) {
        free(exp->name);
        free(exp->description);
        backend_unref(be);
        return err_set(err, ENOMEM, "out of memory");
    }
    srv->nr_exports++;
    return 0;
}

struct conn_start {
    struct server *srv;
    int fd;
    char peer[96];
};

static void conn_entry(void *opaque)
{
    struct conn_start cs = *(struct conn_start *)opaque;
    free(opaque);
    conn_run(cs.srv, cs.fd, cs.peer);
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
        struct conn_start *cs = malloc(sizeof *cs);
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

static void wait_changed(struct server *srv, time_t deadline)
{
    struct timespec ts = {.tv_sec = deadline, .tv_nsec = 0};
    pthread_cond_timedwait(&srv->changed, &srv->lock, &ts);
}

struct flush_all {
    struct server *srv;
    int result;
};

static void flush_all_entry(void *opaque)
{
    struct flush_all *f = opaque;
    for (unsigned i = 0; i < f->srv->nr_exports; i++) {
        const struct export *exp = &f->srv->exports[i];
        if (exp->read_only) {
            continue;
        }
        int r = backend_flush(exp->be);
        if (r < 0) {
            log_error("flushing export '%s': %s", exp->name, strerror(-r));
            f->result = r;
        }
    }
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
    time_t deadline = time(NULL) + DRAIN_GRACE_S;
    bool forced = false;
    while (srv->nr_conns > 0) {
        if (!forced && time(NULL) >= deadline) {
            log_warning("%u connections still busy after %d s; closing them",
                        srv->nr_conns, DRAIN_GRACE_S);
            for (struct conn *c = srv->conns; c != NULL; c = c->next) {
                chan_shutdown(c->ch, SHUT_RDWR);
            }
            forced = true;
        }
        wait_changed(srv, forced ? time(NULL) + 1 : deadline);
    }
    pthread_mutex_unlock(&srv->lock);

    struct flush_all f = {.srv = srv, .result = 0};
    coro_run_sync(srv->loops->loops[0], flush_all_entry, &f);
    return f.result;
}

int server_set_tls(struct server *srv, const struct tls_config *cfg,
                   struct err *err)
{
    struct tls_creds *creds = NULL;
    if (cfg->mode != TLS_MODE_OFF) {
        creds = tls_creds_new_server(cfg, err);
        if (creds == NULL) {
            return -(err != NULL && err->errnum != 0 ? err->errnum : EINVAL);
        }
    }
    pthread_mutex_lock(&srv->lock);
    struct tls_creds *old = srv->tls_creds;
    srv->tls_creds = creds;
    srv->tls_mode = cfg->mode;
    pthread_mutex_unlock(&srv->lock);
    tls_creds_unref(old);
    return 0;
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
    for (unsigned i = 0; i < srv->nr_exports; i++) {
        free(srv->exports[i].name);
        free(srv->exports[i].description);
        backend_unref(srv->exports[i].be);
    }
    free(srv->exports);
    pthread_cond_destroy(&srv->changed);
    pthread_mutex_destroy(&srv->lock);
    free(srv);
}
