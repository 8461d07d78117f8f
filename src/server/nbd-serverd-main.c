/* SPDX-License-Identifier: MIT */
/*
 * nbd-serverd: the command line, daemonizing, the pidfile and signals.
 *
 * Order of start-up: parse the options, open every export and bind every
 * listener (so that mistakes are reported on the terminal), daemonize
 * unless -f, write the pidfile, start the loops, start serving, and only
 * then report readiness (the parent of a daemon exits 0 at that point).
 * The main thread then waits for SIGINT or SIGTERM with sigwaitinfo; it
 * is not a loop thread, so it may block.
 */
#include "nbdsrv/chan-sock.h"
#include "nbdsrv/log.h"
#include "nbdsrv/loop.h"
#include "nbdsrv/server.h"
#include "nbdsrv/tls-config.h"

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define PROGRAM "nbd-serverd"
#define VERSION "0.1.0"
#define DEFAULT_LISTEN "127.0.0.1:10809"
#define MAX_THREADS 256

enum {
    OPT_TLS = 256,
    OPT_TLS_CERTS,
    OPT_TLS_PSK,
    OPT_TLS_VERIFY_PEER,
    OPT_TLS_PRIORITY,
    OPT_PIDFILE,
    OPT_CHECK_CONFIG,
    OPT_HANDSHAKE_TIMEOUT,
    OPT_POLL_US,
};

static const struct option long_options[] = {
    {"foreground", no_argument, NULL, 'f'},
    {"listen", required_argument, NULL, 'l'},
    {"export", required_argument, NULL, 'e'},
    {"read-only", no_argument, NULL, 'r'},
    {"threads", required_argument, NULL, 't'},
    {"config", required_argument, NULL, 'c'},
    {"tls", required_argument, NULL, OPT_TLS},
    {"tls-certs", required_argument, NULL, OPT_TLS_CERTS},
    {"tls-psk", required_argument, NULL, OPT_TLS_PSK},
    {"tls-verify-peer", no_argument, NULL, OPT_TLS_VERIFY_PEER},
    {"tls-priority", required_argument, NULL, OPT_TLS_PRIORITY},
    {"pidfile", required_argument, NULL, OPT_PIDFILE},
    {"check-config", no_argument, NULL, OPT_CHECK_CONFIG},
    {"handshake-timeout", required_argument, NULL, OPT_HANDSHAKE_TIMEOUT},
    {"poll-us", required_argument, NULL, OPT_POLL_US},
    {"verbose", no_argument, NULL, 'v'},
    {"version", no_argument, NULL, 'V'},
    {"help", no_argument, NULL, 'h'},
    {NULL, 0, NULL, 0},
};

static void usage(FILE *out)
{
    fprintf(
        out,
        "Usage: " PROGRAM " [OPTION]... [-e NAME=PATH]...\n"
        "Export raw disk images and block devices over NBD.\n"
        "\n"
        "  -f, --foreground          do not daemonize; log to stderr\n"
        "  -l, --listen ADDR         HOST:PORT, [V6ADDR]:PORT or "
        "unix:PATH; repeatable;\n"
        "                            default " DEFAULT_LISTEN "\n"
        "  -e, --export NAME=PATH    export a raw image file or block "
        "device; repeatable;\n"
        "                            the first export also answers to "
        "the empty name\n"
        "  -r, --read-only           all exports are read-only\n"
        "  -t, --threads N           event-loop threads (default: "
        "number of CPUs)\n"
        "      --handshake-timeout S drop clients that have not finished "
        "the handshake\n"
        "                            after S seconds (default 10; 0: "
        "never)\n"
        "      --poll-us N           an idle loop polls N microseconds "
        "before sleeping\n"
        "                            (default 0: sleep at once; polling "
        "pays only\n"
        "                            when the machine has spare cores)\n"
        "      --tls=off|on|require  TLS policy (default off); on: plain and "
        "TLS clients;\n"
        "                            require: every client must use "
        "STARTTLS\n"
        "      --tls-certs DIR       X.509: DIR/ca-cert.pem, "
        "server-cert.pem,\n"
        "                            server-key.pem (ca-crl.pem if "
        "present)\n"
        "      --tls-psk FILE        pre-shared keys, psktool format "
        "(identity:hexkey)\n"
        "      --tls-verify-peer     clients must present a certificate "
        "signed by the CA\n"
        "      --tls-priority STR    GnuTLS priority string (default "
        "NORMAL, the\n"
        "                            system's defaults; PSK key "
        "exchanges are added\n"
        "                            when --tls-psk is given)\n"
        "      --pidfile FILE        write the process id to FILE\n"
        "  -v, --verbose             log debugging messages\n"
        "  -V, --version             print the version and exit\n"
        "  -h, --help                print this help and exit\n"
        "\n"
        "Not yet available (refused): -c/--config, --check-config.\n");
}

NORETURN static void usage_error(const char *fmt, ...) PRINTF_FMT(1, 2);
static void usage_error(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, PROGRAM ": ");
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, "\nTry '" PROGRAM " --help' for more information.\n");
    exit(2);
}

struct options {
    bool foreground;
    bool read_only;
    unsigned threads;
    double handshake_timeout;
    double poll_us;
    const char *pidfile;
    const char **listen;
    unsigned nr_listen;
    struct export_config *exports;
    unsigned nr_exports;
    struct tls_config tls;
    bool tls_given;
};

static void *grow(void *array, unsigned count, size_t size)
{
    void *p = realloc(array, (count + 1) * size);
    if (p == NULL) {
        fprintf(stderr, PROGRAM ": out of memory\n");
        exit(1);
    }
    return p;
}

static unsigned parse_threads(const char *text)
{
    char *end;
    errno = 0;
    long n = strtol(text, &end, 10);
    if (*text == '\0' || *end != '\0' || errno != 0 || n < 1 ||
        n > MAX_THREADS) {
        usage_error("--threads: '%s' is not a number from 1 to %d", text,
                    MAX_THREADS);
    }
    return (unsigned)n;
}

static double parse_number(const char *opt, const char *text)
{
    char *end;
    errno = 0;
    double s = strtod(text, &end);
    if (*text == '\0' || *end != '\0' || errno != 0 || !(s >= 0) || s > 86400) {
        usage_error("%s: '%s' is not a number from 0 to 86400", opt, text);
    }
    return s;
}

static void parse_export(struct options *o, char *arg)
{
    char *eq = strchr(arg, '=');
    if (eq == NULL) {
        usage_error("--export: '%s' is not NAME=PATH", arg);
    }
    *eq = '\0';
    if (arg[0] == '\0') {
        usage_error("--export: the export name before '=' is empty");
    }
    if (eq[1] == '\0') {
        usage_error("--export %s=: the path after '=' is empty", arg);
    }
    o->exports = grow(o->exports, o->nr_exports, sizeof *o->exports);
    o->exports[o->nr_exports++] = (struct export_config){
        .name = arg,
        .path = eq + 1,
    };
}

static void parse_options(int argc, char **argv, struct options *o)
{
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    o->threads =
        cpus > 0 ? (unsigned)(cpus > MAX_THREADS ? MAX_THREADS : cpus) : 1;
    o->handshake_timeout = 10;
    int c;
    while ((c = getopt_long(argc, argv, "fl:e:rt:c:vVh", long_options, NULL)) !=
           -1) {
        switch (c) {
        case 'f':
            o->foreground = true;
            break;
        case 'l':
            o->listen = grow(o->listen, o->nr_listen, sizeof *o->listen);
            o->listen[o->nr_listen++] = optarg;
            break;
        case 'e':
            parse_export(o, optarg);
            break;
        case 'r':
            o->read_only = true;
            break;
        case 't':
            o->threads = parse_threads(optarg);
            break;
        case OPT_HANDSHAKE_TIMEOUT:
            o->handshake_timeout = parse_number("--handshake-timeout", optarg);
            break;
        case OPT_POLL_US:
            o->poll_us = parse_number("--poll-us", optarg);
            break;
        case OPT_PIDFILE:
            o->pidfile = optarg;
            break;
        case 'c':
        case OPT_CHECK_CONFIG:
            usage_error("configuration files are not supported yet: "
                        "give exports with -e NAME=PATH");
        case OPT_TLS:
            if (tls_mode_parse(optarg, &o->tls.mode) < 0) {
                usage_error("--tls: '%s' is not off, on or require", optarg);
            }
            o->tls_given = true;
            break;
        case OPT_TLS_CERTS:
            o->tls.certs_dir = optarg;
            break;
        case OPT_TLS_PSK:
            o->tls.psk_file = optarg;
            break;
        case OPT_TLS_VERIFY_PEER:
            o->tls.verify_peer = true;
            break;
        case OPT_TLS_PRIORITY:
            o->tls.priority = optarg;
            break;
        case 'v':
            log_set_level(LOG_LEVEL_DEBUG);
            break;
        case 'V':
            printf(PROGRAM " " VERSION "\n");
            exit(0);
        case 'h':
            usage(stdout);
            exit(0);
        default:
            usage_error("unknown option");
        }
    }
    if (optind < argc) {
        usage_error("unexpected argument '%s'", argv[optind]);
    }
    if (o->nr_exports == 0) {
        usage_error("no export given: use -e NAME=PATH");
    }
    if (o->nr_listen == 0) {
        o->listen = grow(o->listen, 0, sizeof *o->listen);
        o->listen[o->nr_listen++] = DEFAULT_LISTEN;
    }
    for (unsigned i = 0; i < o->nr_exports; i++) {
        o->exports[i].read_only = o->read_only;
    }
    if (o->tls.mode != TLS_MODE_OFF && o->tls.certs_dir == NULL &&
        o->tls.psk_file == NULL) {
        usage_error("--tls=%s needs --tls-certs DIR or --tls-psk FILE",
                    tls_mode_name(o->tls.mode));
    }
    if (o->tls.verify_peer && o->tls.certs_dir == NULL) {
        usage_error("--tls-verify-peer needs --tls-certs DIR");
    }
    if (!o->tls_given &&
        (o->tls.certs_dir != NULL || o->tls.psk_file != NULL)) {
        usage_error("--tls-certs and --tls-psk need --tls=on or --tls=require");
    }
}

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

/* Writes the pidfile through a temporary name and a rename. */
static int write_pidfile(const char *path)
{
    char tmp[4096];
    if ((size_t)snprintf(tmp, sizeof tmp, "%s.tmp.%d", path, getpid()) >=
        sizeof tmp) {
        log_error("%s: pidfile path too long", path);
        return -1;
    }
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) {
        log_error("%s: %s", tmp, strerror(errno));
        return -1;
    }
    char line[32];
    int len = snprintf(line, sizeof line, "%d\n", getpid());
    if (write(fd, line, (size_t)len) != len || close(fd) < 0 ||
        rename(tmp, path) < 0) {
        log_error("%s: %s", path, strerror(errno));
        unlink(tmp);
        return -1;
    }
    return 0;
}

int main(int argc, char **argv)
{
    log_set_program(PROGRAM);
    struct options o = {0};
    parse_options(argc, argv, &o);

    /* Every thread inherits this mask: only sigwaitinfo sees them. */
    sigset_t stop_signals;
    sigemptyset(&stop_signals);
    sigaddset(&stop_signals, SIGINT);
    sigaddset(&stop_signals, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &stop_signals, NULL);
    signal(SIGPIPE, SIG_IGN);

    struct server_limits limits = {
        .handshake_timeout_ns = (uint64_t)(o.handshake_timeout * 1e9),
        .max_requests = SERVER_DEFAULT_MAX_REQUESTS,
        .max_inflight_bytes = SERVER_DEFAULT_MAX_INFLIGHT_BYTES,
    };
    struct server *srv = server_new(&limits);
    if (srv == NULL) {
        fprintf(stderr, PROGRAM ": out of memory\n");
        return 1;
    }
    struct err err;
    err_clear(&err);
    if (server_set_tls(srv, &o.tls, &err) < 0) {
        log_error("TLS: %s", err.msg);
        return 1;
    }
    for (unsigned i = 0; i < o.nr_exports; i++) {
        if (server_add_export(srv, &o.exports[i], &err) < 0) {
            log_error("export '%s': %s", o.exports[i].name, err.msg);
            return 1;
        }
    }
    int *fds = calloc(o.nr_listen, sizeof *fds);
    if (fds == NULL) {
        log_error("out of memory");
        return 1;
    }
    for (unsigned i = 0; i < o.nr_listen; i++) {
        struct sock_addr addr;
        if (sock_addr_parse(o.listen[i], &addr, &err) < 0) {
            log_error("--listen %s", err.msg);
            return 2;
        }
        fds[i] = sock_listen(&addr, 128, &err);
        if (fds[i] < 0) {
            log_error("%s", err.msg);
            return 1;
        }
    }

    int ready_fd = -1;
    if (!o.foreground) {
        ready_fd = daemonize();
    }
    if (o.pidfile != NULL && write_pidfile(o.pidfile) < 0) {
        return 1;
    }

    struct loop_group loops;
    struct loop_config loop_config = {
        .poll_ns =
            o.poll_us > 0 ? (unsigned)(o.poll_us * 1000) : LOOP_POLL_NONE,
    };
    if (loop_group_start(&loops, o.threads, &loop_config, &err) < 0) {
        log_error("%s", err.msg);
        return 1;
    }
    if (server_start(srv, &loops, fds, o.nr_listen, &err) < 0) {
        log_error("%s", err.msg);
        return 1;
    }
    free(fds);
    for (unsigned i = 0; i < o.nr_listen; i++) {
        log_info("listening on %s", o.listen[i]);
    }
    log_info("serving %u export%s with %u threads", o.nr_exports,
             o.nr_exports == 1 ? "" : "s", o.threads);
    if (ready_fd >= 0) {
        char ok = 1;
        if (write(ready_fd, &ok, 1) != 1) {
            log_warning("could not report readiness to the parent");
        }
        close(ready_fd);
    }

    int sig;
    do {
        sig = sigwaitinfo(&stop_signals, NULL);
    } while (sig < 0 && errno == EINTR);
    log_info("%s: finishing requests in flight, then exiting", strsignal(sig));
    int r = server_stop(srv);
    loop_group_stop(&loops);
    server_free(srv);
    if (o.pidfile != NULL) {
        unlink(o.pidfile);
    }
    free(o.listen);
    free(o.exports);
    log_info("stopped");
    return r < 0 ? 1 : 0;
}
