/* SPDX-License-Identifier: MIT */
/*
 * nbdc copy: a file, block device or NBD export to another.
 *
 * Worker coroutines, `requests` per connection, spread over the loops,
 * take work from one planner: under plan_lock (a co_mutex, since asking
 * the source for its allocation map waits on the network) the planner
 * walks the source's extents and hands out either a whole run that reads
 * as zeroes (the worker zeroes it on the destination: write zeroes, a
 * punched hole, or nothing for a file we just created) or up to one
 * request of data (the worker reads it and writes it, or zeroes the
 * range when the data turns out to be all zero bytes).  The first error
 * stops every worker; the copy then fails with a message naming the side
 * and the cause.  "-" on either side is a stream instead (nbdc-stream.c);
 * "null:" is a destination that discards (nbdc-common.c).
 *
 * With --dirty-bitmap NAME the planner walks the source's
 * qemu:dirty-bitmap:NAME map instead: dirty runs are copied as data,
 * clean ones skipped, so an existing destination that holds the previous
 * backup becomes the image as it is now (an incremental backup).
 */
#include "nbdc-int.h"
#include "nbdsrv/coro-lock.h"
#include "nbdsrv/coro.h"

#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <pthread.h>
#include <semaphore.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* Request size of data runs; the planner may hand out less. */
#define DEFAULT_CHUNK (1024u * 1024)
#define PLAN_EXTENTS 256u
#define PLAN_SPAN (2ull * 1024 * 1024 * 1024)

/* One copy.  Owned by nbdc_copy_main. */
struct copy_ctx {
    const char *src_name, *dst_name;   /* immutable */
    const char *bitmap;                /* --dirty-bitmap, or NULL */
    unsigned conns, requests, threads; /* immutable after parsing */
    uint32_t chunk;                    /* immutable after open */
    struct nbdc_end src, dst; /* opened before the workers, closed after */
    struct loop_group loops;

    struct co_mutex plan_lock;            /* lock order: before err_lock */
    uint64_t pos;                         /* under plan_lock */
    struct nbdc_extent ext[PLAN_EXTENTS]; /* under plan_lock */
    unsigned ext_n, ext_i;                /* under plan_lock */
    uint64_t ext_used;                    /* under plan_lock */

    atomic_uint_fast64_t done_bytes; /* relaxed: progress only */
    atomic_uint_fast64_t copied_bytes, skipped_bytes; /* relaxed; read after
                                                         the workers end */
    atomic_bool failed;       /* seq_cst; set after errmsg */
    pthread_mutex_t err_lock; /* leaf */
    char errmsg[1024];        /* under err_lock */
    atomic_uint running;      /* workers still running */
    sem_t all_done;
    int rc;
};

/* A worker's arguments; owned (and freed) by the worker. */
struct worker {
    struct copy_ctx *ctx;
    unsigned index;
};

PRINTF_FMT(2, 3)
static void copy_fail(struct copy_ctx *ctx, const char *fmt, ...)
{
    pthread_mutex_lock(&ctx->err_lock);
    if (!atomic_load(&ctx->failed)) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(ctx->errmsg, sizeof ctx->errmsg, fmt, ap);
        va_end(ap);
        atomic_store(&ctx->failed, true);
    }
    pthread_mutex_unlock(&ctx->err_lock);
}

/* The error of an I/O on `end`, with the connection's story if it broke. */
static void io_fail(struct copy_ctx *ctx, struct nbdc_end *end, unsigned index,
                    const char *what, uint64_t off, int r)
{
    const char *why = NULL;
    if (end->is_nbd) {
        why = client_error(client_pool_get(&end->pool, index));
    }
    copy_fail(ctx, "%s %s at offset %" PRIu64 ": %s", what, end->name, off,
              why != NULL ? why : strerror(-r));
}

/* Hands out the next piece of work.  Returns false when there is none. */
static bool next_work(struct copy_ctx *ctx, unsigned index, uint64_t *off,
                      uint64_t *len, bool *zero, bool *skip)
{
    bool got = false;
    co_mutex_lock(&ctx->plan_lock);
    if (atomic_load(&ctx->failed)) {
        goto out;
    }
    if (ctx->ext_i == ctx->ext_n) {
        uint64_t left = ctx->src.size - ctx->pos;
        if (left == 0) {
            goto out;
        }
        uint64_t span = left < PLAN_SPAN ? left : PLAN_SPAN;
        int n = ctx->bitmap != NULL
                    ? nbdc_end_dirty_extents(&ctx->src, index, ctx->pos, span,
                                             ctx->ext, PLAN_EXTENTS)
                    : nbdc_end_extents(&ctx->src, index, ctx->pos, span,
                                       ctx->ext, PLAN_EXTENTS);
        if (n < 0) {
            io_fail(ctx, &ctx->src, index, "mapping", ctx->pos, n);
            goto out;
        }
        ctx->ext_n = (unsigned)n;
        ctx->ext_i = 0;
        ctx->ext_used = 0;
    }
    struct nbdc_extent *e = &ctx->ext[ctx->ext_i];
    uint64_t rest = e->length - ctx->ext_used;
    if (rest > ctx->src.size - ctx->pos) {
        rest = ctx->src.size - ctx->pos;
    }
    *zero = e->zero;
    *skip = e->skip;
    *len = e->zero || e->skip || rest < ctx->chunk ? rest : ctx->chunk;
    *off = ctx->pos;
    ctx->pos += *len;
    ctx->ext_used += *len;
    if (ctx->ext_used >= e->length || ctx->pos == ctx->src.size) {
        ctx->ext_i++;
        ctx->ext_used = 0;
        if (ctx->pos == ctx->src.size) {
            ctx->ext_i = ctx->ext_n;
        }
    }
    got = *len > 0;
out:
    co_mutex_unlock(&ctx->plan_lock);
    return got;
}

static void worker_entry(void *arg)
{
    struct worker *w = arg;
    struct copy_ctx *ctx = w->ctx;
    unsigned i = w->index;
    uint8_t *buf = NULL;
    if (posix_memalign((void **)&buf, 4096, ctx->chunk) != 0) {
        copy_fail(ctx, "out of memory");
        goto out;
    }
    uint64_t off, len;
    bool zero, skip;
    while (next_work(ctx, i, &off, &len, &zero, &skip)) {
        int r;
        if (skip) {
            atomic_fetch_add_explicit(&ctx->skipped_bytes, len,
                                      memory_order_relaxed);
        } else if (zero) {
            r = nbdc_end_zero(&ctx->dst, i, len, off);
            if (r < 0) {
                io_fail(ctx, &ctx->dst, i, "zeroing", off, r);
                break;
            }
        } else {
            r = nbdc_end_read(&ctx->src, i, buf, (uint32_t)len, off);
            if (r < 0) {
                io_fail(ctx, &ctx->src, i, "reading", off, r);
                break;
            }
            if (nbdc_all_zero(buf, len)) {
                r = nbdc_end_zero(&ctx->dst, i, len, off);
            } else {
                r = nbdc_end_write(&ctx->dst, i, buf, (uint32_t)len, off);
            }
            if (r < 0) {
                io_fail(ctx, &ctx->dst, i, "writing", off, r);
                break;
            }
        }
        if (!skip) {
            atomic_fetch_add_explicit(&ctx->copied_bytes, len,
                                      memory_order_relaxed);
        }
        atomic_fetch_add_explicit(&ctx->done_bytes, len, memory_order_relaxed);
    }
out:
    free(buf);
    free(w);
    if (atomic_fetch_sub(&ctx->running, 1) == 1) {
        sem_post(&ctx->all_done);
    }
}

static void open_entry(void *arg)
{
    struct copy_ctx *ctx = arg;
    struct err err = {0};
    ctx->rc = NBDC_EXIT_FAIL;
    int r =
        ctx->bitmap != NULL
            ? nbdc_end_open_dirty(&ctx->src, ctx->src_name, ctx->bitmap,
                                  ctx->conns, ctx->requests, &ctx->loops, &err)
            : nbdc_end_open(&ctx->src, ctx->src_name, false, ctx->conns,
                            ctx->requests, &ctx->loops, 0, &err);
    if (r < 0) {
        nbdc_error("copy: source %s: %s", ctx->src_name, err.msg);
        return;
    }
    /* An incremental copy goes onto the previous backup: never created. */
    uint64_t create = ctx->bitmap == NULL ? ctx->src.size : 0;
    if (nbdc_end_open(&ctx->dst, ctx->dst_name, true, ctx->conns, ctx->requests,
                      &ctx->loops, create, &err) < 0) {
        nbdc_error("copy: destination %s: %s", ctx->dst_name, err.msg);
        nbdc_end_close(&ctx->src);
        return;
    }
    if (ctx->dst.size < ctx->src.size) {
        nbdc_error("copy: the destination %s (%" PRIu64
                   " bytes) is smaller than the source %s (%" PRIu64 " bytes)",
                   ctx->dst_name, ctx->dst.size, ctx->src_name, ctx->src.size);
        nbdc_end_close(&ctx->dst);
        nbdc_end_close(&ctx->src);
        return;
    }
    ctx->chunk = DEFAULT_CHUNK;
    if (ctx->chunk > ctx->src.max_request) {
        ctx->chunk = ctx->src.max_request;
    }
    if (ctx->chunk > ctx->dst.max_request) {
        ctx->chunk = ctx->dst.max_request;
    }
    ctx->rc = NBDC_EXIT_OK;
}

static void finish_entry(void *arg)
{
    struct copy_ctx *ctx = arg;
    if (!atomic_load(&ctx->failed)) {
        int r = nbdc_end_flush(&ctx->dst);
        if (r < 0) {
            io_fail(ctx, &ctx->dst, 0, "flushing", 0, r);
        }
    }
    nbdc_end_close(&ctx->dst);
    nbdc_end_close(&ctx->src);
}

/* The progress-bar thread; owned by nbdc_copy_main. */
struct progress {
    struct copy_ctx *ctx; /* immutable */
    atomic_bool stop;     /* seq_cst; set by the main thread */
    pthread_t thread;
};

static void draw(struct copy_ctx *ctx, bool last)
{
    uint64_t done =
        atomic_load_explicit(&ctx->done_bytes, memory_order_relaxed);
    uint64_t total = ctx->src.size;
    unsigned pct = total == 0 ? 100 : (unsigned)(done * 100 / total);
    char bar[41];
    unsigned fill = pct * 40 / 100;
    for (unsigned i = 0; i < 40; i++) {
        bar[i] = i < fill ? '#' : '.';
    }
    bar[40] = '\0';
    fprintf(stderr, "\r[%s] %3u%% %" PRIu64 "/%" PRIu64 " MiB%s", bar, pct,
            done >> 20, total >> 20, last ? "\n" : "");
}

static void *progress_thread(void *arg)
{
    struct progress *p = arg;
    while (!atomic_load(&p->stop)) {
        draw(p->ctx, false);
        usleep(200 * 1000);
    }
    return NULL;
}

int nbdc_copy_main(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"connections", required_argument, NULL, 'C'},
        {"requests", required_argument, NULL, 'R'},
        {"threads", required_argument, NULL, 'T'},
        {"dirty-bitmap", required_argument, NULL, 'D'},
        {NULL, 0, NULL, 0},
    };
    struct copy_ctx *ctx = calloc(1, sizeof *ctx);
    if (ctx == NULL) {
        nbdc_error("out of memory");
        return NBDC_EXIT_FAIL;
    }
    /*
     * 16 MiB in flight, as nbdcopy keeps: more only queues up on a small
     * machine (bench-client, 2 CPUs: 4 x 16 requests took 0.12-0.16 s for
     * 64 MiB file to NBD, 2 x 8 took 0.02-0.05 s).
     */
    ctx->conns = 2;
    ctx->requests = 8;
    long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
    ctx->threads = ncpu > 0 ? (unsigned)(ncpu < 8 ? ncpu : 8) : 2;
    int c;
    int rc = NBDC_EXIT_USAGE;
    optind = 1;
    while ((c = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
        if (c == 'D') {
            ctx->bitmap = optarg;
            continue;
        }
        unsigned *slot = c == 'C'   ? &ctx->conns
                         : c == 'R' ? &ctx->requests
                         : c == 'T' ? &ctx->threads
                                    : NULL;
        if (slot == NULL) {
            goto out_free;
        }
        if (nbdc_parse_uint(optarg, 1, 1024, slot) < 0) {
            nbdc_error("copy: bad value '%s' (expected 1-1024)", optarg);
            goto out_free;
        }
    }
    if (optind + 2 != argc) {
        nbdc_error("copy: expected SRC and DST (try nbdc --help)");
        goto out_free;
    }
    ctx->src_name = argv[optind];
    ctx->dst_name = argv[optind + 1];
    for (int i = 0; i < 2; i++) {
        struct client_uri u;
        struct err err = {0};
        const char *name = argv[optind + i];
        if (client_uri_is_uri(name)) {
            if (client_uri_parse(name, &u, &err) < 0) {
                nbdc_error("bad URI '%s': %s", name, err.msg);
                goto out_free;
            }
            client_uri_fini(&u);
        }
    }
    if (strcmp(ctx->src_name, NBDC_NULL_NAME) == 0) {
        nbdc_error("copy: " NBDC_NULL_NAME " is only a destination");
        goto out_free;
    }
    if (ctx->bitmap != NULL && (strcmp(ctx->src_name, NBDC_STDIO_NAME) == 0 ||
                                strcmp(ctx->dst_name, NBDC_STDIO_NAME) == 0 ||
                                strcmp(ctx->dst_name, NBDC_NULL_NAME) == 0)) {
        nbdc_error("copy: --dirty-bitmap writes onto an existing backup: "
                   "not onto '%s'",
                   ctx->dst_name);
        goto out_free;
    }
    if (strcmp(ctx->src_name, NBDC_STDIO_NAME) == 0 ||
        strcmp(ctx->dst_name, NBDC_STDIO_NAME) == 0) {
        rc = nbdc_copy_stream(ctx->src_name, ctx->dst_name, ctx->threads);
        goto out_free;
    }
    co_mutex_init(&ctx->plan_lock);
    pthread_mutex_init(&ctx->err_lock, NULL);
    sem_init(&ctx->all_done, 0, 0);
    nbdc_loops_start(&ctx->loops, ctx->threads);
    rc = NBDC_EXIT_FAIL;
    coro_run_sync(ctx->loops.loops[0], open_entry, ctx);
    if (ctx->rc != NBDC_EXIT_OK) {
        goto out_loops;
    }

    unsigned nconn = 1;
    if (ctx->src.is_nbd && ctx->src.pool.count > nconn) {
        nconn = ctx->src.pool.count;
    }
    if (ctx->dst.is_nbd && ctx->dst.pool.count > nconn) {
        nconn = ctx->dst.pool.count;
    }
    unsigned nworkers = nconn * ctx->requests;
    struct progress prog = {.ctx = ctx};
    bool show = isatty(STDERR_FILENO);
    if (show && pthread_create(&prog.thread, NULL, progress_thread, &prog)) {
        show = false;
    }
    atomic_store(&ctx->running, nworkers);
    for (unsigned i = 0; i < nworkers; i++) {
        struct worker *w = malloc(sizeof *w);
        struct coro *co = NULL;
        struct loop *loop = ctx->loops.loops[i % ctx->threads];
        if (w != NULL) {
            w->ctx = ctx;
            w->index = i;
            co = coro_new(worker_entry, w, loop);
        }
        if (co == NULL) {
            free(w);
            copy_fail(ctx, "cannot start a worker: out of memory");
            if (atomic_fetch_sub(&ctx->running, 1) == 1) {
                sem_post(&ctx->all_done);
            }
            continue;
        }
        coro_schedule(loop, co);
    }
    while (sem_wait(&ctx->all_done) < 0) {
    }
    if (show) {
        atomic_store(&prog.stop, true);
        pthread_join(prog.thread, NULL);
        if (!atomic_load(&ctx->failed)) {
            draw(ctx, true);
        } else {
            fputc('\n', stderr);
        }
    }
    coro_run_sync(ctx->loops.loops[0], finish_entry, ctx);
    if (atomic_load(&ctx->failed)) {
        nbdc_error("copy failed: %s", ctx->errmsg);
    } else {
        rc = NBDC_EXIT_OK;
        if (ctx->bitmap != NULL) {
            printf("copied %" PRIu64
                   " bytes marked dirty in %s, skipped %" PRIu64
                   " clean bytes\n",
                   (uint64_t)atomic_load(&ctx->copied_bytes), ctx->bitmap,
                   (uint64_t)atomic_load(&ctx->skipped_bytes));
        }
    }
out_loops:
    loop_group_stop(&ctx->loops);
    sem_destroy(&ctx->all_done);
    pthread_mutex_destroy(&ctx->err_lock);
    co_mutex_fini(&ctx->plan_lock);
out_free:
    free(ctx);
    return rc;
}
