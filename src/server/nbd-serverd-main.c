/* SPDX-License-Identifier: MIT */
/*
 * nbd-serverd: start-up, daemonizing, signals and reload.
 *
 * Order of start-up: parse the command line and build the configuration
 * (config_build: every mistake is reported before anything starts, exit
 * status 2), raise the open-file soft limit to the hard limit (each
 * client costs a descriptor), take the socket-activated listeners or bind our
 * own, lock the pidfile, open every export, daemonize unless -f, write the pid,
 * start the loops, start serving, and only then report readiness (to
 * systemd with READY=1, to the parent of a daemon through a pipe).
 *
 * The main thread then waits for signals (it is not a loop thread, so
 * it may block), and once a second gives the buffer pools' idle memory
 * back to the system (bufpool_trim).  SIGHUP rebuilds the configuration
 * with the same command line and applies it (TLS, exports, limits, log
 * level; listeners and threads need a restart) all or nothing: every
 * part is prepared first (credentials loaded, images opened) in a
 * struct server_update, and only when all of it succeeded is it put in
 * force, in one step; otherwise the running configuration stays
 * untouched.  SIGINT and SIGTERM drain and stop.
 *
 * One connection (-s, or one connected socket from socket activation,
 * systemd's Accept=yes): no listener, no pidfile, no daemonizing; the
 * main thread waits for the connection's end as well as for signals
 * (a signalfd and the server's eventfd in one poll), then stops as after
 * SIGTERM, exiting 0 only if the client ended cleanly.
 *
 * TLS: stage_tls is the one place that receives the struct tls_config,
 * at start-up and on every reload.
 */
#include "nbdsrv/bufpool.h"
#include "nbdsrv/chan-sock.h"
#include "nbdsrv/config.h"
#include "nbdsrv/control.h"
#include "nbdsrv/daemon.h"
#include "nbdsrv/log.h"
#include "nbdsrv/loop.h"
#include "nbdsrv/metrics.h"
#include "nbdsrv/server.h"
#include "nbdsrv/tls-config.h"
#include "nbdsrv/tls-priority.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <unistd.h>

#define POOL_TRIM_IDLE_NS (2ull * 1000 * 1000 * 1000)

#define PROGRAM "nbd-serverd"

/*
 * Forks; the parent waits for the child's readiness byte and exits 0 when
 * it comes, 1 when the child fails first.  Returns the write end of the
 * readiness pipe in the child.
 */
static int daemonize(void)
{
    int pipefd[2];
    if (pipe2(pipefd, O_CLOEXEC) < 0) {
        perror(PROGRAM ": pipe");
        exit(1);
    }
    pid_t pid = fork();
    if (pid < 0) {
        perror(PROGRAM ": fork");
        exit(1);
    }
    if (pid > 0) {
        close(pipefd[1]);
        char ok;
        ssize_t n;
        do {
            n = read(pipefd[0], &ok, 1);
        } while (n < 0 && errno == EINTR);
        _exit(n == 1 ? 0 : 1);
    }
    close(pipefd[0]);
    if (setsid() < 0) {
        perror(PROGRAM ": setsid");
        exit(1);
    }
    if (chdir("/") < 0) {
        perror(PROGRAM ": chdir /");
        exit(1);
    }
    int null = open("/dev/null", O_RDWR | O_CLOEXEC);
    if (null >= 0) {
        dup2(null, STDIN_FILENO);
        dup2(null, STDOUT_FILENO);
        dup2(null, STDERR_FILENO);
        if (null > STDERR_FILENO) {
            close(null);
        }
    }
    log_use_syslog();
    return pipefd[1];
}

/*
 * Prepares TLS settings in `up`: loads the credentials, which the commit
 * hands to the server for new connections (connections already open keep
 * theirs).  At start-up and on every reload.  0 or -errno with err set.
 */
static int stage_tls(struct server_update *up, const struct tls_config *tls,
                     struct err *err)
{
    int r = server_update_tls(up, tls, err);
    if (r == 0 && tls->mode != TLS_MODE_OFF) {
        log_info("TLS %s, priority %s (%s)", tls_mode_name(tls->mode),
                 tls_priority_choose(TLS_SIDE_SERVER, tls->priority),
                 tls_priority_reason(tls->priority));
    }
    return r;
}

/* Prepares the exports of `cfg` in `up` (opens the images).  0 or -errno
 * with err set. */
static int stage_exports(struct server *srv, struct server_update *up,
                         const struct config *cfg, struct err *err)
{
    struct export_config *ecs = calloc(cfg->nr_exports, sizeof *ecs);
    if (ecs == NULL) {
        return err_set(err, ENOMEM, "out of memory");
    }
    for (unsigned i = 0; i < cfg->nr_exports; i++) {
        ecs[i] = cfg->exports[i].ec;
    }
    int r = server_update_exports(srv, up, ecs, cfg->nr_exports, err);
    free(ecs);
    return r;
}

/* Puts what `up` holds in force and empties it. */
static void commit(struct server *srv, struct server_update *up)
{
    server_update_commit(srv, up);
    server_update_fini(up);
}

static bool same_listen(const struct config *a, const struct config *b)
{
    if (a->nr_listen != b->nr_listen) {
        return false;
    }
    for (unsigned i = 0; i < a->nr_listen; i++) {
        if (strcmp(a->listen[i], b->listen[i]) != 0) {
            return false;
        }
    }
    return true;
}

static bool same_string(const char *a, const char *b)
{
    return (a == NULL && b == NULL) ||
           (a != NULL && b != NULL && strcmp(a, b) == 0);
}

/*
 * Warns when max-connections is more than the open-file limit leaves room
 * for: past that point accept fails and new clients wait in the listen
 * backlog until a connection closes.  The server's own descriptors (a
 * ring and an eventfd per thread, images, listeners, logs) are
 * estimated.
 */
static void warn_nofile(const struct config *cfg)
{
    struct rlimit rl;
    if (cfg->max_connections == 0 || getrlimit(RLIMIT_NOFILE, &rl) < 0 ||
        rl.rlim_cur == RLIM_INFINITY) {
        return;
    }
    long threads =
        cfg->threads != 0 ? (long)cfg->threads : sysconf(_SC_NPROCESSORS_ONLN);
    uint64_t own = 32 + 2 * (uint64_t)(threads > 0 ? threads : 1) +
                   2 * (uint64_t)cfg->nr_exports + cfg->nr_listen;
    uint64_t room = rl.rlim_cur > own ? rl.rlim_cur - own : 0;
    if (cfg->max_connections > room) {
        log_warning("max-connections = %u, but the open file limit (%llu) "
                    "leaves room for about %llu clients: beyond that, new "
                    "clients wait until a connection closes (raise the "
                    "hard limit, LimitNOFILE= under systemd, or lower "
                    "max-connections)",
                    cfg->max_connections, (unsigned long long)rl.rlim_cur,
                    (unsigned long long)room);
    }
}

/*
 * SIGHUP: rebuilds the configuration and applies what can change while
 * running.  On any failure nothing changes: every part is staged before
 * any is committed.
 */
static int reload(struct server *srv, struct config **current,
                  const struct cmdline *cl, struct err *err_out)
{
    int status = 0;
    daemon_notify("RELOADING=1\nMONOTONIC_USEC=%llu\nSTATUS=reloading",
                  daemon_monotonic_usec());
    struct config *old = *current;
    log_info("SIGHUP: reloading the configuration%s%s",
             old->file != NULL ? " from " : "",
             old->file != NULL ? old->file : "");
    struct err err;
    err_clear(&err);
    struct server_update up = {0};
    struct config *cfg = config_build(cl, &err);
    if (cfg == NULL || stage_tls(&up, &cfg->tls, &err) < 0 ||
        stage_exports(srv, &up, cfg, &err) < 0) {
        log_error("reload failed, the running configuration stays: %s",
                  err.msg);
        status = err_set(err_out, err.errnum != 0 ? err.errnum : EINVAL,
                         "reload failed, the running configuration stays: %s",
                         err.msg);
        server_update_fini(&up);
        config_unref(cfg);
        goto out;
    }
    if (!same_listen(old, cfg)) {
        log_warning("reload: listen addresses changed; they take effect "
                    "at the next restart");
    }
    if (old->threads != cfg->threads) {
        log_warning("reload: threads changed; it takes effect at the next "
                    "restart");
    }
    if (!same_string(old->metrics_listen, cfg->metrics_listen)) {
        log_warning("reload: metrics-listen changed; it takes effect at the "
                    "next restart");
    }
    if (!same_string(old->control, cfg->control) ||
        !same_string(old->control_group, cfg->control_group)) {
        log_warning("reload: control or control-group changed; it takes "
                    "effect at the next restart");
    }
    if (!same_string(old->pidfile, cfg->pidfile)) {
        log_warning("reload: pidfile changed; it takes effect at the next "
                    "restart");
    }
    struct server_limits limits;
    config_limits(cfg, &limits);
    server_update_limits(&up, &limits);
    commit(srv, &up);
    if (cfg->max_connections != old->max_connections) {
        warn_nofile(cfg);
    }
    log_set_level(cfg->log_level);
    *current = cfg;
    log_info("reloaded: %u export%s", cfg->nr_exports,
             cfg->nr_exports == 1 ? "" : "s");
    /* Keep pidfile, listen and threads of the running process: they
     * are only read at start-up, from the first configuration. */
    config_unref(old);
out:
    daemon_notify("READY=1\nSTATUS=serving %u exports", (*current)->nr_exports);
    return status;
}

/* What the control socket's reload needs (control_env.opaque). */
struct reload_ctx {
    struct server *srv;
    struct config **cfg;
    const struct cmdline *cl;
    struct control *ctl;
};

/* A reload from SIGHUP or the control socket. */
static int do_reload(void *opaque, struct err *err)
{
    struct reload_ctx *rc = opaque;
    int r = reload(rc->srv, rc->cfg, rc->cl, err);
    if (r == 0) {
        control_reloaded(rc->ctl);
    }
    return r;
}

/*
 * Binds every listen address, or takes the socket-activated fds.  One
 * connected socket from systemd (Accept=yes) is no listener: *connection
 * is then that fd and nothing else is opened; otherwise it is -1.
 */
static int open_listeners(const struct config *cfg, int **fds_out,
                          unsigned *nr_out, bool *activated, int *connection,
                          struct err *err)
{
    int first = -1;
    bool connected = false;
    *connection = -1;
    int n = daemon_listen_fds(&first, &connected, err);
    if (n < 0) {
        return n;
    }
    *activated = n > 0;
    if (connected) {
        *connection = first;
        return config_check_one_export(
            cfg, "socket activation with a connection (Accept=yes)", err);
    }
    unsigned nr = n > 0 ? (unsigned)n : cfg->nr_listen;
    int *fds = calloc(nr, sizeof *fds);
    if (fds == NULL) {
        return err_set(err, ENOMEM, "out of memory");
    }
    for (unsigned i = 0; i < nr; i++) {
        if (n > 0) {
            fds[i] = first + (int)i;
            struct sockaddr_storage ss;
            socklen_t len = sizeof ss;
            char name[128] = "?";
            if (getsockname(fds[i], (struct sockaddr *)&ss, &len) == 0) {
                sock_addr_format((struct sockaddr *)&ss, len, name,
                                 sizeof name);
            }
            log_info("listening on %s (socket activation, fd %d)", name,
                     fds[i]);
            continue;
        }
        struct sock_addr addr;
        int r = sock_addr_parse(cfg->listen[i], &addr, err);
        if (r >= 0) {
            r = sock_listen(&addr, 128, err);
        }
        if (r < 0) {
            for (unsigned j = 0; j < i; j++) {
                close(fds[j]);
            }
            free(fds);
            return r;
        }
        fds[i] = r;
        log_info("listening on %s", cfg->listen[i]);
    }
    if (n > 0 && cfg->nr_listen > 0) {
        log_debug("socket activation: the listen addresses of the "
                  "configuration are not used");
    }
    *fds_out = fds;
    *nr_out = nr;
    return 0;
}

/* Binds metrics-listen (the fd), or returns -1 when it is not set. */
static int open_metrics_listener(const struct config *cfg, struct err *err)
{
    if (cfg->metrics_listen == NULL) {
        return -1;
    }
    struct sock_addr addr;
    struct err e;
    err_clear(&e);
    int r = sock_addr_parse(cfg->metrics_listen, &addr, &e);
    if (r >= 0) {
        r = sock_listen(&addr, 16, &e);
    }
    if (r < 0) {
        return err_set(err, -r, "metrics-listen %s: %s", cfg->metrics_listen,
                       e.msg);
    }
    log_info("metrics at http://%s/metrics", cfg->metrics_listen);
    return r;
}

/*
 * Removes the socket files of the unix listeners we bound (NULL: none,
 * e.g. under socket activation, where they belong to systemd), so that
 * the next start can bind them again.
 */
static void unlink_unix_sockets(const struct config *cfg)
{
    for (unsigned i = 0; cfg != NULL && i < cfg->nr_listen; i++) {
        if (strncmp(cfg->listen[i], "unix:", 5) == 0) {
            unlink(cfg->listen[i] + 5);
        }
    }
}

/* Closes the listening fds not handed to the server yet. */
static void close_fds(int *fds, unsigned nr)
{
    for (unsigned i = 0; i < nr; i++) {
        close(fds[i]);
    }
    free(fds);
}

/*
 * Waits for a signal, for the end of the one connection (done_fd, -1
 * when listening), for the control socket (served here) or for a second
 * to pass.  Returns the signal, 0 when
 * the second passed, or -1 when the connection is over.
 */
static int wait_event(int sig_fd, int done_fd, struct control *ctl)
{
    struct pollfd pfd[2 + CONTROL_MAX_POLLFDS] = {
        {.fd = sig_fd, .events = POLLIN},
        {.fd = done_fd, .events = POLLIN},
    };
    unsigned nfds = 2;
    control_add_pollfds(ctl, pfd, &nfds, 2 + CONTROL_MAX_POLLFDS);
    int n = poll(pfd, nfds, 1000);
    if (n <= 0) {
        return 0; /* the period passed (or EINTR): housekeeping */
    }
    /* The control socket first: a reload it asks for runs here, on the
     * main thread, like SIGHUP's. */
    control_process(ctl, pfd + 2, nfds - 2);
    if (pfd[0].revents & POLLIN) {
        struct signalfd_siginfo si;
        if (read(sig_fd, &si, sizeof si) == (ssize_t)sizeof si) {
            return (int)si.ssi_signo;
        }
    }
    if (pfd[1].revents & POLLIN) {
        return -1;
    }
    return 0;
}

/*
 * Everything after the configuration is built: start, serve until
 * SIGTERM/SIGINT (or, for one connection, until it ends), stop.
 * Returns the exit status.  Takes the caller's reference to cfg (a
 * reload replaces the snapshot).  `connection` is the connection of
 * --inetd (taken), or -1.
 */
static int serve(const struct cmdline *cl, struct config *cfg,
                 const sigset_t *signals, int connection)
{
    struct err err;
    err_clear(&err);
    int status = 1;
    int *fds = NULL;
    unsigned nr_fds = 0;
    int pid_fd = -1;
    char *pidfile = NULL;
    struct loop_group loops;
    bool loops_started = false;
    int metrics_fd = -1;
    struct metrics_http *metrics = NULL;
    int done_fd = -1;
    struct control *ctl = NULL;
    struct reload_ctx rc = {.cfg = &cfg, .cl = cl};
    int sig_fd = signalfd(-1, signals, SFD_CLOEXEC);
    if (sig_fd < 0) {
        log_error("signalfd: %s", strerror(errno));
        if (connection >= 0) {
            close(connection);
        }
        config_unref(cfg);
        return 1;
    }

    /* Each client costs a descriptor: take what the hard limit allows. */
    uint64_t nofile;
    if (daemon_raise_nofile(&nofile, &err) < 0) {
        log_warning("%s", err.msg);
        err_clear(&err);
    } else {
        log_debug("open file limit: %llu", (unsigned long long)nofile);
    }
    warn_nofile(cfg);

    struct server_limits limits;
    config_limits(cfg, &limits);
    struct server *srv = server_new(&limits);
    if (srv == NULL) {
        log_error("out of memory");
        goto out;
    }
    /* At start-up each part is committed as soon as it is ready: a
     * failure ends the daemon anyway, with the status of its part. */
    struct server_update up = {0};
    if (stage_tls(&up, &cfg->tls, &err) < 0) {
        log_error("%s", err.msg);
        status = CONFIG_EXIT_USAGE;
        goto out;
    }
    commit(srv, &up);
    bool activated = false;
    if (connection < 0 &&
        open_listeners(cfg, &fds, &nr_fds, &activated, &connection, &err) < 0) {
        log_error("%s", err.msg);
        status = connection >= 0 ? CONFIG_EXIT_USAGE : 1;
        goto out;
    }
    bool single = connection >= 0;
    if (single && (cfg->pidfile != NULL || cfg->nr_listen > 0 ||
                   cfg->metrics_listen != NULL)) {
        log_debug("one connection: the listen addresses, metrics-listen and "
                  "the pidfile of the configuration are not used");
    }
    /* metrics-listen, like listen, is bound before we fork; its thread
     * starts after (threads do not survive a fork). */
    if (cfg->metrics_listen != NULL && !single) {
        metrics_fd = open_metrics_listener(cfg, &err);
        if (metrics_fd < 0) {
            log_error("%s", err.msg);
            goto out;
        }
        server_enable_metrics(srv);
    }
    /* pidfile, listen and threads stay those of the first configuration. */
    if (cfg->pidfile != NULL && !single) {
        pidfile = strdup(cfg->pidfile);
        pid_fd = pidfile != NULL ? daemon_pidfile_open(pidfile, &err)
                                 : err_set(&err, ENOMEM, "out of memory");
        if (pid_fd < 0) {
            log_error("%s", err.msg);
            goto out;
        }
    }
    if (stage_exports(srv, &up, cfg, &err) < 0) {
        /* An export the configuration names cannot be served (a missing
         * image, an unreachable Ceph cluster, a locked bitmap file): as
         * a configuration that --check-config would refuse. */
        log_error("%s", err.msg);
        status = CONFIG_EXIT_USAGE;
        goto out;
    }
    commit(srv, &up);
    rc.srv = srv;
    if (cfg->control != NULL) {
        struct control_env env = {
            .srv = srv, .cfg = &cfg, .reload = do_reload, .opaque = &rc};
        ctl = control_open(cfg->control, cfg->control_group != NULL,
                           cfg->control_gid, &env, &err);
        if (ctl == NULL) {
            log_error("%s", err.msg);
            status = CONFIG_EXIT_USAGE;
            goto out;
        }
        rc.ctl = ctl;
    }

    int ready_fd = -1;
    if (!cl->foreground && !single) {
        ready_fd = daemonize();
    }
    if (pid_fd >= 0 && daemon_pidfile_write(pid_fd, &err) < 0) {
        log_error("%s", err.msg);
        goto out;
    }

    unsigned threads = cfg->threads;
    if (threads == 0) {
        long cpus = sysconf(_SC_NPROCESSORS_ONLN);
        threads = cpus < 1                    ? 1
                  : cpus > CONFIG_MAX_THREADS ? CONFIG_MAX_THREADS
                                              : (unsigned)cpus;
    }
    struct loop_config loop_config = {
        .poll_ns =
            cfg->poll_us > 0 ? (unsigned)(cfg->poll_us * 1000) : LOOP_POLL_NONE,
    };
    if (loop_group_start(&loops, threads, &loop_config, &err) < 0) {
        log_error("%s", err.msg);
        goto out;
    }
    loops_started = true;
    int r = single
                ? server_start_single(srv, &loops, connection, &done_fd, &err)
                : server_start(srv, &loops, fds, nr_fds, &err);
    /* The server took the fds, even on failure. */
    free(fds);
    fds = NULL;
    nr_fds = 0;
    connection = -1;
    if (r < 0) {
        log_error("%s", err.msg);
        goto out;
    }
    if (metrics_fd >= 0) {
        metrics = metrics_http_start(srv, metrics_fd, &err);
        metrics_fd = -1; /* taken */
        if (metrics == NULL) {
            log_error("%s", err.msg);
            server_stop(srv);
            goto out;
        }
    }
    log_info("serving %u export%s with %u threads", cfg->nr_exports,
             cfg->nr_exports == 1 ? "" : "s", threads);
    daemon_notify("READY=1\nMAINPID=%d\nSTATUS=serving %u exports",
                  (int)getpid(), cfg->nr_exports);
    if (ready_fd >= 0) {
        char ok = 1;
        if (write(ready_fd, &ok, 1) != 1) {
            log_warning("could not report readiness to the parent");
        }
        close(ready_fd);
    }

    /* The listeners are those of the first configuration. */
    struct config *cfg_first = activated || single ? NULL : config_ref(cfg);
    /* Buffers unused for POOL_TRIM_IDLE_NS are freed within a period. */
    int sig;
    for (;;) {
        sig = wait_event(sig_fd, done_fd, ctl);
        if (sig == 0) {
            bufpool_trim(POOL_TRIM_IDLE_NS);
            server_tick(srv);
            continue;
        }
        if (sig != SIGHUP) {
            break;
        }
        do_reload(&rc, NULL);
    }
    control_close(ctl);
    ctl = NULL;
    daemon_notify("STOPPING=1\nSTATUS=draining");
    bool clean = true;
    if (sig < 0) {
        clean = server_single_clean(srv);
        log_debug("the connection is over%s, exiting",
                  clean ? "" : " (not cleanly)");
    } else {
        log_info("%s: finishing requests in flight, then exiting",
                 strsignal(sig));
    }
    status = server_stop(srv) < 0 || !clean ? 1 : 0;
    unlink_unix_sockets(cfg_first);
    config_unref(cfg_first);
    log_info("stopped");

out:
    /* The scraper reads the loops and the server: it stops first. */
    metrics_http_stop(metrics);
    if (metrics_fd >= 0) {
        close(metrics_fd);
    }
    control_close(ctl);
    if (loops_started) {
        loop_group_stop(&loops);
    }
    server_free(srv);
    close_fds(fds, nr_fds);
    if (pid_fd >= 0) {
        daemon_pidfile_remove(pidfile, pid_fd);
    }
    free(pidfile);
    if (connection >= 0) {
        close(connection);
    }
    close(sig_fd);
    config_unref(cfg);
    return status;
}

int main(int argc, char **argv)
{
    log_set_program(PROGRAM);
    struct cmdline cl;
    struct err err;
    err_clear(&err);
    int r = cmdline_parse(&cl, argc, argv, stdout, &err);
    if (r == CMDLINE_EXIT) {
        cmdline_fini(&cl);
        return 0;
    }
    if (r < 0) {
        fprintf(stderr,
                PROGRAM ": %s\nTry '" PROGRAM " --help' for more "
                        "information.\n",
                err.msg);
        cmdline_fini(&cl);
        return CONFIG_EXIT_USAGE;
    }
    struct config *cfg = config_build(&cl, &err);
    if (cfg == NULL) {
        fprintf(stderr, PROGRAM ": %s\n", err.msg);
        cmdline_fini(&cl);
        return CONFIG_EXIT_USAGE;
    }
    if (cl.check_config) {
        config_print(cfg, stdout);
        config_unref(cfg);
        cmdline_fini(&cl);
        return 0;
    }
    /* --inetd: fds 0 and 1 are the connection, and fd 2 may be too. */
    struct daemon_stdio stdio = {.fd = -1, .relay_fd = -1};
    if (cl.inetd) {
        if (daemon_stdio_open(&stdio, &err) < 0) {
            fprintf(stderr, PROGRAM ": %s\n", err.msg);
            config_unref(cfg);
            cmdline_fini(&cl);
            return 1;
        }
        if (stdio.stderr_was_socket) {
            log_use_syslog();
        }
    }
    if ((cl.foreground || cl.inetd) && !stdio.stderr_was_socket &&
        daemon_stderr_is_journal()) {
        log_use_prefixes();
    }
    log_set_level(cfg->log_level);

    /* Every thread inherits this mask: only sigtimedwait sees them. */
    sigset_t signals;
    sigemptyset(&signals);
    sigaddset(&signals, SIGINT);
    sigaddset(&signals, SIGTERM);
    sigaddset(&signals, SIGHUP);
    pthread_sigmask(SIG_BLOCK, &signals, NULL);
    signal(SIGPIPE, SIG_IGN);

    int connection = stdio.fd;
    stdio.fd = -1; /* serve takes it */
    int status = serve(&cl, cfg, &signals, connection);
    daemon_stdio_close(&stdio);
    cmdline_fini(&cl);
    return status;
}
