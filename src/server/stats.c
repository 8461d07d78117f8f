/* SPDX-License-Identifier: MIT */
/*
 * The counters behind /metrics: counting on the request path, and the
 * sums a scrape renders (stats-int.h says where each counter lives).
 *
 * Why no lock on the request path: every per-request counter belongs to
 * one loop and is written only by that loop's thread, so an increment is
 * a relaxed load and a relaxed store of the thread's own cache line (no
 * locked instruction, no line shared with another writer).  The scraper
 * reads the same atomics with relaxed loads from the HTTP thread: it may
 * see a request that is half counted (its command but not yet its
 * latency), never a torn value.  A per-loop block of an export is
 * allocated by its loop on its first request there and published with a
 * release store; the scraper's acquire load pairs with it.
 *
 * What the request path costs with metrics on: one CLOCK_MONOTONIC read
 * when the header is read and one when the request ends (vDSO), a bucket
 * search over STATS_NR_BOUNDS bounds, and a handful of loads and stores
 * to the loop's own lines.  With metrics off (the default) it is one
 * test of srv->stats_on.
 */
#include "nbdsrv/coro.h"
#include "nbdsrv/metrics.h"
#include "nbdsrv/version.h"
#include "server-int.h"

#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* Latency bucket bounds, seconds and (for the request path) ns. */
static const double stats_latency_bounds[STATS_NR_BOUNDS] = {
    0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001,
    0.0025,  0.005,    0.01,    0.025,  0.05,    0.1,    0.25,
    0.5,     1,        2.5,     5,      10,
};
static const uint64_t stats_latency_bounds_ns[STATS_NR_BOUNDS] = {
    10000,      25000,      50000,      100000,      250000,
    500000,     1000000,    2500000,    5000000,     10000000,
    25000000,   50000000,   100000000,  250000000,   500000000,
    1000000000, 2500000000, 5000000000, 10000000000,
};

/* The command label: the spec's names without NBD_CMD_, in lower case. */
static const char *const cmd_names[STATS_NR_CMDS] = {
    [PROTO_CMD_READ] = "read",
    [PROTO_CMD_WRITE] = "write",
    [PROTO_CMD_DISC] = "disc",
    [PROTO_CMD_FLUSH] = "flush",
    [PROTO_CMD_TRIM] = "trim",
    [PROTO_CMD_CACHE] = "cache",
    [PROTO_CMD_WRITE_ZEROES] = "write_zeroes",
    [PROTO_CMD_BLOCK_STATUS] = "block_status",
    [PROTO_CMD_RESIZE] = "resize",
    [STATS_NR_CMDS - 1] = "other",
};
_Static_assert(PROTO_CMD_RESIZE == STATS_NR_CMDS - 2,
               "a command has no slot of its own in stats_export_loop");

static const uint32_t err_values[STATS_NR_ERRS - 1] = {
#define PROTO_ERR(name, value) value,
#include "nbdsrv/proto.def"
};
static const char *const err_names[STATS_NR_ERRS] = {
#define PROTO_ERR(name, value) #name,
#include "nbdsrv/proto.def"
    "other",
};
_Static_assert(sizeof err_values / sizeof err_values[0] == STATS_NR_ERRS - 1,
               "STATS_NR_ERRS does not match proto.def's errors");

static const char *const hs_names[STATS_HS_NR] = {
    [STATS_HS_TLS] = "tls",
    [STATS_HS_TIMEOUT] = "timeout",
    [STATS_HS_UNKNOWN_EXPORT] = "unknown_export",
    [STATS_HS_ALLOW] = "allow_list",
    [STATS_HS_OTHER] = "other",
};

static const char *const refused_names[SERVER_ADMIT_NR] = {
    [SERVER_ADMIT_FULL] = "max_connections",
    [SERVER_ADMIT_PER_CLIENT] = "max_connections_per_client",
    [SERVER_ADMIT_NO_MEMORY] = "no_memory",
};
_Static_assert(SERVER_ADMIT_NR <= 8, "stats_events.refused is too small");

uint64_t stats_clock_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* An increment by the counter's only writer. */
static inline void add(atomic_uint_least64_t *c, uint64_t n)
{
    atomic_store_explicit(c, atomic_load_explicit(c, memory_order_relaxed) + n,
                          memory_order_relaxed);
}

static inline uint64_t get(atomic_uint_least64_t *c)
{
    return atomic_load_explicit(c, memory_order_relaxed);
}

/* ------------------------------------------------------------------ */
/* The list of blocks */

struct export_stats *server_export_stats(struct server *srv, const char *name)
{
    mutex_lock(&srv->lock);
    struct export_stats *st = server_locked(srv)->stats;
    while (st != NULL && strcmp(st->name, name) != 0) {
        st = st->next;
    }
    if (st == NULL) {
        st = calloc(1, sizeof *st);
        char *copy = st != NULL ? strdup(name) : NULL;
        if (copy == NULL) {
            free(st);
            mutex_unlock(&srv->lock);
            return NULL;
        }
        st->name = copy;
        refcount_init(&st->refs); /* the list's */
        st->next = server_locked(srv)->stats;
        server_locked(srv)->stats = st;
    }
    refcount_get(&st->refs);
    mutex_unlock(&srv->lock);
    return st;
}

void export_stats_unref(struct export_stats *st)
{
    if (st == NULL || !refcount_put(&st->refs)) {
        return;
    }
    for (unsigned i = 0; i < STATS_MAX_LOOPS; i++) {
        free(atomic_load_explicit(&st->loops[i], memory_order_acquire));
    }
    free(st->name);
    free(st);
}

void server_stats_fini(struct server *srv)
{
    struct export_stats *st = server_unshared(srv)->stats;
    server_unshared(srv)->stats = NULL;
    while (st != NULL) {
        struct export_stats *next = st->next;
        export_stats_unref(st);
        st = next;
    }
    free(srv->stats_loops);
    srv->stats_loops = NULL;
}

void server_enable_metrics(struct server *srv)
{
    srv->stats_on = true;
}

/* ------------------------------------------------------------------ */
/* Counting */

void stats_request_received(struct server *srv)
{
    unsigned i = loop_index(coro_loop(coro_self()));
    add(&srv->stats_loops[i].received, 1);
}

void stats_reply_write(struct server *srv)
{
    unsigned i = loop_index(coro_loop(coro_self()));
    add(&srv->stats_loops[i].reply_writes, 1);
}

/* This loop's block of `st`, made on first use; NULL if it cannot be. */
static struct stats_export_loop *loop_block(struct export_stats *st, unsigned i)
{
    struct stats_export_loop *b =
        atomic_load_explicit(&st->loops[i], memory_order_relaxed);
    if (b != NULL) {
        return b;
    }
    b = aligned_alloc(64, sizeof *b);
    if (b == NULL) {
        return NULL;
    }
    memset(b, 0, sizeof *b);
    /* Pairs with the scraper's acquire load: it sees the zeroes. */
    atomic_store_explicit(&st->loops[i], b, memory_order_release);
    return b;
}

static unsigned err_index(int err)
{
    uint32_t nbd = proto_errno_to_nbd(err);
    for (unsigned i = 0; i < STATS_NR_ERRS - 1; i++) {
        if (err_values[i] == nbd) {
            return i;
        }
    }
    return STATS_NR_ERRS - 1;
}

void stats_request_done(const struct conn *conn,
                        const struct proto_request *req, uint64_t arrival_ns,
                        int err)
{
    struct server *srv = conn->srv;
    unsigned i = loop_index(coro_loop(coro_self()));
    add(&srv->stats_loops[i].served, 1);
    struct export_stats *st = conn->exp->stats;
    struct stats_export_loop *b =
        st != NULL && i < STATS_MAX_LOOPS ? loop_block(st, i) : NULL;
    if (b == NULL) {
        return;
    }
    unsigned type = req->type;
    struct stats_cmd *c =
        &b->cmd[type < STATS_NR_CMDS - 1 ? type : STATS_NR_CMDS - 1];
    uint64_t ns = stats_clock_ns() - arrival_ns;
    unsigned k = 0;
    while (k < STATS_NR_BOUNDS && ns > stats_latency_bounds_ns[k]) {
        k++;
    }
    add(&c->requests, 1);
    add(&c->latency_ns, ns);
    add(&c->buckets[k], 1);
    if (err != 0) {
        add(&c->errors[err_index(err)], 1);
    } else if (type == PROTO_CMD_READ) {
        add(&b->bytes_read, req->length);
    } else if (type == PROTO_CMD_WRITE) {
        add(&b->bytes_written, req->length);
    }
}

/* ------------------------------------------------------------------ */
/* Rendering */

/* One export's counters summed over the loops. */
struct stats_sum {
    uint64_t requests[STATS_NR_CMDS];
    uint64_t latency_ns[STATS_NR_CMDS];
    uint64_t buckets[STATS_NR_CMDS][STATS_NR_BOUNDS + 1];
    uint64_t errors[STATS_NR_CMDS][STATS_NR_ERRS];
    uint64_t bytes_read, bytes_written;
};

static void sum_export(struct export_stats *st, struct stats_sum *s)
{
    memset(s, 0, sizeof *s);
    for (unsigned i = 0; i < STATS_MAX_LOOPS; i++) {
        struct stats_export_loop *b =
            atomic_load_explicit(&st->loops[i], memory_order_acquire);
        if (b == NULL) {
            continue;
        }
        for (unsigned c = 0; c < STATS_NR_CMDS; c++) {
            struct stats_cmd *sc = &b->cmd[c];
            s->requests[c] += get(&sc->requests);
            s->latency_ns[c] += get(&sc->latency_ns);
            for (unsigned k = 0; k <= STATS_NR_BOUNDS; k++) {
                s->buckets[c][k] += get(&sc->buckets[k]);
            }
            for (unsigned e = 0; e < STATS_NR_ERRS; e++) {
                s->errors[c][e] += get(&sc->errors[e]);
            }
        }
        s->bytes_read += get(&b->bytes_read);
        s->bytes_written += get(&b->bytes_written);
    }
}

/* The export blocks, each with a reference; *nr of them.  NULL when there
 * are none or no memory. */
static struct export_stats **list_exports(struct server *srv, unsigned *nr)
{
    mutex_lock(&srv->lock);
    unsigned n = 0;
    for (struct export_stats *st = server_locked(srv)->stats; st != NULL;
         st = st->next) {
        n++;
    }
    struct export_stats **v = n > 0 ? calloc(n, sizeof *v) : NULL;
    unsigned got = 0;
    for (struct export_stats *st = server_locked(srv)->stats;
         v != NULL && st != NULL; st = st->next) {
        refcount_get(&st->refs);
        v[got++] = st;
    }
    mutex_unlock(&srv->lock);
    *nr = got;
    return v;
}

/* A counter family with one value an export: the uint64_t at `field` of
 * each export's sum. */
static void render_bytes(struct metrics_text *t, const char *name,
                         const char *help, struct export_stats *const *v,
                         const struct stats_sum *sums, unsigned nr,
                         size_t field)
{
    metrics_text_family(t, name, "counter", help);
    for (unsigned i = 0; i < nr; i++) {
        struct metrics_label l[] = {{"export", v[i]->name}};
        metrics_text_uint(t, name, l, 1,
                          *(const uint64_t *)((const char *)&sums[i] + field));
    }
}

static void render_exports(struct metrics_text *t,
                           struct export_stats *const *v, unsigned nr)
{
    struct stats_sum *sums = calloc(nr > 0 ? nr : 1, sizeof *sums);
    if (sums == NULL) {
        t->failed = true;
        return;
    }
    for (unsigned i = 0; i < nr; i++) {
        sum_export(v[i], &sums[i]);
    }
    metrics_text_family(t, "nbd_serverd_requests_total", "counter",
                        "Requests finished, by export and command.");
    for (unsigned i = 0; i < nr; i++) {
        for (unsigned c = 0; c < STATS_NR_CMDS; c++) {
            if (sums[i].requests[c] == 0) {
                continue;
            }
            struct metrics_label l[] = {{"export", v[i]->name},
                                        {"command", cmd_names[c]}};
            metrics_text_uint(t, "nbd_serverd_requests_total", l, 2,
                              sums[i].requests[c]);
        }
    }
    metrics_text_family(t, "nbd_serverd_request_errors_total", "counter",
                        "Requests answered with an error, by export, command "
                        "and NBD error.");
    for (unsigned i = 0; i < nr; i++) {
        for (unsigned c = 0; c < STATS_NR_CMDS; c++) {
            for (unsigned e = 0; e < STATS_NR_ERRS; e++) {
                if (sums[i].errors[c][e] == 0) {
                    continue;
                }
                struct metrics_label l[] = {{"export", v[i]->name},
                                            {"command", cmd_names[c]},
                                            {"errno", err_names[e]}};
                metrics_text_uint(t, "nbd_serverd_request_errors_total", l, 3,
                                  sums[i].errors[c][e]);
            }
        }
    }
    render_bytes(t, "nbd_serverd_read_bytes_total",
                 "Bytes read by successful READ requests, by export.", v, sums,
                 nr, offsetof(struct stats_sum, bytes_read));
    render_bytes(t, "nbd_serverd_written_bytes_total",
                 "Bytes written by successful WRITE requests, by export.", v,
                 sums, nr, offsetof(struct stats_sum, bytes_written));
    metrics_text_family(t, "nbd_serverd_request_duration_seconds", "histogram",
                        "Time from a request's header being read to its "
                        "reply being written, by export and command.");
    for (unsigned i = 0; i < nr; i++) {
        for (unsigned c = 0; c < STATS_NR_CMDS; c++) {
            if (sums[i].requests[c] == 0) {
                continue;
            }
            struct metrics_label l[] = {{"export", v[i]->name},
                                        {"command", cmd_names[c]}};
            metrics_text_histogram(t, "nbd_serverd_request_duration_seconds", l,
                                   2, stats_latency_bounds, sums[i].buckets[c],
                                   STATS_NR_BOUNDS,
                                   (double)sums[i].latency_ns[c] / 1e9);
        }
    }
    free(sums);
}

static void render_connections(struct server *srv, struct metrics_text *t)
{
    mutex_lock(&srv->lock);
    unsigned current = server_locked(srv)->nr_admitted;
    mutex_unlock(&srv->lock);
    metrics_text_family(t, "nbd_serverd_connections", "gauge",
                        "Connections open now.");
    metrics_text_uint(t, "nbd_serverd_connections", NULL, 0, current);
    metrics_text_family(t, "nbd_serverd_connections_accepted_total", "counter",
                        "Connections accepted.");
    metrics_text_uint(t, "nbd_serverd_connections_accepted_total", NULL, 0,
                      get(&srv->events.accepted));
    metrics_text_family(t, "nbd_serverd_connections_refused_total", "counter",
                        "Connections refused at accept, by reason.");
    for (unsigned r = SERVER_ADMIT_OK + 1; r < SERVER_ADMIT_NR; r++) {
        struct metrics_label l[] = {{"reason", refused_names[r]}};
        metrics_text_uint(t, "nbd_serverd_connections_refused_total", l, 1,
                          get(&srv->events.refused[r]));
    }
    metrics_text_family(t, "nbd_serverd_handshakes_failed_total", "counter",
                        "Connections that ended before the transmission "
                        "phase, by reason.");
    for (unsigned r = 0; r < STATS_HS_NR; r++) {
        struct metrics_label l[] = {{"reason", hs_names[r]}};
        metrics_text_uint(t, "nbd_serverd_handshakes_failed_total", l, 1,
                          get(&srv->events.handshake_failed[r]));
    }
}

static void render_loops(struct server *srv, struct metrics_text *t)
{
    unsigned n = srv->loops->count;
    uint64_t received = 0, served = 0, reply_writes = 0;
    for (unsigned i = 0; i < n; i++) {
        received += get(&srv->stats_loops[i].received);
        served += get(&srv->stats_loops[i].served);
        reply_writes += get(&srv->stats_loops[i].reply_writes);
    }
    metrics_text_family(t, "nbd_serverd_requests_in_flight", "gauge",
                        "Requests read and not finished yet.");
    metrics_text_uint(t, "nbd_serverd_requests_in_flight", NULL, 0,
                      received > served ? received - served : 0);
    metrics_text_family(t, "nbd_serverd_reply_writes_total", "counter",
                        "Writes to clients' sockets that carried replies "
                        "(replies of one burst share a write).");
    metrics_text_uint(t, "nbd_serverd_reply_writes_total", NULL, 0,
                      reply_writes);
    metrics_text_family(t, "nbd_serverd_buffer_bytes", "gauge",
                        "Buffer memory held by requests in flight "
                        "(max-buffer-memory counts it).");
    metrics_text_uint(t, "nbd_serverd_buffer_bytes", NULL, 0,
                      buffer_budget_used(&srv->budget));
    metrics_text_family(t, "nbd_serverd_loop_requests_total", "counter",
                        "Requests finished on each loop thread.");
    for (unsigned i = 0; i < n; i++) {
        char idx[16];
        snprintf(idx, sizeof idx, "%u", i);
        struct metrics_label l[] = {{"loop", idx}};
        metrics_text_uint(t, "nbd_serverd_loop_requests_total", l, 1,
                          get(&srv->stats_loops[i].served));
    }
    metrics_text_family(t, "nbd_serverd_loop_cpu_seconds_total", "counter",
                        "CPU time used by each loop thread.");
    for (unsigned i = 0; i < n; i++) {
        uint64_t ns;
        if (loop_cpu_ns(srv->loops->loops[i], &ns) < 0) {
            continue;
        }
        char idx[16];
        snprintf(idx, sizeof idx, "%u", i);
        struct metrics_label l[] = {{"loop", idx}};
        metrics_text_double(t, "nbd_serverd_loop_cpu_seconds_total", l, 1,
                            (double)ns / 1e9);
    }
}

void server_metrics_render(struct server *srv, struct metrics_text *t)
{
    metrics_text_family(t, "nbd_serverd_build_info", "gauge",
                        "Always 1; the labels name the build.");
    struct metrics_label version[] = {{"version", NBDSRV_VERSION}};
    metrics_text_uint(t, "nbd_serverd_build_info", version, 1, 1);
    unsigned nr = 0;
    struct export_stats **v = list_exports(srv, &nr);
    render_exports(t, v, nr);
    for (unsigned i = 0; i < nr; i++) {
        export_stats_unref(v[i]);
    }
    free(v);
    render_connections(srv, t);
    render_loops(srv, t);
}
