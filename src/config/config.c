/* SPDX-License-Identifier: MIT */
/*
 * The configuration file (INI syntax, read with libinih) and the merge
 * with the command line into one immutable snapshot.
 *
 * libinih reads the file through our line reader (read_line), which
 * counts lines, so that every message names FILE:LINE, and notices
 * section headers itself: inih reports a section only with its first
 * key, and we must also catch an empty or repeated [export NAME].  The
 * handler (on_key) checks each value as it arrives and stops at the first
 * mistake; later inih calls are ignored.
 *
 * Sections: [server] (at most once) and [export NAME] (once per NAME).
 * Keys may appear once per section, except the list keys listen, allow
 * and tls-identities, which accumulate.
 */
#include "nbdsrv/config.h"

#include "config-int.h"
#include "nbdsrv/backends.h"
#include "nbdsrv/bufpool.h"
#include "nbdsrv/chan-sock.h"

#include <arpa/inet.h>
#include <errno.h>
#include <ini.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

enum section_kind {
    SECTION_NONE,   /* before the first header */
    SECTION_SERVER, /* [server] */
    SECTION_EXPORT, /* [export NAME] */
};

/* Keys of [server]; bit positions in parse_ctx.seen. */
static const char *const server_keys[] = {
    "listen",
    "threads",
    "tls",
    "tls-certs",
    "tls-psk",
    "tls-verify-peer",
    "tls-priority",
    "handshake-timeout",
    "shutdown-timeout",
    "request-timeout",
    "max-connections",
    "max-connections-per-client",
    "max-requests-per-connection",
    "max-payload",
    "max-buffer-memory",
    "max-buffer-memory-per-connection",
    "log-level",
    "pidfile",
    NULL, /* (this comment keeps clang-format to one key a line) */
};

static const char *const export_keys[] = {
    "path",  "read-only",      "description", "cache",   "trim",
    "allow", "tls-identities", "memory",      "overlay", NULL,
};

/* Keys that may be repeated (their values accumulate). */
static bool is_list_key(const char *key)
{
    return strcmp(key, "listen") == 0 || strcmp(key, "allow") == 0 ||
           strcmp(key, "tls-identities") == 0;
}

/* State of one parse.  Lives on the stack of parse_stream. */
struct parse_ctx {
    struct config *cfg;
    FILE *in;
    const char *fname; /* as given, for messages */
    char *basedir;     /* absolute directory of the file; owned */
    unsigned line;     /* line being parsed */
    bool at_line_start;
    enum section_kind kind;
    unsigned section_line;
    char section[4200]; /* the header's text between [ and ] */
    bool server_seen;
    unsigned seen; /* bitmask of keys already given in this section */
    bool tls_mode_set, tls_verify_set, tls_files_set;
    bool failed;
    struct err *err;
};

PRINTF_FMT(2, 3)
static int fail(struct parse_ctx *ctx, const char *fmt, ...)
{
    if (ctx->failed) {
        return -EINVAL;
    }
    ctx->failed = true;
    char msg[ERR_MSG_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return err_set(ctx->err, EINVAL, "%s:%u: %s", ctx->fname, ctx->line, msg);
}

/* ------------------------------------------------------------------ */
/* The snapshot */

static struct config *config_new_defaults(void)
{
    struct config *cfg = calloc(1, sizeof *cfg);
    if (cfg == NULL) {
        return NULL;
    }
    atomic_init(&cfg->refs, 1);
    cfg->handshake_timeout = 10;
    cfg->shutdown_timeout = 30;
    cfg->request_timeout = (double)SERVER_DEFAULT_REQUEST_TIMEOUT_NS / 1e9;
    cfg->max_connections = CONFIG_DEFAULT_MAX_CONNECTIONS;
    cfg->max_requests = SERVER_DEFAULT_MAX_REQUESTS;
    cfg->max_payload = SERVER_DEFAULT_MAX_PAYLOAD;
    cfg->max_buffer_memory = SERVER_DEFAULT_MAX_BUFFER_MEMORY;
    cfg->max_conn_buffer = SERVER_DEFAULT_MAX_INFLIGHT_BYTES;
    cfg->log_level = LOG_LEVEL_INFO;
    cfg->tls.mode = TLS_MODE_OFF;
    return cfg;
}

static void export_fini(struct config_export *ce)
{
    free(ce->name);
    free(ce->path);
    free(ce->description);
    free(ce->allow);
    for (unsigned i = 0; i < ce->nr_tls_identities; i++) {
        free(ce->tls_identities[i]);
    }
    free(ce->tls_identities);
    free(ce->origin);
    free(ce->path_origin);
    free(ce->overlay);
    free(ce->overlay_origin);
}

static void config_free(struct config *cfg)
{
    free(cfg->file);
    for (unsigned i = 0; i < cfg->nr_listen; i++) {
        free(cfg->listen[i]);
    }
    free(cfg->listen);
    free((char *)cfg->tls.certs_dir);
    free((char *)cfg->tls.psk_file);
    free((char *)cfg->tls.priority);
    free(cfg->pidfile);
    for (unsigned i = 0; i < cfg->nr_exports; i++) {
        export_fini(&cfg->exports[i]);
    }
    free(cfg->exports);
    free(cfg);
}

struct config *config_ref(struct config *cfg)
{
    /* Relaxed: the caller already holds a reference. */
    atomic_fetch_add_explicit(&cfg->refs, 1, memory_order_relaxed);
    return cfg;
}

void config_unref(struct config *cfg)
{
    if (cfg == NULL) {
        return;
    }
    /* acq_rel: the last holder sees every other holder's reads first. */
    if (atomic_fetch_sub_explicit(&cfg->refs, 1, memory_order_acq_rel) == 1) {
        config_free(cfg);
    }
}

static struct config_export *find_export(struct config *cfg, const char *name)
{
    for (unsigned i = 0; i < cfg->nr_exports; i++) {
        if (strcmp(cfg->exports[i].name, name) == 0) {
            return &cfg->exports[i];
        }
    }
    return NULL;
}

/* Adds an export named `name` defined at `origin`; NULL on ENOMEM. */
static struct config_export *new_export(struct config *cfg, const char *name,
                                        const char *origin)
{
    struct config_export *grown =
        realloc(cfg->exports, (cfg->nr_exports + 1) * sizeof *grown);
    if (grown == NULL) {
        return NULL;
    }
    cfg->exports = grown;
    struct config_export *ce = &cfg->exports[cfg->nr_exports];
    memset(ce, 0, sizeof *ce);
    ce->name = strdup(name);
    ce->origin = strdup(origin);
    if (ce->name == NULL || ce->origin == NULL) {
        export_fini(ce);
        return NULL;
    }
    cfg->nr_exports++;
    return ce;
}

/* Points each export's `ec` at its strings (after the array settled). */
static void link_exports(struct config *cfg)
{
    for (unsigned i = 0; i < cfg->nr_exports; i++) {
        struct config_export *ce = &cfg->exports[i];
        ce->ec.name = ce->name;
        ce->ec.path = ce->path;
        ce->ec.overlay = ce->overlay;
        ce->ec.description = ce->description;
        ce->ec.allow = ce->allow;
        ce->ec.nr_allow = ce->nr_allow;
        ce->ec.tls_identities = (const char *const *)ce->tls_identities;
        ce->ec.nr_tls_identities = ce->nr_tls_identities;
    }
}

/* ------------------------------------------------------------------ */
/* The file */

static struct config_export *current_export(struct parse_ctx *ctx)
{
    return &ctx->cfg->exports[ctx->cfg->nr_exports - 1];
}

/*
 * The section that just ended: an export must have had a path or a
 * memory size, not both, and cache = none needs a file.
 */
static void finish_section(struct parse_ctx *ctx)
{
    if (ctx->failed || ctx->kind != SECTION_EXPORT) {
        return;
    }
    struct config_export *ce = current_export(ctx);
    unsigned line = ctx->line;
    ctx->line = ctx->section_line;
    if (ce->path == NULL && !ce->ec.memory) {
        fail(ctx, "[export %s] has no path (or memory = SIZE)", ce->name);
    } else if (ce->path != NULL && ce->ec.memory) {
        fail(ctx, "[export %s] has both a path and memory: give one", ce->name);
    } else if (ce->ec.memory && ce->ec.direct) {
        fail(ctx, "[export %s]: cache = none needs a file (path), not memory",
             ce->name);
    }
    ctx->line = line;
}

/* A section header "[...]" on the current line; `text` is inside. */
static void begin_section(struct parse_ctx *ctx, const char *text)
{
    finish_section(ctx);
    if (ctx->failed) {
        return;
    }
    snprintf(ctx->section, sizeof ctx->section, "%s", text);
    ctx->section_line = ctx->line;
    ctx->seen = 0;
    if (strcmp(text, "server") == 0) {
        if (ctx->server_seen) {
            fail(ctx, "[server] is given twice");
            return;
        }
        ctx->server_seen = true;
        ctx->kind = SECTION_SERVER;
        return;
    }
    if (strncmp(text, "export", 6) == 0 &&
        (text[6] == ' ' || text[6] == '\t')) {
        char name[sizeof ctx->section];
        snprintf(name, sizeof name, "%s", text + 7);
        char *n = config_trim(name);
        if (n[0] == '\0') {
            fail(ctx, "[export NAME]: the export name is empty");
            return;
        }
        if (strlen(n) > 4096) {
            fail(ctx, "export name is longer than 4096 bytes");
            return;
        }
        struct config_export *prev = find_export(ctx->cfg, n);
        if (prev != NULL) {
            fail(ctx, "duplicate export '%s' (first defined at %s)", n,
                 prev->origin);
            return;
        }
        char origin[PATH_MAX + 32];
        snprintf(origin, sizeof origin, "%s:%u", ctx->fname, ctx->line);
        if (new_export(ctx->cfg, n, origin) == NULL) {
            fail(ctx, "out of memory");
            return;
        }
        ctx->kind = SECTION_EXPORT;
        return;
    }
    if (strcmp(text, "export") == 0) {
        fail(ctx, "[export] needs a name: [export NAME]");
        return;
    }
    fail(ctx, "unknown section [%s] (expected [server] or [export NAME])",
         text);
}

/*
 * inih's line reader: fgets, plus line counting, section headers and
 * over-long lines.
 */
static char *read_line(char *str, int num, void *stream)
{
    struct parse_ctx *ctx = stream;
    if (ctx->failed) {
        return NULL; /* ends the parse */
    }
    char *s = fgets(str, num, ctx->in);
    if (s == NULL) {
        return NULL;
    }
    if (ctx->at_line_start) {
        ctx->line++;
    }
    size_t len = strlen(s);
    bool complete = len > 0 && s[len - 1] == '\n';
    if (!complete && !feof(ctx->in)) {
        fail(ctx, "line is longer than %d characters", num - 3);
        return NULL;
    }
    ctx->at_line_start = true;
    char tmp[4200];
    snprintf(tmp, sizeof tmp, "%s", s);
    char *t = config_trim(tmp);
    if (t[0] == '[') {
        char *close = strchr(t, ']');
        if (close == NULL) {
            fail(ctx, "section header without ']'");
            return NULL;
        }
        *close = '\0';
        char *inner = config_trim(t + 1);
        begin_section(ctx, inner);
        if (ctx->failed) {
            return NULL;
        }
    }
    return s;
}

/* Index of `key` in `keys`, or -1. */
static int key_index(const char *const *keys, const char *key)
{
    for (int i = 0; keys[i] != NULL; i++) {
        if (strcmp(keys[i], key) == 0) {
            return i;
        }
    }
    return -1;
}

static int server_key(struct parse_ctx *ctx, const char *key, const char *v)
{
    struct config *cfg = ctx->cfg;
    char msg[ERR_MSG_MAX];
    if (strcmp(key, "listen") == 0) {
        struct sock_addr addr;
        struct err e;
        err_clear(&e);
        if (sock_addr_parse(v, &addr, &e) < 0) {
            return fail(ctx, "listen = %s: %s", v, e.msg);
        }
        if (config_push_string(&cfg->listen, &cfg->nr_listen, v) < 0) {
            return fail(ctx, "out of memory");
        }
    } else if (strcmp(key, "threads") == 0) {
        if (config_parse_uint(v, 1, CONFIG_MAX_THREADS, &cfg->threads) < 0) {
            return fail(ctx, "threads = %s: not a number from 1 to %u", v,
                        CONFIG_MAX_THREADS);
        }
    } else if (strcmp(key, "tls") == 0) {
        if (tls_mode_parse(v, &cfg->tls.mode) < 0) {
            return fail(ctx, "tls = %s: expected off, on or require", v);
        }
    } else if (strcmp(key, "tls-certs") == 0 || strcmp(key, "tls-psk") == 0) {
        char *path = config_make_absolute(ctx->basedir, v);
        if (path == NULL) {
            return fail(ctx, "out of memory");
        }
        bool certs = key[4] == 'c';
        int r = certs ? config_check_certs_dir(path, msg, sizeof msg)
                      : config_check_readable_file("TLS PSK file", path, msg,
                                                   sizeof msg);
        if (r == 0) {
            r = config_set_const_string(
                certs ? &cfg->tls.certs_dir : &cfg->tls.psk_file, path);
            if (r < 0) {
                snprintf(msg, sizeof msg, "out of memory");
            }
        }
        free(path);
        if (r < 0) {
            return fail(ctx, "%s", msg);
        }
    } else if (strcmp(key, "tls-verify-peer") == 0) {
        if (config_parse_bool(v, &cfg->tls.verify_peer) < 0) {
            return fail(ctx, "tls-verify-peer = %s: expected yes or no", v);
        }
    } else if (strcmp(key, "tls-priority") == 0) {
        if (v[0] == '\0') {
            return fail(ctx, "tls-priority is empty");
        }
        if (config_set_const_string(&cfg->tls.priority, v) < 0) {
            return fail(ctx, "out of memory");
        }
    } else if (strcmp(key, "handshake-timeout") == 0 ||
               strcmp(key, "shutdown-timeout") == 0 ||
               strcmp(key, "request-timeout") == 0) {
        double *field = key[0] == 'h'   ? &cfg->handshake_timeout
                        : key[0] == 's' ? &cfg->shutdown_timeout
                                        : &cfg->request_timeout;
        if (config_parse_seconds(v, field) < 0) {
            return fail(ctx,
                        "%s = %s: not a number of seconds from 0 to "
                        "86400",
                        key, v);
        }
    } else if (strcmp(key, "max-connections") == 0 ||
               strcmp(key, "max-connections-per-client") == 0) {
        unsigned *field = strcmp(key, "max-connections") == 0
                              ? &cfg->max_connections
                              : &cfg->max_connections_per_client;
        if (config_parse_uint(v, 0, CONFIG_MAX_CONNECTIONS, field) < 0) {
            return fail(ctx, "%s = %s: not a number from 0 (unlimited) to %u",
                        key, v, CONFIG_MAX_CONNECTIONS);
        }
    } else if (strcmp(key, "max-requests-per-connection") == 0) {
        if (config_parse_uint(v, 1, CONFIG_MAX_REQUESTS, &cfg->max_requests) <
            0) {
            return fail(ctx,
                        "max-requests-per-connection = %s: not a number "
                        "from 1 to %u",
                        v, CONFIG_MAX_REQUESTS);
        }
    } else if (strcmp(key, "max-payload") == 0) {
        if (config_parse_size(v, SERVER_MIN_MAX_PAYLOAD, BUFPOOL_MAX_SIZE,
                              &cfg->max_payload) < 0) {
            return fail(ctx,
                        "max-payload = %s: not a size from 1M to 64M "
                        "(a number of bytes, or with K, M suffix)",
                        v);
        }
    } else if (strcmp(key, "max-buffer-memory") == 0 ||
               strcmp(key, "max-buffer-memory-per-connection") == 0) {
        uint64_t *field = strcmp(key, "max-buffer-memory") == 0
                              ? &cfg->max_buffer_memory
                              : &cfg->max_conn_buffer;
        if (config_parse_size(v, CONFIG_MIN_BUFFER_MEMORY,
                              CONFIG_MAX_BUFFER_MEMORY, field) < 0) {
            return fail(ctx,
                        "%s = %s: not a size from 1M to 1T (a number of "
                        "bytes, or with K, M, G, T suffix)",
                        key, v);
        }
    } else if (strcmp(key, "log-level") == 0) {
        if (config_parse_log_level(v, &cfg->log_level) < 0) {
            return fail(ctx,
                        "log-level = %s: expected error, warning, info "
                        "or debug",
                        v);
        }
    } else if (strcmp(key, "pidfile") == 0) {
        char *path = config_make_absolute(ctx->basedir, v);
        if (path == NULL || config_set_string(&cfg->pidfile, path) < 0) {
            free(path);
            return fail(ctx, "out of memory");
        }
        free(path);
    }
    return 0;
}

static int export_key(struct parse_ctx *ctx, const char *key, const char *v)
{
    struct config_export *ce = current_export(ctx);
    char bad[128];
    bool b;
    if (strcmp(key, "path") == 0) {
        if (v[0] == '\0') {
            return fail(ctx, "path is empty");
        }
        char *path = config_make_absolute(ctx->basedir, v);
        if (path == NULL) {
            return fail(ctx, "out of memory");
        }
        free(ce->path);
        ce->path = path;
        free(ce->path_origin);
        if (asprintf(&ce->path_origin, "%s:%u", ctx->fname, ctx->line) < 0) {
            ce->path_origin = NULL;
            return fail(ctx, "out of memory");
        }
    } else if (strcmp(key, "overlay") == 0) {
        if (v[0] == '\0') {
            return fail(ctx, "overlay is empty");
        }
        free(ce->overlay);
        free(ce->overlay_origin);
        ce->overlay = config_make_absolute(ctx->basedir, v);
        if (ce->overlay == NULL ||
            asprintf(&ce->overlay_origin, "%s:%u", ctx->fname, ctx->line) < 0) {
            ce->overlay_origin = NULL;
            return fail(ctx, "out of memory");
        }
    } else if (strcmp(key, "memory") == 0) {
        if (config_parse_size(v, 0, BACKEND_MEMORY_MAX_SIZE,
                              &ce->ec.memory_size) < 0) {
            return fail(ctx,
                        "memory = %s: expected a size up to 16T (a number "
                        "with an optional K, M, G or T suffix)",
                        v);
        }
        ce->ec.memory = true;
    } else if (strcmp(key, "read-only") == 0) {
        if (config_parse_bool(v, &ce->ec.read_only) < 0) {
            return fail(ctx, "read-only = %s: expected yes or no", v);
        }
    } else if (strcmp(key, "description") == 0) {
        if (strlen(v) > 4096) {
            return fail(ctx, "description is longer than 4096 bytes");
        }
        if (config_set_string(&ce->description, v) < 0) {
            return fail(ctx, "out of memory");
        }
    } else if (strcmp(key, "cache") == 0) {
        if (strcmp(v, "writeback") == 0) {
            ce->ec.direct = false;
        } else if (strcmp(v, "none") == 0) {
            ce->ec.direct = true;
        } else {
            return fail(ctx, "cache = %s: expected writeback or none", v);
        }
    } else if (strcmp(key, "trim") == 0) {
        if (config_parse_bool(v, &b) < 0) {
            return fail(ctx, "trim = %s: expected on or off", v);
        }
        ce->ec.no_trim = !b;
    } else if (strcmp(key, "allow") == 0) {
        int r = config_add_allow(ce, v, bad, sizeof bad);
        if (r == -ENOMEM) {
            return fail(ctx, "out of memory");
        }
        if (r < 0) {
            return fail(ctx,
                        "allow: '%s' is not an address, ADDR/PREFIX or "
                        "'unix'",
                        bad);
        }
    } else if (strcmp(key, "tls-identities") == 0) {
        if (v[0] == '\0') {
            return fail(ctx, "tls-identities is empty");
        }
        if (config_push_string(&ce->tls_identities, &ce->nr_tls_identities, v) <
            0) {
            return fail(ctx, "out of memory");
        }
    }
    return 0;
}

/* inih's handler: one "key = value" of section `section`. */
static int on_key(void *user, const char *section, const char *key,
                  const char *value)
{
    struct parse_ctx *ctx = user;
    if (ctx->failed) {
        return 0;
    }
    (void)section; /* read_line tracked it, with its line */
    const char *const *keys;
    switch (ctx->kind) {
    case SECTION_NONE:
        fail(ctx, "'%s' is outside any section ([server] or [export NAME])",
             key);
        return 0;
    case SECTION_SERVER:
        keys = server_keys;
        break;
    case SECTION_EXPORT:
        keys = export_keys;
        break;
    default:
        return 0;
    }
    int i = key_index(keys, key);
    if (i < 0) {
        fail(ctx, "unknown key '%s' in [%s]", key, ctx->section);
        return 0;
    }
    if (!is_list_key(key) && (ctx->seen & (1u << i))) {
        fail(ctx, "'%s' is given twice in [%s]", key, ctx->section);
        return 0;
    }
    ctx->seen |= 1u << i;
    if (ctx->kind == SECTION_SERVER) {
        server_key(ctx, key, value);
    } else {
        export_key(ctx, key, value);
    }
    return ctx->failed ? 0 : 1;
}

/* The absolute directory holding `fname`. */
static char *dir_of(const char *fname, const char *cwd)
{
    char *abs = config_make_absolute(cwd, fname);
    if (abs == NULL) {
        return NULL;
    }
    char *slash = strrchr(abs, '/');
    if (slash == abs) {
        slash[1] = '\0';
    } else {
        *slash = '\0';
    }
    return abs;
}

/*
 * Parses `in` (named `fname`) into `cfg`.  0 or -errno with err set.
 */
static int parse_stream(struct config *cfg, FILE *in, const char *fname,
                        const char *cwd, struct err *err)
{
    struct parse_ctx ctx = {
        .cfg = cfg,
        .in = in,
        .fname = fname,
        .at_line_start = true,
        .err = err,
    };
    ctx.basedir = dir_of(fname, cwd);
    if (ctx.basedir == NULL) {
        return err_set(err, ENOMEM, "out of memory");
    }
    int r = ini_parse_stream(read_line, &ctx, on_key, &ctx);
    if (!ctx.failed && r > 0) {
        ctx.line = (unsigned)r;
        fail(&ctx, "syntax error (expected [section], key = value or a "
                   "comment)");
    } else if (!ctx.failed && r < 0) {
        err_set(err, ENOMEM, "%s: cannot parse (out of memory)", fname);
        ctx.failed = true;
    }
    if (!ctx.failed && ferror(in)) {
        err_set_errno(err, EIO, "%s: read", fname);
        ctx.failed = true;
    }
    finish_section(&ctx);
    free(ctx.basedir);
    link_exports(cfg);
    return ctx.failed ? -EINVAL : 0;
}

struct config *config_parse_string(const char *text, const char *name,
                                   struct err *err)
{
    struct config *cfg = config_new_defaults();
    if (cfg == NULL) {
        err_set(err, ENOMEM, "out of memory");
        return NULL;
    }
    FILE *in = fmemopen((void *)text, strlen(text), "r");
    if (in == NULL) {
        err_set_errno(err, errno, "fmemopen");
        config_unref(cfg);
        return NULL;
    }
    char cwd[PATH_MAX];
    if (getcwd(cwd, sizeof cwd) == NULL) {
        strcpy(cwd, "/");
    }
    int r = parse_stream(cfg, in, name, cwd, err);
    fclose(in);
    if (r < 0) {
        config_unref(cfg);
        return NULL;
    }
    return cfg;
}

/* ------------------------------------------------------------------ */
/* The command line over the file, and the final checks */

static int apply_cmdline(struct config *cfg, const struct cmdline *cl,
                         struct err *err)
{
    char msg[ERR_MSG_MAX];
    if (cl->nr_listen > 0) {
        for (unsigned i = 0; i < cfg->nr_listen; i++) {
            free(cfg->listen[i]);
        }
        cfg->nr_listen = 0;
        for (unsigned i = 0; i < cl->nr_listen; i++) {
            struct sock_addr addr;
            struct err e;
            err_clear(&e);
            if (sock_addr_parse(cl->listen[i], &addr, &e) < 0) {
                return err_set(err, EINVAL, "--listen %s", e.msg);
            }
            if (config_push_string(&cfg->listen, &cfg->nr_listen,
                                   cl->listen[i]) < 0) {
                return err_set(err, ENOMEM, "out of memory");
            }
        }
    }
    if (cl->threads_set) {
        cfg->threads = cl->threads;
    }
    if (cl->handshake_timeout_set) {
        cfg->handshake_timeout = cl->handshake_timeout;
    }
    if (cl->shutdown_timeout_set) {
        cfg->shutdown_timeout = cl->shutdown_timeout;
    }
    if (cl->request_timeout_set) {
        cfg->request_timeout = cl->request_timeout;
    }
    cfg->poll_us = cl->poll_us;
    if (cl->max_connections_set) {
        cfg->max_connections = cl->max_connections;
    }
    if (cl->max_payload_set) {
        cfg->max_payload = cl->max_payload;
    }
    if (cl->max_buffer_memory_set) {
        cfg->max_buffer_memory = cl->max_buffer_memory;
    }
    if (cl->max_conn_buffer_set) {
        cfg->max_conn_buffer = cl->max_conn_buffer;
    }
    if (cl->max_connections_per_client_set) {
        cfg->max_connections_per_client = cl->max_connections_per_client;
    }
    if (cl->verbose) {
        cfg->log_level = LOG_LEVEL_DEBUG;
    }
    if (cl->pidfile != NULL) {
        char *p = config_make_absolute(cl->cwd, cl->pidfile);
        if (p == NULL || config_set_string(&cfg->pidfile, p) < 0) {
            free(p);
            return err_set(err, ENOMEM, "out of memory");
        }
        free(p);
    }
    if (cl->tls_mode != NULL &&
        tls_mode_parse(cl->tls_mode, &cfg->tls.mode) < 0) {
        return err_set(err, EINVAL, "--tls=%s: expected off, on or require",
                       cl->tls_mode);
    }
    if (cl->tls_verify_peer) {
        cfg->tls.verify_peer = true;
    }
    if (cl->tls_priority != NULL) {
        if (cl->tls_priority[0] == '\0') {
            return err_set(err, EINVAL, "--tls-priority: empty");
        }
        if (config_set_const_string(&cfg->tls.priority, cl->tls_priority) < 0) {
            return err_set(err, ENOMEM, "out of memory");
        }
    }
    for (int certs = 0; certs < 2; certs++) {
        const char *given = certs ? cl->tls_certs : cl->tls_psk;
        if (given == NULL) {
            continue;
        }
        char *p = config_make_absolute(cl->cwd, given);
        if (p == NULL) {
            return err_set(err, ENOMEM, "out of memory");
        }
        int r = certs ? config_check_certs_dir(p, msg, sizeof msg)
                      : config_check_readable_file("TLS PSK file", p, msg,
                                                   sizeof msg);
        if (r == 0 && config_set_const_string(certs ? &cfg->tls.certs_dir
                                                    : &cfg->tls.psk_file,
                                              p) < 0) {
            r = -ENOMEM;
            snprintf(msg, sizeof msg, "out of memory");
        }
        free(p);
        if (r < 0) {
            return err_set(err, -r, "%s: %s",
                           certs ? "--tls-certs" : "--tls-psk", msg);
        }
    }
    for (unsigned i = 0; i < cl->nr_exports; i++) {
        const struct cmdline_export *x = &cl->exports[i];
        struct config_export *prev = find_export(cfg, x->name);
        if (prev != NULL) {
            return err_set(err, EEXIST,
                           "--export %s: duplicate export (also defined at "
                           "%s)",
                           x->name, prev->origin);
        }
        struct config_export *ce = new_export(cfg, x->name, "--export");
        if (ce == NULL) {
            return err_set(err, ENOMEM, "out of memory");
        }
        ce->ec.read_only = cl->read_only;
        if (x->overlay != NULL &&
            ((ce->overlay = config_make_absolute(cl->cwd, x->overlay)) ==
                 NULL ||
             (ce->overlay_origin = strdup("--export")) == NULL)) {
            return err_set(err, ENOMEM, "out of memory");
        }
        if (x->memory) {
            ce->ec.memory = true;
            ce->ec.memory_size = x->memory_size;
            continue;
        }
        ce->path = config_make_absolute(cl->cwd, x->path);
        if (ce->path == NULL) {
            return err_set(err, ENOMEM, "out of memory");
        }
    }
    link_exports(cfg);
    return 0;
}

/*
 * An export's overlay: a valid overlay over a base of the base's size
 * now, or one that can be created.  0, or -EINVAL with err set.
 */
static int check_overlay(const struct config_export *ce, struct err *err)
{
    struct err e;
    err_clear(&e);
    uint64_t base_size = ce->ec.memory_size;
    if (!ce->ec.memory) {
        struct backend *base = backend_file_open(ce->path, true, &e);
        if (base == NULL) {
            return err_set(err, EINVAL, "%s: [export %s]: %s",
                           ce->overlay_origin, ce->name, e.msg);
        }
        base_size = backend_size(base);
        backend_unref(base);
    }
    if (backend_overlay_check(ce->overlay, base_size, ce->ec.read_only, &e) <
        0) {
        return err_set(err, EINVAL, "%s: [export %s]: overlay %s: %s",
                       ce->overlay_origin, ce->name, ce->overlay, e.msg);
    }
    return 0;
}

/* Checks across keys, once the command line is applied. */
static int final_checks(struct config *cfg, struct err *err)
{
    const char *where = cfg->file != NULL ? cfg->file : "command line";
    if (cfg->nr_exports == 0) {
        return err_set(err, EINVAL,
                       "%s: no export: give -e NAME=PATH or an [export NAME] "
                       "section",
                       where);
    }
    /* One request of the largest size must fit each budget. */
    char a[32], b[32];
    uint64_t largest = bufpool_alloc_size(cfg->max_payload);
    if (cfg->max_conn_buffer < largest) {
        config_format_size(cfg->max_conn_buffer, a, sizeof a);
        config_format_size(largest, b, sizeof b);
        return err_set(err, EINVAL,
                       "%s: max-buffer-memory-per-connection = %s is less "
                       "than what one request of max-payload takes (%s)",
                       where, a, b);
    }
    if (cfg->max_buffer_memory < cfg->max_conn_buffer) {
        config_format_size(cfg->max_buffer_memory, a, sizeof a);
        config_format_size(cfg->max_conn_buffer, b, sizeof b);
        return err_set(err, EINVAL,
                       "%s: max-buffer-memory = %s is less than "
                       "max-buffer-memory-per-connection = %s",
                       where, a, b);
    }
    if (cfg->nr_listen == 0 && config_push_string(&cfg->listen, &cfg->nr_listen,
                                                  CONFIG_DEFAULT_LISTEN) < 0) {
        return err_set(err, ENOMEM, "out of memory");
    }
    if (cfg->tls.mode != TLS_MODE_OFF && cfg->tls.certs_dir == NULL &&
        cfg->tls.psk_file == NULL) {
        return err_set(err, EINVAL,
                       "%s: tls=%s needs tls-certs or tls-psk (--tls-certs, "
                       "--tls-psk)",
                       where, tls_mode_name(cfg->tls.mode));
    }
    if (cfg->tls.verify_peer && cfg->tls.certs_dir == NULL) {
        return err_set(err, EINVAL,
                       "%s: tls-verify-peer needs tls-certs (--tls-certs)",
                       where);
    }
    if (cfg->tls.verify_peer) {
        char path[PATH_MAX], msg[ERR_MSG_MAX];
        snprintf(path, sizeof path, "%s/ca-cert.pem", cfg->tls.certs_dir);
        if (config_check_readable_file("TLS file", path, msg, sizeof msg) < 0) {
            return err_set(err, EINVAL, "%s: tls-verify-peer: %s", where, msg);
        }
    }
    for (unsigned i = 0; i < cfg->nr_exports; i++) {
        struct config_export *ce = &cfg->exports[i];
        char msg[ERR_MSG_MAX];
        /* Under an overlay the image is only read. */
        if (!ce->ec.memory &&
            config_check_image(ce->path, ce->ec.read_only || ce->overlay, msg,
                               sizeof msg) < 0) {
            return err_set(err, EINVAL, "%s: [export %s]: %s",
                           ce->path_origin != NULL ? ce->path_origin
                                                   : ce->origin,
                           ce->name, msg);
        }
        if (ce->overlay != NULL && check_overlay(ce, err) < 0) {
            return -EINVAL;
        }
    }
    return 0;
}

struct config *config_build(const struct cmdline *cl, struct err *err)
{
    struct config *cfg = config_new_defaults();
    if (cfg == NULL) {
        err_set(err, ENOMEM, "out of memory");
        return NULL;
    }
    if (cl->config_file != NULL) {
        cfg->file = config_make_absolute(cl->cwd, cl->config_file);
        if (cfg->file == NULL) {
            err_set(err, ENOMEM, "out of memory");
            goto out_unref;
        }
        FILE *in = fopen(cfg->file, "re");
        if (in == NULL) {
            err_set_errno(err, errno, "%s", cl->config_file);
            goto out_unref;
        }
        int r = parse_stream(cfg, in, cl->config_file, cl->cwd, err);
        fclose(in);
        if (r < 0) {
            goto out_unref;
        }
    }
    if (apply_cmdline(cfg, cl, err) < 0 || final_checks(cfg, err) < 0) {
        goto out_unref;
    }
    return cfg;

out_unref:
    config_unref(cfg);
    return NULL;
}

void config_limits(const struct config *cfg, struct server_limits *limits)
{
    *limits = (struct server_limits){
        .handshake_timeout_ns = (uint64_t)(cfg->handshake_timeout * 1e9),
        .shutdown_timeout_ns = (uint64_t)(cfg->shutdown_timeout * 1e9),
        .request_timeout_ns = (uint64_t)(cfg->request_timeout * 1e9),
        .max_requests = cfg->max_requests,
        .max_inflight_bytes = cfg->max_conn_buffer,
        .max_connections = cfg->max_connections,
        .max_payload = (uint32_t)cfg->max_payload,
        .max_buffer_memory = cfg->max_buffer_memory,
        .max_connections_per_client = cfg->max_connections_per_client,
    };
}

/* ------------------------------------------------------------------ */
/* --check-config */

static void print_allow(const struct server_allow *a, FILE *out)
{
    char buf[INET6_ADDRSTRLEN];
    if (a->family == AF_UNIX) {
        fprintf(out, "unix");
        return;
    }
    inet_ntop(a->family, a->addr, buf, sizeof buf);
    fprintf(out, "%s/%u", buf, a->prefix);
}

/*
 * Prints "key = value" for a string value.  libinih reads a ';' that
 * follows a blank as the start of an inline comment, so a value that
 * begins with ';' (given as "key =;value") goes right after the '=';
 * "key = ;value" would read back as an empty value.
 */
static void print_value(FILE *out, const char *key, const char *value)
{
    fprintf(out, "%s =%s%s\n", key, value[0] == ';' ? "" : " ", value);
}

void config_print(const struct config *cfg, FILE *out)
{
    fprintf(out, "# effective configuration%s%s\n",
            cfg->file != NULL ? " from " : " (command line only)",
            cfg->file != NULL ? cfg->file : "");
    fprintf(out, "[server]\n");
    for (unsigned i = 0; i < cfg->nr_listen; i++) {
        print_value(out, "listen", cfg->listen[i]);
    }
    if (cfg->threads != 0) {
        fprintf(out, "threads = %u\n", cfg->threads);
    } else {
        fprintf(out, "# threads = (one per CPU)\n");
    }
    fprintf(out, "tls = %s\n", tls_mode_name(cfg->tls.mode));
    if (cfg->tls.certs_dir != NULL) {
        print_value(out, "tls-certs", cfg->tls.certs_dir);
    }
    if (cfg->tls.psk_file != NULL) {
        print_value(out, "tls-psk", cfg->tls.psk_file);
    }
    fprintf(out, "tls-verify-peer = %s\n", cfg->tls.verify_peer ? "yes" : "no");
    if (cfg->tls.priority != NULL) {
        print_value(out, "tls-priority", cfg->tls.priority);
    }
    fprintf(out, "handshake-timeout = %g\n", cfg->handshake_timeout);
    fprintf(out, "shutdown-timeout = %g\n", cfg->shutdown_timeout);
    fprintf(out, "request-timeout = %g\n", cfg->request_timeout);
    fprintf(out, "max-connections = %u\n", cfg->max_connections);
    fprintf(out, "max-connections-per-client = %u\n",
            cfg->max_connections_per_client);
    fprintf(out, "max-requests-per-connection = %u\n", cfg->max_requests);
    char size[32];
    config_format_size(cfg->max_payload, size, sizeof size);
    fprintf(out, "max-payload = %s\n", size);
    config_format_size(cfg->max_buffer_memory, size, sizeof size);
    fprintf(out, "max-buffer-memory = %s\n", size);
    config_format_size(cfg->max_conn_buffer, size, sizeof size);
    fprintf(out, "max-buffer-memory-per-connection = %s\n", size);
    fprintf(out, "log-level = %s\n", log_level_name(cfg->log_level));
    if (cfg->pidfile != NULL) {
        print_value(out, "pidfile", cfg->pidfile);
    }
    for (unsigned i = 0; i < cfg->nr_exports; i++) {
        const struct config_export *ce = &cfg->exports[i];
        fprintf(out, "\n# %s%s\n[export %s]\n", ce->origin,
                i == 0 ? "; also the default export \"\"" : "", ce->name);
        if (ce->ec.memory) {
            config_format_size(ce->ec.memory_size, size, sizeof size);
            fprintf(out, "memory = %s\n", size);
        } else {
            print_value(out, "path", ce->path);
        }
        if (ce->overlay != NULL) {
            print_value(out, "overlay", ce->overlay);
        }
        fprintf(out, "read-only = %s\n", ce->ec.read_only ? "yes" : "no");
        if (ce->description != NULL) {
            print_value(out, "description", ce->description);
        }
        if (!ce->ec.memory) {
            fprintf(out, "cache = %s\n", ce->ec.direct ? "none" : "writeback");
        }
        fprintf(out, "trim = %s\n", ce->ec.no_trim ? "off" : "on");
        if (ce->nr_allow > 0) {
            fprintf(out, "allow = ");
            for (unsigned j = 0; j < ce->nr_allow; j++) {
                if (j > 0) {
                    fprintf(out, ", ");
                }
                print_allow(&ce->allow[j], out);
            }
            fprintf(out, "\n");
        }
        for (unsigned j = 0; j < ce->nr_tls_identities; j++) {
            print_value(out, "tls-identities", ce->tls_identities[j]);
        }
    }
}
