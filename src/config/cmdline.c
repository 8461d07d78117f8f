/* SPDX-License-Identifier: MIT */
/*
 * The command line (man/nbd-serverd.8; the tests rely on it), parsed
 * into a struct cmdline that config_build lays over the configuration
 * file.
 *
 * The options that set a configuration key come from config-keys.def
 * (its option column) and are kept as "set key to value" for
 * config_set_key; only the rest (-c, -e, -f, -r, -s, --check-config,
 * --poll-us, -V, -h) is parsed here.  Numbers, booleans and enums are
 * checked here already (config_check_key), strings and paths when
 * config_build applies them.  Exit-worthy mistakes come back as -EINVAL
 * with the message in err.
 */
#include "config-int.h"
#include "nbdsrv/backends.h"
#include "nbdsrv/config.h"
#include "nbdsrv/version.h"

#include <errno.h>
#include <getopt.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define PROGRAM "nbd-serverd"

enum {
    OPT_CHECK_CONFIG = 256,
    OPT_POLL_US,
    OPT_KEY, /* OPT_KEY + i: config_keys[i]'s option */
};

/* The options that set no configuration key. */
static const struct option other_options[] = {
    {"foreground", no_argument, NULL, 'f'},
    {"export", required_argument, NULL, 'e'},
    {"read-only", no_argument, NULL, 'r'},
    {"inetd", no_argument, NULL, 's'},
    {"config", required_argument, NULL, 'c'},
    {"check-config", no_argument, NULL, OPT_CHECK_CONFIG},
    {"poll-us", required_argument, NULL, OPT_POLL_US},
    {"version", no_argument, NULL, 'V'},
    {"help", no_argument, NULL, 'h'},
};
#define OTHER_SHORT_OPTIONS ":fe:rsc:Vh"

/* The key whose option getopt returned as `c`, or NULL. */
static const struct config_key *option_key(int c)
{
    if (c >= OPT_KEY && c < OPT_KEY + (int)config_nr_keys) {
        return &config_keys[c - OPT_KEY];
    }
    for (unsigned i = 0; i < config_nr_keys && c > 0; i++) {
        if (config_keys[i].option != NULL && config_keys[i].short_option == c) {
            return &config_keys[i];
        }
    }
    return NULL;
}

/*
 * Fills `opts` (other_options plus one option per key that has one, then
 * the terminator) and `shorts` (getopt's short options).
 */
static void make_options(struct option *opts, char *shorts)
{
    unsigned n = 0;
    for (; n < ARRAY_SIZE(other_options); n++) {
        opts[n] = other_options[n];
    }
    char *s = shorts + sprintf(shorts, "%s", OTHER_SHORT_OPTIONS);
    for (unsigned i = 0; i < config_nr_keys; i++) {
        const struct config_key *k = &config_keys[i];
        if (k->option == NULL) {
            continue;
        }
        int arg = k->flag_value != NULL ? no_argument : required_argument;
        opts[n++] = (struct option){k->option, arg, NULL, OPT_KEY + (int)i};
        if (k->short_option != 0) {
            *s++ = (char)k->short_option;
            if (arg == required_argument) {
                *s++ = ':';
            }
        }
    }
    *s = '\0';
    opts[n] = (struct option){NULL, 0, NULL, 0};
}

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
        "  -s, --inetd               serve the one connection on standard "
        "input (a\n"
        "                            socket, or a pipe pair with standard "
        "output),\n"
        "                            with exactly one export; exit when it "
        "ends\n"
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
        "      --metrics-listen HOST:PORT\n"
        "                            serve Prometheus metrics at "
        "/metrics there\n"
        "      --control PATH        a control socket for nbd-serverd-ctl\n"
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

/*
 * Records "set k to value" for an option, checking what can be checked
 * without the file.  A later value of a key that is not a list replaces
 * the earlier one, which is then never checked or applied.
 */
static int add_setting(struct cmdline *cl, const struct config_key *k,
                       const char *value, struct err *err)
{
    char option[64];
    snprintf(option, sizeof option, "--%s", k->option);
    struct config_origin origin = {.option = option, .base = cl->cwd};
    int r = config_check_key(k, value, &origin, err);
    if (r < 0) {
        return r;
    }
    if (k->type != CONFIG_LIST) {
        unsigned kept = 0;
        for (unsigned i = 0; i < cl->nr_settings; i++) {
            if (cl->settings[i].key != k) {
                cl->settings[kept++] = cl->settings[i];
            }
        }
        cl->nr_settings = kept;
    }
    if (grow(&cl->settings, cl->nr_settings, sizeof *cl->settings) < 0) {
        return err_set(err, ENOMEM, "out of memory");
    }
    cl->settings[cl->nr_settings++] = (struct cmdline_setting){k, value};
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
                           "--export %s=memory:%s: " CONFIG_MEMORY_EXPECTED,
                           arg, size);
        }
        x.memory = true;
        x.path = NULL;
    } else if (strncmp(x.path, CONFIG_RBD_PREFIX, strlen(CONFIG_RBD_PREFIX)) ==
               0) {
        char p[256], n[256], i[256], s[256];
        x.rbd = x.path + strlen(CONFIG_RBD_PREFIX);
        x.path = NULL;
        struct err e;
        err_clear(&e);
        if (x.overlay != NULL) {
            return err_set(err, EINVAL,
                           "--export %s=rbd:%s: an rbd export takes no overlay",
                           arg, x.rbd);
        }
        if (backend_rbd_parse(x.rbd, p, n, i, s, sizeof p, &e) < 0) {
            return err_set(err, EINVAL, "--export %s=rbd:%s: %s", arg, x.rbd,
                           e.msg);
        }
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
    struct option opts[ARRAY_SIZE(other_options) + CONFIG_MAX_KEYS + 1];
    char shorts[sizeof OTHER_SHORT_OPTIONS + 2 * CONFIG_MAX_KEYS];
    make_options(opts, shorts);
    optind = 0; /* a full re-initialisation (GNU), for the unit tests */
    opterr = 0;
    int c;
    while ((c = getopt_long(argc, argv, shorts, opts, NULL)) != -1) {
        const struct config_key *k = option_key(c);
        int r = 0;
        if (k != NULL) {
            r = add_setting(
                cl, k, k->flag_value != NULL ? k->flag_value : optarg, err);
            if (r < 0) {
                return r;
            }
            continue;
        }
        switch (c) {
        case 'f':
            cl->foreground = true;
            break;
        case 'e':
            r = parse_export(cl, optarg, err);
            break;
        case 'r':
            cl->read_only = true;
            break;
        case 's':
            cl->inetd = true;
            break;
        case 'c':
            cl->config_file = optarg;
            break;
        case OPT_CHECK_CONFIG:
            cl->check_config = true;
            break;
        case OPT_POLL_US:
            if (config_parse_seconds(optarg, &cl->poll_us) < 0) {
                r = err_set(err, EINVAL,
                            "--poll-us: '%s' is not a number from 0 to 86400",
                            optarg);
            }
            break;
        case 'V':
            fprintf(out, PROGRAM " " NBDSRV_VERSION "\n");
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
    free(cl->exports);
    free(cl->settings);
    memset(cl, 0, sizeof *cl);
}
