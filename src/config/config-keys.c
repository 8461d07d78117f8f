/* SPDX-License-Identifier: MIT */
/*
 * The configuration keys: config-keys.def made into a table, the one
 * setter that both the file and the command line go through, and the
 * printer of --check-config.
 *
 * A value's type decides how it is parsed, stored, printed and what an
 * error says; the few keys that fit no type (the lists, an export's path
 * and memory) have dedicated handlers named in the table.  Errors take
 * the shape of their origin: "FILE:LINE: key = value: ..." (errno
 * EINVAL) for the file, "--option: 'value' ..." for the command line,
 * worded as they were before the table, which the tests and the man page
 * quote.
 */
#include "config-int.h"
#include "nbdsrv/backends.h"
#include "nbdsrv/bufpool.h"
#include "nbdsrv/chan-sock.h"

#include <arpa/inet.h>
#include <assert.h>
#include <errno.h>
#include <grp.h>
#include <limits.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

/* ------------------------------------------------------------------ */
/* Errors */

/*
 * Sets err for a value from `o`: prefixed with "FILE:LINE: " and errno
 * EINVAL for the file, as given with `errnum` for the command line.
 */
PRINTF_FMT(4, 5)
static int fail(const struct config_origin *o, struct err *err, int errnum,
                const char *fmt, ...)
{
    char msg[ERR_MSG_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (o->file != NULL && o->line == 0) {
        /* The control socket: the message alone names the key. */
        return err_set(err, EINVAL, "%s", msg);
    }
    if (o->file != NULL) {
        return err_set(err, EINVAL, "%s:%u: %s", o->file, o->line, msg);
    }
    return err_set(err, errnum, "%s", msg);
}

static int fail_oom(const struct config_origin *o, struct err *err)
{
    return fail(o, err, ENOMEM, "out of memory");
}

/* ------------------------------------------------------------------ */
/* Fields */

static void *field_of(const struct config_key *k, const struct config *cfg,
                      const struct config_export *ce)
{
    const void *base = k->section == CONFIG_SECTION_SERVER ? (const void *)cfg
                                                           : (const void *)ce;
    assert(base != NULL);
    return (char *)base + k->offset;
}

/*
 * String fields are char * or const char * (struct tls_config's), so
 * they are read and written with memcpy rather than through one pointer
 * type.
 */
static char *get_string(const void *field)
{
    char *s;
    memcpy(&s, field, sizeof s);
    return s;
}

/* Replaces an owned string field with `value_take`. */
static void put_string(void *field, char *value_take)
{
    free(get_string(field));
    memcpy(field, &value_take, sizeof value_take);
}

/* ENUM fields are int-sized enums or a bool. */
static unsigned get_enum(const struct config_key *k, const void *field)
{
    if (k->size == sizeof(bool)) {
        return *(const bool *)field;
    }
    return (unsigned)*(const int *)field;
}

static void put_enum(const struct config_key *k, void *field, unsigned v)
{
    if (k->size == sizeof(bool)) {
        *(bool *)field = v != 0;
    } else {
        *(int *)field = (int)v;
    }
}

/* ------------------------------------------------------------------ */
/* Values: parse, check and store */

/* A parsed value of a UINT, SECONDS, SIZE, BOOL or ENUM key. */
union value {
    unsigned u;
    double seconds;
    uint64_t size;
    bool b;
};

/* "expected off, on or require" from an enum's names. */
static void expected_names(const struct config_key *k, char *buf, size_t size)
{
    unsigned left = 0;
    for (unsigned i = 0; i < k->nr_names; i++) {
        left += k->names[i] != NULL;
    }
    size_t len = (size_t)snprintf(buf, size, "expected");
    const char *sep = " ";
    for (unsigned i = 0; i < k->nr_names && len < size; i++) {
        if (k->names[i] == NULL) {
            continue;
        }
        left--;
        len +=
            (size_t)snprintf(buf + len, size - len, "%s%s", sep, k->names[i]);
        sep = left == 1 ? " or " : ", ";
    }
}

/* "K, M" for sizes up to 64M: the suffixes up to the largest's. */
static void size_suffixes(uint64_t max, char *buf, size_t size)
{
    static const char suffixes[] = "KMGT";
    char top[32];
    config_format_size(max, top, sizeof top);
    const char *last = strchr(suffixes, top[strlen(top) - 1]);
    size_t len = 0;
    buf[0] = '\0';
    for (const char *s = suffixes; last != NULL && s <= last; s++) {
        len += (size_t)snprintf(buf + len, size - len, "%s%c",
                                s == suffixes ? "" : ", ", *s);
    }
}

static int bad_uint(const struct config_key *k, const char *v,
                    const struct config_origin *o, struct err *err)
{
    if (o->file == NULL) {
        return fail(o, err, EINVAL, "%s: '%s' is not a number from %u to %u",
                    o->option, v, (unsigned)k->min, (unsigned)k->max);
    }
    char lo[32] = "0 (unlimited)";
    if (k->min > 0) {
        snprintf(lo, sizeof lo, "%u", (unsigned)k->min);
    }
    return fail(o, err, EINVAL, "%s = %s: not a number from %s to %u", k->name,
                v, lo, (unsigned)k->max);
}

static int bad_size(const struct config_key *k, const char *v,
                    const struct config_origin *o, struct err *err)
{
    char lo[32], hi[32], suffixes[32];
    config_format_size(k->min, lo, sizeof lo);
    config_format_size(k->max, hi, sizeof hi);
    if (o->file == NULL) {
        return fail(o, err, EINVAL,
                    "%s: '%s' is not a size from %s to %s (bytes, or with a "
                    "K, M, G or T suffix)",
                    o->option, v, lo, hi);
    }
    size_suffixes(k->max, suffixes, sizeof suffixes);
    return fail(o, err, EINVAL,
                "%s = %s: not a size from %s to %s (a number of bytes, or "
                "with %s suffix)",
                k->name, v, lo, hi, suffixes);
}

/*
 * Parses `v` for a key of a value type into `out`.  0, -EINVAL with err
 * set, or 1 for a type that is not a value type.
 */
static int parse_value(const struct config_key *k, const char *v,
                       union value *out, const struct config_origin *o,
                       struct err *err)
{
    char expected[128];
    bool b;
    switch (k->type) {
    case CONFIG_UINT:
    case CONFIG_AUTO_UINT:
        if (config_parse_uint(v, (unsigned)k->min, (unsigned)k->max, &out->u) <
            0) {
            return bad_uint(k, v, o, err);
        }
        return 0;
    case CONFIG_SECONDS:
        if (config_parse_seconds(v, &out->seconds) < 0) {
            if (o->file == NULL) {
                return fail(o, err, EINVAL,
                            "%s: '%s' is not a number from 0 to 86400",
                            o->option, v);
            }
            return fail(o, err, EINVAL,
                        "%s = %s: not a number of seconds from 0 to 86400",
                        k->name, v);
        }
        return 0;
    case CONFIG_SIZE:
        if (config_parse_size(v, k->min, k->max, &out->size) < 0) {
            return bad_size(k, v, o, err);
        }
        return 0;
    case CONFIG_BOOL:
        if (config_parse_bool(v, &b) < 0) {
            snprintf(expected, sizeof expected, "expected %s or %s", k->yes,
                     k->no);
            break;
        }
        out->b = b != k->negate;
        return 0;
    case CONFIG_ENUM:
        for (unsigned i = 0; i < k->nr_names; i++) {
            if (k->names[i] != NULL && strcmp(v, k->names[i]) == 0) {
                out->u = i;
                return 0;
            }
        }
        expected_names(k, expected, sizeof expected);
        break;
    default:
        return 1;
    }
    /* BOOL and ENUM: "key = value: expected ..." or "--key=value: ..." */
    if (o->file == NULL) {
        return fail(o, err, EINVAL, "%s=%s: %s", o->option, v, expected);
    }
    return fail(o, err, EINVAL, "%s = %s: %s", k->name, v, expected);
}

int config_check_key(const struct config_key *k, const char *v,
                     const struct config_origin *o, struct err *err)
{
    union value val;
    int r = parse_value(k, v, &val, o, err);
    return r < 0 ? r : 0;
}

static int set_string(const struct config_key *k, void *field, const char *v,
                      const struct config_origin *o, struct err *err)
{
    size_t len = strlen(v);
    if (len == 0 && k->min > 0) {
        if (o->file == NULL) {
            return fail(o, err, EINVAL, "%s: empty", o->option);
        }
        return fail(o, err, EINVAL, "%s is empty", k->name);
    }
    if (len > k->max) {
        if (o->file == NULL) {
            return fail(o, err, EINVAL, "%s: longer than %llu bytes", o->option,
                        (unsigned long long)k->max);
        }
        return fail(o, err, EINVAL, "%s is longer than %llu bytes", k->name,
                    (unsigned long long)k->max);
    }
    char *copy = strdup(v);
    if (copy == NULL) {
        return fail_oom(o, err);
    }
    put_string(field, copy);
    return 0;
}

static int set_path(const struct config_key *k, void *field, const char *v,
                    const struct config_origin *o, struct err *err)
{
    char msg[ERR_MSG_MAX];
    char *path = config_make_absolute(o->base, v);
    if (path == NULL) {
        return fail_oom(o, err);
    }
    int r = k->check != NULL ? k->check(path, msg, sizeof msg) : 0;
    if (r < 0) {
        free(path);
        if (o->file == NULL) {
            return fail(o, err, -r, "%s: %s", o->option, msg);
        }
        return fail(o, err, -r, "%s", msg);
    }
    put_string(field, path);
    return 0;
}

int config_set_key(const struct config_key *k, struct config *cfg,
                   struct config_export *ce, const char *v,
                   const struct config_origin *o, struct err *err)
{
    void *field = field_of(k, cfg, ce);
    union value val;
    int r = parse_value(k, v, &val, o, err);
    if (r < 0) {
        return r;
    }
    switch (k->type) {
    case CONFIG_UINT:
    case CONFIG_AUTO_UINT:
        *(unsigned *)field = val.u;
        return 0;
    case CONFIG_SECONDS:
        *(double *)field = val.seconds;
        return 0;
    case CONFIG_SIZE:
        *(uint64_t *)field = val.size;
        return 0;
    case CONFIG_BOOL:
        *(bool *)field = val.b;
        return 0;
    case CONFIG_ENUM:
        put_enum(k, field, val.u);
        return 0;
    case CONFIG_STRING:
        return set_string(k, field, v, o, err);
    case CONFIG_PATH:
        return set_path(k, field, v, o, err);
    case CONFIG_LIST:
    case CONFIG_SPECIAL:
        return k->set(k, cfg, ce, v, o, err);
    }
    BUG("config_set_key: a key without a type");
}

/* ------------------------------------------------------------------ */
/* Printing */

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

static void print_key(const struct config_key *k, const struct config *cfg,
                      const struct config_export *ce, FILE *out)
{
    const void *field = field_of(k, cfg, ce);
    char size[32];
    switch (k->type) {
    case CONFIG_UINT:
    case CONFIG_AUTO_UINT:
        if (k->type == CONFIG_AUTO_UINT && *(const unsigned *)field == 0) {
            fprintf(out, "# %s = (%s)\n", k->name, k->what);
        } else {
            fprintf(out, "%s = %u\n", k->name, *(const unsigned *)field);
        }
        return;
    case CONFIG_SECONDS:
        fprintf(out, "%s = %g\n", k->name, *(const double *)field);
        return;
    case CONFIG_SIZE:
        config_format_size(*(const uint64_t *)field, size, sizeof size);
        fprintf(out, "%s = %s\n", k->name, size);
        return;
    case CONFIG_BOOL:
        fprintf(out, "%s = %s\n", k->name,
                *(const bool *)field != k->negate ? k->yes : k->no);
        return;
    case CONFIG_ENUM:
        fprintf(out, "%s = %s\n", k->name, k->names[get_enum(k, field)]);
        return;
    case CONFIG_STRING:
    case CONFIG_PATH:
        if (get_string(field) != NULL) {
            print_value(out, k->name, get_string(field));
        }
        return;
    case CONFIG_LIST:
    case CONFIG_SPECIAL:
        k->print(k, cfg, ce, out);
        return;
    }
}

void config_print(const struct config *cfg, FILE *out)
{
    fprintf(out, "# effective configuration%s%s\n",
            cfg->file != NULL ? " from " : " (command line only)",
            cfg->file != NULL ? cfg->file : "");
    fprintf(out, "[server]\n");
    for (unsigned i = 0; i < config_nr_keys; i++) {
        if (config_keys[i].section == CONFIG_SECTION_SERVER) {
            print_key(&config_keys[i], cfg, NULL, out);
        }
    }
    for (unsigned i = 0; i < cfg->nr_exports; i++) {
        const struct config_export *ce = &cfg->exports[i];
        fprintf(out, "\n# %s%s\n[export %s]\n", ce->origin,
                i == 0 ? "; also the default export \"\"" : "", ce->name);
        config_export_print(ce, out);
    }
}

void config_export_print(const struct config_export *ce, FILE *out)
{
    for (unsigned j = 0; j < config_nr_keys; j++) {
        const struct config_key *k = &config_keys[j];
        if (k->section == CONFIG_SECTION_EXPORT ||
            (k->section == CONFIG_SECTION_FILE_EXPORT && !ce->ec.memory &&
             ce->rbd == NULL)) {
            print_key(k, NULL, ce, out);
        }
    }
}

/* ------------------------------------------------------------------ */
/* Keys with dedicated handlers */

static int listen_set(const struct config_key *k, struct config *cfg,
                      struct config_export *ce, const char *v,
                      const struct config_origin *o, struct err *err)
{
    (void)k, (void)ce;
    struct sock_addr addr;
    struct err e;
    err_clear(&e);
    if (sock_addr_parse(v, &addr, &e) < 0) {
        if (o->file == NULL) {
            return fail(o, err, EINVAL, "%s %s", o->option, e.msg);
        }
        return fail(o, err, EINVAL, "listen = %s: %s", v, e.msg);
    }
    if (config_push_string(&cfg->listen, &cfg->nr_listen, v) < 0) {
        return fail_oom(o, err);
    }
    return 0;
}

static void listen_print(const struct config_key *k, const struct config *cfg,
                         const struct config_export *ce, FILE *out)
{
    (void)ce;
    for (unsigned i = 0; i < cfg->nr_listen; i++) {
        print_value(out, k->name, cfg->listen[i]);
    }
}

static void listen_clear(struct config *cfg, struct config_export *ce)
{
    (void)ce;
    for (unsigned i = 0; i < cfg->nr_listen; i++) {
        free(cfg->listen[i]);
    }
    cfg->nr_listen = 0;
}

/* The TCP port of a parsed address (network order undone). */
static unsigned tcp_port(const struct sock_addr *addr)
{
    if (addr->ss.ss_family == AF_INET) {
        return ntohs(((const struct sockaddr_in *)&addr->ss)->sin_port);
    }
    return ntohs(((const struct sockaddr_in6 *)&addr->ss)->sin6_port);
}

/* metrics-listen: one TCP address (HOST:PORT or [V6ADDR]:PORT), port not
 * 0.  The messages name the key, or the option, and the value. */
static int metrics_listen_set(const struct config_key *k, struct config *cfg,
                              struct config_export *ce, const char *v,
                              const struct config_origin *o, struct err *err)
{
    (void)ce;
    const char *what = o->file == NULL ? o->option : k->name;
    const char *want = "expected HOST:PORT or [V6ADDR]:PORT (a TCP address "
                       "for /metrics)";
    if (strchr(v, ':') == NULL || strncmp(v, "unix:", 5) == 0) {
        return fail(o, err, EINVAL, "%s %s: %s", what, v, want);
    }
    struct sock_addr addr;
    struct err e;
    err_clear(&e);
    if (sock_addr_parse(v, &addr, &e) < 0) {
        return fail(o, err, EINVAL, "%s %s", what, e.msg);
    }
    if (addr.ss.ss_family != AF_INET && addr.ss.ss_family != AF_INET6) {
        return fail(o, err, EINVAL, "%s %s: %s", what, v, want);
    }
    if (tcp_port(&addr) == 0) {
        return fail(o, err, EINVAL, "%s %s: port 0 (give the port to serve on)",
                    what, v);
    }
    char *copy = strdup(v);
    if (copy == NULL) {
        return fail_oom(o, err);
    }
    free(cfg->metrics_listen);
    cfg->metrics_listen = copy;
    return 0;
}

static void metrics_listen_print(const struct config_key *k,
                                 const struct config *cfg,
                                 const struct config_export *ce, FILE *out)
{
    (void)ce;
    if (cfg->metrics_listen != NULL) {
        print_value(out, k->name, cfg->metrics_listen);
    }
}

/*
 * An export's file key (path, overlay): made absolute, with the origin a
 * message about the file later names ("FILE:LINE", NULL from the command
 * line).
 */
static int set_file_with_origin(const struct config_key *k, char **field,
                                char **origin, const char *v,
                                const struct config_origin *o, struct err *err)
{
    if (v[0] == '\0') {
        return fail(o, err, EINVAL, "%s is empty", k->name);
    }
    char *path = config_make_absolute(o->base, v);
    if (path == NULL) {
        return fail_oom(o, err);
    }
    free(*field);
    *field = path;
    free(*origin);
    *origin = NULL;
    if (o->file != NULL && o->line == 0 &&
        (*origin = strdup(o->file)) == NULL) {
        return fail_oom(o, err);
    }
    if (o->file != NULL && o->line != 0 &&
        asprintf(origin, "%s:%u", o->file, o->line) < 0) {
        *origin = NULL;
        return fail_oom(o, err);
    }
    return 0;
}

static void print_if_set(const struct config_key *k, const char *value,
                         FILE *out)
{
    if (value != NULL) {
        print_value(out, k->name, value);
    }
}

static int path_set(const struct config_key *k, struct config *cfg,
                    struct config_export *ce, const char *v,
                    const struct config_origin *o, struct err *err)
{
    (void)cfg;
    return set_file_with_origin(k, &ce->path, &ce->path_origin, v, o, err);
}

static void path_print(const struct config_key *k, const struct config *cfg,
                       const struct config_export *ce, FILE *out)
{
    (void)cfg;
    print_if_set(k, ce->path, out);
}

static int overlay_set(const struct config_key *k, struct config *cfg,
                       struct config_export *ce, const char *v,
                       const struct config_origin *o, struct err *err)
{
    (void)cfg;
    return set_file_with_origin(k, &ce->overlay, &ce->overlay_origin, v, o,
                                err);
}

static void overlay_print(const struct config_key *k, const struct config *cfg,
                          const struct config_export *ce, FILE *out)
{
    (void)cfg;
    print_if_set(k, ce->overlay, out);
}

static int memory_set(const struct config_key *k, struct config *cfg,
                      struct config_export *ce, const char *v,
                      const struct config_origin *o, struct err *err)
{
    (void)cfg;
    if (config_parse_size(v, 0, BACKEND_MEMORY_MAX_SIZE, &ce->ec.memory_size) <
        0) {
        return fail(o, err, EINVAL, "%s = %s: " CONFIG_MEMORY_EXPECTED, k->name,
                    v);
    }
    ce->ec.memory = true;
    return 0;
}

static void memory_print(const struct config_key *k, const struct config *cfg,
                         const struct config_export *ce, FILE *out)
{
    (void)cfg;
    char size[32];
    if (ce->ec.memory) {
        config_format_size(ce->ec.memory_size, size, sizeof size);
        fprintf(out, "%s = %s\n", k->name, size);
    }
}

static int allow_set(const struct config_key *k, struct config *cfg,
                     struct config_export *ce, const char *v,
                     const struct config_origin *o, struct err *err)
{
    (void)cfg;
    char bad[128];
    int r = config_add_allow(ce, v, bad, sizeof bad);
    if (r == -ENOMEM) {
        return fail_oom(o, err);
    }
    if (r < 0) {
        return fail(o, err, EINVAL,
                    "%s: '%s' is not an address, ADDR/PREFIX or 'unix'",
                    k->name, bad);
    }
    return 0;
}

static void allow_print(const struct config_key *k, const struct config *cfg,
                        const struct config_export *ce, FILE *out)
{
    (void)cfg;
    char buf[INET6_ADDRSTRLEN];
    if (ce->nr_allow == 0) {
        return;
    }
    fprintf(out, "%s = ", k->name);
    for (unsigned i = 0; i < ce->nr_allow; i++) {
        const struct server_allow *a = &ce->allow[i];
        if (i > 0) {
            fprintf(out, ", ");
        }
        if (a->family == AF_UNIX) {
            fprintf(out, "unix");
        } else {
            inet_ntop(a->family, a->addr, buf, sizeof buf);
            fprintf(out, "%s/%u", buf, a->prefix);
        }
    }
    fprintf(out, "\n");
}

static int identities_set(const struct config_key *k, struct config *cfg,
                          struct config_export *ce, const char *v,
                          const struct config_origin *o, struct err *err)
{
    (void)cfg;
    if (v[0] == '\0') {
        return fail(o, err, EINVAL, "%s is empty", k->name);
    }
    if (config_push_string(&ce->tls_identities, &ce->nr_tls_identities, v) <
        0) {
        return fail_oom(o, err);
    }
    return 0;
}

static void identities_print(const struct config_key *k,
                             const struct config *cfg,
                             const struct config_export *ce, FILE *out)
{
    (void)cfg;
    for (unsigned i = 0; i < ce->nr_tls_identities; i++) {
        print_value(out, k->name, ce->tls_identities[i]);
    }
}

static int bitmap_set(const struct config_key *k, struct config *cfg,
                      struct config_export *ce, const char *v,
                      const struct config_origin *o, struct err *err)
{
    (void)cfg;
    if (!dirty_name_valid(v)) {
        return fail(o, err, EINVAL,
                    "%s = %s: a name of 1 to %u letters, digits, '.', '_' "
                    "or '-' is needed",
                    k->name, v, DIRTY_NAME_MAX);
    }
    for (unsigned i = 0; i < ce->nr_dirty_bitmaps; i++) {
        if (strcmp(ce->dirty_bitmaps[i], v) == 0) {
            return fail(o, err, EINVAL, "%s = %s: named twice", k->name, v);
        }
    }
    if (ce->nr_dirty_bitmaps == DIRTY_MAX_BITMAPS) {
        return fail(o, err, EINVAL, "%s = %s: an export has at most %u",
                    k->name, v, DIRTY_MAX_BITMAPS);
    }
    if (config_push_string(&ce->dirty_bitmaps, &ce->nr_dirty_bitmaps, v) < 0) {
        return fail_oom(o, err);
    }
    return 0;
}

static void bitmap_print(const struct config_key *k, const struct config *cfg,
                         const struct config_export *ce, FILE *out)
{
    (void)cfg;
    for (unsigned i = 0; i < ce->nr_dirty_bitmaps; i++) {
        print_value(out, k->name, ce->dirty_bitmaps[i]);
    }
}

static int check_psk_file(const char *path, char *msg, size_t size)
{
    return config_check_readable_file("TLS PSK file", path, msg, size);
}

/* control-group: a group that exists, by name or number. */
static int control_group_set(const struct config_key *k, struct config *cfg,
                             struct config_export *ce, const char *v,
                             const struct config_origin *o, struct err *err)
{
    (void)ce;
    char buf[4096];
    struct group gr, *found = NULL;
    int r = getgrnam_r(v, &gr, buf, sizeof buf, &found);
    if (r == 0 && found == NULL && v[0] >= '0' && v[0] <= '9') {
        unsigned gid;
        if (config_parse_uint(v, 0, UINT_MAX, &gid) == 0) {
            r = getgrgid_r((gid_t)gid, &gr, buf, sizeof buf, &found);
        }
    }
    if (found == NULL) {
        return fail(o, err, EINVAL, "%s = %s: no such group", k->name, v);
    }
    if (config_set_string(&cfg->control_group, v) < 0) {
        return fail_oom(o, err);
    }
    cfg->control_gid = found->gr_gid;
    return 0;
}

static void control_group_print(const struct config_key *k,
                                const struct config *cfg,
                                const struct config_export *ce, FILE *out)
{
    (void)ce;
    if (cfg->control_group != NULL) {
        print_value(out, k->name, cfg->control_group);
    }
}

static const char *const tls_mode_names[] = {
    [TLS_MODE_OFF] = "off",
    [TLS_MODE_ON] = "on",
    [TLS_MODE_REQUIRE] = "require",
};

static const char *const log_level_names[] = {
    [LOG_LEVEL_ERROR] = "error",
    [LOG_LEVEL_WARNING] = "warning",
    [LOG_LEVEL_INFO] = "info",
    [LOG_LEVEL_DEBUG] = "debug",
};

/* cache = none bypasses the page cache (ec.direct). */
static const char *const cache_names[] = {"writeback", "none"};

/* ------------------------------------------------------------------ */
/* The table */

#define CONFIG_STRUCT_SERVER struct config
#define CONFIG_STRUCT_EXPORT struct config_export
#define CONFIG_STRUCT_FILE_EXPORT struct config_export

#define KEY_UINT(lo, hi) .type = CONFIG_UINT, .min = (lo), .max = (hi)
#define KEY_AUTO_UINT(lo, hi, what_)                                           \
    .type = CONFIG_AUTO_UINT, .min = (lo), .max = (hi), .what = (what_)
#define KEY_SECONDS .type = CONFIG_SECONDS
#define KEY_SIZE(lo, hi) .type = CONFIG_SIZE, .min = (lo), .max = (hi)
#define KEY_BOOL(y, n) .type = CONFIG_BOOL, .yes = (y), .no = (n)
#define KEY_NOT_BOOL(y, n)                                                     \
    .type = CONFIG_BOOL, .yes = (y), .no = (n), .negate = true
#define KEY_ENUM(n) .type = CONFIG_ENUM, .names = (n), .nr_names = ARRAY_SIZE(n)
#define KEY_STRING(lo, hi) .type = CONFIG_STRING, .min = (lo), .max = (hi)
#define KEY_PATH(fn) .type = CONFIG_PATH, .check = (fn)
#define KEY_LIST(s, p, c)                                                      \
    .type = CONFIG_LIST, .set = (s), .print = (p), .clear = (c)
#define KEY_SPECIAL(s, p) .type = CONFIG_SPECIAL, .set = (s), .print = (p)
#define KEY_OPT(l, s) .option = (l), .short_option = (s)
#define KEY_FLAG(l, s, v) .option = (l), .short_option = (s), .flag_value = (v)
#define KEY_NOOPT .option = NULL

const struct config_key config_keys[] = {
#define CONFIG_KEY(sect, key, field, type, opt, dflt)                          \
    {                                                                          \
        .name = (key),                                                         \
        .section = CONFIG_SECTION_##sect,                                      \
        .offset = offsetof(CONFIG_STRUCT_##sect, field),                       \
        .size = sizeof(((CONFIG_STRUCT_##sect *)0)->field),                    \
        KEY_##type,                                                            \
        KEY_##opt,                                                             \
    },
#include "config-keys.def"
};

const unsigned config_nr_keys = ARRAY_SIZE(config_keys);
_Static_assert(ARRAY_SIZE(config_keys) <= CONFIG_MAX_KEYS,
               "config-keys.def: more keys than a uint64_t has bits");

/*
 * Each field has the C type its value type stores: TYPE_OK_x(args)
 * expands to a macro taking the field's type.
 */
#define SAME_TYPE(t, want) __builtin_types_compatible_p(t, want)
#define IS_UNSIGNED(t) SAME_TYPE(t, unsigned)
#define IS_DOUBLE(t) SAME_TYPE(t, double)
#define IS_U64(t) SAME_TYPE(t, uint64_t)
#define IS_BOOL(t) SAME_TYPE(t, bool)
#define IS_ENUM(t) (sizeof(t) == sizeof(int) || SAME_TYPE(t, bool))
#define IS_STRING(t) (SAME_TYPE(t, char *) || SAME_TYPE(t, const char *))
#define IS_ANY(t) 1
#define TYPE_OK_UINT(lo, hi) IS_UNSIGNED
#define TYPE_OK_AUTO_UINT(lo, hi, what) IS_UNSIGNED
#define TYPE_OK_SECONDS IS_DOUBLE
#define TYPE_OK_SIZE(lo, hi) IS_U64
#define TYPE_OK_BOOL(y, n) IS_BOOL
#define TYPE_OK_NOT_BOOL(y, n) IS_BOOL
#define TYPE_OK_ENUM(n) IS_ENUM
#define TYPE_OK_STRING(lo, hi) IS_STRING
#define TYPE_OK_PATH(fn) IS_STRING
#define TYPE_OK_LIST(s, p, c) IS_ANY
#define TYPE_OK_SPECIAL(s, p) IS_ANY
#define CONFIG_KEY(sect, key, field, type, opt, dflt)                          \
    _Static_assert(TYPE_OK_##type(typeof(((CONFIG_STRUCT_##sect *)0)->field)), \
                   "config-keys.def: " key                                     \
                   ": the field's C type does not fit its type");
#include "config-keys.def"

void config_set_defaults(struct config *cfg, struct config_export *ce)
{
#define CONFIG_KEY(sect, key, field, type, opt, dflt)                          \
    DEFAULT_##sect(field, dflt)
#define DEFAULT_SERVER(field, dflt)                                            \
    if (cfg != NULL) {                                                         \
        cfg->field = (dflt);                                                   \
    }
#define DEFAULT_EXPORT(field, dflt)                                            \
    if (ce != NULL) {                                                          \
        ce->field = (dflt);                                                    \
    }
#define DEFAULT_FILE_EXPORT DEFAULT_EXPORT
#include "config-keys.def"
#undef DEFAULT_SERVER
#undef DEFAULT_EXPORT
#undef DEFAULT_FILE_EXPORT
}

const struct config_key *config_find_key(bool export, const char *name)
{
    for (unsigned i = 0; i < config_nr_keys; i++) {
        const struct config_key *k = &config_keys[i];
        if ((k->section != CONFIG_SECTION_SERVER) == export &&
            strcmp(k->name, name) == 0) {
            return k;
        }
    }
    return NULL;
}
