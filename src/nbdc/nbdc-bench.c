/* SPDX-License-Identifier: MIT */
/*
 * nbdc bench: a fixed-time load against one export.
 *
 * `iodepth` worker coroutines per connection, spread over the loops,
 * each keep one request in flight: random or sequential offsets aligned
 * to the block size.  Every completion goes into the worker's latency
 * histogram (log-linear buckets: 16 per power of two, so a percentile is
 * off by at most 1/16); the main thread prints one progress line a
 * second from a shared counter and, at the end, IOPS, MiB/s and the
 * p50, p99 and p99.9 latencies of the merged histograms.
 */
#include "nbdc-int.h"
#include "nbdsrv/coro.h"
#include "nbdsrv/proto.h"

#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <pthread.h>
#include <semaphore.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define HIST_SUB_BITS 4
#define HIST_SUB (1u << HIST_SUB_BITS)
#define HIST_BUCKETS (64u * HIST_SUB)

enum bench_rw {
    RW_RANDREAD,
    RW_RANDWRITE,
    RW_READ,
    RW_WRITE,
    RW_RANDRW,
};

static const char *const rw_names[] = {"randread", "randwrite", "read", "write",
                                       "randrw"};

/*
 * One run.  Owned by nbdc_bench_main; the fields above `stop` are set
 * before the workers start and immutable while they run.
 */
struct bench_ctx {
    const char *text;
    struct client_uri uri;
    enum bench_rw rw;
    uint64_t bs;
    unsigned iodepth, threads, conns;
    unsigned seconds;
    uint64_t region; /* bytes of the export used; 0: all of it */
    struct loop_group loops;
    struct client_pool pool;
    uint64_t size; /* usable region, a multiple of bs */

    atomic_bool stop;              /* seq_cst; set by the main thread */
    atomic_uint_fast64_t ops;      /* relaxed: progress only */
    atomic_uint_fast64_t seq_next; /* relaxed: sequential cursor */
    atomic_int error;              /* first error, 0 if none */
    atomic_uint running;
    sem_t all_done;
    pthread_mutex_t hist_lock;   /* leaf */
    uint64_t hist[HIST_BUCKETS]; /* under hist_lock */
    uint64_t total_ops;          /* under hist_lock */
    int rc;
};

/* One worker coroutine's state; owned by it (loop-local). */
struct bench_worker {
    struct bench_ctx *ctx;
    unsigned index;
    uint64_t rng;
    uint64_t hist[HIST_BUCKETS];
    uint64_t ops;
};

static unsigned hist_index(uint64_t v)
{
    if (v < HIST_SUB) {
        return (unsigned)v;
    }
    unsigned msb = 63u - (unsigned)__builtin_clzll(v);
    unsigned sub = (unsigned)(v >> (msb - HIST_SUB_BITS)) & (HIST_SUB - 1);
    return (msb - HIST_SUB_BITS + 1) * HIST_SUB + sub;
}

/* The middle of bucket i, in nanoseconds. */
static double hist_value(unsigned i)
{
    if (i < HIST_SUB) {
        return i;
    }
    unsigned msb = i / HIST_SUB + HIST_SUB_BITS - 1;
    unsigned sub = i % HIST_SUB;
    double lo = (double)(1ull << msb) +
                (double)sub * (double)(1ull << (msb - HIST_SUB_BITS));
    return lo + (double)(1ull << (msb - HIST_SUB_BITS)) / 2;
}

static double percentile(const uint64_t *hist, uint64_t total, double p)
{
    uint64_t want = (uint64_t)(p / 100.0 * (double)total);
    if (want >= total) {
        want = total - 1;
    }
    uint64_t seen = 0;
    for (unsigned i = 0; i < HIST_BUCKETS; i++) {
        seen += hist[i];
        if (seen > want) {
            return hist_value(i);
        }
    }
    return 0;
}

static uint64_t rng_next(uint64_t *s)
{
    /* xorshift64* */
    uint64_t x = *s;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *s = x;
    return x * UINT64_C(2685821657736338717);
}

static void worker_entry(void *arg)
{
    struct bench_worker *w = arg;
    struct bench_ctx *ctx = w->ctx;
    struct client_conn *c = client_pool_get(&ctx->pool, w->index);
    uint64_t blocks = ctx->size / ctx->bs;
    uint8_t *buf = NULL;
    if (posix_memalign((void **)&buf, 4096, ctx->bs) != 0) {
        atomic_store(&ctx->error, -ENOMEM);
        goto out;
    }
    for (uint64_t i = 0; i < ctx->bs; i++) {
        buf[i] = (uint8_t)rng_next(&w->rng);
    }
    while (!atomic_load_explicit(&ctx->stop, memory_order_relaxed)) {
        uint64_t blk;
        bool write;
        switch (ctx->rw) {
        case RW_READ:
        case RW_WRITE:
            blk = atomic_fetch_add_explicit(&ctx->seq_next, 1,
                                            memory_order_relaxed) %
                  blocks;
            write = ctx->rw == RW_WRITE;
            break;
        default:
            blk = rng_next(&w->rng) % blocks;
            write = ctx->rw == RW_RANDWRITE ||
                    (ctx->rw == RW_RANDRW && (rng_next(&w->rng) & 1));
            break;
        }
        uint64_t t0 = nbdc_now_ns();
        int r = write ? client_pwrite(c, buf, ctx->bs, blk * ctx->bs, 0)
                      : client_pread(c, buf, ctx->bs, blk * ctx->bs, 0);
        uint64_t t1 = nbdc_now_ns();
        if (r < 0) {
            int expected = 0;
            atomic_compare_exchange_strong(&ctx->error, &expected, r);
            atomic_store(&ctx->stop, true);
            break;
        }
        w->hist[hist_index(t1 - t0)]++;
        w->ops++;
        atomic_fetch_add_explicit(&ctx->ops, 1, memory_order_relaxed);
    }
out:
    free(buf);
    pthread_mutex_lock(&ctx->hist_lock);
    for (unsigned i = 0; i < HIST_BUCKETS; i++) {
        ctx->hist[i] += w->hist[i];
    }
    ctx->total_ops += w->ops;
    pthread_mutex_unlock(&ctx->hist_lock);
    free(w);
    if (atomic_fetch_sub(&ctx->running, 1) == 1) {
        sem_post(&ctx->all_done);
    }
}

static void open_entry(void *arg)
{
    struct bench_ctx *ctx = arg;
    struct err err = {0};
    struct client_opts opts = {
        .max_requests = ctx->iodepth,
        .handshake_timeout_ns = NBDC_HANDSHAKE_TIMEOUT_NS,
    };
    ctx->rc = NBDC_EXIT_FAIL;
    if (client_pool_connect(&ctx->pool, &ctx->uri, &opts, ctx->conns,
                            &ctx->loops, &err) < 0) {
        nbdc_error("bench: %s: %s", ctx->text, err.msg);
        return;
    }
    const struct client_info *info =
        client_info(client_pool_get(&ctx->pool, 0));
    bool writes =
        ctx->rw == RW_RANDWRITE || ctx->rw == RW_WRITE || ctx->rw == RW_RANDRW;
    if (writes && (info->tx_flags & PROTO_FLAG_READ_ONLY)) {
        nbdc_error("bench: %s: the export is read-only", ctx->text);
        client_pool_close(&ctx->pool);
        return;
    }
    if (ctx->bs > info->block_max || ctx->bs % info->block_min != 0) {
        nbdc_error("bench: --bs %" PRIu64 " does not suit the export's block "
                   "sizes (%" PRIu32 "-%" PRIu32 ")",
                   ctx->bs, info->block_min, info->block_max);
        client_pool_close(&ctx->pool);
        return;
    }
    uint64_t size = info->size;
    if (ctx->region > 0 && ctx->region < size) {
        size = ctx->region;
    }
    ctx->size = size / ctx->bs * ctx->bs;
    if (ctx->size == 0) {
        nbdc_error("bench: the export (%" PRIu64 " bytes) is smaller than "
                   "--bs",
                   info->size);
        client_pool_close(&ctx->pool);
        return;
    }
    ctx->rc = NBDC_EXIT_OK;
}

static void close_entry(void *arg)
{
    struct bench_ctx *ctx = arg;
    client_pool_close(&ctx->pool);
}

static int parse_args(struct bench_ctx *ctx, int argc, char **argv)
{
    static const struct option longopts[] = {
        {"rw", required_argument, NULL, 'w'},
        {"bs", required_argument, NULL, 'b'},
        {"iodepth", required_argument, NULL, 'q'},
        {"threads", required_argument, NULL, 'T'},
        {"connections", required_argument, NULL, 'C'},
        {"time", required_argument, NULL, 't'},
        {"size", required_argument, NULL, 's'},
        {NULL, 0, NULL, 0},
    };
    int c;
    int idx = 0;
    optind = 1;
    while ((c = getopt_long(argc, argv, "", longopts, &idx)) != -1) {
        int r = 0;
        switch (c) {
        case 'w':
            r = -EINVAL;
            for (unsigned i = 0; i < ARRAY_SIZE(rw_names); i++) {
                if (strcmp(optarg, rw_names[i]) == 0) {
                    ctx->rw = (enum bench_rw)i;
                    r = 0;
                }
            }
            break;
        case 'b':
            r = nbdc_parse_size(optarg, &ctx->bs);
            if (r == 0 && (ctx->bs == 0 || ctx->bs > 32u * 1024 * 1024)) {
                r = -EINVAL;
            }
            break;
        case 'q':
            r = nbdc_parse_uint(optarg, 1, 1024, &ctx->iodepth);
            break;
        case 'T':
            r = nbdc_parse_uint(optarg, 1, 256, &ctx->threads);
            break;
        case 'C':
            r = nbdc_parse_uint(optarg, 1, 64, &ctx->conns);
            break;
        case 't':
            r = nbdc_parse_uint(optarg, 1, 86400, &ctx->seconds);
            break;
        case 's':
            r = nbdc_parse_size(optarg, &ctx->region);
            break;
        default:
            return -EINVAL;
        }
        if (r < 0) {
            nbdc_error("bench: bad value '%s' for --%s", optarg,
                       longopts[idx].name);
            return -EINVAL;
        }
    }
    if (optind + 1 != argc) {
        nbdc_error("bench: expected one URI (try nbdc --help)");
        return -EINVAL;
    }
    ctx->text = argv[optind];
    return 0;
}

int nbdc_bench_main(int argc, char **argv)
{
    struct bench_ctx *ctx = calloc(1, sizeof *ctx);
    if (ctx == NULL) {
        nbdc_error("out of memory");
        return NBDC_EXIT_FAIL;
    }
    ctx->rw = RW_RANDREAD;
    ctx->bs = 4096;
    ctx->iodepth = 32;
    ctx->threads = 0; /* default: one per connection, at most one per CPU */
    ctx->conns = 1;
    ctx->seconds = 10;
    int rc = NBDC_EXIT_USAGE;
    struct err err = {0};
    if (parse_args(ctx, argc, argv) < 0) {
        goto out_free;
    }
    if (client_uri_parse(ctx->text, &ctx->uri, &err) < 0) {
        nbdc_error("bad URI '%s': %s", ctx->text, err.msg);
        goto out_free;
    }
    if (ctx->threads == 0) {
        /*
         * The requests of one connection stay on its receiver's loop:
         * spreading them costs a cross-thread wake-up per reply (4K
         * random read QD 32, one connection: 107-115k IOPS on two loops,
         * 173-182k on one).
         */
        long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
        ctx->threads = ctx->conns;
        if (ncpu > 0 && ctx->threads > (unsigned)ncpu) {
            ctx->threads = (unsigned)ncpu;
        }
    }
    rc = NBDC_EXIT_FAIL;
    pthread_mutex_init(&ctx->hist_lock, NULL);
    sem_init(&ctx->all_done, 0, 0);
    nbdc_loops_start(&ctx->loops, ctx->threads);
    coro_run_sync(ctx->loops.loops[0], open_entry, ctx);
    if (ctx->rc != NBDC_EXIT_OK) {
        goto out_loops;
    }
    unsigned nworkers = ctx->pool.count * ctx->iodepth;
    printf("%s bs=%" PRIu64 " iodepth=%u connections=%u threads=%u "
           "time=%us on %s\n",
           rw_names[ctx->rw], ctx->bs, ctx->iodepth, ctx->pool.count,
           ctx->threads, ctx->seconds, ctx->text);
    fflush(stdout);
    atomic_store(&ctx->running, nworkers);
    uint64_t start = nbdc_now_ns();
    for (unsigned i = 0; i < nworkers; i++) {
        struct bench_worker *w = calloc(1, sizeof *w);
        /*
         * Worker i uses connection i % count (client_pool_get), whose
         * receiver runs on loop conn % threads: with no more threads
         * than connections the worker joins it there, else the workers
         * are spread over every loop.
         */
        unsigned conn = i % ctx->pool.count;
        unsigned li = ctx->threads <= ctx->pool.count ? conn % ctx->threads
                                                      : i % ctx->threads;
        struct loop *loop = ctx->loops.loops[li];
        struct coro *co = NULL;
        if (w != NULL) {
            w->ctx = ctx;
            w->index = i;
            w->rng = UINT64_C(0x9e3779b97f4a7c15) * (i + 1);
            co = coro_new(worker_entry, w, loop);
        }
        if (co == NULL) {
            free(w);
            atomic_store(&ctx->error, -ENOMEM);
            atomic_store(&ctx->stop, true);
            if (atomic_fetch_sub(&ctx->running, 1) == 1) {
                sem_post(&ctx->all_done);
            }
            continue;
        }
        coro_schedule(loop, co);
    }
    uint64_t last_ops = 0;
    for (unsigned s = 1; s <= ctx->seconds && !atomic_load(&ctx->stop); s++) {
        uint64_t target = start + (uint64_t)s * 1000000000u;
        uint64_t now = nbdc_now_ns();
        while (now < target && !atomic_load(&ctx->stop)) {
            uint64_t left = target - now;
            usleep(left > 100000000u ? 100000 : (unsigned)(left / 1000));
            now = nbdc_now_ns();
        }
        uint64_t ops = atomic_load_explicit(&ctx->ops, memory_order_relaxed);
        printf("[%4us] IOPS: %" PRIu64 ", MiB/s: %.1f\n", s, ops - last_ops,
               (double)(ops - last_ops) * (double)ctx->bs / 1048576.0);
        fflush(stdout);
        last_ops = ops;
    }
    atomic_store(&ctx->stop, true);
    while (sem_wait(&ctx->all_done) < 0) {
    }
    double secs = (double)(nbdc_now_ns() - start) / 1e9;
    int error = atomic_load(&ctx->error);
    if (error != 0) {
        const char *why = NULL;
        for (unsigned i = 0; i < ctx->pool.count && why == NULL; i++) {
            why = client_error(client_pool_get(&ctx->pool, i));
        }
        nbdc_error("bench: %s: %s", ctx->text,
                   why != NULL ? why : strerror(-error));
    } else if (ctx->total_ops == 0) {
        nbdc_error("bench: no request completed");
    } else {
        double iops = (double)ctx->total_ops / secs;
        printf("IOPS: %.0f\n", iops);
        printf("MiB/s: %.1f\n", iops * (double)ctx->bs / 1048576.0);
        printf("latency (us): p50 %.1f, p99 %.1f, p99.9 %.1f\n",
               percentile(ctx->hist, ctx->total_ops, 50) / 1000,
               percentile(ctx->hist, ctx->total_ops, 99) / 1000,
               percentile(ctx->hist, ctx->total_ops, 99.9) / 1000);
        rc = NBDC_EXIT_OK;
    }
    coro_run_sync(ctx->loops.loops[0], close_entry, ctx);
out_loops:
    loop_group_stop(&ctx->loops);
    sem_destroy(&ctx->all_done);
    pthread_mutex_destroy(&ctx->hist_lock);
    client_uri_fini(&ctx->uri);
out_free:
    free(ctx);
    return rc;
}
