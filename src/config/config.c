/* SPDX-License-Identifier: MIT */
/*
 * The configuration file (INI syntax, read with libinih) and the merge
 * with the command line into one immutable snapshot.
 *
 * libinih reads the file through our line reader (read_line), which
 * counts lines, so that every message names FILE:LINE, and notices
 * section headers itself: inih reports a section only with its first
 * key, and we must also catch an empty or repeated [export NAME].  The
 * handler (on_key) finds each key in the table (config-keys.def), hands
 * the value to config_set_key, which checks it as it arrives, and stops
 * at the first mistake; later inih calls are ignored.  What is left here
 * is what is not per key: sections, the command line's -e exports, and
 * the checks across keys (final_checks).
 *
 * Sections: [server] (at most once) and [export NAME] (once per NAME).
 * Keys may appear once per section, except the list keys (LIST in the
 * table: listen, allow and tls-identities), which accumulate.
 */
#include "nbdsrv/config.h"

#include "config-int.h"
#include "nbdsrv/backends.h"
#include "nbdsrv/bufpool.h"

#include <errno.h>
#include <ini.h>
#include <limits.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

enum section_kind {
    SECTION_NONE,   /* before the first header */
    SECTION_SERVER, /* [server] */
    SECTION_EXPORT, /* [export NAME] */
};

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
    uint64_t seen; /* bit i: config_keys[i] was given in this section */
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
    refcount_init(&cfg->refs);
    config_set_defaults(cfg, NULL);
    return cfg;
}

static void export_fini(struct config_export *ce)
{
    free(ce->name);
    free(ce->path);
    free(ce->description);
    free(ce->rbd);
    free(ce->ceph_conf);
    free(ce->ceph_id);
    free(ce->ceph_keyring);
    free(ce->allow);
    for (unsigned i = 0; i < ce->nr_tls_identities; i++) {
        free(ce->tls_identities[i]);
    }
    free(ce->tls_identities);
    for (unsigned i = 0; i < ce->nr_dirty_bitmaps; i++) {
        free(ce->dirty_bitmaps[i]);
    }
    free(ce->dirty_bitmaps);
    free(ce->dirty_bitmap_file);
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
    free(cfg->metrics_listen);
    free(cfg->control);
    free(cfg->control_group);
    for (unsigned i = 0; i < cfg->nr_exports; i++) {
        export_fini(&cfg->exports[i]);
    }
    free(cfg->exports);
    free(cfg);
}

struct config *config_ref(struct config *cfg)
{
    refcount_get(&cfg->refs);
    return cfg;
}

void config_unref(struct config *cfg)
{
    if (cfg == NULL) {
        return;
    }
    if (refcount_put(&cfg->refs)) {
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
    config_set_defaults(NULL, ce);
    ce->name = strdup(name);
    ce->origin = strdup(origin);
    if (ce->name == NULL || ce->origin == NULL) {
        export_fini(ce);
        return NULL;
    }
    cfg->nr_exports++;
    return ce;
}

/* Points an export's `ec` at its strings. */
static void link_export(struct config_export *ce)
{
    {
        ce->ec.name = ce->name;
        ce->ec.path = ce->path;
        ce->ec.overlay = ce->overlay;
        ce->ec.description = ce->description;
        ce->ec.rbd = ce->rbd;
        ce->ec.ceph_conf = ce->ceph_conf;
        ce->ec.ceph_id = ce->ceph_id;
        ce->ec.ceph_keyring = ce->ceph_keyring;
        ce->ec.allow = ce->allow;
        ce->ec.nr_allow = ce->nr_allow;
        ce->ec.tls_identities = (const char *const *)ce->tls_identities;
        ce->ec.nr_tls_identities = ce->nr_tls_identities;
        ce->ec.dirty_bitmaps = (const char *const *)ce->dirty_bitmaps;
        ce->ec.nr_dirty_bitmaps = ce->nr_dirty_bitmaps;
        ce->ec.dirty_bitmap_file = ce->dirty_bitmap_file;
    }
}

/* Points each export's `ec` at its strings (after the array settled). */
static void link_exports(struct config *cfg)
{
    for (unsigned i = 0; i < cfg->nr_exports; i++) {
        link_export(&cfg->exports[i]);
    }
}

/* ------------------------------------------------------------------ */
/* The file */

static struct config_export *current_export(struct parse_ctx *ctx)
{
    return &ctx->cfg->exports[ctx->cfg->nr_exports - 1];
}

/* Whether the export's rbd value parses; else fails the parse. */
/*
 * What is wrong with an export's keys taken together, written to msg:
 * it must have one of a path, a memory size and an rbd image (a valid
 * POOL[/NAMESPACE]/IMAGE[@SNAP]); the ceph-* keys need rbd; an rbd export
 * takes no cache or overlay key; cache = none needs a file.  False when
 * nothing is.
 */
static bool section_problem(const struct config_export *ce, char *msg,
                            size_t size)
{
    unsigned sources = (ce->path != NULL) + ce->ec.memory + (ce->rbd != NULL);
    bool ceph_keys = ce->ceph_conf != NULL || ce->ceph_id != NULL ||
                     ce->ceph_keyring != NULL;
    char pool[256], ns[256], image[256], snap[256];
    struct err e;
    err_clear(&e);
    if (sources == 0) {
        snprintf(msg, size,
                 "[export %s] has no path (or memory = SIZE, or rbd = "
                 "POOL/IMAGE)",
                 ce->name);
    } else if (sources > 1) {
        snprintf(msg, size,
                 "[export %s] has more than one of path, memory and rbd: "
                 "give one",
                 ce->name);
    } else if (ce->rbd != NULL &&
               backend_rbd_parse(ce->rbd, pool, ns, image, snap, sizeof pool,
                                 &e) < 0) {
        snprintf(msg, size, "[export %s]: %.300s", ce->name, e.msg);
    } else if (ce->rbd == NULL && ceph_keys) {
        snprintf(msg, size,
                 "[export %s]: ceph-conf, ceph-id and ceph-keyring need rbd",
                 ce->name);
    } else if (ce->rbd != NULL && (ce->ec.direct || ce->overlay != NULL)) {
        snprintf(msg, size,
                 "[export %s]: an rbd export takes no cache or overlay key",
                 ce->name);
    } else if (ce->ec.memory && ce->ec.direct) {
        snprintf(msg, size,
                 "[export %s]: cache = none needs a file (path), not memory",
                 ce->name);
    } else {
        return false;
    }
    return true;
}

/* The section that just ended (section_problem). */
static void finish_section(struct parse_ctx *ctx)
{
    if (ctx->failed || ctx->kind != SECTION_EXPORT) {
        return;
    }
    char msg[ERR_MSG_MAX];
    if (section_problem(current_export(ctx), msg, sizeof msg)) {
        unsigned line = ctx->line;
        ctx->line = ctx->section_line;
        fail(ctx, "%s", msg);
        ctx->line = line;
    }
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

/* inih's handler: one "key = value" of section `section`. */
static int on_key(void *user, const char *section, const char *key,
                  const char *value)
{
    struct parse_ctx *ctx = user;
    if (ctx->failed) {
        return 0;
    }
    (void)section; /* read_line tracked it, with its line */
    if (ctx->kind == SECTION_NONE) {
        fail(ctx, "'%s' is outside any section ([server] or [export NAME])",
             key);
        return 0;
    }
    const struct config_key *k =
        config_find_key(ctx->kind == SECTION_EXPORT, key);
    if (k == NULL) {
        fail(ctx, "unknown key '%s' in [%s]", key, ctx->section);
        return 0;
    }
    uint64_t bit = 1ull << (k - config_keys);
    if (k->type != CONFIG_LIST && (ctx->seen & bit)) {
        fail(ctx, "'%s' is given twice in [%s]", key, ctx->section);
        return 0;
    }
    ctx->seen |= bit;
    struct config_origin origin = {
        .file = ctx->fname,
        .line = ctx->line,
        .base = ctx->basedir,
    };
    struct config_export *ce =
        ctx->kind == SECTION_EXPORT ? current_export(ctx) : NULL;
    if (config_set_key(k, ctx->cfg, ce, value, &origin, ctx->err) < 0) {
        ctx->failed = true;
        return 0;
    }
    return 1;
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

/*
 * Lays the command line over the file: each option that sets a key goes
 * through config_set_key like a line of the file (a list option's first
 * value replaces the file's list), then the -e exports are added.
 */
static int apply_cmdline(struct config *cfg, const struct cmdline *cl,
                         struct err *err)
{
    uint64_t cleared = 0; /* bit i: config_keys[i]'s list was cleared */
    for (unsigned i = 0; i < cl->nr_settings; i++) {
        const struct config_key *k = cl->settings[i].key;
        uint64_t bit = 1ull << (k - config_keys);
        if (k->type == CONFIG_LIST && !(cleared & bit)) {
            k->clear(cfg, NULL);
            cleared |= bit;
        }
        char option[64];
        snprintf(option, sizeof option, "--%s", k->option);
        struct config_origin origin = {.option = option, .base = cl->cwd};
        int r =
            config_set_key(k, cfg, NULL, cl->settings[i].value, &origin, err);
        if (r < 0) {
            return r;
        }
    }
    cfg->poll_us = cl->poll_us;
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
        if (x->rbd != NULL) {
            if ((ce->rbd = strdup(x->rbd)) == NULL) {
                return err_set(err, ENOMEM, "out of memory");
            }
            continue;
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

/* An export's dirty-bitmap keys, together.  0, or -EINVAL with err. */
static int check_dirty_bitmaps(const struct config_export *ce, struct err *err)
{
    uint64_t g = ce->ec.dirty_granularity;
    if ((g & (g - 1)) != 0) {
        return err_set(err, EINVAL,
                       "%s: [export %s]: dirty-bitmap-granularity must be a "
                       "power of two",
                       ce->origin, ce->name);
    }
    const char *file = ce->dirty_bitmap_file;
    if (ce->ec.memory && file != NULL) {
        return err_set(err, EINVAL,
                       "%s: [export %s]: dirty-bitmap-file: a memory "
                       "export's data does not outlive the daemon, so its "
                       "bitmaps are kept in memory only",
                       ce->origin, ce->name);
    }
    if (!ce->ec.memory && ce->nr_dirty_bitmaps > 0 && file == NULL) {
        return err_set(err, EINVAL,
                       "%s: [export %s]: dirty-bitmap needs dirty-bitmap-file "
                       "(where the bitmaps are kept between runs)",
                       ce->origin, ce->name);
    }
    if (file != NULL &&
        ((ce->path != NULL && strcmp(file, ce->path) == 0) ||
         (ce->overlay != NULL && strcmp(file, ce->overlay) == 0))) {
        return err_set(err, EINVAL,
                       "%s: [export %s]: dirty-bitmap-file %s is the export's "
                       "image or overlay",
                       ce->origin, ce->name, file);
    }
    return 0;
}

/* An export's image and overlay.  0, or -EINVAL with err set. */
static int check_export_files(const struct config_export *ce, struct err *err)
{
    char msg[ERR_MSG_MAX];
    /* Under an overlay the image is only read. */
    if (!ce->ec.memory && ce->rbd == NULL &&
        config_check_image(ce->path, ce->ec.read_only || ce->overlay, msg,
                           sizeof msg) < 0) {
        return err_set(err, EINVAL, "%s: [export %s]: %s",
                       ce->path_origin != NULL ? ce->path_origin : ce->origin,
                       ce->name, msg);
    }
    if (ce->overlay != NULL && check_overlay(ce, err) < 0) {
        return -EINVAL;
    }
    return check_dirty_bitmaps(ce, err);
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
        if (check_export_files(&cfg->exports[i], err) < 0) {
            return -EINVAL;
        }
    }
    return 0;
}

int config_check_one_export(const struct config *cfg, const char *mode,
                            struct err *err)
{
    if (cfg->nr_exports == 1) {
        return 0;
    }
    return err_set(err, EINVAL,
                   "%s serves exactly one export, and the configuration "
                   "has %u (%s%s%s%s)",
                   mode, cfg->nr_exports, cfg->exports[0].name,
                   cfg->nr_exports > 1 ? ", " : "", cfg->exports[1].name,
                   cfg->nr_exports > 2 ? ", ..." : "");
}

/* --inetd: settings that have no meaning for one connection on stdin. */
static int check_inetd(const struct config *cfg, const struct cmdline *cl,
                       struct err *err)
{
    for (unsigned i = 0; i < cl->nr_settings; i++) {
        const char *name = cl->settings[i].key->name;
        if (strcmp(name, "listen") == 0 || strcmp(name, "pidfile") == 0 ||
            strcmp(name, "metrics-listen") == 0) {
            return err_set(err, EINVAL,
                           "--inetd serves standard input: --%s makes no "
                           "sense with it",
                           name);
        }
    }
    return config_check_one_export(cfg, "--inetd", err);
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
    if (apply_cmdline(cfg, cl, err) < 0 || final_checks(cfg, err) < 0 ||
        (cl->inetd && check_inetd(cfg, cl, err) < 0)) {
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
/* One export from the control socket */

void config_export_free(struct config_export *ce)
{
    if (ce == NULL) {
        return;
    }
    export_fini(ce);
    free(ce);
}

struct config_export *config_export_parse(const char *name,
                                          const struct config_setting *settings,
                                          unsigned n, struct err *err)
{
    if (name[0] == '\0') {
        err_set(err, EINVAL, "[export NAME]: the export name is empty");
        return NULL;
    }
    if (strlen(name) > 4096) {
        err_set(err, EINVAL, "export name is longer than 4096 bytes");
        return NULL;
    }
    struct config_export *ce = calloc(1, sizeof *ce);
    if (ce == NULL) {
        err_set(err, ENOMEM, "out of memory");
        return NULL;
    }
    config_set_defaults(NULL, ce);
    ce->name = strdup(name);
    ce->origin = strdup(CONFIG_CONTROL_ORIGIN);
    if (ce->name == NULL || ce->origin == NULL) {
        err_set(err, ENOMEM, "out of memory");
        goto fail;
    }
    /* Relative paths: against / (the daemon's directory); the control
     * program sends absolute ones. */
    struct config_origin origin = {.file = CONFIG_CONTROL_ORIGIN, .base = "/"};
    uint64_t seen = 0;
    for (unsigned i = 0; i < n; i++) {
        const struct config_key *k = config_find_key(true, settings[i].key);
        if (k == NULL) {
            err_set(err, EINVAL, "unknown key '%s' in [export %s]",
                    settings[i].key, name);
            goto fail;
        }
        uint64_t bit = 1ull << (k - config_keys);
        if (k->type != CONFIG_LIST && (seen & bit)) {
            err_set(err, EINVAL, "'%s' is given twice in [export %s]",
                    settings[i].key, name);
            goto fail;
        }
        seen |= bit;
        if (config_set_key(k, NULL, ce, settings[i].value, &origin, err) < 0) {
            goto fail;
        }
    }
    char msg[ERR_MSG_MAX];
    if (section_problem(ce, msg, sizeof msg)) {
        err_set(err, EINVAL, "%s", msg);
        goto fail;
    }
    link_export(ce);
    if (check_export_files(ce, err) < 0) {
        goto fail;
    }
    return ce;

fail:
    config_export_free(ce);
    return NULL;
}
