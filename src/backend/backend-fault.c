/* SPDX-License-Identifier: MIT */
/* The fault-injection filter, a test facility: errors and delays by
 * operation and offset range. */

/*
 * Design.  A filter over any layer that passes every call down unless a
 * rule matches it: a rule names operations (a mask), a byte range the
 * request must overlap (flush has no range and matches any), and what to
 * do: sleep for a while on the calling coroutine's loop (coro_sleep_ns,
 * so the loop goes on serving others), then fail with an errno or pass
 * the call down.  The first matching rule wins.  Rules are immutable
 * after backend_fault_new, so the filter is BACKEND_PARALLEL and keeps
 * the capabilities of the layer below unchanged.
 *
 * A read rule also makes range_is_hole answer "not a hole" over its
 * range, so that a READ the server would have answered from the map
 * without reading reaches the rule.
 *
 * Only the test suite configures it: the unit tests directly, the
 * interop tests through the test daemon (tests/support/fault-hook.c,
 * linked only into build/tests/nbd-serverd-test), which wraps exports
 * named in NBDSRV_TEST_FAULTS.  The daemon users run has no way to turn
 * it on.
 */
#include "nbdsrv/backends.h"
#include "nbdsrv/compiler.h"
#include "nbdsrv/coro-io.h"
#include "nbdsrv/log.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Freed by fault_close with the last reference; immutable after init. */
struct fault_backend {
    struct backend be; /* the common part; be.lower is the wrapped layer */
    struct backend_fault_rule *rules; /* owned */
    unsigned nr_rules;
};

static const struct backend_ops fault_ops;

static struct fault_backend *to_fault(struct backend *b)
{
    return container_of(b, struct fault_backend, be);
}

struct backend *backend_fault_new(struct backend *lower_take,
                                  const struct backend_fault_rule *rules,
                                  unsigned nr, struct err *err)
{
    struct fault_backend *f = calloc(1, sizeof *f);
    if (f == NULL ||
        (nr > 0 && (f->rules = calloc(nr, sizeof *rules)) == NULL)) {
        free(f);
        backend_unref(lower_take);
        err_set(err, ENOMEM, "fault: out of memory");
        return NULL;
    }
    if (nr > 0) {
        memcpy(f->rules, rules, nr * sizeof *rules);
    }
    f->nr_rules = nr;
    backend_init(&f->be, &fault_ops, lower_take, backend_size(lower_take),
                 backend_caps(lower_take), BACKEND_PARALLEL);
    return &f->be;
}

static void fault_close(struct backend *b)
{
    struct fault_backend *f = to_fault(b);
    free(f->rules);
    f->rules = NULL;
    free(f);
}

static const char *op_name(unsigned op)
{
    switch (op) {
    case BACKEND_FAULT_READ:
        return "read";
    case BACKEND_FAULT_WRITE:
        return "write";
    case BACKEND_FAULT_FLUSH:
        return "flush";
    case BACKEND_FAULT_TRIM:
        return "trim";
    case BACKEND_FAULT_ZERO:
        return "zero";
    case BACKEND_FAULT_CACHE:
        return "cache";
    case BACKEND_FAULT_EXTENTS:
        return "extents";
    default:
        return "?";
    }
}

/* The first rule for `op` whose range overlaps [offset, offset+len). */
static const struct backend_fault_rule *find_rule(const struct fault_backend *f,
                                                  unsigned op, uint64_t offset,
                                                  uint64_t len)
{
    for (unsigned i = 0; i < f->nr_rules; i++) {
        const struct backend_fault_rule *r = &f->rules[i];
        if (!(r->ops & op)) {
            continue;
        }
        if (op == BACKEND_FAULT_FLUSH ||
            (offset < r->end && offset + len > r->start)) {
            return r;
        }
    }
    return NULL;
}

/*
 * Applies the matching rule, if any: its delay, then its error.  Returns
 * 0 to pass the call down, or the -errno to fail it with.
 */
static int inject(struct backend *b, unsigned op, uint64_t offset, uint64_t len)
{
    const struct backend_fault_rule *r =
        find_rule(to_fault(b), op, offset, len);
    if (r == NULL) {
        return 0;
    }
    if (r->delay_ns > 0) {
        log_info("fault: delaying %s at %llu+%llu by %llu ms", op_name(op),
                 (unsigned long long)offset, (unsigned long long)len,
                 (unsigned long long)(r->delay_ns / 1000000));
        coro_sleep_ns(r->delay_ns);
    }
    if (r->error != 0) {
        log_info("fault: failing %s at %llu+%llu with %s", op_name(op),
                 (unsigned long long)offset, (unsigned long long)len,
                 strerror(r->error));
        return -r->error;
    }
    return 0;
}

static int fault_pread(struct backend *b, void *buf, uint32_t len,
                       uint64_t offset)
{
    int r = inject(b, BACKEND_FAULT_READ, offset, len);
    return r < 0 ? r : backend_pread(b->lower, buf, len, offset);
}

static int fault_pwrite(struct backend *b, const void *buf, uint32_t len,
                        uint64_t offset, bool fua)
{
    int r = inject(b, BACKEND_FAULT_WRITE, offset, len);
    return r < 0 ? r : backend_pwrite(b->lower, buf, len, offset, fua);
}

static int fault_flush(struct backend *b)
{
    int r = inject(b, BACKEND_FAULT_FLUSH, 0, 0);
    return r < 0 ? r : backend_flush(b->lower);
}

static int fault_trim(struct backend *b, uint64_t offset, uint64_t len,
                      bool fua)
{
    int r = inject(b, BACKEND_FAULT_TRIM, offset, len);
    return r < 0 ? r : backend_trim(b->lower, offset, len, fua);
}

static int fault_zero(struct backend *b, uint64_t offset, uint64_t len,
                      unsigned flags, bool fua)
{
    int r = inject(b, BACKEND_FAULT_ZERO, offset, len);
    return r < 0 ? r : backend_zero(b->lower, offset, len, flags, fua);
}

static int fault_cache(struct backend *b, uint64_t offset, uint64_t len)
{
    int r = inject(b, BACKEND_FAULT_CACHE, offset, len);
    return r < 0 ? r : backend_cache(b->lower, offset, len);
}

static int fault_extents(struct backend *b, enum backend_meta meta,
                         uint64_t offset, uint64_t len,
                         struct backend_extent *out, unsigned max)
{
    int r = inject(b, BACKEND_FAULT_EXTENTS, offset, len);
    return r < 0 ? r
                 : backend_extents_meta(b->lower, meta, offset, len, out, max);
}

static int fault_range_is_hole(struct backend *b, uint64_t offset, uint64_t len)
{
    if (find_rule(to_fault(b), BACKEND_FAULT_READ, offset, len) != NULL) {
        return 0;
    }
    return backend_range_is_hole(b->lower, offset, len);
}

static const struct backend_ops fault_ops = {
    .name = "fault",
    .close = fault_close,
    .pread = fault_pread,
    .pwrite = fault_pwrite,
    .flush = fault_flush,
    .trim = fault_trim,
    .zero = fault_zero,
    .cache = fault_cache,
    .extents = fault_extents,
    .range_is_hole = fault_range_is_hole,
};

/* ---- The text form ---- */

static const struct {
    const char *name;
    unsigned op;
} op_names[] = {
    {"read", BACKEND_FAULT_READ},       {"write", BACKEND_FAULT_WRITE},
    {"flush", BACKEND_FAULT_FLUSH},     {"trim", BACKEND_FAULT_TRIM},
    {"zero", BACKEND_FAULT_ZERO},       {"cache", BACKEND_FAULT_CACHE},
    {"extents", BACKEND_FAULT_EXTENTS}, {"all", BACKEND_FAULT_ALL},
};

static const struct {
    const char *name;
    int errnum;
} errno_names[] = {
    {"EIO", EIO},       {"ENOSPC", ENOSPC}, {"EPERM", EPERM},
    {"EROFS", EROFS},   {"EDQUOT", EDQUOT}, {"EFBIG", EFBIG},
    {"ENOMEM", ENOMEM}, {"EINVAL", EINVAL}, {"ENOTSUP", ENOTSUP},
};

/* A byte count with an optional K, M, G or T suffix; false if bad. */
static bool parse_bytes(const char *s, size_t n, uint64_t *out)
{
    char buf[32];
    if (n == 0 || n >= sizeof buf) {
        return false;
    }
    memcpy(buf, s, n);
    buf[n] = '\0';
    char *end;
    errno = 0;
    unsigned long long v = strtoull(buf, &end, 10);
    if (buf[0] < '0' || buf[0] > '9' || errno != 0) {
        return false;
    }
    unsigned shift = 0;
    if (*end != '\0') {
        const char *suffixes = "KMGT";
        const char *p = strchr(suffixes, *end);
        if (p == NULL || end[1] != '\0') {
            return false;
        }
        shift = 10 * (unsigned)(p - suffixes + 1);
    }
    if (v > (UINT64_MAX >> shift)) {
        return false;
    }
    *out = (uint64_t)v << shift;
    return true;
}

/* One rule "OPS[@START-END]:ACTION" of length n.  0 or -EINVAL. */
static int parse_rule(const char *s, size_t n, struct backend_fault_rule *r,
                      struct err *err)
{
    *r = (struct backend_fault_rule){.start = 0, .end = UINT64_MAX};
    const char *colon = memchr(s, ':', n);
    if (colon == NULL) {
        return err_set(err, EINVAL, "fault rule '%.*s': expected OPS:ACTION",
                       (int)n, s);
    }
    const char *at = memchr(s, '@', (size_t)(colon - s));
    const char *ops_end = at != NULL ? at : colon;
    if (ops_end == s) {
        return err_set(err, EINVAL, "fault rule '%.*s': no operation", (int)n,
                       s);
    }
    for (const char *p = s;;) {
        const char *plus = memchr(p, '+', (size_t)(ops_end - p));
        const char *e = plus != NULL ? plus : ops_end;
        unsigned op = 0;
        for (unsigned i = 0; i < ARRAY_SIZE(op_names); i++) {
            if (strlen(op_names[i].name) == (size_t)(e - p) &&
                memcmp(op_names[i].name, p, (size_t)(e - p)) == 0) {
                op = op_names[i].op;
            }
        }
        if (op == 0) {
            return err_set(err, EINVAL,
                           "fault rule '%.*s': unknown operation '%.*s'",
                           (int)n, s, (int)(e - p), p);
        }
        r->ops |= op;
        if (plus == NULL) {
            break;
        }
        p = plus + 1;
    }
    if (at != NULL) {
        const char *dash = memchr(at, '-', (size_t)(colon - at));
        if (dash == NULL ||
            !parse_bytes(at + 1, (size_t)(dash - at - 1), &r->start) ||
            (dash + 1 < colon &&
             !parse_bytes(dash + 1, (size_t)(colon - dash - 1), &r->end)) ||
            r->end <= r->start) {
            return err_set(err, EINVAL,
                           "fault rule '%.*s': expected @START-END or "
                           "@START- with START < END",
                           (int)n, s);
        }
    }
    const char *action = colon + 1;
    size_t alen = n - (size_t)(action - s);
    for (const char *p = action; p < action + alen;) {
        const char *slash = memchr(p, '/', (size_t)(action + alen - p));
        const char *e = slash != NULL ? slash : action + alen;
        size_t len = (size_t)(e - p);
        bool known = false;
        uint64_t ms;
        if (len > 6 && memcmp(p, "delay=", 6) == 0 &&
            parse_bytes(p + 6, len - 6, &ms) && ms <= 3600 * 1000) {
            r->delay_ns = ms * 1000000;
            known = true;
        }
        for (unsigned i = 0; !known && i < ARRAY_SIZE(errno_names); i++) {
            if (strlen(errno_names[i].name) == len &&
                memcmp(errno_names[i].name, p, len) == 0) {
                r->error = errno_names[i].errnum;
                known = true;
            }
        }
        if (!known) {
            return err_set(err, EINVAL,
                           "fault rule '%.*s': unknown action '%.*s' (an "
                           "errno name such as EIO, or delay=MS)",
                           (int)n, s, (int)len, p);
        }
        p = slash != NULL ? slash + 1 : e;
    }
    if (r->error == 0 && r->delay_ns == 0) {
        return err_set(err, EINVAL, "fault rule '%.*s': no action", (int)n, s);
    }
    return 0;
}

int backend_fault_parse(const char *text, struct backend_fault_rule **rules,
                        unsigned *nr, struct err *err)
{
    *rules = NULL;
    *nr = 0;
    unsigned count = 1;
    for (const char *p = text; *p != '\0'; p++) {
        count += *p == ',';
    }
    struct backend_fault_rule *out = calloc(count, sizeof *out);
    if (out == NULL) {
        return err_set(err, ENOMEM, "fault: out of memory");
    }
    unsigned i = 0;
    for (const char *p = text;; i++) {
        const char *comma = strchr(p, ',');
        size_t n = comma != NULL ? (size_t)(comma - p) : strlen(p);
        int r = parse_rule(p, n, &out[i], err);
        if (r < 0) {
            free(out);
            return r;
        }
        if (comma == NULL) {
            break;
        }
        p = comma + 1;
    }
    *rules = out;
    *nr = i + 1;
    return 0;
}
