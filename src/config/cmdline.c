/* SPDX-License-Identifier: MIT */
/*
 * The command line (man/nbd-serverd.8; the tests rely on it), parsed
 * into a struct cmdline that config_build lays over the configuration
 * file.
 * Values are checked here as far as they can be without the file;
 * exit-worthy mistakes come back as -EINVAL with the message in err.
 */
#include "config-int.h"
#include "nbdsrv/backends.h"
#include "nbdsrv/bufpool.h"
#include "nbdsrv/config.h"

#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define PROGRAM "nbd-serverd"
#define VERSION "0.2.0"

enum {
    OPT_TLS = 256,
    OPT_TLS_CERTS,
    OPT_TLS_PSK,
    OPT_TLS_VERIFY_PEER,
    OPT_TLS_PRIORITY,
    OPT_PIDFILE,
    OPT_CHECK_CONFIG,
    OPT_HANDSHAKE_TIMEOUT,
    OPT_SHUTDOWN_TIMEOUT,
    OPT_REQUEST_TIMEOUT,
    OPT_MAX_CONNECTIONS,
    OPT_MAX_PAYLOAD,
    OPT_MAX_BUFFER_MEMORY,
    OPT_MAX_CONN_BUFFER,
    OPT_MAX_CONNECTIONS_PER_CLIENT,
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
    {"shutdown-timeout", required_argument, NULL, OPT_SHUTDOWN_TIMEOUT},
    {"request-timeout", required_argument, NULL, OPT_REQUEST_TIMEOUT},
    {"max-connections", required_argument, NULL, OPT_MAX_CONNECTIONS},
    {"max-connections-per-client", required_argument, NULL,
     OPT_MAX_CONNECTIONS_PER_CLIENT},
    {"max-payload", required_argument, NULL, OPT_MAX_PAYLOAD},
    {"max-buffer-memory", required_argument, NULL, OPT_MAX_BUFFER_MEMORY},
    {"max-buffer-memory-per-connection", required_argument, NULL,
     OPT_MAX_CONN_BUFFER},
    {"poll-us", required_argument, NULL, OPT_POLL_US},
    {"verbose", no_argument, NULL, 'v'},
    {"version", no_argument, NULL, 'V'},
    {"help", no_argument, NULL, 'h'},
    {NULL, 0, NULL, 0},
};

void cmdline_usage(FILE *out)
{
    fprintf(
        out,
        "Usage: " PROGRAM " [OPTION]... [-e NAME=PATH]...\n"
        "Export raw disk images and block devices over NBD.\n"
        "\n"
        "  -f, --foreground          do not daemonize; log to stderr\n"
        "  -l, --listen ADDR         HOST:PORT, [V6ADDR]:PORT or unix:PATH; "
        "repeatable;\n"
        "                            default " CONFIG_DEFAULT_LISTEN "\n"
        "  -e, --export NAME=PATH    export a raw image file or block device; "
        "repeatable;\n"
        "                            the first export also answers to the "
        "empty name\n"
        "  -e, --export NAME=memory:SIZE\n"
        "                            export SIZE bytes of memory (a sparse "
        "scratch disk)\n"
        "  -e, --export NAME=PATH,overlay=FILE\n"
        "                            PATH (or memory:SIZE) is a base that "
        "is never written;\n"
        "                            writes go to the overlay file FILE "
        "(made if missing)\n"
        "  -r, --read-only           all exports given with -e are read-only\n"
        "  -t, --threads N           event-loop threads (default: number of "
        "CPUs)\n"
        "  -c, --config FILE         read the configuration file FILE\n"
        "      --tls=off|on|require  TLS policy (default off; require refuses "
        "plain text)\n"
        "      --tls-certs DIR       ca-cert.pem, server-cert.pem, "
        "server-key.pem\n"
        "      --tls-psk FILE        PSK file in psktool format "
        "(name:hexkey)\n"
        "      --tls-verify-peer     require client certificates signed by "
        "the CA\n"
        "      --tls-priority STR    GnuTLS priority string\n"
        "      --pidfile FILE        write the process id to FILE (locked)\n"
        "      --check-config        parse options and configuration, print "
        "the\n"
        "                            effective configuration, exit 0 or 2\n"
        "      --handshake-timeout S drop clients that have not finished the "
        "handshake\n"
        "                            after S seconds (default 10; 0: never)\n"
        "      --shutdown-timeout S  on SIGTERM, wait at most S seconds for "
        "clients\n"
        "                            (default 30)\n"
        "      --request-timeout S   drop clients whose request header or "
        "payload,\n"
        "                            once begun, is not complete within S "
        "seconds,\n"
        "                            or whose reply stalls as long (default "
        "30; 0: never)\n"
        "      --max-connections N   refuse clients beyond N at once (default "
        "1024;\n"
        "                            0: unlimited)\n"
        "      --max-connections-per-client N\n"
        "                            refuse clients beyond N at once from one "
        "address;\n"
        "                            unix clients are one address (default 0: "
        "unlimited)\n"
        "      --max-payload SIZE    largest READ/WRITE of clients that did "
        "not ask for\n"
        "                            block sizes (default 64M; 32M is "
        "advertised)\n"
        "      --max-buffer-memory SIZE\n"
        "                            request buffers over all connections "
        "(default 1G)\n"
        "      --max-buffer-memory-per-connection SIZE\n"
        "                            request buffers of one connection "
        "(default 64M)\n"
        "      --poll-us N           an idle loop polls N microseconds before "
        "sleeping\n"
        "                            (default 0)\n"
        "  -v, --verbose             log debugging messages\n"
        "  -V, --version             print the version and exit\n"
        "  -h, --help                print this help and exit\n"
        "\n"
        "Signals: SIGHUP reloads the configuration file, SIGTERM and SIGINT "
        "drain\n"
        "and stop.  See nbd-serverd(8) and nbd-serverd.conf(5).\n");
}

static int grow(void *array_ptr, unsigned count, size_t size)
{
    void **array = array_ptr;
    void *p = realloc(*array, (count + 1) * size);
    if (p == NULL) {
        return -ENOMEM;
    }
    *array = p;
    return 0;
}

static int parse_seconds(const char *opt, const char *text, double *out,
                         struct err *err)
{
    char *end;
    errno = 0;
    double s = strtod(text, &end);
    if (*text == '\0' || *end != '\0' || errno != 0 || !(s >= 0) || s > 86400) {
        return err_set(err, EINVAL, "%s: '%s' is not a number from 0 to 86400",
                       opt, text);
    }
    *out = s;
    return 0;
}

static int parse_unsigned(const char *opt, const char *text, unsigned min,
                          unsigned max, unsigned *out, struct err *err)
{
    char *end;
    errno = 0;
    unsigned long n = strtoul(text, &end, 10);
    if (*text < '0' || *text > '9' || *end != '\0' || errno != 0 || n < min ||
        n > max) {
        return err_set(err, EINVAL, "%s: '%s' is not a number from %u to %u",
                       opt, text, min, max);
    }
    *out = (unsigned)n;
    return 0;
}

static int parse_size(const char *opt, const char *text, uint64_t min,
                      uint64_t max, uint64_t *out, struct err *err)
{
    if (config_parse_size(text, min, max, out) < 0) {
        char lo[32], hi[32];
        config_format_size(min, lo, sizeof lo);
        config_format_size(max, hi, sizeof hi);
        return err_set(err, EINVAL,
                       "%s: '%s' is not a size from %s to %s (bytes, or "
                       "with a K, M, G or T suffix)",
                       opt, text, lo, hi);
    }
    return 0;
}

static int parse_export(struct cmdline *cl, char *arg, struct err *err)
{
    char *eq = strchr(arg, '=');
    if (eq == NULL) {
        return err_set(err, EINVAL, "--export: '%s' is not NAME=PATH", arg);
    }
    *eq = '\0';
    if (arg[0] == '\0') {
        return err_set(err, EINVAL,
                       "--export: the export name before '=' is empty");
    }
    if (eq[1] == '\0') {
        return err_set(err, EINVAL, "--export %s=: the path after '=' is empty",
                       arg);
    }
    struct cmdline_export x = {.name = arg, .path = eq + 1};
    char *ovl = strstr(eq + 1, CONFIG_OVERLAY_SUFFIX);
    if (ovl != NULL) {
        *ovl = '\0';
        x.overlay = ovl + strlen(CONFIG_OVERLAY_SUFFIX);
        if (x.overlay[0] == '\0' || x.path[0] == '\0') {
            return err_set(err, EINVAL,
                           "--export %s=%s" CONFIG_OVERLAY_SUFFIX
                           "%s: expected NAME=PATH" CONFIG_OVERLAY_SUFFIX
                           "FILE",
                           arg, x.path, x.overlay);
        }
    }
    if (strncmp(x.path, CONFIG_MEMORY_PREFIX, strlen(CONFIG_MEMORY_PREFIX)) ==
        0) {
        const char *size = x.path + strlen(CONFIG_MEMORY_PREFIX);
        if (config_parse_size(size, 0, BACKEND_MEMORY_MAX_SIZE,
                              &x.memory_size) < 0) {
            return err_set(err, EINVAL,
                           "--export %s=memory:%s: expected a size up to 16T "
                           "(a number with an optional K, M, G or T suffix)",
                           arg, size);
        }
        x.memory = true;
        x.path = NULL;
    }
    if (grow(&cl->exports, cl->nr_exports, sizeof *cl->exports) < 0) {
        return err_set(err, ENOMEM, "out of memory");
    }
    cl->exports[cl->nr_exports++] = x;
    return 0;
}

int cmdline_parse(struct cmdline *cl, int argc, char **argv, FILE *out,
                  struct err *err)
{
    memset(cl, 0, sizeof *cl);
    cl->cwd = getcwd(NULL, 0);
    if (cl->cwd == NULL) {
        return err_set_errno(err, errno, "getcwd");
    }
    optind = 0; /* a full re-initialisation (GNU), for the unit tests */
    opterr = 0;
    int c;
    while ((c = getopt_long(argc, argv, ":fl:e:rt:c:vVh", long_options,
                            NULL)) != -1) {
        int r = 0;
        switch (c) {
        case 'f':
            cl->foreground = true;
            break;
        case 'l':
            if (grow(&cl->listen, cl->nr_listen, sizeof *cl->listen) < 0) {
                return err_set(err, ENOMEM, "out of memory");
            }
            cl->listen[cl->nr_listen++] = optarg;
            break;
        case 'e':
            r = parse_export(cl, optarg, err);
            break;
        case 'r':
            cl->read_only = true;
            break;
        case 't':
            r = parse_unsigned("--threads", optarg, 1, CONFIG_MAX_THREADS,
                               &cl->threads, err);
            cl->threads_set = true;
            break;
        case 'c':
            cl->config_file = optarg;
            break;
        case OPT_TLS:
            cl->tls_mode = optarg;
            if (strcmp(optarg, "off") != 0 && strcmp(optarg, "on") != 0 &&
                strcmp(optarg, "require") != 0) {
                r = err_set(err, EINVAL,
                            "--tls=%s: expected off, on or require", optarg);
            }
            break;
        case OPT_TLS_CERTS:
            cl->tls_certs = optarg;
            break;
        case OPT_TLS_PSK:
            cl->tls_psk = optarg;
            break;
        case OPT_TLS_VERIFY_PEER:
            cl->tls_verify_peer = true;
            break;
        case OPT_TLS_PRIORITY:
            cl->tls_priority = optarg;
            break;
        case OPT_PIDFILE:
            cl->pidfile = optarg;
            break;
        case OPT_CHECK_CONFIG:
            cl->check_config = true;
            break;
        case OPT_HANDSHAKE_TIMEOUT:
            r = parse_seconds("--handshake-timeout", optarg,
                              &cl->handshake_timeout, err);
            cl->handshake_timeout_set = true;
            break;
        case OPT_SHUTDOWN_TIMEOUT:
            r = parse_seconds("--shutdown-timeout", optarg,
                              &cl->shutdown_timeout, err);
            cl->shutdown_timeout_set = true;
            break;
        case OPT_REQUEST_TIMEOUT:
            r = parse_seconds("--request-timeout", optarg, &cl->request_timeout,
                              err);
            cl->request_timeout_set = true;
            break;
        case OPT_MAX_CONNECTIONS:
            r = parse_unsigned("--max-connections", optarg, 0,
                               CONFIG_MAX_CONNECTIONS, &cl->max_connections,
                               err);
            cl->max_connections_set = true;
            break;
        case OPT_MAX_PAYLOAD:
            r = parse_size("--max-payload", optarg, SERVER_MIN_MAX_PAYLOAD,
                           BUFPOOL_MAX_SIZE, &cl->max_payload, err);
            cl->max_payload_set = true;
            break;
        case OPT_MAX_BUFFER_MEMORY:
            r = parse_size("--max-buffer-memory", optarg,
                           CONFIG_MIN_BUFFER_MEMORY, CONFIG_MAX_BUFFER_MEMORY,
                           &cl->max_buffer_memory, err);
            cl->max_buffer_memory_set = true;
            break;
        case OPT_MAX_CONN_BUFFER:
            r = parse_size("--max-buffer-memory-per-connection", optarg,
                           CONFIG_MIN_BUFFER_MEMORY, CONFIG_MAX_BUFFER_MEMORY,
                           &cl->max_conn_buffer, err);
            cl->max_conn_buffer_set = true;
            break;
        case OPT_MAX_CONNECTIONS_PER_CLIENT:
            r = parse_unsigned("--max-connections-per-client", optarg, 0,
                               CONFIG_MAX_CONNECTIONS,
                               &cl->max_connections_per_client, err);
            cl->max_connections_per_client_set = true;
            break;
        case OPT_POLL_US:
            r = parse_seconds("--poll-us", optarg, &cl->poll_us, err);
            break;
        case 'v':
            cl->verbose = true;
            break;
        case 'V':
            fprintf(out, PROGRAM " " VERSION "\n");
            return CMDLINE_EXIT;
        case 'h':
            cmdline_usage(out);
            return CMDLINE_EXIT;
        case ':':
            return err_set(err, EINVAL, "option '%s' needs an argument",
                           argv[optind - 1]);
        default:
            return err_set(err, EINVAL, "unknown option '%s'",
                           argv[optind - 1]);
        }
        if (r < 0) {
            return r;
        }
    }
    if (optind < argc) {
        return err_set(err, EINVAL, "unexpected argument '%s'", argv[optind]);
    }
    return CMDLINE_RUN;
}

void cmdline_fini(struct cmdline *cl)
{
    free(cl->cwd);
    free(cl->listen);
    free(cl->exports);
    memset(cl, 0, sizeof *cl);
}
