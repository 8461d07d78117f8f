/* SPDX-License-Identifier: MIT */
/*
 * The Prometheus text exposition format, version 0.0.4 (see
 * include/nbdsrv/metrics.h for what is escaped where).  Pure: builds text
 * in memory; the HTTP side (metrics-http.c) sends it.
 */
#include "nbdsrv/compiler.h"
#include "nbdsrv/metrics.h"

#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define METRICS_TEXT_MIN_CAP 4096u

void metrics_text_init(struct metrics_text *t)
{
    *t = (struct metrics_text){0};
}

void metrics_text_fini(struct metrics_text *t)
{
    free(t->buf);
    *t = (struct metrics_text){0};
}

static bool reserve(struct metrics_text *t, size_t more)
{
    if (t->failed) {
        return false;
    }
    if (t->len + more + 1 <= t->cap) {
        return true;
    }
    size_t cap = t->cap == 0 ? METRICS_TEXT_MIN_CAP : t->cap;
    while (cap < t->len + more + 1) {
        cap *= 2;
    }
    char *buf = realloc(t->buf, cap);
    if (buf == NULL) {
        t->failed = true;
        return false;
    }
    t->buf = buf;
    t->cap = cap;
    return true;
}

static void put(struct metrics_text *t, const char *s, size_t n)
{
    if (!reserve(t, n)) {
        return;
    }
    memcpy(t->buf + t->len, s, n);
    t->len += n;
    t->buf[t->len] = '\0';
}

static void puts_(struct metrics_text *t, const char *s)
{
    put(t, s, strlen(s));
}

static void putf(struct metrics_text *t, const char *fmt, ...) PRINTF_FMT(2, 3);
static void putf(struct metrics_text *t, const char *fmt, ...)
{
    char tmp[64];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    if (n > 0 && (size_t)n < sizeof tmp) {
        put(t, tmp, (size_t)n);
    }
}

/* Escapes \ and newline, and " too in a label value. */
static void put_escaped(struct metrics_text *t, const char *s, bool label)
{
    for (; *s != '\0'; s++) {
        if (*s == '\\') {
            puts_(t, "\\\\");
        } else if (*s == '\n') {
            puts_(t, "\\n");
        } else if (*s == '"' && label) {
            puts_(t, "\\\"");
        } else {
            put(t, s, 1);
        }
    }
}

void metrics_text_family(struct metrics_text *t, const char *name,
                         const char *type, const char *help)
{
    puts_(t, "# HELP ");
    puts_(t, name);
    puts_(t, " ");
    put_escaped(t, help, false);
    puts_(t, "\n# TYPE ");
    puts_(t, name);
    puts_(t, " ");
    puts_(t, type);
    puts_(t, "\n");
}

static void put_head(struct metrics_text *t, const char *name,
                     const struct metrics_label *labels, unsigned nr)
{
    puts_(t, name);
    if (nr == 0) {
        puts_(t, " ");
        return;
    }
    puts_(t, "{");
    for (unsigned i = 0; i < nr; i++) {
        if (i > 0) {
            puts_(t, ",");
        }
        puts_(t, labels[i].name);
        puts_(t, "=\"");
        put_escaped(t, labels[i].value, true);
        puts_(t, "\"");
    }
    puts_(t, "} ");
}

void metrics_text_uint(struct metrics_text *t, const char *name,
                       const struct metrics_label *labels, unsigned nr,
                       uint64_t value)
{
    put_head(t, name, labels, nr);
    putf(t, "%" PRIu64 "\n", value);
}

/* A float as Prometheus reads it (Go's ParseFloat): +Inf, -Inf, NaN, or
 * enough digits to round-trip. */
static void put_double(struct metrics_text *t, double v)
{
    if (isnan(v)) {
        puts_(t, "NaN");
    } else if (isinf(v)) {
        puts_(t, v > 0 ? "+Inf" : "-Inf");
    } else {
        putf(t, "%.17g", v);
    }
}

void metrics_text_double(struct metrics_text *t, const char *name,
                         const struct metrics_label *labels, unsigned nr,
                         double value)
{
    put_head(t, name, labels, nr);
    put_double(t, value);
    puts_(t, "\n");
}

#define HISTOGRAM_MAX_LABELS 7u

void metrics_text_histogram(struct metrics_text *t, const char *name,
                            const struct metrics_label *labels, unsigned nr,
                            const double *bounds, const uint64_t *counts,
                            unsigned nr_bounds, double sum)
{
    char series[128];
    /* The longest suffix is "_bucket". */
    if (nr > HISTOGRAM_MAX_LABELS ||
        strlen(name) + sizeof "_bucket" > sizeof series) {
        t->failed = true;
        return;
    }
    struct metrics_label l[HISTOGRAM_MAX_LABELS + 1];
    if (nr > 0) {
        memcpy(l, labels, nr * sizeof *l);
    }
    char le[32];
    l[nr].name = "le";
    l[nr].value = le;
    snprintf(series, sizeof series, "%s_bucket", name);
    uint64_t total = 0;
    for (unsigned i = 0; i <= nr_bounds; i++) {
        total += counts[i];
        if (i < nr_bounds) {
            snprintf(le, sizeof le, "%g", bounds[i]);
        } else {
            snprintf(le, sizeof le, "+Inf");
        }
        metrics_text_uint(t, series, l, nr + 1, total);
    }
    snprintf(series, sizeof series, "%s_sum", name);
    metrics_text_double(t, series, labels, nr, sum);
    snprintf(series, sizeof series, "%s_count", name);
    metrics_text_uint(t, series, labels, nr, total);
}
