/* SPDX-License-Identifier: MIT */
/*
 * Unit tests of the configuration: the file's syntax and every error
 * case with its FILE:LINE, the command line and how it overrides the
 * file, and the daemon helpers (sd_notify datagrams, the locked pidfile,
 * socket activation).
 */
#include "../../src/config/config-int.h"
#include "fixture-main.h"
#include "nbdsrv/backends.h"
#include "nbdsrv/config.h"
#include "nbdsrv/daemon.h"

#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

/* A private directory holding a.img (writable) and ro.img (0444). */
static char dir[PATH_MAX];

static void make_dir(void)
{
    snprintf(dir, sizeof dir, "%s/nbdsrv-config.XXXXXX",
             getenv("TMPDIR") != NULL ? getenv("TMPDIR") : "/tmp");
    ck_assert_ptr_nonnull(mkdtemp(dir));
    char path[PATH_MAX + 16];
    snprintf(path, sizeof path, "%s/a.img", dir);
    int fd = open(path, O_CREAT | O_WRONLY, 0644);
    ck_assert_int_ge(fd, 0);
    ck_assert_int_eq(ftruncate(fd, 1 << 20), 0);
    close(fd);
    snprintf(path, sizeof path, "%s/ro.img", dir);
    fd = open(path, O_CREAT | O_WRONLY, 0444);
    ck_assert_int_ge(fd, 0);
    close(fd);
    snprintf(path, sizeof path, "%s/psk.txt", dir);
    fd = open(path, O_CREAT | O_WRONLY, 0600);
    ck_assert_int_ge(fd, 0);
    ck_assert_int_eq(write(fd, "alice:0123\n", 11), 11);
    close(fd);
    snprintf(path, sizeof path, "%s/certs", dir);
    ck_assert_int_eq(mkdir(path, 0700), 0);
}

static void remove_dir(void)
{
    char cmd[PATH_MAX + 16];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    ck_assert_int_eq(system(cmd), 0);
}

/* Writes `text` to DIR/test.conf and returns its path (static buffer). */
static const char *write_conf(const char *text)
{
    static char path[PATH_MAX + 16];
    snprintf(path, sizeof path, "%s/test.conf", dir);
    FILE *f = fopen(path, "w");
    ck_assert_ptr_nonnull(f);
    fputs(text, f);
    fclose(f);
    return path;
}

/* Copies of the arguments of the last build(): cmdline borrows them. */
static char *arg_copies[32];
static int nr_arg_copies;

/* cmdline_fini, and frees the argument copies. */
static void finish(struct cmdline *cl)
{
    cmdline_fini(cl);
    for (int i = 0; i < nr_arg_copies; i++) {
        free(arg_copies[i]);
    }
    nr_arg_copies = 0;
}

/* Parses argv (NULL-terminated) and builds the configuration. */
static struct config *build(struct cmdline *cl, const char *const *args,
                            struct err *err)
{
    char *argv[32];
    int argc = 0;
    argv[argc++] = (char *)"nbd-serverd";
    for (; *args != NULL; args++) {
        arg_copies[nr_arg_copies++] = argv[argc++] = strdup(*args);
    }
    argv[argc] = NULL;
    err_clear(err);
    int r = cmdline_parse(cl, argc, argv, stdout, err);
    if (r < 0) {
        return NULL;
    }
    return config_build(cl, err);
}

/* Builds from `text` with -c and expects failure mentioning `want`. */
static void expect_error(const char *text, const char *want)
{
    const char *path = write_conf(text);
    const char *args[] = {"-c", path, NULL};
    struct cmdline cl;
    struct err err;
    struct config *cfg = build(&cl, args, &err);
    if (cfg != NULL) {
        config_unref(cfg);
        finish(&cl);
        ck_abort_msg("accepted: %s", text);
    }
    if (strstr(err.msg, want) == NULL) {
        ck_abort_msg("error '%s' lacks '%s' (input: %s)", err.msg, want, text);
    }
    finish(&cl);
}

static const struct {
    const char *text;
    const char *error;
} bad_files[] = {
    {"[bogus]\n", "test.conf:1: unknown section [bogus]"},
    {"[server]\nthreads = 2\nfrobnicate = 1\n",
     "test.conf:3: unknown key 'frobnicate' in [server]"},
    {"[export a]\npath = a.img\nsize = 5\n",
     "test.conf:3: unknown key 'size' in [export a]"},
    {"threads = 2\n", "test.conf:1: 'threads' is outside any section"},
    {"[server]\nthreads = 0\n", "test.conf:2: threads = 0: not a number"},
    {"[server]\nthreads = many\n", "test.conf:2: threads = many"},
    {"[server]\nthreads = 1\nthreads = 2\n",
     "test.conf:3: 'threads' is given twice"},
    {"[server]\n[server]\n", "test.conf:2: [server] is given twice"},
    {"[server]\nlisten = nowhere\n", "test.conf:2: listen = nowhere"},
    {"[server]\ntls = maybe\n", "test.conf:2: tls = maybe: expected off"},
    {"[server]\ntls-certs = nonexistent\n",
     "test.conf:2: TLS certificate directory"},
    {"[server]\ntls-certs = certs\n", "test.conf:2: TLS file"},
    {"[server]\ntls-psk = missing.psk\n", "test.conf:2: TLS PSK file"},
    {"[server]\ntls-verify-peer = perhaps\n", "test.conf:2: tls-verify-peer"},
    {"[server]\nhandshake-timeout = -1\n", "test.conf:2: handshake-timeout"},
    {"[server]\nshutdown-timeout = soon\n", "test.conf:2: shutdown-timeout"},
    {"[server]\nrequest-timeout = forever\n", "test.conf:2: request-timeout"},
    {"[server]\nrequest-timeout = 86401\n", "test.conf:2: request-timeout"},
    {"[server]\nmax-connections = -3\n", "test.conf:2: max-connections"},
    {"[server]\nmax-connections-per-client = 1000001\n",
     "test.conf:2: max-connections-per-client = 1000001: not a number from 0"},
    {"[server]\nmax-connections-per-client = 2\n"
     "max-connections-per-client = 3\n",
     "test.conf:3: 'max-connections-per-client' is given twice"},
    {"[server]\nmax-requests-per-connection = 0\n",
     "test.conf:2: max-requests-per-connection"},
    {"[server]\nlog-level = loud\n", "test.conf:2: log-level = loud"},
    {"[server]\nmetrics-listen = 127.0.0.1:99999\n",
     "test.conf:2: metrics-listen 127.0.0.1:99999: bad port '99999'"},
    {"[server]\nmetrics-listen = 127.0.0.1\n",
     "test.conf:2: metrics-listen 127.0.0.1: expected HOST:PORT"},
    {"[server]\nmetrics-listen = unix:/tmp/m.sock\n",
     "test.conf:2: metrics-listen unix:/tmp/m.sock: expected HOST:PORT"},
    {"[server]\nmetrics-listen = [::1]:0\n",
     "test.conf:2: metrics-listen [::1]:0: port 0"},
    {"[server]\nmetrics-listen = 127.0.0.1:1\nmetrics-listen = "
     "127.0.0.1:2\n",
     "test.conf:3: 'metrics-listen' is given twice"},
    {"[export a]\npath = a.img\n\n[export a]\npath = a.img\n",
     "test.conf:4: duplicate export 'a' (first defined at"},
    {"[export a]\nread-only = yes\n", "test.conf:1: [export a] has no path"},
    {"[export a]\n[export b]\npath = a.img\n",
     "test.conf:1: [export a] has no path"},
    {"[export a]\nmemory = 1G\npath = a.img\n",
     "test.conf:1: [export a] has more than one of path, memory and rbd"},
    {"[export a]\nrbd = p/i\npath = a.img\n",
     "test.conf:1: [export a] has more than one of path, memory and rbd"},
    {"[export a]\npath = a.img\nceph-id = x\n",
     "test.conf:1: [export a]: ceph-conf, ceph-id and ceph-keyring need rbd"},
    {"[export a]\nrbd = p/i\ncache = none\n",
     "test.conf:1: [export a]: an rbd export takes no cache"},
    {"[export a]\nrbd = p/i\noverlay = o.img\n",
     "test.conf:1: [export a]: an rbd export takes no cache or overlay"},
    /* Dirty bitmaps are fine on RBD, with their file. */
    {"[export a]\nrbd = p/i\ndirty-bitmap = b\n",
     "test.conf:1: [export a]: dirty-bitmap needs dirty-bitmap-file"},
    {"[export a]\nrbd = pool\n",
     "test.conf:1: [export a]: rbd = pool: expected POOL/IMAGE"},
    {"[export a]\nrbd = p/n/i/x\n", "rbd = p/n/i/x: expected POOL/IMAGE"},
    {"[export a]\nrbd = p/i@\n", "rbd = p/i@: expected POOL/IMAGE"},
    {"[export a]\nrbd = /i\n", "rbd = /i: expected POOL/IMAGE"},
    {"[export a]\nrbd = p//i\n", "rbd = p//i: expected POOL/IMAGE"},
    {"[export a]\nrbd = p/i@s@t\n", "rbd = p/i@s@t: expected POOL/IMAGE"},
    {"[export a]\nmemory = lots\n", "test.conf:2: memory = lots: expected"},
    {"[export a]\nmemory = 17T\n", "test.conf:2: memory = 17T: expected"},
    {"[export a]\nmemory = 1G\nmemory = 2G\n",
     "test.conf:3: 'memory' is given twice"},
    {"[export a]\nmemory = 1G\ncache = none\n",
     "test.conf:1: [export a]: cache = none needs a file"},
    {"[export]\npath = a.img\n", "test.conf:1: [export] needs a name"},
    {"[export   ]\npath = a.img\n", "test.conf:1: [export] needs a name"},
    {"[export a]\npath = missing.img\n",
     "test.conf:2: [export a]: image " /* then the absolute path */},
    {"[export a]\n# comment\npath = .\n", "test.conf:3: [export a]: image"},
    {"[export a]\npath = a.img\nread-only = sometimes\n",
     "test.conf:3: read-only = sometimes"},
    {"[export a]\npath = a.img\ncache = unsafe\n",
     "test.conf:3: cache = unsafe: expected writeback or none"},
    {"[export a]\npath = a.img\ntrim = partly\n", "test.conf:3: trim"},
    {"[export a]\npath = a.img\nallow = 10.0.0.0/33\n",
     "test.conf:3: allow: '10.0.0.0/33'"},
    {"[export a]\npath = a.img\nallow = example.com\n",
     "test.conf:3: allow: 'example.com'"},
    {"[export a]\npath = a.img\nallow = ,\n", "test.conf:3: allow"},
    {"[export a]\npath = a.img\ntls-identities =\n",
     "test.conf:3: tls-identities is empty"},
    {"[export a]\npath = a.img\nthis line has no equals sign\n",
     "test.conf:3: syntax error"},
    {"[export a\npath = a.img\n", "test.conf:1: section header without ']'"},
    {"[server]\nthreads = 2\n", "no export"},
    {"[server]\ntls = on\n[export a]\npath = a.img\n",
     "tls=on needs tls-certs or tls-psk"},
    {"[export ro]\npath = ro.img\n", "read-write; or set read-only"},
};

UNIT_LOOP_TEST("file", test_config_file_errors, 0,
               (int)(sizeof bad_files / sizeof bad_files[0]))
{
    make_dir();
    const char *text = bad_files[_i].text;
    const char *want = bad_files[_i].error;
    if (geteuid() == 0 && strstr(want, "read-write") != NULL) {
        /* root may write a 0444 file: that case cannot fail for root. */
        text = "[export ro]\npath = ro.img\nread-only = maybe\n";
        want = "test.conf:3: read-only = maybe";
    }
    expect_error(text, want);
    remove_dir();
}
END_TEST

UNIT_TEST("file", test_config_file_good)
{
    make_dir();
    const char *path =
        write_conf("; a comment\n"
                   "[server]\n"
                   "listen = 127.0.0.1:10809\n"
                   "listen = unix:/tmp/x.sock   ; inline comment\n"
                   "threads = 3\n"
                   "tls = off\n"
                   "tls-psk = psk.txt\n"
                   "tls-priority = NORMAL\n"
                   "handshake-timeout = 2.5\n"
                   "shutdown-timeout = 0\n"
                   "request-timeout = 7.5\n"
                   "max-connections = 7\n"
                   "max-connections-per-client = 5\n"
                   "max-requests-per-connection = 16\n"
                   "log-level = debug\n"
                   "pidfile = run/x.pid\n"
                   "\n"
                   "[export a]\n"
                   "path = a.img\n"
                   "description = the first\n"
                   "cache = none\n"
                   "trim = off\n"
                   "allow = 127.0.0.1, 10.1.2.3/8 [::1]/128\n"
                   "allow = unix\n"
                   "tls-identities = alice\n"
                   "tls-identities = CN=bob,O=Example\n"
                   "[export ro]\n"
                   "path = ro.img\n"
                   "read-only = yes\n");
    const char *args[] = {"-c", path, NULL};
    struct cmdline cl;
    struct err err;
    struct config *cfg = build(&cl, args, &err);
    ck_assert_msg(cfg != NULL, "%s", err.msg);
    ck_assert_uint_eq(cfg->nr_listen, 2);
    ck_assert_str_eq(cfg->listen[1], "unix:/tmp/x.sock");
    ck_assert_uint_eq(cfg->threads, 3);
    ck_assert_int_eq(cfg->tls.mode, TLS_MODE_OFF);
    ck_assert_ptr_nonnull(strstr(cfg->tls.psk_file, "/psk.txt"));
    ck_assert_int_eq(cfg->tls.psk_file[0], '/');
    ck_assert_str_eq(cfg->tls.priority, "NORMAL");
    ck_assert(cfg->handshake_timeout == 2.5);
    ck_assert(cfg->shutdown_timeout == 0);
    ck_assert(cfg->request_timeout == 7.5);
    ck_assert_uint_eq(cfg->max_connections, 7);
    ck_assert_uint_eq(cfg->max_connections_per_client, 5);
    ck_assert_uint_eq(cfg->max_requests, 16);
    ck_assert_int_eq(cfg->log_level, LOG_LEVEL_DEBUG);
    ck_assert_ptr_nonnull(strstr(cfg->pidfile, "/run/x.pid"));
    ck_assert_uint_eq(cfg->nr_exports, 2);
    const struct config_export *a = &cfg->exports[0];
    ck_assert_str_eq(a->ec.name, "a");
    ck_assert_int_eq(a->ec.path[0], '/');
    ck_assert_str_eq(a->ec.description, "the first");
    ck_assert(a->ec.direct);
    ck_assert(a->ec.no_trim);
    ck_assert(!a->ec.read_only);
    ck_assert_uint_eq(a->ec.nr_allow, 4);
    ck_assert_int_eq(a->ec.allow[0].family, AF_INET);
    ck_assert_uint_eq(a->ec.allow[0].prefix, 32);
    /* Host bits are cleared: 10.1.2.3/8 is 10.0.0.0/8. */
    ck_assert_int_eq(a->ec.allow[1].addr[0], 10);
    ck_assert_int_eq(a->ec.allow[1].addr[1], 0);
    ck_assert_uint_eq(a->ec.allow[1].prefix, 8);
    ck_assert_int_eq(a->ec.allow[2].family, AF_INET6);
    ck_assert_int_eq(a->ec.allow[3].family, AF_UNIX);
    ck_assert_uint_eq(a->ec.nr_tls_identities, 2);
    ck_assert_str_eq(a->ec.tls_identities[1], "CN=bob,O=Example");
    ck_assert(cfg->exports[1].ec.read_only);

    /* --check-config's output parses again to the same configuration. */
    char out_path[PATH_MAX + 16];
    snprintf(out_path, sizeof out_path, "%s/printed.conf", dir);
    FILE *f = fopen(out_path, "w");
    ck_assert_ptr_nonnull(f);
    config_print(cfg, f);
    fclose(f);
    const char *args2[] = {"-c", out_path, NULL};
    struct cmdline cl2;
    struct config *again = build(&cl2, args2, &err);
    ck_assert_msg(again != NULL, "%s", err.msg);
    ck_assert_uint_eq(again->exports[0].ec.nr_allow, 4);
    ck_assert_uint_eq(again->max_connections, 7);
    ck_assert(again->request_timeout == 7.5);
    ck_assert_uint_eq(again->max_connections_per_client, 5);
    ck_assert_str_eq(again->exports[0].ec.path, a->ec.path);
    config_unref(again);
    finish(&cl2);

    config_unref(cfg);
    finish(&cl);
    remove_dir();
}
END_TEST

/*
 * "key =;value" (no blank before the ';', so no comment) gives a value
 * that starts with ';'.  --check-config must print it so that it reads
 * back: "key = ;value" would be an empty value.
 */
UNIT_TEST("file", test_config_print_keeps_leading_semicolon)
{
    struct err err;
    struct config *cfg = config_parse_string("[server]\n"
                                             "tls-priority =;NORMAL\n"
                                             "[export a]\n"
                                             "path = /a.img\n"
                                             "description =;the first\n"
                                             "tls-identities =;alice\n",
                                             "semi.conf", &err);
    ck_assert_msg(cfg != NULL, "%s", err.msg);
    ck_assert_str_eq(cfg->tls.priority, ";NORMAL");
    ck_assert_str_eq(cfg->exports[0].ec.description, ";the first");

    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    ck_assert_ptr_nonnull(f);
    config_print(cfg, f);
    ck_assert_int_eq(fclose(f), 0);
    struct config *again = config_parse_string(text, "printed.conf", &err);
    ck_assert_msg(again != NULL, "%s in:\n%s", err.msg, text);
    ck_assert_str_eq(again->tls.priority, ";NORMAL");
    ck_assert_str_eq(again->exports[0].ec.description, ";the first");
    ck_assert_uint_eq(again->exports[0].ec.nr_tls_identities, 1);
    ck_assert_str_eq(again->exports[0].ec.tls_identities[0], ";alice");
    config_unref(again);
    free(text);
    config_unref(cfg);
}
END_TEST

/* What a configuration that sets nothing gives the server. */
UNIT_TEST("file", test_config_defaults)
{
    struct err err;
    struct config *cfg =
        config_parse_string("[export a]\npath = /a.img\n", "d.conf", &err);
    ck_assert_msg(cfg != NULL, "%s", err.msg);
    ck_assert(cfg->request_timeout == 30);
    ck_assert_uint_eq(cfg->max_connections, 1024);
    ck_assert_uint_eq(cfg->max_connections_per_client, 0);
    struct server_limits limits;
    config_limits(cfg, &limits);
    ck_assert_uint_eq(limits.request_timeout_ns, 30ull * 1000000000);
    ck_assert_uint_eq(limits.max_connections, 1024);
    ck_assert_uint_eq(limits.max_connections_per_client, 0);
    ck_assert_uint_eq(limits.handshake_timeout_ns, 10ull * 1000000000);

    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    ck_assert_ptr_nonnull(f);
    config_print(cfg, f);
    ck_assert_int_eq(fclose(f), 0);
    ck_assert_ptr_nonnull(strstr(text, "\nrequest-timeout = 30\n"));
    ck_assert_ptr_nonnull(strstr(text, "\nmax-connections = 1024\n"));
    ck_assert_ptr_nonnull(strstr(text, "\nmax-connections-per-client = 0\n"));
    free(text);
    config_unref(cfg);
}
END_TEST

/* Each key of config-keys.def, once set, is printed by --check-config. */
UNIT_TEST("file", test_config_every_key_printed)
{
    make_dir();
    char path[PATH_MAX + 32];
    for (int i = 0; i < 2; i++) {
        snprintf(path, sizeof path, "%s/certs/server-%s.pem", dir,
                 i == 0 ? "cert" : "key");
        FILE *f = fopen(path, "w");
        ck_assert_ptr_nonnull(f);
        fclose(f);
    }
    const char *conf = write_conf("[server]\n"
                                  "threads = 2\n"
                                  "tls-certs = certs\n"
                                  "tls-psk = psk.txt\n"
                                  "tls-priority = NORMAL\n"
                                  "pidfile = x.pid\n"
                                  "metrics-listen = 127.0.0.1:9810\n"
                                  "control = ctl.sock\n"
                                  "control-group = root\n"
                                  "[export f]\n"
                                  "path = a.img\n"
                                  "description = d\n"
                                  "allow = unix\n"
                                  "tls-identities = alice\n"
                                  "dirty-bitmap = b0\n"
                                  "dirty-bitmap-file = f.bitmaps\n"
                                  "[export m]\n"
                                  "memory = 1M\n"
                                  "overlay = m.ovl\n"
                                  "[export r]\n"
                                  "rbd = rbd/ns/img@snap\n"
                                  "ceph-conf = ceph.conf\n"
                                  "ceph-id = nbd\n"
                                  "ceph-keyring = nbd.keyring\n");
    const char *args[] = {"-c", conf, NULL};
    struct cmdline cl;
    struct err err;
    struct config *cfg = build(&cl, args, &err);
    ck_assert_msg(cfg != NULL, "%s", err.msg);
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    ck_assert_ptr_nonnull(f);
    config_print(cfg, f);
    ck_assert_int_eq(fclose(f), 0);
    for (unsigned i = 0; i < config_nr_keys; i++) {
        char want[64];
        snprintf(want, sizeof want, "\n%s = ", config_keys[i].name);
        ck_assert_msg(strstr(text, want) != NULL, "%s not printed in:\n%s",
                      config_keys[i].name, text);
    }
    free(text);
    config_unref(cfg);
    finish(&cl);
    remove_dir();
}
END_TEST

UNIT_TEST("cmdline", test_config_cmdline_overrides_file)
{
    make_dir();
    const char *path = write_conf("[server]\n"
                                  "listen = 127.0.0.1:1\n"
                                  "threads = 3\n"
                                  "max-connections = 7\n"
                                  "[export a]\n"
                                  "path = a.img\n");
    char img[PATH_MAX + 16];
    snprintf(img, sizeof img, "b=%s/a.img", dir);
    const char *args[] = {"-c",
                          path,
                          "-l",
                          "127.0.0.1:2",
                          "-t",
                          "1",
                          "--max-connections",
                          "0",
                          "--shutdown-timeout",
                          "4",
                          "--request-timeout",
                          "0",
                          "--max-connections-per-client",
                          "9",
                          "-r",
                          "-e",
                          img,
                          "-v",
                          NULL};
    struct cmdline cl;
    struct err err;
    struct config *cfg = build(&cl, args, &err);
    ck_assert_msg(cfg != NULL, "%s", err.msg);
    ck_assert_uint_eq(cfg->nr_listen, 1);
    ck_assert_str_eq(cfg->listen[0], "127.0.0.1:2");
    ck_assert_uint_eq(cfg->threads, 1);
    ck_assert_uint_eq(cfg->max_connections, 0);
    ck_assert(cfg->shutdown_timeout == 4);
    ck_assert(cfg->request_timeout == 0);
    ck_assert_uint_eq(cfg->max_connections_per_client, 9);
    ck_assert_int_eq(cfg->log_level, LOG_LEVEL_DEBUG);
    ck_assert_uint_eq(cfg->nr_exports, 2);
    ck_assert(!cfg->exports[0].ec.read_only); /* -r: only -e exports */
    ck_assert(cfg->exports[1].ec.read_only);
    ck_assert_str_eq(cfg->exports[1].ec.name, "b");
    config_unref(cfg);
    finish(&cl);

    /* An -e export may not reuse a file export's name. */
    snprintf(img, sizeof img, "a=%s/a.img", dir);
    const char *dup[] = {"-c", path, "-e", img, NULL};
    ck_assert_ptr_null(build(&cl, dup, &err));
    ck_assert_ptr_nonnull(strstr(err.msg, "--export a: duplicate export"));
    ck_assert_ptr_nonnull(strstr(err.msg, "test.conf:5"));
    finish(&cl);
    remove_dir();
}
END_TEST

static const struct {
    const char *args[6];
    const char *error;
} bad_cmdlines[] = {
    {{"-t", "0", NULL}, "--threads: '0'"},
    {{"-t", "300", NULL}, "--threads: '300'"},
    {{"--tls=sometimes", NULL}, "--tls=sometimes"},
    {{"-e", "noequals", NULL}, "--export: 'noequals' is not NAME=PATH"},
    {{"-e", "=x", NULL}, "export name before '=' is empty"},
    {{"-e", "a=", NULL}, "path after '=' is empty"},
    {{"-e", "a=memory:", NULL}, "--export a=memory:: expected a size"},
    {{"-e", "a=memory:1Q", NULL}, "--export a=memory:1Q: expected a size"},
    {{"-e", "a=memory:20T", NULL}, "--export a=memory:20T: expected a size"},
    {{"-e", "a=x.img,overlay=", NULL},
     "--export a=x.img,overlay=: expected NAME=PATH,overlay=FILE"},
    {{"-e", "a=,overlay=o.img", NULL}, "expected NAME=PATH,overlay=FILE"},
    {{"-e", "a=rbd:nopool", NULL},
     "--export a=rbd:nopool: rbd = nopool: expected POOL/IMAGE"},
    {{"-e", "a=rbd:p/i,overlay=o.img", NULL},
     "--export a=rbd:p/i: an rbd export takes no overlay"},
    {{"--bogus", NULL}, "unknown option '--bogus'"},
    {{"-l", NULL}, "needs an argument"},
    {{"extra", NULL}, "unexpected argument 'extra'"},
    {{"--handshake-timeout", "x", NULL}, "--handshake-timeout: 'x'"},
    {{"--request-timeout", "-1", NULL}, "--request-timeout: '-1'"},
    {{"--max-connections-per-client", "x", NULL},
     "--max-connections-per-client: 'x' is not a number"},
    {{"-e", "a=/nonexistent/x.img", NULL}, "--export: [export a]: image"},
    {{"-e", "a=/dev/null", NULL}, "not a regular file or block device"},
    {{NULL}, "no export"},
    {{"-c", "/nonexistent.conf", NULL}, "/nonexistent.conf: No such file"},
    {{"-e", "a=/dev/null", "-l", "bad", NULL}, "--listen"},
    {{"-e", "a=/dev/null", "--metrics-listen", "127.0.0.1:x", NULL},
     "--metrics-listen 127.0.0.1:x: bad port 'x'"},
    {{"-e", "a=/dev/null", "--tls-psk", "/nonexistent", NULL}, "--tls-psk"},
};

UNIT_LOOP_TEST("cmdline", test_config_cmdline_errors, 0,
               (int)(sizeof bad_cmdlines / sizeof bad_cmdlines[0]))
{
    struct cmdline cl;
    struct err err;
    struct config *cfg = build(&cl, bad_cmdlines[_i].args, &err);
    ck_assert_ptr_null(cfg);
    if (strstr(err.msg, bad_cmdlines[_i].error) == NULL) {
        ck_abort_msg("error '%s' lacks '%s'", err.msg, bad_cmdlines[_i].error);
    }
    finish(&cl);
}
END_TEST

/* Memory exports from the file and the command line, and their print. */
UNIT_TEST("cmdline", test_config_memory_exports)
{
    make_dir();
    const char *path = write_conf("[export m]\n"
                                  "memory = 64M\n"
                                  "read-only = yes\n");
    const char *args[] = {"-c", path, "-e", "n=memory:1000001", NULL};
    struct cmdline cl;
    struct err err;
    struct config *cfg = build(&cl, args, &err);
    ck_assert_msg(cfg != NULL, "%s", err.msg);
    ck_assert_uint_eq(cfg->nr_exports, 2);
    const struct export_config *m = &cfg->exports[0].ec;
    ck_assert(m->memory);
    ck_assert_uint_eq(m->memory_size, 64 * 1024 * 1024);
    ck_assert_ptr_null(m->path);
    ck_assert(m->read_only);
    const struct export_config *n = &cfg->exports[1].ec;
    ck_assert(n->memory);
    ck_assert_uint_eq(n->memory_size, 1000001);
    ck_assert_ptr_null(n->path);

    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    ck_assert_ptr_nonnull(f);
    config_print(cfg, f);
    fclose(f);
    ck_assert_ptr_nonnull(strstr(text, "[export m]\nmemory = 64M\n"));
    ck_assert_ptr_nonnull(strstr(text, "[export n]\nmemory = 1000001\n"));
    ck_assert_ptr_null(strstr(text, "path ="));
    ck_assert_ptr_null(strstr(text, "cache ="));
    /* What it prints parses back to the same exports. */
    struct config *again = config_parse_string(text, "printed.conf", &err);
    ck_assert_msg(again != NULL, "%s", err.msg);
    ck_assert(again->exports[1].ec.memory);
    ck_assert_uint_eq(again->exports[1].ec.memory_size, 1000001);
    config_unref(again);
    free(text);
    config_unref(cfg);
    finish(&cl);
    remove_dir();
}
END_TEST

/*
 * Overlays: the key (relative to the file's directory) and the -e form,
 * printed and parsed back; a read-only export's missing overlay, one
 * made over a base of another size, a key without a value.
 */
UNIT_TEST("cmdline", test_config_dirty_bitmap)
{
    make_dir();
    const char *path = write_conf("[export f]\n"
                                  "path = a.img\n"
                                  "dirty-bitmap = daily\n"
                                  "dirty-bitmap = weekly.1\n"
                                  "dirty-bitmap-file = a.bitmaps\n"
                                  "dirty-bitmap-granularity = 1M\n"
                                  "[export m]\n"
                                  "memory = 1M\n"
                                  "dirty-bitmap = x\n");
    const char *args[] = {"-c", path, NULL};
    struct cmdline cl;
    struct err err;
    struct config *cfg = build(&cl, args, &err);
    ck_assert_msg(cfg != NULL, "%s", err.msg);
    const struct export_config *ec = &cfg->exports[0].ec;
    ck_assert_uint_eq(ec->nr_dirty_bitmaps, 2);
    ck_assert_str_eq(ec->dirty_bitmaps[0], "daily");
    ck_assert_str_eq(ec->dirty_bitmaps[1], "weekly.1");
    ck_assert_ptr_nonnull(strstr(ec->dirty_bitmap_file, "/a.bitmaps"));
    ck_assert_uint_eq(ec->dirty_granularity, 1u << 20);
    ck_assert_uint_eq(cfg->exports[1].ec.dirty_granularity,
                      DIRTY_DEFAULT_GRANULARITY);
    ck_assert_ptr_null(cfg->exports[1].ec.dirty_bitmap_file);
    config_unref(cfg);
    finish(&cl);

    expect_error("[export f]\npath = a.img\ndirty-bitmap = a/b\n",
                 "test.conf:3: dirty-bitmap = a/b: a name of 1 to 64 letters");
    expect_error("[export f]\npath = a.img\ndirty-bitmap = a\n"
                 "dirty-bitmap = a\n",
                 "test.conf:4: dirty-bitmap = a: named twice");
    char many[1024] = "[export f]\npath = a.img\ndirty-bitmap-file = b\n";
    for (unsigned i = 0; i <= DIRTY_MAX_BITMAPS; i++) {
        snprintf(many + strlen(many), sizeof many - strlen(many),
                 "dirty-bitmap = b%u\n", i);
    }
    expect_error(many, "test.conf:20: dirty-bitmap = b16: an export has at "
                       "most 16");
    expect_error("[export f]\npath = a.img\ndirty-bitmap = a\n",
                 "test.conf:1: [export f]: dirty-bitmap needs "
                 "dirty-bitmap-file");
    expect_error("[export m]\nmemory = 1M\ndirty-bitmap-file = m.bitmaps\n",
                 "[export m]: dirty-bitmap-file: a memory export's data");
    expect_error("[export f]\npath = a.img\ndirty-bitmap-file = a.img\n",
                 "is the export's image or overlay");
    expect_error("[export f]\npath = a.img\ndirty-bitmap-file = b\n"
                 "dirty-bitmap-granularity = 96K\n",
                 "dirty-bitmap-granularity must be a power of two");
    expect_error("[export f]\npath = a.img\ndirty-bitmap-file = b\n"
                 "dirty-bitmap-granularity = 512\n",
                 "test.conf:4: dirty-bitmap-granularity");
    remove_dir();
}
END_TEST

UNIT_TEST("cmdline", test_config_overlay)
{
    make_dir();
    char ovl[PATH_MAX + 16], cl_arg[2 * PATH_MAX + 32];
    snprintf(ovl, sizeof ovl, "%s/o.img", dir);
    const char *path = write_conf("[export f]\n"
                                  "path = a.img\n"
                                  "overlay = o.img\n");
    snprintf(cl_arg, sizeof cl_arg, "m=memory:1M,overlay=%s/m.ovl", dir);
    const char *args[] = {"-c", path, "-e", cl_arg, NULL};
    struct cmdline cl;
    struct err err;
    struct config *cfg = build(&cl, args, &err);
    ck_assert_msg(cfg != NULL, "%s", err.msg);
    ck_assert_str_eq(cfg->exports[0].ec.overlay, ovl);
    ck_assert(!cfg->exports[0].ec.read_only);
    ck_assert(cfg->exports[1].ec.memory);
    ck_assert_ptr_nonnull(strstr(cfg->exports[1].ec.overlay, "/m.ovl"));
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    ck_assert_ptr_nonnull(f);
    config_print(cfg, f);
    fclose(f);
    ck_assert_ptr_nonnull(strstr(text, "overlay = "));
    struct config *again = config_parse_string(text, "printed.conf", &err);
    ck_assert_msg(again != NULL, "%s", err.msg);
    ck_assert_str_eq(again->exports[0].ec.overlay, ovl);
    config_unref(again);
    free(text);
    config_unref(cfg);
    finish(&cl);

    expect_error("[export f]\npath = a.img\noverlay =\n",
                 "test.conf:3: overlay is empty");
    expect_error("[export f]\npath = a.img\nread-only = yes\n"
                 "overlay = o.img\n",
                 "test.conf:4: [export f]: overlay ");
    expect_error("[export f]\npath = a.img\nread-only = yes\n"
                 "overlay = o.img\n",
                 "o.img: does not exist (a read-only export cannot "
                 "create it)");
    /* An overlay made over 1 MiB of memory, then used over 2 MiB. */
    struct backend *base = backend_memory_new(1 << 20, true, NULL);
    ck_assert_ptr_nonnull(base);
    struct backend *be = backend_overlay_open(base, ovl, 0, &err);
    ck_assert_msg(be != NULL, "%s", err.msg);
    backend_unref(be);
    expect_error("[export f]\nmemory = 2M\noverlay = o.img\n",
                 "test.conf:3: [export f]: overlay ");
    expect_error("[export f]\nmemory = 2M\noverlay = o.img\n",
                 "made over a base of 1048576 bytes, but the base now has "
                 "2097152: the base changed size");
    /* The base file of the same size (a.img is 1 MiB) is fine. */
    cfg = build(&cl,
                (const char *[]){"-c",
                                 write_conf("[export f]\n"
                                            "path = a.img\n"
                                            "overlay = o.img\n"),
                                 NULL},
                &err);
    ck_assert_msg(cfg != NULL, "%s", err.msg);
    config_unref(cfg);
    finish(&cl);
    remove_dir();
}
END_TEST

UNIT_TEST("cmdline", test_config_help_and_version)
{
    char *argv[] = {(char *)"nbd-serverd", (char *)"--version", NULL};
    struct cmdline cl;
    struct err err;
    FILE *out = tmpfile();
    ck_assert_int_eq(cmdline_parse(&cl, 2, argv, out, &err), CMDLINE_EXIT);
    finish(&cl);
    char *argv2[] = {(char *)"nbd-serverd", (char *)"-h", NULL};
    ck_assert_int_eq(cmdline_parse(&cl, 2, argv2, out, &err), CMDLINE_EXIT);
    finish(&cl);
    rewind(out);
    char buf[8192];
    size_t n = fread(buf, 1, sizeof buf - 1, out);
    buf[n] = '\0';
    fclose(out);
    ck_assert_ptr_nonnull(strstr(buf, "nbd-serverd 0."));
    ck_assert_ptr_nonnull(strstr(buf, "--check-config"));
    ck_assert_ptr_nonnull(strstr(buf, "--shutdown-timeout"));
    ck_assert_ptr_nonnull(strstr(buf, "--request-timeout"));
    ck_assert_ptr_nonnull(strstr(buf, "--max-connections-per-client"));
}
END_TEST

/* A datagram socket bound at DIR/notify, as systemd's would be. */
static int notify_socket(char *path, size_t size, bool abstract)
{
    int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    ck_assert_int_ge(fd, 0);
    struct sockaddr_un sun = {.sun_family = AF_UNIX};
    socklen_t len;
    if (abstract) {
        snprintf(path, size, "@nbdsrv-test-%d", (int)getpid());
        memcpy(sun.sun_path, path, strlen(path));
        sun.sun_path[0] = '\0';
        len =
            (socklen_t)(offsetof(struct sockaddr_un, sun_path) + strlen(path));
    } else {
        snprintf(path, size, "%s/notify", dir);
        ck_assert_uint_lt(strlen(path), sizeof sun.sun_path);
        memcpy(sun.sun_path, path, strlen(path) + 1);
        len = sizeof sun;
    }
    ck_assert_int_eq(bind(fd, (struct sockaddr *)&sun, len), 0);
    return fd;
}

static void expect_datagram(int fd, const char *want)
{
    char buf[600];
    ssize_t n = recv(fd, buf, sizeof buf - 1, MSG_DONTWAIT);
    ck_assert_int_gt(n, 0);
    buf[n] = '\0';
    ck_assert_str_eq(buf, want);
}

UNIT_TEST("daemon", test_daemon_notify)
{
    make_dir();
    unsetenv("NOTIFY_SOCKET");
    ck_assert_int_eq(daemon_notify("READY=1"), 0);
    for (int abstract = 0; abstract < 2; abstract++) {
        char path[PATH_MAX + 16];
        int fd = notify_socket(path, sizeof path, abstract);
        setenv("NOTIFY_SOCKET", path, 1);
        ck_assert_int_eq(daemon_notify("READY=1"), 1);
        expect_datagram(fd, "READY=1");
        ck_assert_int_eq(
            daemon_notify("RELOADING=1\nMONOTONIC_USEC=%llu", 5ull), 1);
        expect_datagram(fd, "RELOADING=1\nMONOTONIC_USEC=5");
        close(fd);
    }
    setenv("NOTIFY_SOCKET", "relative/path", 1);
    ck_assert_int_eq(daemon_notify("READY=1"), -EINVAL);
    unsetenv("NOTIFY_SOCKET");
    ck_assert_uint_gt(daemon_monotonic_usec(), 0);
    remove_dir();
}
END_TEST

UNIT_TEST("daemon", test_daemon_pidfile_lock)
{
    make_dir();
    char path[PATH_MAX + 16];
    snprintf(path, sizeof path, "%s/x.pid", dir);
    struct err err;
    /* A stale file (no lock) is taken over. */
    FILE *f = fopen(path, "w");
    fputs("999999\n", f);
    fclose(f);
    int fd = daemon_pidfile_open(path, &err);
    ck_assert_int_ge(fd, 0);
    ck_assert_int_eq(daemon_pidfile_write(fd, &err), 0);
    char buf[32] = "";
    f = fopen(path, "r");
    ck_assert_ptr_nonnull(fgets(buf, sizeof buf, f));
    fclose(f);
    ck_assert_int_eq(atoi(buf), (int)getpid());
    /* A live daemon's file is not clobbered. */
    err_clear(&err);
    ck_assert_int_eq(daemon_pidfile_open(path, &err), -EEXIST);
    ck_assert_ptr_nonnull(strstr(err.msg, "locked by a running daemon"));
    f = fopen(path, "r");
    ck_assert_ptr_nonnull(fgets(buf, sizeof buf, f));
    fclose(f);
    ck_assert_int_eq(atoi(buf), (int)getpid());
    /* Removed on exit. */
    daemon_pidfile_remove(path, fd);
    ck_assert_int_eq(access(path, F_OK), -1);
    remove_dir();
}
END_TEST

/*
 * The socket-activation checks, in a child process: fd 3 belongs to
 * Check's reporting pipe here.  Returns 0, or the number of the step
 * that went wrong.
 */
static int listen_fds_steps(void)
{
    int first = -1;
    bool connected = true;
    struct err err;
    unsetenv("LISTEN_PID");
    unsetenv("LISTEN_FDS");
    if (daemon_listen_fds(&first, &connected, &err) != 0 || connected) {
        return 1;
    }
    /* Variables meant for another process are ignored. */
    setenv("LISTEN_PID", "1", 1);
    setenv("LISTEN_FDS", "1", 1);
    if (daemon_listen_fds(&first, &connected, &err) != 0) {
        return 2;
    }
    /* Ours, on a listening socket at fd 3. */
    int s = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sin = {.sin_family = AF_INET,
                              .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    if (s < 0 || bind(s, (struct sockaddr *)&sin, sizeof sin) != 0 ||
        listen(s, 4) != 0 || dup2(s, 3) != 3) {
        return 3;
    }
    char pid[32];
    snprintf(pid, sizeof pid, "%d", (int)getpid());
    setenv("LISTEN_PID", pid, 1);
    if (daemon_listen_fds(&first, &connected, &err) != 1 || first != 3 ||
        connected) {
        return 4;
    }
    if (getenv("LISTEN_FDS") != NULL ||
        (fcntl(3, F_GETFD) & FD_CLOEXEC) != FD_CLOEXEC) {
        return 5;
    }
    /* One connected socket (Accept=yes) is a connection to serve. */
    int sp[2];
    if (socketpair(AF_UNIX, SOCK_STREAM, 0, sp) != 0 || dup2(sp[0], 3) != 3) {
        return 6;
    }
    setenv("LISTEN_PID", pid, 1);
    setenv("LISTEN_FDS", "1", 1);
    if (daemon_listen_fds(&first, &connected, &err) != 1 || !connected) {
        return 7;
    }
    /* A connection among other sockets is refused. */
    if (dup2(s, 4) != 4) {
        return 8;
    }
    setenv("LISTEN_PID", pid, 1);
    setenv("LISTEN_FDS", "2", 1);
    if (daemon_listen_fds(&first, &connected, &err) >= 0 ||
        strstr(err.msg, "exactly one connection") == NULL) {
        return 9;
    }
    /* So is a datagram socket. */
    int d = socket(AF_INET, SOCK_DGRAM, 0);
    if (d < 0 || dup2(d, 3) != 3) {
        return 10;
    }
    setenv("LISTEN_PID", pid, 1);
    setenv("LISTEN_FDS", "1", 1);
    if (daemon_listen_fds(&first, &connected, &err) >= 0 ||
        strstr(err.msg, "not a stream socket") == NULL) {
        return 11;
    }
    return 0;
}

UNIT_TEST("daemon", test_daemon_listen_fds)
{
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        _exit(listen_fds_steps());
    }
    int status;
    ck_assert_int_eq(waitpid(pid, &status, 0), pid);
    ck_assert(WIFEXITED(status));
    ck_assert_msg(WEXITSTATUS(status) == 0, "step %d failed",
                  WEXITSTATUS(status));
}
END_TEST

/* In a child: lower the soft limit, raise it again.  Exit 0 or a step. */
static int raise_nofile_steps(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) < 0) {
        return 1;
    }
    rlim_t hard = rl.rlim_max;
    struct rlimit low = {.rlim_cur = hard > 64 ? 64 : hard / 2,
                         .rlim_max = hard};
    if (setrlimit(RLIMIT_NOFILE, &low) < 0) {
        return 2;
    }
    uint64_t limit = 0;
    struct err err;
    err_clear(&err);
    if (daemon_raise_nofile(&limit, &err) != 0) {
        return 3;
    }
    if (getrlimit(RLIMIT_NOFILE, &rl) < 0 || rl.rlim_cur != hard ||
        rl.rlim_max != hard || limit != (uint64_t)hard) {
        return 4;
    }
    /* At the hard limit already: nothing to do, the same answer. */
    limit = 0;
    if (daemon_raise_nofile(&limit, &err) != 0 || limit != (uint64_t)hard) {
        return 5;
    }
    return 0;
}

UNIT_TEST("daemon", test_daemon_raise_nofile)
{
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        _exit(raise_nofile_steps());
    }
    int status;
    ck_assert_int_eq(waitpid(pid, &status, 0), pid);
    ck_assert(WIFEXITED(status));
    ck_assert_msg(WEXITSTATUS(status) == 0, "step %d failed",
                  WEXITSTATUS(status));
}
END_TEST

/* An export from the control socket: the file's checks and messages. */
UNIT_TEST("file", test_config_export_parse)
{
    make_dir();
    char img[PATH_MAX + 16];
    snprintf(img, sizeof img, "%s/a.img", dir);
    struct err err;
    static const struct {
        struct config_setting set[3];
        unsigned n;
        const char *want; /* NULL: accepted */
    } cases[] = {
        {{{"memory", "1M"}, {"read-only", "yes"}}, 2, NULL},
        {{{"memory", "1M"}, {"read-only", "maybe"}},
         2,
         "read-only = maybe: expected yes or no"},
        {{{"memory", "1M"}, {"frob", "1"}},
         2,
         "unknown key 'frob' in [export x]"},
        {{{"memory", "1M"}, {"memory", "2M"}},
         2,
         "'memory' is given twice in [export x]"},
        {{{"read-only", "yes"}},
         1,
         "[export x] has no path (or memory = SIZE, or rbd = POOL/IMAGE)"},
        {{{"memory", "1M"}, {"cache", "none"}},
         2,
         "[export x]: cache = none needs a file (path), not memory"},
        {{{"path", "/nonexistent/x.img"}}, 1, "control socket: [export x]"},
        {{{"memory", "1M"}, {"allow", "unix"}, {"allow", "10.0.0.0/8"}},
         3,
         NULL},
    };
    for (unsigned i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        err_clear(&err);
        struct config_export *ce =
            config_export_parse("x", cases[i].set, cases[i].n, &err);
        if (cases[i].want == NULL) {
            ck_assert_msg(ce != NULL, "case %u: %s", i, err.msg);
            ck_assert_str_eq(ce->ec.name, "x");
            ck_assert(ce->ec.memory);
            config_export_free(ce);
            continue;
        }
        ck_assert_msg(ce == NULL, "case %u accepted", i);
        ck_assert_msg(strstr(err.msg, cases[i].want) != NULL,
                      "case %u: '%s' lacks '%s'", i, err.msg, cases[i].want);
    }
    struct config_setting file[] = {{"path", img}, {"description", "d"}};
    struct config_export *ce = config_export_parse("f", file, 2, &err);
    ck_assert_msg(ce != NULL, "%s", err.msg);
    ck_assert_str_eq(ce->ec.path, img);
    ck_assert_str_eq(ce->ec.description, "d");
    /* What it prints, it reads back. */
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    config_export_print(ce, f);
    fclose(f);
    ck_assert_ptr_nonnull(strstr(text, "description = d\n"));
    free(text);
    config_export_free(ce);
    err_clear(&err);
    ck_assert_ptr_null(config_export_parse("", file, 2, &err));
    ck_assert_str_eq(err.msg, "[export NAME]: the export name is empty");
    remove_dir();
}
END_TEST

/* control-group names a group that exists, or the line is an error. */
UNIT_TEST("file", test_config_control_group)
{
    make_dir();
    struct err err;
    err_clear(&err);
    struct config *cfg = config_parse_string(
        "[server]\ncontrol = /x.sock\ncontrol-group = root\n", "t.conf", &err);
    ck_assert_msg(cfg != NULL, "%s", err.msg);
    ck_assert_str_eq(cfg->control, "/x.sock");
    ck_assert_int_eq(cfg->control_gid, 0);
    config_unref(cfg);
    cfg = config_parse_string("[server]\ncontrol-group = no-such-group-x\n",
                              "t.conf", &err);
    ck_assert_ptr_null(cfg);
    ck_assert_str_eq(
        err.msg, "t.conf:2: control-group = no-such-group-x: no such group");
    remove_dir();
}
END_TEST

UNIT_SUITE("config");
UNIT_TCASE("file", 30, NULL, NULL);
UNIT_TCASE("cmdline", 30, NULL, NULL);
UNIT_TCASE("daemon", 30, NULL, NULL);
