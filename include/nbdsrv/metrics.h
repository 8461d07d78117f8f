/* SPDX-License-Identifier: MIT */
/*
 * The Prometheus text exposition format (version 0.0.4), written into a
 * growing buffer, and the HTTP endpoint that serves the server's
 * counters at /metrics.
 *
 * The format: a family starts with "# HELP name text" and "# TYPE name
 * type"; each sample is one line "name{label="value",...} value".  In
 * HELP text a backslash and a newline are escaped (\\ and \n); in label
 * values also the double quote (\").  A histogram's samples are
 * name_bucket{...,le="bound"} with cumulative counts, the last with
 * le="+Inf" equal to name_count, then name_sum and name_count.
 */
#ifndef NBDSRV_METRICS_H
#define NBDSRV_METRICS_H

#include "nbdsrv/affinity.h"
#include "nbdsrv/err.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/*
 * Text being built.  Owned by its creator; one thread.  After a failed
 * allocation `failed` is set and further appends do nothing.
 */
struct metrics_text {
    char *buf; /* NUL-terminated, len bytes; NULL before the first append */
    size_t len, cap;
    bool failed;
};

/* One label of a sample: name (a valid label name) and raw value. */
struct metrics_label {
    const char *name;
    const char *value;
};

ANY_THREAD void metrics_text_init(struct metrics_text *t);
ANY_THREAD void metrics_text_fini(struct metrics_text *t);

/* Starts family `name` of `type` ("counter", "gauge", "histogram"). */
ANY_THREAD void metrics_text_family(struct metrics_text *t, const char *name,
                                    const char *type, const char *help);

/* One sample line: name, the labels (nr may be 0), an integer value. */
ANY_THREAD void metrics_text_uint(struct metrics_text *t, const char *name,
                                  const struct metrics_label *labels,
                                  unsigned nr, uint64_t value);
/* The same with a floating-point value. */
ANY_THREAD void metrics_text_double(struct metrics_text *t, const char *name,
                                    const struct metrics_label *labels,
                                    unsigned nr, double value);

/*
 * A histogram's samples: `counts` holds nr_bounds + 1 per-bucket counts
 * (not cumulative; counts[i] are the observations <= bounds[i] and above
 * the bound before, counts[nr_bounds] those above the last), written
 * cumulatively as name_bucket lines (the labels, then le), then name_sum
 * (`sum`) and name_count.  nr may be 0; at most 7 labels, and a
 * name of at most 120 bytes (otherwise the text fails).
 */
ANY_THREAD void metrics_text_histogram(struct metrics_text *t, const char *name,
                                       const struct metrics_label *labels,
                                       unsigned nr, const double *bounds,
                                       const uint64_t *counts,
                                       unsigned nr_bounds, double sum);

struct server;
struct metrics_http;

/*
 * Serves GET /metrics (server_metrics_render) over HTTP on `fd`, a
 * listening TCP socket (taken: closed by metrics_http_stop, or here on
 * failure), from a thread of its own (libmicrohttpd's).  Other paths get
 * 404, other methods 405.  NULL with err set on failure.  ANY_THREAD;
 * `srv` must outlive the endpoint.
 */
ANY_THREAD struct metrics_http *metrics_http_start(struct server *srv, int fd,
                                                   struct err *err);
/* Stops serving and frees; NULL does nothing.  ANY_THREAD. */
ANY_THREAD void metrics_http_stop(struct metrics_http *mh);

#endif
